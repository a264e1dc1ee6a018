"""Cell types and local rules (`learn rules`), against independent oracles.

* the STDP-like rule d(ρ(post.s))/dt ρ(pre.s), summed over both ends of each
  undirected coupling and integrated over the nudged phase, equals the
  one-sided EqProp update (Bengio et al. 2017);
* a cell circuit with two state variables, `let` values, compartments and
  rules (named populations, `d()/dt`, `rho'`, a synaptic decay) against a
  per-synapse NumPy simulation (batch × post × pre loops);
* rules lower to matmuls: no intermediate of the jaxpr has batch × post × pre
  elements; a rule that cannot be factored is a located compile error.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import circuitlang as cl
from circuitlang.errors import CircuitError

from .conftest import ROOT


pytestmark = pytest.mark.usefixtures("x64")  # every test here runs in float64


def _batch(n_in, n_out, B=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (B, n_in))
    y = np.eye(n_out)[rng.integers(0, n_out, B)]
    return jnp.asarray(x), jnp.asarray(y)


# ------------------------------------------------------------------ STDP --
@pytest.mark.slow
def test_stdp_rule_integrates_to_one_sided_eqprop():
    model = cl.compile(cl.load(ROOT / "examples" / "stdp_eqprop.circ"))
    params = model.init(jax.random.key(0), jnp.float64)
    params = {k: v + 0.1 * jax.random.normal(jax.random.key(1), v.shape) for k, v in params.items()}
    x, y = _batch(64, 10, B=8)
    rules = model.estimate(params, x, y, method="rules")
    eqprop = model.estimate(params, x, y, method="one_sided")
    for name, lr in (("W1", 0.2), ("W2", 0.1), ("h.bias", 0.1), ("y.bias", 0.1)):
        want = lr * eqprop[name]
        err = float(jnp.linalg.norm(rules[name] - want) / jnp.linalg.norm(want))
        assert err <= 1e-3, (name, err)
        assert float(jnp.linalg.norm(want)) > 1e-3  # not trivially zero


def test_stdp_without_symmetrisation_is_not_eqprop():
    """The telescoping needs both ends as `post`: a directed reading misses half the product rule."""
    src = (ROOT / "examples" / "stdp_eqprop.circ").read_text()
    model = cl.compile(cl.loads(src, "stdp.circ"))
    params = model.init(jax.random.key(0), jnp.float64)
    x, y = _batch(64, 10)
    full = model.estimate(params, x, y, method="rules")["W2"]
    rule = next(r for r in model.rules.rules if r.target == "W2")
    assert len(rule.orientations) == 2  # `y -- h`: y as post, then h as post (transposed)


# ------------------------------------------------------- numpy reference --
CELLS = """
circuit Cells
param tau = 2.0
param eta = 0.3
param lam = 0.05
fn rho(x) = tanh(x)

neuron adaptive {
  compartment basal
  compartment apical
  drive = basal + 0.5 * apical
  tau * ds/dt = -s + drive - a
  da/dt = 0.2 * (s - a)
}

population x [3] input
population h : adaptive [4]
population y [2] output

x -> h.basal : W1
h -> y : W2
y -> h.apical : B fixed
bias h

cost y squared

