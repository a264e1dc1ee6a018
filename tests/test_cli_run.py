"""`circuitc train | evaluate | simulate | verify | compile`, run as users run
them: `python -m circuitlang ...` in subprocesses.

Each subprocess pays for importing JAX and compiling, so the independent
commands are all started at once by a module fixture (a few at a time) and
each test waits for its own; the kill -9 test, which needs its own timing,
runs alongside them.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from .conftest import ROOT

pytestmark = pytest.mark.slow

CIRCUITS = ROOT / "tests" / "circuits"
TINY = str((CIRCUITS / "tiny_hopfield.circ").relative_to(ROOT))
EPOCHS = 8
# the training runs relax longer than the file says, so that an epoch's compute
# (not its file writes) is most of a run and a kill -9 lands mid-run
SLOW = ("--set", "phase.free.steps=200")
SHAPES = {"W1": (16, 64), "W2": (10, 16), "h.bias": (16,), "y.bias": (10,)}
TIMING = ("seconds", "eval_seconds")
PNG = b"\x89PNG\r\n\x1a\n"


def command(*args) -> list[str]:
    return [sys.executable, "-m", "circuitlang", *map(str, args)]


def circuitc(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def metrics(rows):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def read_params(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


# ------------------------------------------------------------ the commands --
ERRORS = {
    # name: (args, exit code, what stderr must say); {tmp} is a scratch directory
    "unknown data": (("train", TINY, "--data", "nope", "--out", "{tmp}/a"), 1, "unknown dataset `nope`"),
    "fashion-mnist missing": (
        ("train", TINY, "--data", "fashion-mnist:/nonexistent", "--out", "{tmp}/b"), 1,
        "fashion-mnist: directory /nonexistent does not exist"),
    "missing params": (("evaluate", TINY, "--params", "{tmp}/nope/params.npz"), 1, "no such parameter file"),
    "wrong-shape params": (
        ("evaluate", TINY, "--params", "{tmp}/wrong.npz"), 1,
        "W1 is (3, 3), the circuit wants (16, 64)"),
    "unknown phase": (
        ("train", TINY, "--set", "phase.nope.steps=3", "--out", "{tmp}/c"), 1, "there is no phase `nope`"),
    "--set without =": (("train", TINY, "--set", "badkey", "--out", "{tmp}/d"), 2, "--set badkey: write KEY=VALUE"),
    "resume without checkpoint": (
        ("train", TINY, "--resume", "--out", "{tmp}/e"), 1, "has no checkpoint.npz to resume from"),
    "devices do not divide the batch": (
        ("train", TINY, "--devices", "3", "--out", "{tmp}/f"), 1, "batch 32 does not split evenly over 3 devices"),
}


# Every bad input above goes through the command line's `main` in one process
# (an interpreter and JAX import per case would cost more than the rest of this
# file); `__main__` is `sys.exit(main())`, so its return value is the exit code.
# Two of them also run as `python -m circuitlang` processes (test_bad_input_as_a_process).
ERROR_DRIVER = r"""
import contextlib, io, json, sys, traceback
from circuitlang.cli import main

results = {}
for name, argv in json.loads(sys.argv[1]).items():
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except BaseException:  # an exception escaping main is what users would see as a traceback
        code = None
        err.write(traceback.format_exc())
    results[name] = {"code": code, "stderr": err.getvalue()}
