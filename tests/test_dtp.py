"""Difference target propagation written as circuits (`examples/dtp.circ`), against oracles.

* with linear layers and feedback weights equal to the inverses of the forward ones,
  the circuit's DTP targets are the Gauss–Newton targets h_i − J_i⁻¹ η e
  (Meulemans et al. 2020, J_i = ∂y/∂h_i), read off the local forward update;
* the updates of `examples/dtp.circ` (forward regressions and the feedback
  reconstruction rule) equal a hand-written NumPy DTP step (Lee et al. 2015).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import circuitlang as cl

from .conftest import ROOT

pytestmark = pytest.mark.usefixtures("x64")

# linear DTP, three square layers: t2 = h2 + G3 (ty − y), t1 = h1 + G2 (t2 − h2)
LINEAR = """
circuit LinearDTP
param beta = 0.5
neuron unit {
  compartment in
  ds/dt = -s + in
}
neuron target {
  compartment copy, fb_t, fb_h
  ds/dt = -s + copy + fb_t - fb_h
}
population x  [N] input
population h1 : unit [N]
population h2 : unit [N]
population y  : unit [N]
population ty : unit [N] output
population t2 : target [N]
population t1 : target [N]
x  -> h1.in : W1
h1 -> h2.in : W2
h2 -> y.in  : W3
y  => ty.in
h2 => t2.copy
ty -> t2.fb_t : G3 fixed
y  -> t2.fb_h : G3h = G3
h1 => t1.copy
t2 -> t1.fb_t : G2 fixed
h2 -> t1.fb_h : G2h = G2
cost ty squared
learn rules {
  phase free   { steps 7; dt 1 }
  phase target { steps 60; dt 1; beta beta }
  phase update { steps 1; dt 1; beta beta }
  during update: dW1/dt = (t1.s - post.s) * pre.s
  during update: dW2/dt = (t2.s - post.s) * pre.s
  batch 4
}
"""


def _batch(n_in, n_out, B=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (B, n_in)), np.eye(n_out)[rng.integers(0, n_out, B)]


@pytest.mark.parametrize("seed", [0, 1])
def test_linear_dtp_with_inverse_feedback_gives_gauss_newton_targets(seed):
    n, beta = 6, 0.5
    model = cl.compile(cl.loads(LINEAR.replace("[N]", f"[{n}]")))
    rng = np.random.default_rng(seed)
    W = {k: np.eye(n) + 0.4 * rng.standard_normal((n, n)) for k in ("W1", "W2", "W3")}
    params = {**W, "G2": np.linalg.inv(W["W2"]), "G3": np.linalg.inv(W["W3"])}
    params = {k: jnp.asarray(v) for k, v in params.items()}
    x, lab = _batch(n, n, seed=seed)
    g = model.estimate(params, jnp.asarray(x), jnp.asarray(lab))

    # the Gauss–Newton targets, computed directly
    h1 = x @ W["W1"].T
    h2 = h1 @ W["W2"].T
    y = h2 @ W["W3"].T
    eta = beta / (1 + beta)  # the top target is the nudge's fixed point: ty = y − η (y − label)
    dy = -eta * (y - lab)  # t_L − h_L
    J2 = W["W3"]  # ∂y/∂h2
    J1 = W["W3"] @ W["W2"]  # ∂y/∂h1
    t1 = h1 + dy @ np.linalg.inv(J1).T
    t2 = h2 + dy @ np.linalg.inv(J2).T
    B = len(x)
    np.testing.assert_allclose(-np.asarray(g["W1"]), (t1 - h1).T @ x / B, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(-np.asarray(g["W2"]), (t2 - h2).T @ h1 / B, rtol=1e-7, atol=1e-9)
    # not backprop's target h1 − η J1ᵀ e, which the oracle can tell apart
    bp = (dy @ J1).T @ x / B
    assert np.abs(-np.asarray(g["W1"]) - bp).max() > 1e-2 * np.abs(bp).max()


def _numpy_dtp(p, x, lab, beta):
    """One DTP step of examples/dtp.circ without the corruption noise (sigma = 0), by hand."""
    B = len(x)
    h1 = np.tanh(x @ p["W1"].T)
    h2 = np.tanh(h1 @ p["W2"].T)
    y = h2 @ p["W3"].T
    ty = y - beta / (1 + beta) * (y - lab)
    g3 = lambda v: np.tanh(v @ p["G3"].T)  # noqa: E731
    g2 = lambda v: np.tanh(v @ p["G2"].T)  # noqa: E731
    t2 = h2 + g3(ty) - g3(y)
    t1 = h1 + g2(t2) - g2(h2)
    r2, r3 = g2(h2), g3(y)  # reconstructions of h1 from f2(h1) = h2, of h2 from f3(h2) = y
    return {
        "W1": ((t1 - h1) * (1 - h1**2)).T @ x / B,
        "W2": ((t2 - h2) * (1 - h2**2)).T @ h1 / B,
        "W3": (ty - y).T @ h2 / B,
        "G2": ((h1 - r2) * (1 - r2**2)).T @ h2 / B,
        "G3": ((h2 - r3) * (1 - r3**2)).T @ y / B,
    }


def test_dtp_example_matches_numpy_dtp():
    model = cl.compile(cl.load(ROOT / "examples" / "dtp.circ"), overrides={"sigma": 0.0})
    params = model.init(jax.random.key(3), jnp.float64)
    params = {k: v * 2.0 for k, v in params.items()}  # larger weights: targets far from the activities
    x, lab = _batch(64, 10, B=7, seed=2)
    g = model.estimate(params, jnp.asarray(x), jnp.asarray(lab))
    want = _numpy_dtp({k: np.asarray(v) for k, v in params.items()}, x, lab, 0.2)
    for k, v in want.items():
        assert np.abs(v).max() > 1e-3, k  # not trivially zero
        np.testing.assert_allclose(-np.asarray(g[k]), v, rtol=1e-6, atol=1e-9, err_msg=k)


# ------------------------------------------------------------ plain ties --
TIE = """
population a [3] input
population b [4]
population c [3] input
population d [4]
population y [2] output
a -> b : W
c -> d : V = W
b -> y : W2 fixed
dynamics leaky
cost y squared
learn rules {
  phase free { steps 30; dt 0.5 }
  during free: dV/dt = post.s * pre.s
}
"""


def test_a_rule_on_a_plain_tie_updates_the_weight_it_is_tied_to():
    """`c -> d : V = W` evaluates W on c; a rule on V reads V's own ends and updates W."""
    model = cl.compile(cl.loads(TIE), overrides={"phase.free.steps": 1, "phase.free.dt": 1.0})
    params = model.init(jax.random.key(0), jnp.float64)
    rng = np.random.default_rng(0)
    a, c = rng.uniform(-1, 1, (5, 3)), rng.uniform(-1, 1, (5, 3))
    g = model.estimate(params, {"a": jnp.asarray(a), "c": jnp.asarray(c)}, jnp.zeros((5, 2)))
    W = np.asarray(params["W"])
    d1 = c @ W.T  # leaky, dt = 1, one step from 0: d = W c at the step's end, 0 at its start
    want = 0.5 * (d1.T @ c) / 5  # the step's trapezoid: (0 + d1) / 2 times c
    np.testing.assert_allclose(-np.asarray(g["W"]), want, rtol=1e-10)
    assert set(g) == {"W", "W2"} and not np.any(np.asarray(g["W2"]))


