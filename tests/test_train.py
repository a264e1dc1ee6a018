"""Training in-process: determinism, resume, sharding, the files a run writes,
optimizers from the file, and that learning happens.

JAX compilation dominates the cost (every `train` call compiles its epoch and
its evaluation), so the runs are shared module fixtures on tiny 64-16-10
circuits (`tests/circuits/`), and the runs that need their own process (four
forced CPU devices) go to one worker subprocess started with the module, which
compiles on the second core while this process compiles on the first.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import circuitlang as cl
from circuitlang.data import load as load_data
from circuitlang.errors import CircuitError
from circuitlang.optim import make_optimizer
from circuitlang.training import load_params, train

from .conftest import ROOT

pytestmark = pytest.mark.slow

CIRCUITS = ROOT / "tests" / "circuits"
TINY = CIRCUITS / "tiny_hopfield.circ"          # sgd, per-weight lr
SGD_FIXED = CIRCUITS / "tiny_sgd_fixed.circ"    # W1 fixed, W2 lr 0, momentum + nesterov, base lr 0.1
ADAM = CIRCUITS / "tiny_adam_cosine.circ"       # adam, schedule cosine warmup=20
TIMING = ("seconds", "eval_seconds")
LR_OVERRIDE = 0.02


def metrics(history):
    """The history without the wall-clock columns (those never repeat)."""
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history]


def same_params(a, b) -> bool:
    return set(a) == set(b) and all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)


# ----------------------------------------------------------------- worker --
# Runs in a subprocess with four forced CPU devices (the flag must never reach
# this process): the sharded run, the `--devices 8` error, and two runs whose
# only job is to differ (another seed, `optimizer.lr` overridden).
WORKER = r"""
import contextlib, io, json, sys
import numpy as np
import jax
import circuitlang as cl
from circuitlang.cli import main
from circuitlang.data import load
from circuitlang.training import train

tiny, sgd_fixed, out, lr = sys.argv[1:5]
data = load("digits")
arrays, results = {}, {"devices": len(jax.devices())}

def keep(name, result):
    arrays.update({f"{name}/{k}": np.asarray(v) for k, v in result.params.items()})
    results[name] = result.history

model = cl.compile(cl.load(tiny))
keep("devices4", train(model, data, 1, seed=0, devices=4, progress=False))
keep("seed1", train(model, data, 1, seed=1, progress=False))
sgd = cl.compile(cl.load(sgd_fixed), {"optimizer.lr": float(lr)})
keep("lr_init", train(sgd, data, 0, seed=0, progress=False))
keep("lr_override", train(sgd, data, 1, seed=0, progress=False))
err = io.StringIO()
with contextlib.redirect_stderr(err):
    rc = main(["train", tiny, "--devices", "8", "--epochs", "1", "--out", out + "/d8", "--no-progress"])
results["devices8"] = {"rc": rc, "stderr": err.getvalue()}
np.savez(out + "/arrays.npz", **arrays)
with open(out + "/results.json", "w") as f:
    json.dump(results, f)
"""


@pytest.fixture(scope="module", autouse=True)
def worker(tmp_path_factory):
    out = tmp_path_factory.mktemp("worker")
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(TINY), str(SGD_FIXED), str(out), str(LR_OVERRIDE)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    done = {}

    def result():
        if not done:
            try:
                stdout, stderr = proc.communicate(timeout=300)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
            assert proc.returncode == 0, f"worker failed:\n{stdout}\n{stderr}"
            with np.load(out / "arrays.npz", allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
            done["results"] = json.loads((out / "results.json").read_text())
            done["arrays"] = arrays
        return done

    def params(name):
        arrays = result()["arrays"]
        return {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(name + "/")}

    result.params = params
    yield result
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


# ------------------------------------------------------------ shared runs --
@pytest.fixture(scope="module", autouse=True)
def no_x64():
    """These runs are float32 whatever an earlier test did to the global flag."""
    with jax.enable_x64(False):
        yield


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


@pytest.fixture(scope="module")
def tiny():
    return cl.compile(cl.load(TINY))


@pytest.fixture(scope="module")
def run3(tiny, digits, tmp_path_factory):
    """seed 0, three epochs straight, with files; `.snapshots` = params.npz after each epoch."""
    out = tmp_path_factory.mktemp("run3")
    snapshots = []

    def snap(row):
        with np.load(out / "params.npz", allow_pickle=False) as f:
            snapshots.append({k: f[k] for k in f.files})

    result = train(tiny, digits, 3, seed=0, out=out, progress=False, on_epoch=snap)
    result.snapshots = snapshots
    return result


@pytest.fixture(scope="module")
def run1(tiny, digits, tmp_path_factory):
    """seed 0, one epoch, with files (resumed by `resumed`)."""
    out = tmp_path_factory.mktemp("run1")
    result = train(tiny, digits, 1, seed=0, out=out, progress=False)
    result.files = {k: np.asarray(v) for k, v in load_params(out / "params.npz").items()}
    return result


@pytest.fixture(scope="module")
def resumed(run1, tiny, digits):
    """`run1`'s directory resumed to three epochs."""
    return train(tiny, digits, 3, seed=0, out=run1.out, resume=True, progress=False)


