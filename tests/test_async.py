"""The `async` integrator (block-coordinate minimisation by layer colour, Scellier et al. 2023).

* It reaches the fixed point Euler reaches (run long with a small step) on a
  three-hidden-layer circuit with bounded states, free and nudged, on a dense
  and on a convolutional circuit, with and without damping.
* Every estimator that relaxes (one-sided, random-sign, symmetric, holomorphic,
  the `gradient` and `bptt` oracles) gives the estimate it gives with Euler.
* What has no closed-form layer minimum is a located `check` error.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import circuitlang as cl

pytestmark = pytest.mark.usefixtures("x64")  # every test here runs in float64

DENSE = """
fn rho(v) = clip(v, 0, 1)
population x  [20] input rho=identity
population h1 [16] min=0 max=1
population h2 [16] min=0 max=1
population h3 [16] min=0 max=1
population y  [5] output min=0 max=1
h1 -- x  : W1 init=uniform(0.5)
h2 -- h1 : W2 init=uniform(0.5)
h3 -- h2 : W3 init=uniform(0.5)
y  -- h3 : W4 init=uniform(0.5)
bias h1, h2, h3, y init=uniform(0.3)
energy hopfield
cost y squared
learn eqprop {
  phase free  { FREE }
  phase nudge { NUDGE; beta 0.2 }
  estimator symmetric
}
"""

CONV = """
fn rho(v) = clip(v, 0, 1)
population x  [1, 6, 6] input rho=identity
population h1 [3, 3, 3] min=0 max=1
population h2 [4, 3, 3] min=0 max=1
population y  [4] output min=0 max=1
h1 -- x  : K1 conv(3, padding=1) pool(max, 2)
h2 -- h1 : K2 conv(3, padding=1) init=uniform(0.4)
y  -- h2 : W3 init=uniform(0.4)
bias h1, h2, y init=uniform(0.2)
energy hopfield
cost y squared
learn eqprop {
  phase free  { FREE }
  phase nudge { NUDGE; beta 0.2 }
  estimator symmetric
}
"""

EULER = "steps 4000; dt 0.2"
ASYNC = "steps 200; integrator async"


def _model(text: str, free: str, nudge: str | None = None):
    return cl.compile(cl.loads(text.replace("FREE", free).replace("NUDGE", nudge or free)))


def _data(model, batch: int = 6, seed: int = 1):
    kx, ky = jax.random.split(jax.random.key(seed))
    x = jax.random.uniform(kx, (batch, model.size_of("x")))
    y = jax.random.uniform(ky, (batch, model.size_of("y")))
    return x, y


def _residual(model, params, state, beta=None, y=None):
    """max |P(s − ∂(E + βC)/∂s) − s| over the batch: zero exactly at a (nudged) fixed point."""
    fns = model.fns
    xs = {"x": state["x"]}
    free = {n: state[n] for n in model.free}

    def total(s):
        E = fns.energy(s, params, xs)
        return E + beta * fns.cost(s, y) if beta is not None else E

    g = jax.grad(total)(free)
    moved = fns.project({n: free[n] - g[n] for n in free})
    return max(float(jnp.max(jnp.abs(moved[n] - free[n]))) for n in free)


@pytest.fixture(scope="module")
def dense(x64):
    euler, fast = _model(DENSE, EULER), _model(DENSE, ASYNC)
    params = euler.init(jax.random.key(0))
    x, y = _data(euler)
    return euler, fast, params, x, y


def _interior(state, names) -> float:
    v = np.concatenate([np.asarray(state[n]).ravel() for n in names])
    return float(np.mean((v > 1e-9) & (v < 1 - 1e-9)))


def test_free_fixed_point_is_eulers(dense):
    euler, fast, params, x, y = dense
    a, e = fast.relax_result(params, x).state, euler.relax_result(params, x).state
    names = ["h1", "h2", "h3", "y"]
    assert 0.2 < _interior(a, names) < 0.95  # units inside the box and at its bounds: both cases tested
    assert _residual(fast, params, a) < 1e-12
    for n in names:
        np.testing.assert_allclose(a[n], e[n], atol=1e-6, rtol=0)


def test_nudged_fixed_point_is_eulers(dense):
    euler, fast, params, x, y = dense
    xs = euler.as_inputs(x)
    for beta in (0.2, -0.2):
        a = fast.relaxer.run(fast.nudge_phase, params, xs, fast.zeros(xs), beta, y).state
        e = euler.relaxer.run(euler.nudge_phase, params, xs, euler.zeros(xs), beta, y).state
        assert _residual(fast, params, a, beta, y) < 1e-12
        assert _residual(fast, params, a, None, None) > 1e-3  # the nudge moved it
        for n in ("h1", "h2", "h3", "y"):
            np.testing.assert_allclose(a[n], e[n], atol=1e-6, rtol=0)


def test_damped_steps_reach_the_same_fixed_point(dense):
    euler, _, params, x, y = dense
    damped = _model(DENSE, "steps 400; dt 0.6; integrator async")
    a, e = damped.relax_result(params, x).state, euler.relax_result(params, x).state
    for n in ("h1", "h2", "h3", "y"):
        np.testing.assert_allclose(a[n], e[n], atol=1e-6, rtol=0)


def test_async_needs_fewer_steps_than_euler_and_prototypical(dense):
    """After 80 steps async is at the fixed point; Euler at a large step (0.9) and the
    prototypical step (dt 1) are not yet (`benchmarks/async_relax.py` counts the steps)."""
    _, _, params, x, y = dense
    res = {}
    for name, phase in (("async", "steps 80; integrator async"), ("euler", "steps 80; dt 0.9"),
                        ("prototypical", "steps 80; integrator prototypical")):
        m = _model(DENSE, phase)
        res[name] = _residual(m, params, m.relax_result(params, x).state)
    assert res["async"] < 1e-6 < 1e-4 < min(res["euler"], res["prototypical"]), res


@pytest.mark.slow
@pytest.mark.parametrize("method", ["one_sided", "random_sign", "symmetric", "gradient", "bptt"])
def test_estimates_match_eulers(dense, method):
    euler, fast, params, x, y = dense
    key = jax.random.key(3)
    ga = fast.estimate(params, x, y, method=method, key=key)
    ge = euler.estimate(params, x, y, method=method, key=key)
    scale = max(float(jnp.max(jnp.abs(v))) for v in ge.values())
    assert scale > 1e-3
    for k in ge:
        np.testing.assert_allclose(ga[k], ge[k], atol=1e-7 * scale, rtol=0, err_msg=f"{method} {k}")


def test_symmetric_eqprop_with_async_approaches_the_true_gradient(dense):
    _, fast, params, x, y = dense
    small = cl.compile(cl.loads(DENSE.replace("FREE", ASYNC).replace("NUDGE", ASYNC).replace("beta 0.2", "beta 1e-3")))
    g = small.estimate(params, x, y, method="symmetric")
    true = fast.estimate(params, x, y, method="gradient")
    a = np.concatenate([np.ravel(g[k]) for k in true])
    b = np.concatenate([np.ravel(true[k]) for k in true])
    assert np.linalg.norm(a - b) < 1e-5 * np.linalg.norm(b)


def test_holomorphic_estimate_matches_eulers(x64):
    """Complex β: unbounded identity rates (linear layers) and tanh-free analytic operators."""
    text = (DENSE.replace("fn rho(v) = clip(v, 0, 1)\n", "").replace(" min=0 max=1", "")
            .replace("init=uniform(0.5)", "init=uniform(0.1)").replace("estimator symmetric", "estimator holomorphic points=4"))
    euler, fast = _model(text, EULER), _model(text, ASYNC)
    params = euler.init(jax.random.key(0))
    x, y = _data(euler)
    ga = fast.estimate(params, x, y, method="holomorphic")
    ge = euler.estimate(params, x, y, method="holomorphic")
    scale = max(float(jnp.max(jnp.abs(v))) for v in ge.values())
    for k in ge:
        np.testing.assert_allclose(ga[k], ge[k], atol=1e-7 * scale, rtol=0, err_msg=k)


@pytest.mark.slow
def test_conv_fixed_points_and_estimate_match_eulers(x64):
    # this circuit's nudged relaxation is slow for both: 800 async steps, 8000 Euler ones
    euler, fast = _model(CONV, "steps 8000; dt 0.5"), _model(CONV, "steps 800; integrator async")
    params = euler.init(jax.random.key(0))
    x, y = _data(euler, batch=4)
    a, e = fast.relax_result(params, x).state, euler.relax_result(params, x).state
    assert 0.1 < _interior(a, ["h1", "h2", "y"]) < 0.95
    for n in ("h1", "h2", "y"):
        np.testing.assert_allclose(a[n], e[n], atol=1e-6, rtol=0)
    ga = fast.estimate(params, x, y, method="symmetric")
    ge = euler.estimate(params, x, y, method="symmetric")
    scale = max(float(jnp.max(jnp.abs(v))) for v in ge.values())
    for k in ge:
        np.testing.assert_allclose(ga[k], ge[k], atol=1e-7 * scale, rtol=0, err_msg=k)


# ------------------------------------------------------------------ refusals --
LAYERED = """fn rho(v) = clip(v, 0, 1)
population x [4] input
population h1 [3] min=0 max=1
population h2 [3] min=0 max=1
population y [2] output min=0 max=1
h1 -- x : W1
h2 -- h1 : W2
y -- h2 : W3
EXTRA
energy hopfield
cost y COST
learn eqprop {
  phase free  { steps 10; integrator async }
  phase nudge { steps 10; beta BETA; integrator async }
}
"""


def _refusal(extra="", cost="squared", beta="0.5", replace=()):
    text = LAYERED.replace("EXTRA", extra).replace("COST", cost).replace("BETA", beta)
    for a, b in replace:
        text = text.replace(a, b)
    with pytest.raises(cl.CircuitSemanticError) as info:
        cl.loads(text)
    return info.value.diagnostics


def _only(diags, line: int, words: str):
    assert len(diags) == 1, [d.message for d in diags]
    d = diags[0]
    assert d.span is not None and d.span.line == line, (d.span, d.message)
    assert words in d.message, d.message
    assert d.hint
    return d


def test_the_layered_circuit_is_accepted():
    cl.loads(LAYERED.replace("EXTRA", "").replace("COST", "squared").replace("BETA", "0.5"))


def test_odd_cycle_is_refused_at_a_coupling_of_the_cycle():
    d = _only(_refusal("y -- h1 : W4"), 8, "odd cycle")
    assert "y -- h2" in d.message


def test_self_coupling_is_refused():
    _only(_refusal("h1 -- h1 : W4"), 9, "`h1` is coupled to itself")


def test_custom_term_is_refused():
    diags = _refusal(replace=(("energy hopfield", "energy { hopfield; term for W1: 0.001 * sum(sum(W * W)) }"),))
    _only(diags, 10, "custom energy `term`")


def test_predictive_energy_is_refused():
    diags = _refusal(replace=(("--", "->"), ("energy hopfield", "energy predictive")))
    assert diags and all(d.span.line in (13, 14) and "async" in d.message for d in diags)


def test_vector_field_is_refused():
    diags = _refusal(replace=(("--", "->"), ("energy hopfield", "dynamics leaky")))
    assert diags and all("needs an energy" in d.message for d in diags)


def test_max_pooling_into_a_free_layer_is_refused_at_the_operator():
    text = CONV.replace("FREE", ASYNC).replace("NUDGE", ASYNC).replace(
        "h2 -- h1 : K2 conv(3, padding=1)", "h2 -- h1 : K2 conv(3, padding=1) pool(max, 1)")
    with pytest.raises(cl.CircuitSemanticError) as info:
        cl.loads(text)
    d = _only(info.value.diagnostics, 8, "max-pool")
    assert d.span.col > 20  # the operator, not the line


def test_costs_without_a_closed_form_minimum_are_refused():
    _only(_refusal(cost="cross_entropy"), 11, "cross_entropy")
    diags = _refusal(replace=(("fn rho(v) = clip(v, 0, 1)", "fn rho(v) = sigmoid(v)"),))
    _only(diags, 5, "identity on its bounds")
    _only(_refusal(beta="1"), 14, "|β| must be below 1")


def test_an_unnudged_async_phase_takes_any_cost_and_activation():
    text = (LAYERED.replace("EXTRA", "").replace("COST", "cross_entropy").replace("BETA", "0.5")
            .replace("fn rho(v) = clip(v, 0, 1)", "fn rho(v) = sigmoid(v)")
            .replace("beta 0.5; integrator async", "beta 0.5"))
    cl.loads(text)
