"""Shaped circuits from the command line: a convolutional circuit is checked, drawn,
trained (on CIFAR-10 files written here in the real binary format, with augmentation),
evaluated, simulated and verified like any other."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from .conftest import ROOT
from .test_data import write_cifar10

pytestmark = pytest.mark.slow

CONV = "tests/circuits/tiny_conv.circ"


def circuitc(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "circuitlang", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar10(root, n_train=6, n_test=5)
    return root


def test_check_and_render_show_shapes_kernels_and_pooling(tmp_path):
    out = circuitc("check", CONV)
    assert out.returncode == 0, out.stderr
    assert "x [3, 32, 32]" in out.stdout and "h [4, 8, 8]  bias per channel" in out.stdout
    assert "conv 3×3 stride 2 pad 1 → max-pool 2×2  ([3, 32, 32] → [4, 8, 8], 3×3×3×4)" in out.stdout
    dot = tmp_path / "net.dot"
    assert circuitc("render", CONV, "-o", dot).returncode == 0
    text = dot.read_text()
    assert "[3, 32, 32]" in text and "K: conv 3×3 stride 2 pad 1 → max-pool 2×2" in text


def test_train_on_cifar_with_augmentation_then_evaluate_and_resume(cifar, tmp_path):
    run = tmp_path / "run"
    out = circuitc("train", CONV, "--data", f"cifar10:{cifar}", "--augment", "crop,flip",
                   "--out", run, "--no-progress")
    assert out.returncode == 0, out.stderr
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["augment"] == ["crop", "flip"] and manifest["data"].startswith("cifar10:")
    with np.load(run / "params.npz", allow_pickle=False) as f:
        assert f["K"].shape == (3, 3, 3, 4) and f["h.bias"].shape == (4,) and f["W"].shape == (10, 256)
    history = json.loads((run / "metrics.json").read_text())
    assert len(history) == 2 and all(np.isfinite(r["train_loss"]) for r in history)
    ev = circuitc("evaluate", CONV, "--params", run / "params.npz", "--data", f"cifar10:{cifar}")
    assert ev.returncode == 0 and "accuracy" in ev.stdout, ev.stderr
    # the augmentation is part of the run: resuming with another one is refused
    other = circuitc("train", CONV, "--data", f"cifar10:{cifar}", "--out", run, "--resume", "--epochs", "3",
                     "--no-progress")
    assert other.returncode == 1 and "different augment" in other.stderr


def test_augmenting_a_vector_input_is_refused(tmp_path):
    out = circuitc("train", "tests/circuits/tiny_hopfield.circ", "--augment", "crop", "--out", tmp_path / "r",
                   "--no-progress")
    assert out.returncode == 1 and "give it a shape [C, H, W]" in out.stderr
    bad = circuitc("train", CONV, "--augment", "crop,rotate", "--out", tmp_path / "r2", "--no-progress")
    assert bad.returncode == 1 and "unknown augmentation `rotate`" in bad.stderr


def test_data_of_the_wrong_shape_is_refused_with_the_fix(tmp_path):
    out = circuitc("train", CONV, "--data", "digits", "--out", tmp_path / "r", "--no-progress")
    assert out.returncode == 1
    assert "images [1, 8, 8]" in out.stderr and "population `x` is [3, 32, 32]" in out.stderr


def test_simulate_writes_traces_in_the_written_layout(cifar, tmp_path):
    out = circuitc("simulate", CONV, "--data", f"cifar10:{cifar}", "--samples", "2", "--out", tmp_path)
    assert out.returncode == 0, out.stderr
    with np.load(tmp_path / "traces.npz", allow_pickle=False) as f:
        assert f["free/h"].shape == (7, 2, 4, 8, 8)  # steps + 1, samples, C, H, W
    rec = circuitc("simulate", CONV, "--data", f"cifar10:{cifar}", "--samples", "2", "--record", "x,h", "--out", tmp_path / "x")
    assert rec.returncode == 0, rec.stderr
    with np.load(tmp_path / "x" / "traces.npz", allow_pickle=False) as f:
        assert f["free/x"].shape == (2, 3, 32, 32)  # a clamped input, as given


def test_verify_compares_the_conv_estimator_with_the_true_gradient(cifar, tmp_path):
    out = circuitc("verify", CONV, "--data", f"cifar10:{cifar}", "--samples", "2", "--betas", "0.01",
                   "--set", "phase.free.steps=60", "--set", "phase.nudge.steps=60", "--out", tmp_path)
    assert out.returncode == 0, out.stderr
    assert "K" in out.stdout and (tmp_path / "verify.csv").exists()