# ---------------------------------------------------------- determinism --
def test_same_seed_same_params_and_metrics(run1, run3):
    # two independent runs from scratch, seed 0: epoch 1 is identical, bit for bit
    assert same_params(run1.params, run3.snapshots[0])
    assert metrics(run1.history) == metrics(run3.history[:1])
    assert same_params(run1.files, run1.params)  # what is on disk is what was returned


def test_different_seed_differs(run1, worker, tiny, digits):
    seed1 = worker.params("seed1")
    assert set(seed1) == set(run1.params)
    for k in run1.params:
        assert not np.array_equal(seed1[k], np.asarray(run1.params[k])), k
    assert worker()["results"]["seed1"][0]["train_loss"] != run1.history[0]["train_loss"]
    # the initialisation alone differs (epochs=0 returns it without training)
    a, b = train(tiny, digits, 0, seed=0, progress=False), train(tiny, digits, 0, seed=1, progress=False)
    assert a.history == [] and not np.array_equal(a.params["W1"], b.params["W1"])
    assert same_params(a.params, train(tiny, digits, 0, seed=0, progress=False).params)


# --------------------------------------------------------------- resume --
def test_resume_is_bit_for_bit(run3, resumed):
    assert len(resumed.history) == 3
    assert same_params(resumed.params, run3.params)
    assert metrics(resumed.history) == metrics(run3.history)
    # and the files agree with the uninterrupted run's
    on_disk = json.loads((resumed.out / "metrics.json").read_text())
    assert metrics(on_disk) == metrics(run3.history)
    assert same_params(load_params(resumed.out / "params.npz"), run3.params)


def test_resume_when_finished_trains_nothing(resumed, tiny, digits):
    again = train(tiny, digits, 3, seed=0, out=resumed.out, resume=True, progress=False)
    assert metrics(again.history) == metrics(resumed.history)
    assert same_params(again.params, resumed.params)


def test_resume_refuses_other_settings_or_seed(resumed, digits):
    other = cl.compile(cl.load(TINY), {"phase.free.steps": 5})
    with pytest.raises(CircuitError, match="different settings"):
        train(other, digits, 3, seed=0, out=resumed.out, resume=True, progress=False)
    with pytest.raises(CircuitError, match="different seed"):
        train(cl.compile(cl.load(TINY)), digits, 3, seed=7, out=resumed.out, resume=True, progress=False)


def test_resume_after_a_kill_between_checkpoint_and_metrics(run3, tiny, digits, tmp_path):
    # a kill can land after checkpoint.npz (epoch 2) is replaced but before metrics.json is:
    # the checkpoint carries its own history, so resume neither retrains nor loses an epoch
    out = tmp_path / "cut"
    train(tiny, digits, 2, seed=0, out=out, progress=False)
    rows = json.loads((out / "metrics.json").read_text())
    (out / "metrics.json").write_text(json.dumps(rows[:1]))
    (out / ".params.npz.tmp999999").write_bytes(b"half a file")  # a killed writer's leftover
    res = train(tiny, digits, 3, seed=0, out=out, resume=True, progress=False)
    assert same_params(res.params, run3.params)
    assert metrics(json.loads((out / "metrics.json").read_text())) == metrics(run3.history)
    assert not [n for n in os.listdir(out) if ".tmp" in n]


def test_run_json_records_the_resolved_data_spec(tiny, tmp_path):
    data = load_data("synthetic:in=64,out=10,n=128,test=32,seed=3")
    train(tiny, data, 1, out=tmp_path, progress=False)
    spec = json.loads((tmp_path / "run.json").read_text())["data"]
    assert "seed=3" in spec and load_data(spec).spec == data.spec


def test_resume_without_checkpoint(tiny, digits, tmp_path):
    with pytest.raises(CircuitError, match="no checkpoint.npz"):
        train(tiny, digits, 2, out=tmp_path / "empty", resume=True, progress=False)


