"""The registries carry behaviour: a new cost, optimizer, estimator or connection
operator is one entry, and everything else (check, lowering, training, the lists
of names in messages) follows from it; an unknown name is an error, never a default.
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import circuitlang as cl
from circuitlang import ops
from circuitlang import primitives as P
from circuitlang.ops.base import OpKind


def _with(monkeypatch, module, table: str, entry) -> None:
    monkeypatch.setattr(module, table, MappingProxyType({**getattr(module, table), entry.name: entry}))


def test_every_entry_names_an_implementation_that_loads():
    for table in (P.ENERGIES, P.LOWERINGS, P.COSTS, P.ESTIMATORS, P.INTEGRATORS, P.OPTIMIZERS):
        for kind in table.values():
            assert kind.load() is not None, kind.name
    for f in P.INITS.values():
        assert callable(f.impl_fn())
    assert {p.name for p in ops.OPS.values()} == set(ops.OPS)


def test_lists_of_names_come_from_the_registries():
    assert P.LEARN_SETTINGS["estimator"].choices == tuple(P.ESTIMATORS)
    assert P.PHASE_SETTINGS["integrator"].choices == tuple(P.INTEGRATORS)
    with pytest.raises(cl.CircuitError) as info:
        cl.loads("population x [2] input\npopulation y [2] output\ny -- x : W\nenergy hopfield\ncost y squared\n"
                 "learn eqprop { phase f { steps 1 }; phase n { steps 1; beta 0.1 }; estimator nope }")
    assert ", ".join(P.ESTIMATORS) in str(info.value)
    with pytest.raises(cl.CircuitError) as info:
        cl.loads("population x [1, 4, 4] input\npopulation h [1, 2, 2]\nh -- x : K convolve(3)\nenergy hopfield")
    assert ", ".join(f"{n}(...)" for n in ops.WRITTEN) in str(info.value)


BASE = """
population x [3] input
population y [2] output
y -- x : W
energy hopfield
cost y COST
learn eqprop {
  phase free { steps 30; dt 0.2 }
  phase nudge { steps 30; dt 0.2; beta 0.01 }
  estimator ESTIMATOR
  optimizer OPTIMIZER { lr 0.1 }
  batch 4
}
"""


def _text(cost="squared", estimator="symmetric", optimizer="sgd"):
    return BASE.replace("COST", cost).replace("ESTIMATOR", estimator).replace("OPTIMIZER", optimizer)


def absolute(out, target):
    """A cost for the test: C = Σ |s − target| (smoothed)."""
    d = out - target
    return jnp.sum(jnp.sqrt(d * d + 1e-6))


def zero_estimate(model, params, x, y, beta, key, s0):
    """An estimator for the test: no update, and the free state."""
    free = model._free(params, x, s0).state
    return {k: jnp.zeros_like(v) for k, v in params.items()}, free


def test_a_new_cost_is_one_entry(monkeypatch):
    _with(monkeypatch, P, "COSTS", P.Kind("absolute", "C = sum |s - target|", impl="tests.test_registry:absolute"))
    model = cl.compile(cl.loads(_text(cost="absolute")))
    params = model.init(jax.random.key(0))
    x, y = jnp.ones((4, 3)), jnp.zeros((4, 2))
    s = model.relax(params, x)
    assert float(model.loss(params, x, y)) == pytest.approx(float(absolute(s["y"], y)) / 4, rel=1e-5)


def test_a_new_estimator_is_one_entry(monkeypatch):
    _with(monkeypatch, P, "ESTIMATORS", P.Kind("zero", "no update", impl="tests.test_registry:zero_estimate"))
    model = cl.compile(cl.loads(_text(estimator="zero")))
    params = model.init(jax.random.key(0))
    g = model.estimate(params, jnp.ones((4, 3)), jnp.zeros((4, 2)))
    assert all(np.all(np.asarray(v) == 0) for v in g.values())


def rmsprop(rate, settings):
    return optax.rmsprop(rate, decay=settings.get("decay", 0.9))


def test_a_new_optimizer_is_one_entry(monkeypatch):
    settings = P._settings(P._LR, P.Setting("decay", "number", "decay of the squared gradients", minimum=0))
    _with(monkeypatch, P, "OPTIMIZERS", P.Kind("rmsprop", "RMSProp", impl="tests.test_registry:rmsprop",
                                               settings=settings))
    circ = cl.loads(_text(optimizer="rmsprop").replace("{ lr 0.1 }", "{ lr 0.1; decay 0.8 }"))
    assert circ.spec.learning.optimizer.settings["decay"] == 0.8
    from circuitlang.data import synthetic

    data = synthetic(n_train=32, n_test=8, n_in=3, n_out=2, hidden=4)
    result = cl.train(cl.compile(circ), data, epochs=1, progress=False)
    assert np.isfinite(result.history[0]["train_loss"])
    with pytest.raises(cl.CircuitError, match="unknown setting `momentum`"):
        cl.loads(_text(optimizer="rmsprop").replace("{ lr 0.1 }", "{ lr 0.1; momentum 0.9 }"))


class Double(OpKind):
    """A connection operator for the test: twice its input (weightless, linear)."""

    name = "double"
    doc = "2 x"

    def out_shape(self, a, in_shape, post, last):
        return tuple(in_shape)

    def flops(self, a, in_shape, out_shape):
        return int(np.prod(out_shape))

    def apply(self, st, w, v):
        return 2.0 * v

    def numpy(self, st, w, v):
        return 2.0 * v

    def numpy_vjp(self, st, w, v, ct):
        return 2.0 * ct, None


def test_a_new_connection_operator_is_one_entry(monkeypatch):
    monkeypatch.setattr(ops, "OPS", MappingProxyType({**ops.OPS, "double": Double()}))
    for module in ("circuitlang.check.connections", "circuitlang.ops.base", "circuitlang.lower.wiring",
                   "circuitlang.check.estimators", "circuitlang.cli", "circuitlang.diagram", "circuitlang.model"):
        mod = __import__(module, fromlist=["x"])
        if hasattr(mod, "OPS"):
            monkeypatch.setattr(mod, "OPS", ops.OPS)
    text = """
