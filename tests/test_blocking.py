"""Blocked SGD updates of a large input weight (`circuitlang/blocking.py`) train as one
update per batch does, up to the order of floating-point sums: checked in float64
against the same run with `block=False`, for the continuous (Scellier & Bengio) and
the prototypical forms, with persistent particles, a random sign and a batch count
that leaves a tail outside the blocks; and blocking is left off wherever its
algebra would not hold."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import circuitlang as cl
from circuitlang import blocking, learning, training
from circuitlang.cli import main
from circuitlang.data import load as load_data
from circuitlang.optim import DEFAULT_LR, RULES_LR

from .conftest import ROOT

pytestmark = [pytest.mark.usefixtures("x64"),
              # short relaxations on purpose (the recipes' own step counts); the health
              # warnings they raise are beside the point here
              pytest.mark.filterwarnings("ignore::circuitlang.errors.HealthWarning")]

CONTINUOUS = """
circuit Cont "hard sigmoid, persistent, random sign"
fn rho(x) = clip(x, 0, 1)
population x [64] input
population h [24] min=0 max=1
population y [10] output min=0 max=1
h -- x : W1  init=glorot
y -- h : W2  init=glorot
bias h, y
energy hopfield
cost y squared
learn eqprop {
  phase free  { steps 12; dt 0.5 }
  phase nudge { steps 4;  dt 0.5; beta 1.0 }
  estimator random_sign
  optimizer sgd { lr W1=0.2, W2=0.1, h.bias=0.2, y.bias=0.1 }
  batch 10
  persistent
}
"""

PROTOTYPICAL = """
circuit Proto "prototypical form, symmetric"
fn rho(x) = sigmoid(4 * x - 2)
population x [64] input rho=identity
population h [24]
population y [10] output
h -- x : W1  init=uniform(0.125)
y -- h : W2  init=uniform(0.2)
bias h, y
energy hopfield
cost y squared
learn eqprop {
  phase free  { steps 15; integrator prototypical }
  phase nudge { steps 5; integrator prototypical; beta 0.2 }
  estimator symmetric
  optimizer sgd { lr 0.1 }
  batch 10
}
"""


def _data(n: int = 130):
    """130 digits: 13 batches of 10, three blocks of 4 and one batch after them."""
    d = load_data("digits")
    return dataclasses.replace(d, x_train=d.x_train[:n], y_train=d.y_train[:n],
                               x_test=d.x_test[:50], y_test=d.y_test[:50])


def _small(monkeypatch):
    """Let the small weights of these circuits be blocked (the sizes `plan` asks for are Fashion-MNIST's)."""
    monkeypatch.setattr(blocking, "MIN_ELEMENTS", 1)
    monkeypatch.setattr(blocking, "MAX_EXAMPLES_PER_UNIT", 100.0)


def _float64(monkeypatch):
    """`train` in float64: its parameters take the inputs' dtype (datasets hold float32)."""
    monkeypatch.setattr(training, "_inputs",
                        lambda model, X: model.to_compiled(model.inputs[0], jnp.asarray(X, jnp.float64)))


@pytest.mark.parametrize("text", [CONTINUOUS, PROTOTYPICAL], ids=["continuous", "prototypical"])
def test_blocked_updates_train_as_one_update_per_batch(text, monkeypatch):
    _small(monkeypatch)  # a small W1 qualifies
    _float64(monkeypatch)
    model = cl.compile(cl.loads(text))
    method = training.run_settings(model, None, (), None)[0]
    plan = blocking.plan(model, method, DEFAULT_LR)
    assert plan is not None and plan.names == {"W1"}
    data = _data()
    blocked = training.train(model, data, 2, seed=3, progress=False)
    plain = training.train(model, data, 2, seed=3, progress=False, block=False)
    for name, p in plain.params.items():
        assert p.dtype == np.float64
        np.testing.assert_allclose(blocked.params[name], p, rtol=1e-9, atol=1e-12, err_msg=name)
    # the parameters moved (a wrong drive or a lost update would not agree to 1e-9 then)
    start = model.init(jax.random.fold_in(jax.random.key(3), 10**6), np.float64)
    assert np.max(np.abs(np.asarray(plain.params["W1"]) - np.asarray(start["W1"]))) > 1e-3
    for a, b in zip(blocked.history, plain.history):
        for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
            assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12), key


def test_the_blocked_program_never_reads_the_weight(monkeypatch):
    """Inside a block the estimator gets the weight's drive instead of the weight: a
    read of the weight anywhere else would be a KeyError while tracing, not a stale value."""
    _small(monkeypatch)
    model = cl.compile(cl.loads(CONTINUOUS))
    plan = dataclasses.replace(blocking.plan(model, "random_sign", DEFAULT_LR), size=1)  # a block of one batch
    params = model.init(jax.random.key(0), np.float64)
    x = {"x": jnp.asarray(_data().x_train[:10], jnp.float64)}
    ctx = plan.start(model, params, [x])
    est = blocking.split(plan, params, plan.drives(ctx, 0, []))
    assert "W1" not in est
    g, _ = learning.estimate_with_state(model, est, x, jnp.eye(10)[:10], "one_sided")
    ref, _ = learning.estimate_with_state(model, params, x, jnp.eye(10)[:10], "one_sided")
    # the drive's gradient carried through ρ(x) is the weight's gradient
    w1 = model.fns.wiring.weight_update(plan.weights[0].edge, params, g[blocking.DRIVE + "W1"], ctx["W1"][0])
    np.testing.assert_allclose(w1, ref["W1"], rtol=1e-12, atol=1e-14)
    for name in ("W2", "h.bias", "y.bias"):
        np.testing.assert_allclose(g[name], ref[name], rtol=1e-12, atol=1e-14)


