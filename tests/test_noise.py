"""Stochastic dynamics: `noise=` on populations, `white()` in cell equations (`lower/noise.py`).

The statistical tests are deterministic (a fixed key, float64): an Ornstein–Uhlenbeck
population ds = −s/τ dt + σ dW has stationary variance σ²τ/2, and Euler–Maruyama with
the √dt scaling gives σ²τ/(2 − dt/τ), within 0.5% of it at dt/τ = 0.01.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import circuitlang as cl
from circuitlang.errors import CircuitError
from circuitlang.lower.relax import DEFAULT_TOL, tolerance

from .conftest import ROOT

pytestmark = pytest.mark.usefixtures("x64")

CIRCUITS = ROOT / "tests" / "circuits"
OU = CIRCUITS / "ou.circ"            # leaky, noise=0.5, tau=2: variance 0.25
OU_CELL = CIRCUITS / "ou_cell.circ"  # tau ds/dt = -s + white(): the same process
TINY = CIRCUITS / "tiny_noisy.circ"
SIGMA, TAU = 0.5, 2.0


@functools.lru_cache(maxsize=None)
def _runner(path, steps: int, dt: float, overrides: tuple = ()):
    model = cl.compile(cl.load(path), dict(overrides))
    phase = dataclasses.replace(model.free_phase, steps=steps, dt=dt)
    return model, jax.jit(lambda p, x, k: model.relaxer.run(phase, p, x, model.zeros(x), key=k))


def relax_end(path, steps: int, dt: float, batch: int, key, overrides=()):
    """The free phase's end from s = 0 (float64), and the model (one compilation per setting)."""
    model, run = _runner(path, steps, dt, tuple(overrides))
    params = model.init(jax.random.key(0), jnp.float64)
    return run(params, model.as_inputs(jnp.zeros((batch, 1), jnp.float64)), key), model


@pytest.mark.slow
@pytest.mark.parametrize("path", [OU, OU_CELL], ids=["population", "cell"])
def test_ou_stationary_variance_and_mean(path):
    # 50,000 independent chains (1000 units x 50 examples), 10 tau long from s = 0 (the
    # transient is e^-10 of the variance), dt/tau = 0.01: the variance's standard error is
    # sqrt(2/50000) = 0.6%, the Euler-Maruyama bias +0.5%
    res, _ = relax_end(path, steps=1000, dt=0.02, batch=50, key=jax.random.key(0))
    s = np.asarray(res.state["h"], np.float64).ravel()
    theory = SIGMA**2 * TAU / 2
    ratio = s.var() / theory
    assert abs(ratio - 1) < 0.03, ratio
    assert abs(s.mean()) < 3 * math.sqrt(s.var() / s.size), s.mean()


def test_cell_second_state_has_its_own_noise():
    # dv = (s - v) dt - 0.3 dW: v is driven by s and by its own noise, so var(v) > 0.3^2 / 2
    res, model = relax_end(OU_CELL, steps=1000, dt=0.02, batch=10, key=jax.random.key(1))
    v = np.asarray(res.state["h.v"]).ravel()
    assert model.relaxer.amplitudes == {"h": 0.5, "h.v": 0.3}
    assert 0.3**2 / 2 < v.var() < 0.3**2 / 2 + 0.25


def test_variance_after_a_time_does_not_depend_on_dt():
    # the sqrt(dt) scaling: at t = 1 = tau/2 the variance is sigma^2 tau/2 (1 - e^(-2t/tau)),
    # whatever the step (Euler-Maruyama is exact to O(dt)); without the sqrt it would scale with dt
    theory = SIGMA**2 * TAU / 2 * (1 - math.exp(-2 * 1.0 / TAU))
    for dt in (0.1, 0.01):
        res, _ = relax_end(OU, steps=round(1.0 / dt), dt=dt, batch=50, key=jax.random.key(3))
        ratio = float(np.var(np.asarray(res.state["h"]))) / theory
        assert abs(ratio - 1) < 0.03 + dt / 2, (dt, ratio)