# ----------------------------------------------------------------- L-DRL --
def _ldrl(**over):
    return cl.compile(cl.load(ROOT / "examples" / "ldrl.circ"), overrides={"n_in": 6, "n_h": 8, **over})


def _cos(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _train_feedback(model, params, x, lab, steps, lr=0.01):
    """Adam on the feedback weights only (the forward rules' eta is 0 in `model`)."""
    import optax

    opt = optax.adam(lr)
    st = opt.init(params)

    @jax.jit
    def step(p, st, k):
        g = model._estimate(p, x, lab, key=k)
        u, st = opt.update(g, st, p)
        return optax.apply_updates(p, u), st

    for i in range(steps):
        params, st = step(params, st, jax.random.key(i))
    return params


def _forward_jacobians(p, x):
    """J_(F2) at each example (jax.jacobian of h1 -> tanh(W2 h1)) and J_(F3) = W3."""
    h1 = jnp.tanh(x @ p["W1"].T)
    J2 = jax.vmap(jax.jacobian(lambda h: jnp.tanh(p["W2"] @ h)))(h1)
    return np.asarray(J2), np.asarray(p["W3"])


def _backprop(p, x, lab):
    """-dC/dW of C = 1/2 |y - label|^2 summed over the batch, by autodiff of the forward net."""
    def cost(p):
        y = jnp.tanh(jnp.tanh(x @ p["W1"].T) @ p["W2"].T) @ p["W3"].T
        return 0.5 * jnp.sum((y - lab) ** 2)
    return jax.grad(cost)({k: p[k] for k in ("W1", "W2", "W3")})


def test_verify_counts_a_rule_on_a_tie_as_a_rule_of_the_weight_it_updates():
    """`verify` leaves out of its comparison a weight whose rules act only in un-nudged
    phases; a rule written on a plain tie of W is one of W's rules."""
    from circuitlang.verify import _unnudged_only

    unnudged = cl.compile(cl.loads(TIE))
    assert _unnudged_only(unnudged, "W")
    nudged = cl.compile(cl.loads(TIE.replace("phase free { steps 30; dt 0.5 }",
                                             "phase free { steps 30; dt 0.5 }\n  phase nudge { steps 5; dt 0.5; beta 0.5 }")
                                 .replace("during free: dV/dt", "during nudge: dV/dt")))
    assert not _unnudged_only(nudged, "W")


def test_ldrl_feedback_learns_the_transposed_forward_jacobian_and_aligns_with_backprop():
    model = _ldrl(eta=0.0, sigma=0.05)
    params = model.init(jax.random.key(0), jnp.float64)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-1, 1, (32, 6)))
    lab = jnp.asarray(np.eye(10)[rng.integers(0, 10, 32)])
    J2, J3 = _forward_jacobians(params, x)
    before = _cos(params["V2"], J2.mean(0).T), _cos(params["V3"], J3.T)
    trained = _train_feedback(model, params, x, lab, 150, lr=0.02)
    assert all(np.array_equal(trained[k], params[k]) for k in ("W1", "W2", "W3"))  # eta = 0
    after = _cos(trained["V2"], J2.mean(0).T), _cos(trained["V3"], J3.T)
    per_example = float(np.mean([_cos(trained["V2"], J.T) for J in J2]))
    print(f"cos(V, J_F^T): before {before}, after {after}; V2 vs each example's J^T: {per_example:.4f}")
    assert max(before) < 0.5
    assert after[0] > 0.97 and after[1] > 0.97 and per_example > 0.9

    # the forward update the learned feedback gives, against backprop's gradient
    full = _ldrl(sigma=0.05)
    bp = _backprop(trained, x, lab)
    g = full._estimate(trained, x, lab, key=jax.random.key(7))
    g0 = full._estimate(params, x, lab, key=jax.random.key(7))
    cos_after = {k: _cos(g[k], bp[k]) for k in bp}
    cos_before = {k: _cos(g0[k], _backprop(params, x, lab)[k]) for k in bp}
    print(f"cos(update, backprop): with learned feedback {cos_after}, at initialisation {cos_before}")
    assert cos_after["W3"] > 0.999 and cos_after["W2"] > 0.95 and cos_after["W1"] > 0.9
    assert cos_before["W1"] < 0.8


