"""What the compiler does for speed changes no number.

* a bounded population whose ρ is the identity within its bounds (the hard
  sigmoid of Scellier & Bengio 2017 with `min=0 max=1`) has its states read as
  its rates from a relaxation's second step on (`EnergyFunctions.boxed`): the
  states, residuals and estimates are bit for bit those of the plain step, from
  any initial state (inside the bounds or not), with fixed steps or a tolerance,
  for every estimator (holomorphic EqProp refuses a clipped ρ, and the step
  applies ρ to complex states anyway: nothing projects them);
* `identity_interval` reads that interval off a function's definition, and
  nothing else passes for the identity;
* `train`'s XLA options (`training.compiler_options`): region-analysis copy
  insertion trains bit for bit as without it.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import circuitlang as cl
from circuitlang import training
from circuitlang.data import load as load_data
from circuitlang.lower.exprs import WHOLE_LINE, identity_interval

from .conftest import ROOT

BOXED = """
circuit Boxed "hard sigmoid within [0, 1]"
fn rho(x) = clip(x, 0, 1)
population x [6] input
population h [5] min=0 max=1
population y [3] output min=0 max=1
h -- x : W1  init=glorot
y -- h : W2  init=glorot
bias h, y
energy hopfield
cost y squared
learn eqprop {
  phase free  { steps 12; dt 0.5 }
  phase nudge { steps 4; dt 0.5; beta 0.5 }
  estimator symmetric
  batch 4
}
"""


def _pair():
    """The circuit twice: as compiled, and with the shortcut turned off."""
    fast = cl.compile(cl.loads(BOXED))
    plain = cl.compile(cl.loads(BOXED))
    plain.fns.boxed = frozenset()
    return fast, plain


def _same(a, b) -> bool:
    return all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a) and set(a) == set(b)


def test_the_hard_sigmoid_within_its_bounds_is_boxed():
    fast, _ = _pair()
    assert fast.fns.boxed == {"h", "y"}
    # a smooth ρ, or bounds wider than where ρ is the identity: not boxed
    assert not cl.compile(cl.loads(BOXED.replace("clip(x, 0, 1)", "sigmoid(x)"))).fns.boxed
    assert cl.compile(cl.loads(BOXED.replace("[5] min=0 max=1", "[5] min=-1 max=1"))).fns.boxed == {"y"}
    assert not cl.compile(cl.loads(BOXED.replace("min=0 max=1", ""))).fns.boxed


@pytest.mark.parametrize("start", ["zeros", "outside"])
@pytest.mark.parametrize("tol", [None, 1e-4])
@pytest.mark.parametrize("steps", [1, 2, 3, 12])
def test_boxed_relaxation_is_bit_for_bit_the_plain_one(start, tol, steps):
    fast, plain = _pair()
    params = fast.init(jax.random.key(0))
    x = fast.as_inputs(jax.random.uniform(jax.random.key(1), (4, 6)))
    s0 = fast.zeros(x)
    if start == "outside":  # states beyond the bounds: the first step must apply ρ
        s0 = {k: 3.0 * jax.random.normal(jax.random.key(2 + i), v.shape) for i, (k, v) in enumerate(s0.items())}
    phase = dataclasses.replace(fast.free_phase, steps=steps, tol=tol)
    y = jax.nn.one_hot(jnp.arange(4) % 3, 3)
    for beta in (None, 0.5):
        a = jax.jit(lambda p, x, s: fast.relaxer.run(phase, p, x, s, beta, y))(params, x, s0)
        b = jax.jit(lambda p, x, s: plain.relaxer.run(phase, p, x, s, beta, y))(params, x, s0)
        assert _same(a.state, b.state)
        assert np.array_equal(a.residual, b.residual) and int(a.steps) == int(b.steps)


@pytest.mark.parametrize("method", ["symmetric", "one_sided", "random_sign", "gradient", "bptt"])
def test_boxed_estimates_are_bit_for_bit_the_plain_ones(method):
    fast, plain = _pair()
    params = fast.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (4, 6))
    y = jax.nn.one_hot(jnp.arange(4) % 3, 3)
    assert _same(fast.estimate(params, x, y, method=method), plain.estimate(params, x, y, method=method))


def _fn(text: str):
    circ = cl.loads(f"circuit F\n{text}\npopulation x [2] input\npopulation y [2] output\n"
                    "y -- x : W\nenergy hopfield\ncost y squared\n")
    return circ.spec.functions, circ.spec.params


@pytest.mark.parametrize("text, name, want", [
    ("fn r(x) = clip(x, 0, 1)", "r", (0.0, 1.0)),
    ("param lo = -0.5\nfn r(x) = clip(x, lo, 2)", "r", (-0.5, 2.0)),
    ("fn r(x) = clip(clip(x, -1, 0.5), 0, 1)", "r", (0.0, 0.5)),
    ("fn a(x) = hard_sigmoid(x)\nfn r(x) = a(clip(x, -2, 0.25))", "r", (0.0, 0.25)),
    ("fn r(x) = x", "r", WHOLE_LINE),
    ("fn r(x) = identity(x)", "r", WHOLE_LINE),
    ("fn r(x) = clip(x, 1, 0)", "r", None),             # an empty interval
    ("fn r(x) = sigmoid(x)", "r", None),
    ("fn r(x) = clip(2 * x, 0, 1)", "r", None),
    ("fn r(x) = clip(x, 0, 1) + 0", "r", None),          # not read through arithmetic
    ("fn r(x) = relu(x)", "r", None),                    # max(x, 0): ρ' is ½ at 0
    ("param k = 1\nfn r(x) = clip(x, 0, k * 1)", "r", None),  # bounds must be constants or params
    ("fn clip(x, a, b) = x * 0\nfn r(x) = clip(x, 0, 1)", "r", None),  # a `fn` named like the built-in
])
def test_identity_interval(text, name, want):
    functions, params = _fn(text)
    assert identity_interval(name, functions, params) == want


def test_identity_interval_of_builtins():
    assert identity_interval("hard_sigmoid", {}, {}) == (0.0, 1.0)
    assert identity_interval("identity", {}, {}) == WHOLE_LINE
    assert identity_interval("tanh", {}, {}) is None


def test_region_analysis_trains_bit_for_bit(monkeypatch):
    model = cl.compile(cl.load(ROOT / "tests" / "circuits" / "tiny_hopfield.circ"))
    data = load_data("digits")
    runs = []
    for options in ({}, {"xla_cpu_copy_insertion_use_region_analysis": True}):
        monkeypatch.setattr(training, "compiler_options", lambda options=options: options)
        runs.append(training.train(model, data, 1, seed=0, progress=False))
    assert _same(runs[0].params, runs[1].params)
    strip = lambda h: [{k: v for k, v in row.items() if "seconds" not in k} for row in h]  # noqa: E731
    assert strip(runs[0].history) == strip(runs[1].history)


def test_compiler_options_this_xla_does_not_know_are_dropped():
    """An older jaxlib refuses an unknown compile option outright (exit 3 for every train);
    the options are probed once and the unknown ones left out."""
    from circuitlang.training import _CPU_OPTIONS, supported_options

    made_up = (("xla_cpu_no_such_option_circuitlang", True),)
    assert supported_options(made_up) == ()
    assert supported_options(_CPU_OPTIONS + made_up) == _CPU_OPTIONS