learn rules {
  phase free  { steps 30; dt 0.1 }
  phase nudge { steps 20; dt 0.1; beta 0.5 }
  during nudge: dW1/dt = eta * post.apical * rho'(post.s) * rho(pre.s) - lam * W1
  during nudge: dW2/dt = eta / beta * d(post.s)/dt * rho(pre.s)
  always: dh.bias/dt = 0.1 * (post.a - post.s)
}
"""


def _numpy_cells(params, x, y, spec):
    """Per-synapse Euler simulation of CELLS, with explicit loops for every synapse."""
    W1, W2, B, b = (np.asarray(params[k]) for k in ("W1", "W2", "B", "h.bias"))
    tau, eta, lam = 2.0, 0.3, 0.05
    rho = np.tanh

    def drho(v):
        return 1 - np.tanh(v) ** 2

    Bn = x.shape[0]
    s = np.zeros((Bn, 4))
    a = np.zeros((Bn, 4))
    yv = np.zeros((Bn, 2))

    def force(s, a, yv, beta):
        basal = rho(x) @ W1.T + b
        apical = rho(yv) @ B.T
        f_s = (-s + basal + 0.5 * apical - a) / tau
        f_a = 0.2 * (s - a)
        f_y = -yv + rho(s) @ W2.T + (beta * (y - yv) if beta else 0.0)
        return f_s, f_a, f_y, apical

    total = {k: np.zeros_like(np.asarray(params[k])) for k in ("W1", "W2", "h.bias")}
    for name, steps, dt, beta in (("free", 30, 0.1, 0.0), ("nudge", 20, 0.1, 0.5)):
        for _ in range(steps):
            f_s, f_a, f_y, ap0 = force(s, a, yv, beta)
            s1, a1, y1 = s + dt * f_s, a + dt * f_a, yv + dt * f_y
            ap1 = force(s1, a1, y1, beta)[3]
            dW1 = np.zeros_like(W1)
            dW2 = np.zeros_like(W2)
            for n in range(Bn):
                for i in range(4):
                    for j in range(3):
                        p0 = eta * ap0[n, i] * drho(s[n, i]) * rho(x[n, j])
                        p1 = eta * ap1[n, i] * drho(s1[n, i]) * rho(x[n, j])
                        dW1[i, j] += 0.5 * (p0 + p1) / Bn
                for i in range(2):
                    for j in range(4):
                        dW2[i, j] += eta / beta * (y1[n, i] - yv[n, i]) / dt * 0.5 * (rho(s[n, j]) + rho(s1[n, j])) / Bn if beta else 0.0
            if name == "nudge":
                total["W1"] += dt * (dW1 - lam * W1)
                total["W2"] += dt * dW2
            total["h.bias"] += dt * 0.1 * np.mean(0.5 * ((a - s) + (a1 - s1)), axis=0)
            s, a, yv = s1, a1, y1
    return {k: -v for k, v in total.items()}, s, a


@pytest.mark.slow
def test_cell_rules_match_per_synapse_numpy():
    model = cl.compile(cl.loads(CELLS, "cells.circ"))
    assert model.state_keys == ("h", "h.a", "y")
    params = model.init(jax.random.key(3), jnp.float64)
    params = {k: v + 0.3 * jax.random.normal(jax.random.key(4), v.shape) for k, v in params.items()}
    x, y = _batch(3, 2, B=5, seed=1)
    got = model.estimate(params, x, y, method="rules")
    want, s, a = _numpy_cells(params, np.asarray(x), np.asarray(y), model.spec)
    for k in ("W1", "W2", "h.bias"):
        np.testing.assert_allclose(np.asarray(got[k]), want[k], rtol=1e-9, atol=1e-12, err_msg=k)
    assert not np.any(np.asarray(got["B"]))  # fixed: no update
    assert float(np.abs(want["W2"]).max()) > 1e-4


def test_cell_free_phase_matches_numpy():
    model = cl.compile(cl.loads(CELLS, "cells.circ"))
    params = model.init(jax.random.key(3), jnp.float64)
    x, y = _batch(3, 2, B=5, seed=1)
    st = model.relax(params, x)
    # the numpy reference's first 30 steps are the free phase
    W1, W2, B, b = (np.asarray(params[k]) for k in ("W1", "W2", "B", "h.bias"))
    xs = np.asarray(x)
    s, a, yv = np.zeros((5, 4)), np.zeros((5, 4)), np.zeros((5, 2))
    for _ in range(30):
        basal = np.tanh(xs) @ W1.T + b
        apical = np.tanh(yv) @ B.T
        s, a, yv = (s + 0.1 * (-s + basal + 0.5 * apical - a) / 2.0,
                    a + 0.1 * 0.2 * (s - a),
                    yv + 0.1 * (-yv + np.tanh(s) @ W2.T))
    np.testing.assert_allclose(np.asarray(st["h"]), s, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(st["h.a"]), a, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(st["y"]), yv, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------- outer products --
def _all_shapes(jaxpr):
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            yield tuple(getattr(v.aval, "shape", ()))
        for p in eqn.params.values():
            for sub in (p if isinstance(p, (tuple, list)) else (p,)):
                inner = getattr(sub, "jaxpr", None)
                if inner is not None:
                    yield from _all_shapes(getattr(inner, "jaxpr", inner))


@pytest.mark.slow
@pytest.mark.parametrize("example", ["stdp_eqprop", "mirror_interneurons", "continuous_learning"])
def test_rules_never_build_batch_by_post_by_pre(example):
    model = cl.compile(cl.load(ROOT / "examples" / f"{example}.circ"))
    B = 7
    n_in = model.fns.pops[model.inputs[0]].size
    n_out = model.fns.pops[model.spec.costs[0].population].size
    x, y = jnp.zeros((B, n_in)), jnp.zeros((B, n_out))
    params = model.init(jax.random.key(0))
    jaxpr = jax.make_jaxpr(lambda p: model._estimate(p, x, y, "rules"))(params).jaxpr
    smallest = min(int(np.prod(s)) for k, s in model.shapes.items() if len(s) == 2)
    shapes = list(_all_shapes(jaxpr))
    assert shapes, "no equations found"
    # a batched array (a dim of size B, prime and no population's size) as large as
    # batch × post × pre for the smallest weight; legitimate (B, n) arrays are far smaller
    assert all(model.size_of(k) != B for k in model.state_keys)

    def suspicious(shapes, least):
        return [s for s in shapes if B in s and int(np.prod(s)) >= B * least]

    assert not suspicious(shapes, smallest), suspicious(shapes, smallest)
    # and the test can fail: a naive per-synapse broadcast is caught
    naive = jax.make_jaxpr(lambda a, b: a[:, :, None] * b[:, None, :])(jnp.zeros((B, 5)), jnp.zeros((B, 6))).jaxpr
    assert suspicious(list(_all_shapes(naive)), 30)


def _rules_circuit(rule: str) -> str:
    return f"""