print(json.dumps(results))
"""
AS_PROCESS = ("unknown data", "--set without =")


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    """Start every independent command now; `jobs[name].result()` waits for one."""
    tmp = tmp_path_factory.mktemp("cli")
    np.savez(tmp / "wrong.npz", W1=np.zeros((3, 3), np.float32), W2=np.zeros((10, 16), np.float32),
             **{"h.bias": np.zeros(16, np.float32), "y.bias": np.zeros(10, np.float32)})
    pool = ThreadPoolExecutor(max_workers=3)
    futures = {}

    def submit(name, *args, after=None):
        def run():
            if after is not None:
                after.result()
            return circuitc(*args)
        futures[name] = pool.submit(run)

    ref = tmp / "ref"
    submit("train", "train", TINY, "--epochs", EPOCHS, "--out", ref, "--no-progress", *SLOW)
    submit("evaluate", "evaluate", TINY, "--params", ref / "params.npz", "--data", "digits", *SLOW,
           after=futures["train"])
    submit("simulate", "simulate", TINY, "--samples", 2, "--out", tmp / "sim",
           "--set", "phase.free.steps=60", "--set", "phase.nudge.steps=30")
    submit("verify", "verify", TINY, "--samples", 4, "--betas", "0.5,0.05", "--out", tmp / "verify")
    submit("jaxpr", "compile", TINY, "--emit", "jaxpr")
    submit("hlo", "compile", TINY, "--emit", "hlo")
    argvs = {name: [a.format(tmp=tmp) for a in args] for name, (args, _, _) in ERRORS.items()}
    futures["errors"] = pool.submit(
        subprocess.run, [sys.executable, "-c", ERROR_DRIVER, json.dumps(argvs)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    for name in AS_PROCESS:
        submit(name, *argvs[name])
    futures["dirs"] = {"tmp": tmp, "ref": ref}
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result


# -------------------------------------------------------------------- train --
def test_kill_9_mid_run_then_resume(jobs, tmp_path):
    """kill -9 at a random moment after the first checkpoint exists: what is on
    disk is complete and loads, and --resume finishes with the uninterrupted run's numbers."""
    out = tmp_path / "killed"
    delay = random.uniform(0.0, 0.5)
    log = open(tmp_path / "killed.log", "w")
    proc = subprocess.Popen(command("train", TINY, "--epochs", EPOCHS, "--out", out, "--no-progress", *SLOW),
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while not (out / "metrics.json").exists():  # written after checkpoint.npz and params.npz
            ended = proc.poll() is not None
            assert not ended, f"the run ended before its first checkpoint: {(tmp_path / 'killed.log').read_text()}"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    why = f"(killed {delay:.3f}s after epoch 1's metrics.json was written)"
    assert proc.returncode == -signal.SIGKILL, f"the run finished before the kill {why}"

    # what the kill left: every file complete; at most a hidden temporary of the killed process,
    # and the lock file it held (the kernel released the lock itself)
    names = sorted(p.name for p in out.iterdir() if p.name != ".lock")
    files = ("checkpoint.npz", "curves.png", "metrics.csv", "metrics.json", "params.npz", "run.json")
    visible = [n for n in names if not n.startswith(".")]
    assert {"checkpoint.npz", "metrics.json", "params.npz", "run.json"} <= set(visible), (names, why)
    assert set(visible) <= set(files), (names, why)
    for n in names:
        if n.startswith("."):
            assert re.fullmatch(rf"\.({'|'.join(map(re.escape, files))})\.tmp{proc.pid}", n), (n, why)
    params = read_params(out / "params.npz")
    assert {k: v.shape for k, v in params.items()} == SHAPES, why
    with np.load(out / "checkpoint.npz", allow_pickle=False) as f:
        epoch_at_kill = int(f["epoch"])
        assert {k[len("params/"):] for k in f.files if k.startswith("params/")} == set(SHAPES)
    assert 1 <= epoch_at_kill < EPOCHS, why
    rows_at_kill = len(json.loads((out / "metrics.json").read_text()))
    assert rows_at_kill in (epoch_at_kill - 1, epoch_at_kill), why
    json.loads((out / "run.json").read_text())
    if "metrics.csv" in visible:
        with open(out / "metrics.csv", newline="") as f:
            assert len(list(csv.DictReader(f))) in (rows_at_kill, rows_at_kill - 1)
    if "curves.png" in visible:
        assert (out / "curves.png").read_bytes()[:8] == PNG

    resumed = ok(circuitc("train", TINY, "--epochs", EPOCHS, "--out", out, "--no-progress", *SLOW, "--resume"))
    assert f"for {EPOCHS} epochs" in resumed.stdout
    # the resumed run removes the killed run's temporaries and leaves none of its own
    assert [n for n in os.listdir(out) if ".tmp" in n] == []

    ref = jobs["dirs"]["ref"]
    ok(jobs["train"].result())
    final, expected = read_params(out / "params.npz"), read_params(ref / "params.npz")
    got_rows = json.loads((out / "metrics.json").read_text())
    want_rows = json.loads((ref / "metrics.json").read_text())
    same = all(np.array_equal(final[k], expected[k]) for k in expected) and metrics(got_rows) == metrics(want_rows)
    assert same, why
    assert len(got_rows) == EPOCHS


def test_train_command(jobs):
    r = ok(jobs["train"].result())
    ref = jobs["dirs"]["ref"]
    rows = json.loads((ref / "metrics.json").read_text())
    assert len(rows) == EPOCHS and [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1))
    last = rows[-1]
    assert f"trained TinyHopfield for {EPOCHS} epochs: train_loss {last['train_loss']:.4f}, " \
           f"test_loss {last['test_loss']:.4f}, test_accuracy {last['test_accuracy']:.4f}" in r.stdout
    assert f"wrote {ref}/params.npz" in r.stdout
    assert last["test_accuracy"] > 0.5
    with open(ref / "metrics.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == EPOCHS
    run = json.loads((ref / "run.json").read_text())
    assert run["data"] == "digits" and run["seed"] == 0 and run["epochs"] == EPOCHS and run["file"] == TINY
    assert (ref / "curves.png").read_bytes()[:8] == PNG
    assert {k: v.shape for k, v in read_params(ref / "params.npz").items()} == SHAPES


def test_evaluate_reproduces_the_final_test_accuracy(jobs):
    r = ok(jobs["evaluate"].result())
    last = json.loads((jobs["dirs"]["ref"] / "metrics.json").read_text())[-1]
    assert r.stdout.strip() == f"loss {last['test_loss']:.4f} accuracy {last['test_accuracy']:.4f}"


# ------------------------------------------------------- simulate / verify --
def test_simulate(jobs):
    r = ok(jobs["simulate"].result())
    assert re.search(r"^phase free: converged: residual [0-9.e+-]+ \(tolerance 0.01; h [0-9.e+-]+, y [0-9.e+-]+\)$", r.stdout, re.M)
    assert re.search(r"^phase nudge: (NOT )?converged", r.stdout, re.M)
    sim = jobs["dirs"]["tmp"] / "sim"
    traces = read_params(sim / "traces.npz")
    assert set(traces) == {f"{ph}/{k}" for ph in ("free", "nudge") for k in ("h", "y", "energy")}
    # steps × samples × neurons, the initial state first
    assert traces["free/h"].shape == (61, 2, 16) and traces["free/y"].shape == (61, 2, 10)
    assert traces["free/energy"].shape == (61, 2) and traces["nudge/h"].shape == (31, 2, 16)
    assert np.all(np.isfinite(traces["free/energy"]))
    assert np.all(np.diff(traces["free/energy"], axis=0) <= 1e-5)  # gradient flow: the energy never rises
    assert (sim / "traces.png").read_bytes()[:8] == PNG


def test_verify(jobs):
    r = ok(jobs["verify"].result())
    lines = r.stdout.splitlines()
    assert lines[0].startswith("residuals (max |s_T - s_(T-1)| / dt")  # then one line per relaxation
    assert lines[1].startswith("  free phase (the reference's fixed point): ")
    assert [ln.split(":")[0].strip() for ln in lines[2:4]] == ["β = 0.5", "β = 0.05"]
    lines = lines[4:]
    assert lines[0] == "estimator `symmetric` vs the true gradient: cosine / rel_error |g−∇|/|∇|"
    assert lines[1].split() == ["beta", "W1", "W2", "h.bias", "y.bias", "all"]
    assert [ln.split()[0] for ln in lines[3:5]] == ["0.5", "0.05"]
    out = jobs["dirs"]["tmp"] / "verify"
    with open(out / "verify.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["beta", "weight", "cosine", "rel_error", "converged", "file_beta", "tiny_reference"]
    assert [(float(r["beta"]), r["weight"]) for r in rows] == [
        (b, w) for b in (0.5, 0.05) for w in ("W1", "W2", "h.bias", "y.bias", "all")]
    assert all(-1 <= float(r["cosine"]) <= 1 and float(r["rel_error"]) >= 0 for r in rows)
    assert (out / "verify.png").read_bytes()[:8] == PNG


# ------------------------------------------------------------------ compile --
def test_compile_jaxpr(jobs):
    r = ok(jobs["jaxpr"].result())
    assert "{ lambda " in r.stdout
    assert re.search(r"\b(while|scan)\[", r.stdout)


def test_compile_hlo(jobs):
    r = ok(jobs["hlo"].result())
    assert "HloModule" in r.stdout or re.search(r"^module @", r.stdout, re.M)
    assert "while" in r.stdout


# ------------------------------------------------------------------- errors --
@pytest.fixture(scope="module")
def errors(jobs):
    r = ok(jobs["errors"].result())
    return json.loads(r.stdout)


@pytest.mark.parametrize("name", list(ERRORS))
def test_bad_input_is_a_clean_error(errors, name):
    _, code, message = ERRORS[name]
    r = errors[name]
    assert r["code"] == code, r
    assert message in r["stderr"]
    assert "Traceback" not in r["stderr"] and "internal error" not in r["stderr"]


@pytest.mark.parametrize("name", AS_PROCESS)
def test_bad_input_as_a_process(jobs, name):
    _, code, message = ERRORS[name]
    r = jobs[name].result()
    assert r.returncode == code, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert message in r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr


def test_the_compilation_cache_is_used_and_changes_nothing(tmp_path):
    """Issue #10 item 5: a second run of the same file loads XLA's compiled programs from
    `<cache>/jax` instead of compiling them, and trains to bit-identical parameters;
    --no-compile-cache stores nothing."""
    import numpy as np

    def run(out, *extra, cache="cache"):
        env = {**os.environ, "CIRCUITLANG_CACHE": str(tmp_path / cache)}
        r = subprocess.run([sys.executable, "-m", "circuitlang", "train", "tests/circuits/tiny_hopfield.circ",
                            "--epochs", "1", "--out", str(tmp_path / out), "--no-progress", *extra],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        return dict(np.load(tmp_path / out / "params.npz"))

    first = run("a")
    stored = sorted(p.name for p in (tmp_path / "cache" / "jax").iterdir())
    assert any(n.startswith("jit_epoch") for n in stored), stored
    second = run("b")
    after = sorted(p.name for p in (tmp_path / "cache" / "jax").iterdir())
    # the epoch program is a hit (no second entry for it); a small program whose compile time
    # crossed JAX's storage threshold (0.2 s) on a busy machine may be stored by either run
    epoch = lambda names: [n for n in names if n.startswith("jit_epoch")]  # noqa: E731
    assert epoch(after) == epoch(stored) and set(stored) <= set(after), (stored, after)
    assert first.keys() == second.keys() and all(np.array_equal(first[k], second[k]) for k in first)
    run("c", "--no-compile-cache", cache="other")
    assert not (tmp_path / "other" / "jax").exists()
