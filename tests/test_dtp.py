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
