"""The command line's contract on bad input (issue #12, "Hardening"): exit 0 ok,
1 when the file, the data, the parameters or the filesystem are at fault (the
message names the file), 2 bad usage; 3 ("internal error") only for a bug.

Every case runs `python -m circuitlang` in a subprocess, as users run it.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

from .conftest import ROOT

TINY = "tests/circuits/tiny_hopfield.circ"


def circuitc(*args, timeout=300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "circuitlang", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, **kw)


def fails(result: subprocess.CompletedProcess, code: int, *says: str) -> str:
    """`result` exited with `code`, cleanly, and its stderr says each of `says`."""
    err = result.stderr
    assert result.returncode == code, f"exit {result.returncode}, not {code}\n{result.stdout}\n{err}"
    assert "Traceback" not in err and "internal error" not in err, err
    for s in says:
        assert s in err, f"{s!r} not in:\n{err}"
    return err


# --------------------------------------------------- numbers out of range --
USAGE = {
    "epochs 0": (("train", TINY, "--epochs", "0"), "argument --epochs: 0 is out of range: it must be at least 1"),
    "epochs -5": (("train", TINY, "--epochs", "-5"), "argument --epochs: -5 is out of range"),
    "devices 0": (("train", TINY, "--devices", "0"), "argument --devices: 0 is out of range"),
    "devices -1": (("train", TINY, "--devices", "-1"), "argument --devices: -1 is out of range"),
    "seed 2**64": (("train", TINY, "--seed", str(2**64)), f"argument --seed: {2**64} is out of range"),
    "seed abc": (("simulate", TINY, "--seed", "abc", "--out", "x"), "argument --seed: 'abc' is not an integer"),
    "compile batch -3": (("compile", TINY, "--batch", "-3"), "argument --batch: -3 is out of range"),
    "verify betas abc": (("verify", TINY, "--betas", "abc"), "argument --betas: 'abc' is not a number"),
    "verify betas nan": (("verify", TINY, "--betas", "0.1,nan"), "argument --betas: nan: each beta must be a finite"),
    "verify betas 0": (("verify", TINY, "--betas", "0"), "each beta must be a finite, non-zero number"),
    "samples 0": (("simulate", TINY, "--samples", "0", "--out", "x"), "argument --samples: 0 is out of range"),
}


@pytest.mark.parametrize("name", list(USAGE))
def test_numbers_out_of_range_are_usage_errors(name, tmp_path):
    args, message = USAGE[name]
    fails(circuitc(*args), 2, message, "(try `circuitc")


# --------------------------------------------------------------- --params --
def _npz(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _zip(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


def _npy(a) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


GOOD = {"W1": np.full((16, 64), 0.01, np.float32), "W2": np.full((10, 16), 0.01, np.float32),
        "h.bias": np.zeros(16, np.float32), "y.bias": np.zeros(10, np.float32)}

# name: (how to write the file, what the error says after the file's name)
BAD_PARAMS = {
    "truncated": (lambda p: p.write_bytes(_zip_bytes(GOOD)[:700]), "not an .npz (zip) file, or truncated or damaged"),
    "empty": (lambda p: p.write_bytes(b""), "is empty, not a parameter file"),
    "a .npy": (lambda p: p.write_bytes(_npy(GOOD["W1"])), "is a single .npy array"),
    "strings": (lambda p: _npz(p, **{**GOOD, "W1": np.full((16, 64), "a")}), "W1 holds <U1 values"),
    "complex": (lambda p: _npz(p, **{**GOOD, "W2": GOOD["W2"] + 1j}), "W2 holds complex64 values"),
    "objects": (lambda p: _npz(p, **{**GOOD, "W1": np.array([None, {}], object)}),
                "the member `W1` holds Python objects"),
    "a pickle member": (lambda p: _zip(p, {**{f"{k}.npy": _npy(v) for k, v in GOOD.items()},
                                           "evil.npy": pickle.dumps({"a": 1})}),
                        "the member `evil` is not a NumPy array"),
    "a forged huge shape": (
        lambda p: _zip(p, {f"{k}.npy": _npy(v).replace(b"(16, 64)", b"(1000000000000, 64)")
                           for k, v in GOOD.items()}),
        "the member `W1` declares (1000000000000, 64) float32 (233 TiB) but holds 4.01 KiB"),
    "missing": (lambda p: _npz(p, W1=GOOD["W1"], W2=GOOD["W2"]), "missing h.bias, y.bias"),
    "extra": (lambda p: _npz(p, **GOOD, W3=GOOD["W2"]), "the circuit has no W3 (--allow-extra-params"),
    "wrong shape": (lambda p: _npz(p, **{**GOOD, "W2": GOOD["W1"]}), "W2 is (16, 64), the circuit wants (10, 16)"),
    "nan": (lambda p: _npz(p, **{**GOOD, "h.bias": np.full(16, np.nan, np.float32)}),
            "h.bias has 16 non-finite value(s)"),
    "float64 beyond float32": (lambda p: _npz(p, **{**GOOD, "W2": np.full((10, 16), 1e300)}),
                               "W2 has 160 non-finite value(s) (NaN or inf) (float64 values beyond float32's range)"),
}


def _zip_bytes(arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@pytest.fixture(scope="module")
def param_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("params")
    for name, (write, _) in BAD_PARAMS.items():
        write(tmp / f"{name.replace(' ', '_')}.npz")
    _npz(tmp / "float64.npz", **{k: v.astype(np.float64) for k, v in GOOD.items()})
    _npz(tmp / "with_extra.npz", **GOOD, W3=GOOD["W2"])
    return tmp


@pytest.mark.parametrize("name", list(BAD_PARAMS))
def test_bad_params_are_errors_naming_the_file(param_files, name):
    path = param_files / f"{name.replace(' ', '_')}.npz"
    fails(circuitc("evaluate", TINY, "--params", path), 1, f"error: {path}: ", BAD_PARAMS[name][1])


@pytest.mark.parametrize("verb", ["simulate", "verify"])
def test_every_verb_checks_its_params(param_files, verb, tmp_path):
    path = param_files / "a_forged_huge_shape.npz"
    fails(circuitc(verb, TINY, "--params", path, "--samples", 2, "--out", tmp_path), 1,
          f"{path}: damaged parameter file: the member `W1` declares (1000000000000, 64)")


@pytest.mark.slow
def test_float64_params_are_converted_and_extra_ones_allowed_on_request(param_files):
    """A float64 file (what verify computes in) evaluates in float32; extras only with the flag."""
    for name, flags in (("float64", ()), ("with_extra", ("--allow-extra-params",))):
        r = circuitc("evaluate", TINY, "--params", param_files / f"{name}.npz", *flags,
                     "--set", "phase.free.steps=2")
        assert r.returncode == 0, r.stderr
        assert re.fullmatch(r"loss [0-9.]+ accuracy [0-9.]+\n", r.stdout), r.stdout


# ---------------------------------------------------------------- --resume --
FAST = ("--no-progress", "--set", "phase.free.steps=4", "--set", "phase.nudge.steps=2")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A one-epoch run of the tiny circuit, to damage copies of."""
    out = tmp_path_factory.mktemp("finished") / "run"
    r = circuitc("train", TINY, "--epochs", 1, "--out", out, *FAST)
    assert r.returncode == 0, r.stderr
    return out