SGD = "optimizer sgd { lr W1=0.2, W2=0.1, h.bias=0.2, y.bias=0.1 }"
W1 = "h -- x : W1  init=glorot"


@pytest.mark.parametrize("changes", [
    [(SGD, "optimizer adam { lr 1e-3 }")],
    [(SGD, "optimizer sgd { lr 0.1; momentum 0.9 }")],
    [(SGD, "optimizer sgd { lr 0.1; weight_decay 1e-4 }")],
    [(SGD, "optimizer sgd { lr 0.1; schedule cosine }")],
    [(SGD, "optimizer sgd { lr 0.1 }"), (W1, W1 + " fixed")],
    [(W1, W1 + " inhibitory")],
    [(W1, W1 + "\nh -- x : W3 = W1")],
], ids=["adam", "momentum", "weight-decay", "schedule", "fixed", "inhibitory", "shared"])
def test_blocking_is_left_off_where_its_algebra_does_not_hold(changes, monkeypatch):
    _small(monkeypatch)
    text = CONTINUOUS
    for old, new in changes:
        assert old in text
        text = text.replace(old, new)
    model = cl.compile(cl.loads(text))
    assert blocking.plan(model, "random_sign", DEFAULT_LR) is None


def test_blocking_needs_an_estimator_a_device_a_large_weight_and_small_batches(monkeypatch):
    sb17 = cl.compile(cl.load(ROOT / "benchmarks" / "circuits" / "fashion_sb17.circ"))
    assert blocking.plan(sb17, "random_sign", DEFAULT_LR).names == {"W1"}  # 4 × 20 examples into 500 units
    assert blocking.plan(sb17, "random_sign", DEFAULT_LR, batch=32) is None  # 128 examples: the Gram grows
    model = cl.compile(cl.loads(CONTINUOUS))
    assert blocking.plan(model, "random_sign", DEFAULT_LR) is None  # 64 × 24 entries: below MIN_ELEMENTS
    _small(monkeypatch)
    assert blocking.plan(model, "random_sign", DEFAULT_LR) is not None
    for method in ("gradient", "bptt"):
        assert blocking.plan(model, method, DEFAULT_LR) is None
    assert blocking.plan(model, "random_sign", DEFAULT_LR, devices=2) is None
    assert blocking.plan(model, "random_sign", DEFAULT_LR, augment=("flip",)) is None


def test_a_rules_circuit_trained_by_an_estimator_blocks_at_its_own_default_rate(monkeypatch):
    """A `learn rules` file's parameters learn at RULES_LR unless the optimizer says
    otherwise; trained with an EqProp estimator, its blocks use that rate too."""
    _small(monkeypatch)
    _float64(monkeypatch)
    model = cl.compile(cl.load(ROOT / "examples" / "stdp_eqprop.circ"))
    assert model.learning.method == "rules"
    plan = blocking.plan(model, "one_sided", RULES_LR)
    assert plan is not None and {w.lr for w in plan.weights} == {RULES_LR}
    data = _data(60)
    blocked = training.train(model, data, 1, seed=0, progress=False, method="one_sided")
    plain = training.train(model, data, 1, seed=0, progress=False, method="one_sided", block=False)
    for name, p in plain.params.items():
        np.testing.assert_allclose(blocked.params[name], p, rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.slow
def test_a_sweep_of_seeds_blocks_as_its_lone_runs_do(monkeypatch, tmp_path):
    """Member k of `--seeds` stays bit for bit the lone run with `--seed k`, both blocked."""
    from circuitlang import sweeps

    _small(monkeypatch)
    data = _data()
    circ = cl.loads(CONTINUOUS)
    group = sweeps.members([0, 1], [])
    with jax.enable_x64(False):  # float32, as test_sweeps.py's bit-for-bit comparisons
        results = sweeps.train_sweep(circ, {}, data, group, 1, out=tmp_path / "sweep", progress=False)
        lone = training.train(cl.compile(circ), data, 1, seed=1, progress=False, out=tmp_path / "lone")
    for name, p in lone.params.items():
        assert np.array_equal(np.asarray(p), np.asarray(results[1].params[name])), name
    manifest = json.loads((tmp_path / "lone" / "run.json").read_text())
    assert manifest["blocked_updates"] == {"batches": 4, "weights": ["W1"]}
    assert json.loads((tmp_path / "sweep" / "seed-1" / "run.json").read_text())["blocked_updates"] == \
        manifest["blocked_updates"]


def test_no_blocking_on_the_command_line(monkeypatch, tmp_path, capsys):
    _small(monkeypatch)
    f = tmp_path / "cont.circ"
    f.write_text(CONTINUOUS)
    for flags, want in (([], {"batches": 4, "weights": ["W1"]}), (["--no-blocking"], None)):
        out = tmp_path / ("run" + "".join(flags))
        assert main(["train", str(f), "--epochs", "1", "--out", str(out), "--no-progress",
                     "--health", "ignore", *flags]) == 0
        assert json.loads((out / "run.json").read_text())["blocked_updates"] == want