fn rho(x) = tanh(x)
population x [3] input
population h [4]
population z [5]
population y [2] output
x -> h : W1
h -> y : W2
h -> z : W3
dynamics leaky
cost y squared
learn rules {{
  phase free {{ steps 5; dt 0.1 }}
  phase nudge {{ steps 5; dt 0.1; beta 0.1 }}
  {rule}
}}
"""


def test_unfactorable_rule_is_a_located_error():
    src = _rules_circuit("during nudge: dW1/dt = exp(post.s * pre.s)")
    with pytest.raises(CircuitError) as err:
        cl.compile(cl.loads(src, "bad.circ"))
    text = str(err.value)
    assert "bad.circ:15:" in text and "post-side" in text and "^" in text


def test_population_of_neither_size_is_a_located_error():
    src = _rules_circuit("during nudge: dW1/dt = z.s * rho(pre.s)")
    with pytest.raises(CircuitError) as err:
        cl.compile(cl.loads(src, "bad.circ"))
    assert "`z.s` has 5 values" in str(err.value) and "bad.circ:15:" in str(err.value)


def test_sum_of_products_and_quotients_factor():
    """(a + b)·c / d expands into two outer products; y.s aligns with W2's post end."""
    src = _rules_circuit("during nudge: dW2/dt = (post.s + y.target) * (rho(pre.s) - 1) / (1 + post.s ^ 2)")
    model = cl.compile(cl.loads(src, "ok.circ"))
    params = model.init(jax.random.key(0), jnp.float64)
    x, y = _batch(3, 2)
    g = model.estimate(params, x, y, method="rules")
    assert np.all(np.isfinite(np.asarray(g["W2"]))) and float(jnp.abs(g["W2"]).max()) > 0
    assert not np.any(np.asarray(g["W1"]))  # no rule: no update


def test_rules_estimator_needs_rules():
    model = cl.compile(cl.load(ROOT / "examples" / "eqprop_hopfield.circ"))
    params = model.init(jax.random.key(0))
    with pytest.raises(CircuitError, match="needs local rules"):
        model.estimate(params, jnp.zeros((2, 64)), jnp.zeros((2, 10)), method="rules")


# -------------------------------------------------------------- training --
@pytest.mark.slow
def test_stdp_example_learns_digits_quickly(tmp_path):
    from circuitlang.data import load
    from circuitlang.training import train

    with jax.enable_x64(False):  # training as users run it, in float32
        model = cl.compile(cl.load(ROOT / "examples" / "stdp_eqprop.circ"))
        data = load("digits")
        result = train(model, data, epochs=2, progress=False)
    last = result.history[-1]
    assert last["test_accuracy"] > 0.85, last


# ------------------------------------------------------------ simulate/verify --
@pytest.mark.slow
def test_simulate_records_compartments(tmp_path):
    from circuitlang.simulate import simulate

    model = cl.compile(cl.loads(CELLS, "cells.circ"))
    params = model.init(jax.random.key(3), jnp.float64)
    x, y = _batch(3, 2, B=4, seed=2)
    res = simulate(model, params, x, y, out=tmp_path)
    free = res["free"]["states"]
    assert {"h", "y", "h.basal", "h.apical"} <= set(free)
    # the basal compartment is the summed drive W1 ρ(x) + b at every step
    basal = np.tanh(np.asarray(x)) @ np.asarray(params["W1"]).T + np.asarray(params["h.bias"])
    np.testing.assert_allclose(free["h.basal"][-1], basal, rtol=1e-10)
    assert free["h.apical"].shape == (31, 4, 4)
    with np.load(tmp_path / "traces.npz") as z:
        assert "nudge/h.apical" in z.files
    from circuitlang.errors import CircuitError as E

    with pytest.raises(E, match="no population, state or compartment `h.dendrite`"):
        simulate(model, params, x, y, record=["h.dendrite"])