def _damaged(run, tmp_path, damage):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    damage(out)
    return out


DAMAGE = {
    "truncated checkpoint": (
        lambda d: (d / "checkpoint.npz").write_bytes((d / "checkpoint.npz").read_bytes()[:-100]),
        "checkpoint.npz: is not a checkpoint: not an .npz (zip) file, or truncated or damaged"),
    "checkpoint of another circuit": (
        lambda d: _npz(d / "checkpoint.npz", **{"params/W1": GOOD["W1"], "epoch": np.asarray(1),
                                               "history": np.asarray("[{}]")}),
        "checkpoint.npz: damaged checkpoint: it holds other arrays than this run's (missing params/W2"),
    "missing run.json": (lambda d: (d / "run.json").unlink(), "run.json is missing, so nothing says which file"),
    "invalid run.json": (lambda d: (d / "run.json").write_text('{"seed": 0,'), "run.json is damaged ("),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(DAMAGE))
def test_resume_reports_a_damaged_run_as_such(finished_run, tmp_path, name):
    damage, message = DAMAGE[name]
    out = _damaged(finished_run, tmp_path, damage)
    err = fails(circuitc("train", TINY, "--epochs", 2, "--out", out, "--resume", *FAST), 1, f"{out}/", message)
    assert "different file sha256" not in err


