"""`dynamics leaky` (Scellier et al. 2018): the vector-field path against the energy path.

With ρ = identity and the feedback weight tied to the forward one
(`B2 = transpose(W2)`), the leaky vector field is the gradient field of the
Hopfield energy, so the free states must be equal and the generalized EqProp
update must approach the energy-based one as β → 0 (their difference is the
O(β) term Δy Δhᵀ / β).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import circuitlang as cl

HEAD = """
fn rho(x) = identity(x)
population x [5] input
population h [7]
population y [3] output
"""
TAIL = """
bias h, y
cost y squared
learn eqprop {
  phase free  { steps 3000; dt 0.1 }
  phase nudge { steps 3000; dt 0.1; beta 0.01 }
}
"""
LEAKY = HEAD + "x -> h : W1\nh -> y : W2\ny -> h : B2 = transpose(W2)\ndynamics leaky\n" + TAIL
HOPFIELD = HEAD + "h -- x : W1\ny -- h : W2\nenergy hopfield\n" + TAIL


def _flat(g):
    return np.concatenate([np.ravel(np.asarray(g[k])) for k in sorted(g)])


def _rel(a, b):
    a, b = _flat(a), _flat(b)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def case():
    with jax.enable_x64(True):
        leaky, hop = cl.compile(cl.loads(LEAKY)), cl.compile(cl.loads(HOPFIELD))
        p = {k: 0.5 * v for k, v in hop.init(jax.random.key(0), jnp.float64).items()}
        x = jax.random.uniform(jax.random.key(1), (4, 5), jnp.float64)
        y = jax.random.uniform(jax.random.key(2), (4, 3), jnp.float64)
        out = {
            "free": (leaky.relax(p, x), hop.relax(p, x)),
            "errors": [
                _rel(leaky.estimate(p, x, y, method="one_sided", beta=b), hop.estimate(p, x, y, method="one_sided", beta=b))
                for b in (1e-1, 1e-2, 1e-3)
            ],
            "gradient": leaky.estimate(p, x, y, method="gradient"),
            "bptt": leaky.estimate(p, x, y, method="bptt"),
            "symmetric": leaky.estimate(p, x, y, method="symmetric", beta=1e-3),
        }
    return out


def test_free_states_equal_the_hopfield_ones(case):
    leaky, hop = case["free"]
    for n in ("h", "y"):
        np.testing.assert_allclose(leaky[n], hop[n], atol=1e-12)


def test_generalized_update_tends_to_the_energy_update(case):
    e = case["errors"]
    assert e[2] < 1e-3
    assert 5 < e[0] / e[1] < 20 and 5 < e[1] / e[2] < 20  # the gap shrinks ∝ β


def test_vector_field_estimators_against_the_true_gradient(case):
    assert _rel(case["gradient"], case["bptt"]) < 1e-9
    assert _rel(case["symmetric"], case["gradient"]) < 1e-4


def test_energy_only_estimators_are_refused():
    model = cl.compile(cl.loads(LEAKY))
    with pytest.raises(cl.CircuitError, match="needs an energy"):
        model.estimate(model.init(jax.random.key(0)), jnp.ones((2, 5)), jnp.ones((2, 3)), method="chl")