@pytest.mark.slow
def test_verify_reports_the_angle_of_local_rules():
    from circuitlang.verify import format_table, verify

    # relaxed to the fixed points (the example's 20 + 8 steps stop short: cosine 0.91)
    long = {"phase.free.steps": 300, "phase.nudge.steps": 300}
    model = cl.compile(cl.load(ROOT / "examples" / "stdp_eqprop.circ"), long)
    params = model.init(jax.random.key(0), jnp.float64)
    # weights and biases where the units sit inside their bounds [0, 1] (else ρ' = 0 and ∇ = 0)
    params = {k: (jnp.full_like(v, 0.5) if k.endswith("bias") else 0.3 * v) for k, v in params.items()}
    x, y = _batch(64, 10, B=4)
    rows = verify(model, params, x, y, betas=(0.01,))
    w2 = next(r for r in rows if r["weight"] == "W2" and r["beta"] == 0.01)
    assert w2["cosine"] > 0.99  # the STDP rule is EqProp: aligned with the gradient as β → 0
    assert abs(w2["size_ratio"] - 0.1) < 0.01  # the rule's own rate, 0.1
    w1 = next(r for r in rows if r["weight"] == "W1" and r["beta"] == 0.01)
    assert w1["cosine"] > 0.99 and abs(w1["size_ratio"] - 0.2) < 0.02
    assert "size_ratio" in format_table(rows, "rules")


def test_bias_init():
    src = _rules_circuit("during nudge: dW1/dt = post.s * pre.rate").replace(
        "dynamics leaky", "bias y init=constant(0.5)\ndynamics leaky")
    model = cl.compile(cl.loads(src, "b.circ"))
    params = model.init(jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(params["y.bias"]), 0.5)


def test_one_to_one_weight_rule_is_elementwise_trapezoid():
    src = """
fn rho(x) = tanh(x)
population x [4] input
population h [4]
population y [3] output
x => h : G
h -> y : W
dynamics leaky
cost y squared
learn rules {
  phase free { steps 12; dt 0.2 }
  during free: dG/dt = post.s * rho(pre.s) - 0.1 * G
}
"""
    model = cl.compile(cl.loads(src, "g.circ"))
    assert model.shapes["G"] == (4,)
    params = model.init(jax.random.key(0), jnp.float64)
    params["G"] = jnp.asarray([0.5, -1.0, 2.0, 1.5])
    x, y = _batch(4, 3, B=5, seed=3)
    g = model.estimate(params, x, y, method="rules")
    traj, _ = model.relaxer.trajectory(model.free_phase, params, model.as_inputs(x), model.zeros(model.as_inputs(x)))
    h = np.asarray(traj["h"])  # (steps + 1, batch, 4)
    f = h * np.tanh(np.asarray(x))[None] - 0.1 * np.asarray(params["G"])[None, None]
    want = 0.2 * np.sum(0.5 * (f[:-1] + f[1:]), axis=0).mean(axis=0)
    np.testing.assert_allclose(np.asarray(g["G"]), -want, rtol=1e-10)
    assert not np.any(np.asarray(g["W"]))


def test_cell_equations_see_the_time_in_the_phase():
    src = """
neuron clocked {
  compartment basal
  ds/dt = -s + basal + 0.1 * t
}
population x [2] input
population h : clocked [2]
population y [2] output
x -> h.basal : W1
h -> y : W2
cost y squared
learn rules {
  phase free { steps 10; dt 0.5 }
  during free: dW2/dt = post.s * pre.s
}
"""
    model = cl.compile(cl.loads(src, "t.circ"))
    params = model.init(jax.random.key(0), jnp.float64)
    x = jnp.asarray([[0.2, 0.7]])
    st = model.relax(params, x)
    basal = np.asarray(x) @ np.asarray(params["W1"]).T
    s = np.zeros((1, 2))
    for i in range(10):
        s = s + 0.5 * (-s + basal + 0.1 * (i * 0.5))
    np.testing.assert_allclose(np.asarray(st["h"]), s, rtol=1e-12)


def test_generalized_eqprop_on_a_cell_circuit_is_the_gradient():
    """Cells with basal/apical compartments and tied feedback, ρ = identity: the
    vector field is a gradient field, so one-sided EqProp → the true gradient as β → 0."""
    src = """
neuron pyr {
  compartment basal, apical
  ds/dt = -s + basal + apical
}
population x [3] input
population h : pyr [4]
population y [2] output
x -> h.basal : W1
h -> y : W2
y -> h.apical : B = transpose(W2)
bias h, y
cost y squared
learn eqprop {
  phase free { steps 400; dt 0.1 }
  phase nudge { steps 400; dt 0.1; beta 0.0001 }
}
"""
    model = cl.compile(cl.loads(src, "c.circ"))
    params = {k: 0.3 * v + 0.05 for k, v in model.init(jax.random.key(0), jnp.float64).items()}
    x, y = _batch(3, 2, B=5, seed=4)
    g = model.estimate(params, x, y)
    true = model.estimate(params, x, y, method="gradient")
    for k in ("W1", "W2", "h.bias", "y.bias"):
        err = float(jnp.linalg.norm(g[k] - true[k]) / jnp.linalg.norm(true[k]))
        assert err < 1e-3, (k, err)