# ---------------------------------------------------------- run directories --
@pytest.mark.slow
def test_out_that_cannot_be_a_directory(tmp_path):
    (tmp_path / "a_file").write_text("not a directory")
    fails(circuitc("train", TINY, "--out", tmp_path / "a_file", *FAST), 1,
          f"--out {tmp_path}/a_file: is a file, not a directory")
    fails(circuitc("simulate", TINY, "--out", tmp_path / "a_file" / "run"), 1,
          f"--out {tmp_path}/a_file/run: cannot create the directory (Not a directory)")
    assert (tmp_path / "a_file").read_text() == "not a directory"


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs sysfs, which refuses new files even to root")
def test_out_on_a_filesystem_that_refuses_writes():
    """Tests run as root, whom chmod does not stop; sysfs refuses files to everyone."""
    fails(circuitc("train", TINY, "--out", "/sys/circuitlang-run", *FAST), 1,
          "--out /sys/circuitlang-run: cannot create the directory (")
    fails(circuitc("train", TINY, "--out", "/sys/kernel", *FAST), 1,
          "--out /sys/kernel: cannot write in the directory (")


@pytest.mark.slow
def test_a_disk_that_refuses_the_write(tmp_path):
    """RLIMIT_FSIZE makes the kernel refuse a write past 2 KiB, as a full disk refuses any:
    the run stops with exit 1 naming the file, and leaves no temporary behind."""
    out = tmp_path / "run"
    # the limit is set by a shell between us and the child (no preexec_fn: forking a
    # process that runs JAX's threads warns, and the tests turn warnings into errors);
    # SIGXFSZ ignored there stays ignored across exec, so a refused write is an error
    # (EFBIG), not a kill. bash counts `ulimit -f` in 1024-byte blocks: 2 KiB.
    cmd = [sys.executable, "-m", "circuitlang", "train", TINY, "--epochs", "1", "--out", str(out), *map(str, FAST)]
    r = subprocess.run(["bash", "-c", 'trap "" XFSZ; ulimit -f 2; exec "$@"', "bash", *cmd], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    err = fails(r, 1, f"error: {out}/", ": cannot write (File too large)")
    assert [n for n in os.listdir(out) if ".tmp" in n] == [], err


@pytest.mark.slow
def test_a_finished_run_is_not_overwritten(finished_run, tmp_path):
    out = _damaged(finished_run, tmp_path, lambda d: None)
    before = (out / "metrics.json").read_bytes()
    fails(circuitc("train", TINY, "--epochs", 1, "--out", out, *FAST, "--seed", 3), 1,
          f"{out} already holds a run (checkpoint.npz, metrics.json); continue it with --resume, "
          "start it over with --force")
    assert (out / "metrics.json").read_bytes() == before
    fails(circuitc("train", TINY, "--out", out, "--resume", "--force"), 2,
          "argument --force: not allowed with argument --resume")
    r = circuitc("train", TINY, "--epochs", 1, "--out", out, *FAST, "--seed", 3, "--force")
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "run.json").read_text())["seed"] == 3
    assert sorted(os.listdir(out)) == ["checkpoint.npz", "curves.png", "metrics.csv", "metrics.json",
                                       "params.npz", "run.json"]