def test_same_key_same_numbers_other_key_other_numbers():
    a, _ = relax_end(OU, steps=20, dt=0.1, batch=4, key=jax.random.key(5))
    b, _ = relax_end(OU, steps=20, dt=0.1, batch=4, key=jax.random.key(5))
    c, _ = relax_end(OU, steps=20, dt=0.1, batch=4, key=jax.random.key(6))
    assert np.array_equal(a.state["h"], b.state["h"])
    assert not np.allclose(a.state["h"], c.state["h"])


def test_an_examples_noise_does_not_depend_on_its_batch():
    # keyed by position in the batch: the first 3 examples of a batch of 8 see the noise
    # they see in a batch of 3
    big, _ = relax_end(OU, steps=20, dt=0.1, batch=8, key=jax.random.key(5))
    small, _ = relax_end(OU, steps=20, dt=0.1, batch=3, key=jax.random.key(5))
    np.testing.assert_array_equal(big.state["h"][:3], small.state["h"])


def test_noise_zero_in_a_phase_is_deterministic_and_converges():
    res, model = relax_end(OU, steps=50, dt=0.1, batch=2, key=jax.random.key(5),
                           overrides=(("sigma", 0.0),))
    assert float(jnp.max(jnp.abs(res.state["h"]))) == 0.0
    assert model.free_phase.sigma == 0.0 and tolerance(model.free_phase) == DEFAULT_TOL


def test_noisy_residual_is_the_drift_and_counts_as_converged():
    res, model = relax_end(OU, steps=1000, dt=0.02, batch=4, key=jax.random.key(2))
    s = np.asarray(res.state["h"])
    # the drift of the last step: |s|/tau at the state before it, about max|s|/tau
    assert float(jnp.max(res.residual)) == pytest.approx(np.abs(s).max(axis=-1).max() / TAU, rel=0.1)
    assert tolerance(model.free_phase) == pytest.approx(DEFAULT_TOL + 5 * SIGMA)
    assert bool(jnp.all(res.converged(model.free_phase)))


def test_phase_noise_scale():
    text = ("population x [1] input\npopulation h [3] noise=0.5\npopulation y [2] output\n"
            "x -> h : A\nh -> y : B\ndynamics leaky\ncost y squared\nlearn eqprop {\n"
            "  phase free { steps 10; noise 0.5 }\n  phase nudge { steps 2; beta 0.1; noise 0 }\n}\n")
    free, nudge = cl.loads(text).spec.learning.phases
    assert (free.noise, free.sigma) == (0.5, 0.25) and (nudge.noise, nudge.sigma) == (0.0, 0.0)


def test_health_says_why_a_noisy_phase_did_not_converge():
    from circuitlang import health

    model = cl.compile(cl.load(TINY), {"sigma": 0.01})
    (p,) = health.problems(model, {"epoch": 1, "converged.free": 0.2, "free_residual_max": 0.4})
    text = health.render(model, p)
    assert "tolerance 0.06 = 0.01 + 5σ for its noise, σ = 0.01" in text
    assert "`--set phase.free.noise=0`" in text