population x [1, 2, 2] input
population h [1, 2, 2]
population y [2] output
x -> h double()
h -> y : W
dynamics leaky
cost y squared
learn eqprop { phase free { steps 400; dt 0.1 }; phase nudge { steps 400; dt 0.1; beta 0.001 } }
"""
    circ = cl.loads(text)
    assert [s.kind for s in circ.connections[0].stages] == ["double"]
    model = cl.compile(circ)
    params = model.init(jax.random.key(0))
    x = jnp.arange(8.0).reshape(2, 4) / 8
    np.testing.assert_allclose(model.relax(params, x)["h"].reshape(2, 4), 2 * x, atol=1e-4)


def test_unknown_names_in_a_graph_are_errors_not_defaults():
    """Past `check`, a name that is not in its registry fails loudly (KeyError), e.g. a
    cost that was not checked: never computed as some other cost."""
    circ = cl.loads(_text())
    spec = circ.spec
    bad = dataclasses.replace(spec, costs=(dataclasses.replace(spec.costs[0], kind="squraed"),))
    model = cl.compile(circ)
    model.fns.costs = bad.costs
    with pytest.raises(KeyError):
        model.fns.cost({"y": jnp.zeros((1, 2))}, jnp.zeros((1, 2)))


def test_cl_train_stays_the_function_whatever_is_imported():
    """`cl.train` is the training function even after `circuitlang.training` is imported
    (a module named like the function would replace it as the package's attribute)."""
    import circuitlang.training  # noqa: F401

    assert callable(cl.train) and cl.train.__name__ == "train"