@pytest.mark.slow
def test_only_the_temporaries_of_gone_writers_are_removed(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    live = subprocess.Popen(["sleep", "120"])
    gone = subprocess.Popen(["true"])
    gone.wait()
    try:
        (out / f".params.npz.tmp{live.pid}").write_bytes(b"another run's write, in flight")
        (out / f".metrics.json.tmp{gone.pid}").write_bytes(b"left by a killed run")
        r = circuitc("train", TINY, "--epochs", 1, "--out", out, *FAST)
        assert r.returncode == 0, r.stderr
        assert [n for n in os.listdir(out) if ".tmp" in n] == [f".params.npz.tmp{live.pid}"]
    finally:
        live.kill()
        live.wait()


@pytest.mark.slow
def test_two_runs_into_one_directory(tmp_path):
    """The second run stops, naming the first's pid; a kill -9 frees the directory."""
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "circuitlang", "train", TINY, "--epochs", "100000",
                              "--out", out, *FAST], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / "metrics.json").exists():
            assert first.poll() is None and time.monotonic() < deadline, "the first run did not start"
            time.sleep(0.05)
        fails(circuitc("train", TINY, "--epochs", 1, "--out", out, "--resume", *FAST), 1,
              f"another run (pid {first.pid}) is writing {out}; wait for it to finish, or train into another --out")
        assert first.poll() is None, "the second run stopped the first"
    finally:
        first.kill()
        first.wait()
    r = circuitc("train", TINY, "--epochs", 1, "--out", out, "--resume", *FAST)
    assert r.returncode == 0, r.stderr
    assert not (out / ".lock").exists()


# ------------------------------------------------------ --set optimizer.lr --
@pytest.mark.slow
def test_set_optimizer_lr_sets_every_rate_and_run_json_says_so(tmp_path):
    """tiny_hopfield.circ gives every weight its own rate (`lr W1=0.8, W2=0.4, ...`): `optimizer.lr`
    used to change nothing while run.json recorded it. Now it sets them all, `optimizer.lr.W1`
    wins for its weight (given before or after), and run.json records the rates in effect;
    `optimizer.lr=0` therefore leaves the parameters where they started."""
    runs = {
        "zero": ("--set", "optimizer.lr=0"),
        "mixed": ("--set", "optimizer.lr.W1=0.2", "--set", "optimizer.lr=0.3"),
        "file": (),
    }
    procs = {name: subprocess.Popen(
        [sys.executable, "-m", "circuitlang", "train", TINY, "--epochs", "1", "--out", str(tmp_path / name),
         *FAST, *flags], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, flags in runs.items()}
    for name, p in procs.items():
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, (name, err)
    rates = {name: json.loads((tmp_path / name / "run.json").read_text())["learning_rates"] for name in runs}
    assert rates == {
        "zero": {"W1": 0.0, "W2": 0.0, "h.bias": 0.0, "y.bias": 0.0},
        "mixed": {"W1": 0.2, "W2": 0.3, "h.bias": 0.3, "y.bias": 0.3},
        "file": {"W1": 0.8, "W2": 0.4, "h.bias": 0.8, "y.bias": 0.4},
    }
    with np.load(tmp_path / "zero" / "params.npz") as zero, np.load(tmp_path / "file" / "params.npz") as file:
        with np.load(tmp_path / "zero" / "checkpoint.npz") as ck:
            assert int(ck["epoch"]) == 1
        # the same seed starts both runs from the same parameters: lr 0 is that start
        init = _initial_params(TINY)
        for k in init:
            assert np.array_equal(zero[k], init[k]), k
            assert not np.array_equal(file[k], init[k]), k


def _initial_params(path):
    """The parameters `train --seed 0` starts from (what zero epochs return)."""
    r = subprocess.run([sys.executable, "-c", INIT, path], cwd=ROOT, capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr
    with np.load(io.BytesIO(r.stdout)) as f:
        return {k: f[k] for k in f.files}


INIT = r"""
import io, sys, numpy as np, circuitlang as cl
from circuitlang.data import load
p = cl.train(cl.compile(cl.load(sys.argv[1])), load("digits"), 0, seed=0, progress=False).params  # 0 epochs
buf = io.BytesIO(); np.savez(buf, **{k: np.asarray(v) for k, v in p.items()})
sys.stdout.buffer.write(buf.getvalue())
"""


@pytest.mark.parametrize("settings", [
    [("optimizer.lr.W1", "0.2"), ("optimizer.lr", "0.3")],
    [("optimizer.lr", "0.3"), ("optimizer.lr.W1", "0.2")],
])
def test_one_weights_rate_wins_over_optimizer_lr_in_either_order(settings):
    import circuitlang as cl
    from circuitlang.optim import rates

    model = cl.compile(cl.load(ROOT / TINY), dict(settings))
    assert rates(model.learning.optimizer, model.trainable) == {"W1": 0.2, "W2": 0.3, "h.bias": 0.3, "y.bias": 0.3}