# ------------------------------------------------------------------ checks --
@pytest.mark.parametrize("snippet, message", [
    ("population h [4] noise=-0.1", "must be at least 0"),
    ("population h [4] noise", "needs a value"),
    ("population h [4] noise=1e999", "too large for a float"),
    ("param s = 0 - 1\npopulation h [4] noise=s", "must be at least 0, not -1"),
    ("population h [4] noise=h", "unknown name `h`"),
    ("population h [4] input noise=0.1", "clamped to the data"),
    ("param p = white()", "white noise, not a constant"),
    ("fn f(x) = x + white()", "only meaningful added to a cell type's equation"),
    ("neuron n { ds/dt = -s + s * white() }", "must be a constant (numbers and params), but it reads `s`"),
    ("neuron n { ds/dt = -s + tanh(white()) }", "the argument of `tanh`"),
    ("neuron n { ds/dt = -s + white() * white() }", "a product of two"),
    ("neuron n { ds/dt = -s + 1 / white() }", "a denominator"),
    ("neuron n { ds/dt = -s + white(1) }", "takes 0 arguments"),
    ("neuron n { v = white(); ds/dt = -s + v }", "a named value like `v`"),
    ("neuron n { s * ds/dt = -s + white() }", "the time constant of `ds/dt`"),
])
def test_bad_noise_is_a_located_error(snippet, message):
    with pytest.raises(CircuitError, match=message.replace("(", r"\(").replace(")", r"\)")) as exc:
        cl.loads(snippet + "\n", "bad.circ")
    assert f"bad.circ:{snippet.count(chr(10)) + 1}:" in str(exc.value)


def test_white_noise_amplitude_adds_in_variance():
    circ = cl.loads("param c = 3\nneuron n { 2 * ds/dt = -s + c * white() - 4 * white() / 1 }\n"
                    "population h : n [2]\n")
    (ode,) = circ.spec.neuron_types["n"].odes
    assert ode.noise == pytest.approx(5 / 2)


@pytest.mark.parametrize("phase, message", [
    ("phase free { forward }", "is `forward`"),
    ("phase free { steps 5; integrator async }", "no time step"),
])
def test_noisy_phases_that_take_no_steps_are_refused(phase, message):
    text = (f"population x [2] input\npopulation h [3] noise=0.1\npopulation y [2] output\n"
            f"x -> h : A\nh -> y : B\nenergy predictive\ncost y squared\n"
            f"learn eqprop {{\n  {phase}\n  phase nudge {{ steps 2; beta 0.1 }}\n}}\n")
    if "async" in phase:
        text = text.replace("x -> h : A\nh -> y : B\nenergy predictive", "h -- x : A\ny -- h : B\nenergy hopfield")
    with pytest.raises(CircuitError, match=message):
        cl.loads(text)
    cl.loads(text.replace(phase, phase.replace("}", "; noise 0 }").replace("{ forward;", "{ forward")))


# ---------------------------------------------------------------- training --
@pytest.mark.slow
def test_noisy_training_resumes_bit_for_bit_and_depends_on_the_seed(tmp_path):
    from circuitlang.data import load
    from circuitlang.training import train

    digits = load("digits")
    model = cl.compile(cl.load(TINY))
    full = train(model, digits, 2, seed=0, out=tmp_path / "full", progress=False)
    train(model, digits, 1, seed=0, out=tmp_path / "cut", progress=False)
    resumed = train(model, digits, 2, seed=0, out=tmp_path / "cut", resume=True, progress=False)
    drop = ("seconds", "eval_seconds")
    rows = [{k: v for k, v in r.items() if k not in drop} for r in full.history]
    assert rows == [{k: v for k, v in r.items() if k not in drop} for r in resumed.history]
    assert all(np.array_equal(full.params[k], resumed.params[k]) for k in full.params)
    on_disk = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert [{k: v for k, v in r.items() if k not in drop} for r in on_disk] == rows
    other = train(model, digits, 1, seed=1, progress=False)
    assert other.history[0]["train_loss"] != full.history[0]["train_loss"]
    # the noise is on: without it the same seed gives other numbers
    # (8 free steps do not settle this circuit: `health ignore` says nothing about it)
    quiet = train(cl.compile(cl.load(TINY), {"sigma": 0.0, "learn.health": "ignore"}), digits, 1, seed=0,
                  progress=False)
    assert quiet.history[0]["train_loss"] != full.history[0]["train_loss"]
    # within the noise (5 sigma = 0.5) the drift counts as converged: no warnings (they would be
    # errors here), though the phases are as short as the quiet run's
    assert quiet.history[0]["converged.free"] < 0.9 <= full.history[-1]["converged"]