# ------------------------------------------------------------- sharding --
def test_sharded_run_matches_one_device(run1, worker):
    results = worker()["results"]
    assert results["devices"] == 4
    sharded = worker.params("devices4")
    assert set(sharded) == set(run1.params)
    for k in sharded:
        np.testing.assert_allclose(sharded[k], np.asarray(run1.params[k]), rtol=1e-5, atol=1e-5, err_msg=k)
    a, b = results["devices4"][0], run1.history[0]
    for k in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
        assert a[k] == pytest.approx(b[k], abs=1e-5), k


def test_more_devices_than_exist_is_a_clean_error(worker):
    d8 = worker()["results"]["devices8"]
    assert d8["rc"] == 1
    assert "--devices 8: only 4 device(s)" in d8["stderr"]
    assert "Traceback" not in d8["stderr"]


def test_batch_must_split_over_devices(tiny, digits):
    with pytest.raises(CircuitError, match="batch 32 does not split evenly over 3 devices"):
        train(tiny, digits, 1, devices=3, progress=False)


# ---------------------------------------------------------------- files --
def test_metrics_files(run3):
    cols = ["epoch", "train_loss", "seconds", "train_accuracy", "test_loss", "test_accuracy", "eval_seconds",
            # training health (circuitlang/health.py), sorted
            "converged", "converged.free", "converged.nudge+", "converged.nudge-",
            "free_residual_max", "free_residual_mean", "nudged_residual_max", "nudged_residual_mean",
            "saturated.h", "saturated.y", "update_ratio.W1", "update_ratio.W2", "update_ratio.h.bias",
            "update_ratio.y.bias"]
    rows = json.loads((run3.out / "metrics.json").read_text())
    assert [list(r) for r in rows] == [cols] * 3
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows == run3.history
    with open(run3.out / "metrics.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == cols and len(table) == 3
    assert [{k: float(v) for k, v in r.items()} for r in table] == [
        {k: float(v) for k, v in r.items()} for r in run3.history
    ]


def test_curves_png(run3):
    png = (run3.out / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_run_json(run3, tiny):
    run = json.loads((run3.out / "run.json").read_text())
    assert run["file_sha256"] == hashlib.sha256(TINY.read_text().encode()).hexdigest()
    assert run["seed"] == 0 and run["epochs"] == 3 and run["devices"] == 1
    assert run["circuit"] == "TinyHopfield" and run["data"] == "digits"
    assert {"circuitlang", "jax", "numpy", "optax", "python"} <= set(run["versions"])
    assert run["versions"]["jax"] == jax.__version__ and run["versions"]["circuitlang"] == cl.__version__
    settings = run["settings"]
    assert [(p["name"], p["steps"]) for p in settings["phases"]] == [("free", 8), ("nudge", 3)]
    assert settings["batch"] == 32
    assert settings["optimizer"]["name"] == "sgd"
    assert settings["optimizer"]["lr_per_param"] == {"W1": 0.8, "W2": 0.4, "h.bias": 0.8, "y.bias": 0.4}


def test_params_and_checkpoint_files(run3, tiny):
    with np.load(run3.out / "params.npz", allow_pickle=False) as f:
        on_disk = {k: f[k] for k in f.files}
    assert {k: v.shape for k, v in on_disk.items()} == {k: tuple(s) for k, s in tiny.shapes.items()}
    assert {k: tuple(s) for k, s in tiny.shapes.items()} == {
        "W1": (16, 64), "W2": (10, 16), "h.bias": (16,), "y.bias": (10,)}
    assert same_params(on_disk, run3.params)
    with np.load(run3.out / "checkpoint.npz", allow_pickle=False) as f:
        assert int(f["epoch"]) == 3
        assert same_params({k[len("params/"):]: f[k] for k in f.files if k.startswith("params/")}, run3.params)
    # atomic writes leave nothing behind
    assert sorted(p.name for p in run3.out.iterdir()) == [
        "checkpoint.npz", "curves.png", "metrics.csv", "metrics.json", "params.npz", "run.json"]


# ------------------------------------------------------------ learning --
def test_learning_happens(run3):
    losses = [r["train_loss"] for r in run3.history]
    assert losses[0] > losses[1] > losses[2]
    assert run3.history[-1]["test_loss"] < run3.history[0]["test_loss"]
    assert run3.history[-1]["test_accuracy"] > 0.5  # ten classes: chance is 0.1
    assert run3.history[-1]["train_accuracy"] > 0.5


# ----------------------------------------------------------- optimizers --
@pytest.fixture(scope="module")
def sgd_fixed():
    return cl.compile(cl.load(SGD_FIXED))


@pytest.fixture(scope="module")
def sgd_init(sgd_fixed, digits):
    return train(sgd_fixed, digits, 0, seed=0, progress=False).params  # epochs=0: the initialisation


@pytest.fixture(scope="module")
def sgd_run(sgd_fixed, digits):
    return train(sgd_fixed, digits, 1, seed=0, progress=False)


def test_fixed_and_zero_lr_weights_do_not_move(sgd_run, sgd_init):
    assert np.isfinite(sgd_run.history[0]["train_loss"])
    assert np.array_equal(sgd_run.params["W1"], sgd_init["W1"])  # `fixed`
    assert np.array_equal(sgd_run.params["W2"], sgd_init["W2"])  # `lr ..., W2=0`
    for bias in ("h.bias", "y.bias"):                             # the block's lr 0.1
        assert not np.array_equal(sgd_run.params[bias], sgd_init[bias]), bias


def test_optimizer_lr_override_changes_the_result(sgd_run, worker):
    # the same circuit, seed and data as `sgd_run`, with `--set optimizer.lr=0.02` (instead of 0.1):
    # every rate is 0.02, the file's `W2=0` included; the `fixed` W1 stays fixed
    override, init = worker.params("lr_override"), worker.params("lr_init")
    assert np.array_equal(override["W1"], init["W1"]) and not np.array_equal(override["W2"], init["W2"])
    moved = {}
    for name, params in (("override", override), ("default", sgd_run.params)):
        moved[name] = sum(float(np.abs(np.asarray(params[b]) - init[b]).sum()) for b in ("h.bias", "y.bias"))
    assert 0 < moved["override"] < moved["default"]  # a smaller rate moves the biases less


def test_momentum_from_the_file(sgd_fixed):
    opt = make_optimizer(sgd_fixed.learning.optimizer, sgd_fixed.trainable, 100)
    params = {k: jax.numpy.zeros(s) for k, s in sgd_fixed.shapes.items()}
    grads = {k: jax.numpy.ones(s) for k, s in sgd_fixed.shapes.items()}
    state = opt.init(params)
    u0, state = opt.update(grads, state, params)
    u1, state = opt.update(grads, state, params)
    for k in ("W1", "W2"):  # fixed, and lr 0
        assert not np.any(np.asarray(u0[k])) and not np.any(np.asarray(u1[k])), k
    # Nesterov momentum 0.9 on a constant gradient, lr 0.1: -0.1 * 1.9, then -0.1 * 2.71
    np.testing.assert_allclose(u0["h.bias"], -0.19, rtol=1e-5)
    np.testing.assert_allclose(u1["h.bias"], -0.271, rtol=1e-5)


def test_adam_with_cosine_warmup_trains(digits):
    model = cl.compile(cl.load(ADAM))
    spec = model.learning.optimizer
    assert spec.name == "adam" and spec.settings["schedule"] == "cosine"
    init = train(model, digits, 0, seed=0, progress=False).params
    result = train(model, digits, 2, seed=0, progress=False)
    losses = [r["train_loss"] for r in result.history]
    assert all(np.isfinite(losses)) and losses[1] < losses[0]
    for k in init:
        assert not np.array_equal(result.params[k], init[k]), k
    # warmup from 0: the first step does not move anything, the second does
    opt = make_optimizer(spec, model.trainable, 100)
    params = {k: jax.numpy.zeros(s) for k, s in model.shapes.items()}
    grads = {k: jax.numpy.ones(s) for k, s in model.shapes.items()}
    state = opt.init(params)
    u0, state = opt.update(grads, state, params)
    u1, state = opt.update(grads, state, params)
    assert not np.any(np.asarray(u0["W2"])) and np.all(np.asarray(u1["W2"]) < 0)
    # per-weight lr (W1=0.005) against the block's (0.01): half the step
    np.testing.assert_allclose(np.asarray(u1["W1"]) * 2, np.asarray(u1["W2"])[0, 0], rtol=1e-5)


def test_divergence_names_the_population(digits):
    # a huge learning rate on the predictive circuit: the forward pass overflows
    model = cl.compile(cl.load(ROOT / "examples" / "predictive_coding.circ"), {"optimizer.lr": 50.0})
    with pytest.raises(cl.CircuitRuntimeError, match=r"population `h\d` became non-finite") as info:
        train(model, digits, 2, progress=False)
    assert info.value.span.line >= 1 and "lower the learning rates" in str(info.value)