@pytest.mark.parametrize("name, feedback", [("dtp", ("G2", "G3")), ("ldrl", ("V2", "V3"))])
def test_the_true_gradient_of_a_dtp_circuit_is_backprop(name, feedback):
    """`estimate(method="gradient")` (what `circuitc verify` compares with) solves only over the
    populations that reach the cost: the corruption populations, which hold their noise and have
    no dynamics of their own, would make the full system singular. It equals backprop."""
    model = cl.compile(cl.load(ROOT / "examples" / f"{name}.circ"), overrides={"n_in": 6, "n_h": 8})
    params = model.init(jax.random.key(1), jnp.float64)
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.uniform(-1, 1, (5, 6)))
    lab = jnp.asarray(np.eye(10)[rng.integers(0, 10, 5)])
    g = model.estimate(params, x, lab, method="gradient")
    bp = _backprop(params, x, lab)
    for k in ("W1", "W2", "W3"):
        np.testing.assert_allclose(np.asarray(g[k]) * 5, np.asarray(bp[k]), rtol=1e-8, atol=1e-12, err_msg=k)
    assert all(not np.any(np.asarray(g[k])) for k in feedback)  # feedback cannot move the cost


def test_dtp_feedback_rule_reconstructs_the_corrupted_activity():
    """With noise: `corrupt` draws e ~ N(0, sigma^2) into e1 (one Euler–Maruyama step of
    ds/dt = sigma white(), dt = 1) and later phases hold it; the G2 update is then Lee et al.'s
    ((h1 + e) − g2(f2(h1 + e))) ⊙ g2' times f2(h1 + e), computed here from the same sample."""
    sigma = 0.3
    model = cl.compile(cl.load(ROOT / "examples" / "dtp.circ"), overrides={"sigma": sigma, "n_h": 40})
    params = model.init(jax.random.key(4), jnp.float64)
    x, lab = _batch(64, 10, B=50, seed=5)
    key = jax.random.key(11)
    xin = model.as_inputs(jnp.asarray(x))
    s = model.zeros(xin)
    for ph in model.learning.phases[:3]:  # free, corrupt, settle: what the feedback phase starts from
        res = model.relaxer.run(ph, params, xin, s, None, None, key)
        s = {k: res.state[k] for k in model.state_keys}
    e1 = np.asarray(s["e1"])
    assert abs(e1.std() / sigma - 1) < 0.05 and abs(e1.mean()) < 0.02
    g = model.estimate(params, jnp.asarray(x), jnp.asarray(lab), key=key)
    p = {k: np.asarray(v) for k, v in params.items()}
    h1 = np.tanh(x @ p["W1"].T)
    n2 = np.tanh((h1 + e1) @ p["W2"].T)
    r2 = np.tanh(n2 @ p["G2"].T)
    want = ((h1 + e1 - r2) * (1 - r2**2)).T @ n2 / len(x)
    np.testing.assert_allclose(-np.asarray(g["G2"]), want, rtol=1e-8, atol=1e-12)
    noiseless = _numpy_dtp(p, x, lab, 0.2)["G2"]
    assert np.abs(want - noiseless).max() > 0.05 * np.abs(noiseless).max()  # the noise matters
