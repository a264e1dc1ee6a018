"""What a connection operator is: the interface every kind implements, once.

A connection carries its pre population's rates to its post population
through a **chain of stages** (`graph.Stage`), written after the weight name
and applied in order::

    h1 -- x : K1 conv(5, padding=2) pool(max, 2)     # conv, then max-pooling
    x -> h : W1                                      # dense (the default)
    a => b gain=0.8                                  # one-to-one

Each kind of stage is one `OpKind` in one module of this package
(`dense.py`, `one_to_one.py`, `conv.py`, `pool.py`) and one line in
`ops.OPS`. A kind defines:

* its arguments (`args`: names, types, defaults), checked at `check` time;
* `out_shape`: the shape it produces from its input shape (a `ShapeError`
  when the shapes cannot fit, which `check` reports at the stage);
* `weight_shape` and `fans`: the learned array it owns (if `weighted`) and
  the fan-in / fan-out its initialisation uses;
* `apply`: the forward map in JAX, on batches in the compiled layout
  (channels last, see `layout.py`);
* `pair`: its term in an energy, ⟨u, apply(w, v)⟩ unless it knows better;
* `rule`: how a local rule `post-side × pre-side` on its weight lowers,
  ∂/∂w ⟨P, apply(w, Q)⟩ (a VJP: for a dense weight the batched outer product
  Pᵀ Q, for a convolution the correlation of P with Q) — never a
  batch × post × pre tensor;
* `flops` and the label of the diagram and the summary;
* `numpy` and `numpy_vjp`: an independent NumPy forward map and its
  vector-Jacobian product, for the reference simulator of the tests.

Nothing here is written per kind twice: the adjoint of a chain (the drive a
tied `transpose(K)` sends back, the error a prospective circuit propagates,
the dynamics of an energy) is derived by JAX — `jax.linear_transpose` for a
linear chain, a VJP at the current state otherwise (max-pooling).

This module imports no JAX at import time, so `circuitc check` stays quick.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["Arg", "OpKind", "ShapeError", "chain_apply", "chain_is_linear", "chain_weighted"]

Array = Any


class ShapeError(Exception):
    """A stage cannot map its input shape to what the connection needs.

    The message may name the connection's ends as `{source}` and `{target}`;
    the checker fills in the populations."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclasses.dataclass(frozen=True)
class Arg:
    """One argument of a stage: positional in this order, or as `name=value`.

    kind: ``int`` (a whole number ≥ `minimum`), ``choice`` (a bare name from
    `choices`), or ``int_or_choice`` (either, e.g. `padding=2` / `padding=same`).
    A `default` of None makes it required.
    """

    name: str
    kind: str
    doc: str
    default: object = None
    minimum: int = 0
    choices: tuple[str, ...] = ()


class OpKind:
    """A kind of stage. Subclasses set the class attributes and override the methods."""

    name: str = ""
    doc: str = ""
    paper: str = ""
    weighted: bool = False  # owns the connection's learned array
    linear: bool = True  # linear in its input: the adjoint is `jax.linear_transpose`
    analytic: bool = True  # holomorphic in its input (complex β of holomorphic EqProp)
    args: tuple[Arg, ...] = ()
    arrows: tuple[str, ...] = ("--", "->")  # where it may be written
    written: bool = True  # written as `name(...)`; False: implied by the arrow or the weight

    def is_linear(self, a: Mapping[str, Any]) -> bool:
        """Whether the stage with these arguments is linear in its input."""
        return self.linear

    def is_analytic(self, a: Mapping[str, Any]) -> bool:
        """Whether the stage with these arguments is holomorphic in its input."""
        return self.analytic

    # ---------------------------------------------------------------- shapes --
    def out_shape(self, a: Mapping[str, Any], in_shape: tuple[int, ...], post: tuple[int, ...],
                  last: bool) -> tuple[int, ...]:
        """The written shape this stage produces from `in_shape`; `post` is the
        connection's target shape, `last` whether this is the chain's last stage."""
        raise NotImplementedError

    def weight_shape(self, a, in_shape, out_shape) -> tuple[int, ...] | None:
        """The learned array, in the compiled layout (None: the stage has none)."""
        return None

    def fans(self, a, in_shape, out_shape) -> tuple[int, int]:
        """(fan_in, fan_out) for `glorot` and `he`."""
        return (1, 1)

    def flops(self, a, in_shape, out_shape) -> int:
        """Floating-point operations of one forward pass for one example."""
        return 0

    def label(self, a) -> str:
        """How the diagram and `circuitc check` name this stage."""
        return self.name

    # ------------------------------------------------------------------- JAX --
    # The array methods take the resolved `graph.Stage` (its arguments `st.kw`,
    # its written `st.in_shape` and `st.out_shape`).
    def apply(self, st, w, v):
        """The forward map on a batch `v` (compiled layout); `w` is the stage's array or None."""
        raise NotImplementedError

    def pair(self, st, w, u, v):
        """Its term in an energy: Σ u ⊙ apply(w, v), summed over the batch."""
        import jax.numpy as jnp

        return jnp.sum(u * self.apply(st, w, v))

    # ----------------------------------------------------------------- NumPy --
    def numpy(self, st, w, v):
        """The forward map in NumPy (float64), written independently of `apply`."""
        raise NotImplementedError

    def numpy_vjp(self, st, w, v, ct):
        """(∂⟨ct, f(w, v)⟩/∂v, ∂⟨ct, f(w, v)⟩/∂w or None), in NumPy."""
        raise NotImplementedError


# ------------------------------------------------------------- chains of stages --
def chain_weighted(stages) -> int | None:
    """The index of the stage that owns the weight, or None."""
    from . import OPS

    for i, st in enumerate(stages):
        if OPS[st.kind].weighted:
            return i
    return None


def chain_is_linear(stages) -> bool:
    from . import OPS

    return all(OPS[st.kind].is_linear(st.kw) for st in stages)


def chain_apply(stages: Sequence, w, v, xp: str = "jax"):
    """Every stage in order (the weighted one gets `w`); `xp="numpy"` runs the NumPy versions."""
    from . import OPS

    for st in stages:
        op = OPS[st.kind]
        weight = w if op.weighted else None
        v = op.apply(st, weight, v) if xp == "jax" else op.numpy(st, weight, v)
    return v


def chain_numpy_vjp(stages: Sequence, w, v, ct):
    """(∂/∂v, ∂/∂w) of ⟨ct, chain(w, v)⟩ in NumPy, stage by stage backwards."""
    from . import OPS

    inputs = []
    for st in stages:
        op = OPS[st.kind]
        inputs.append(v)
        v = op.numpy(st, w if op.weighted else None, v)
    dw = None
    for st, x in zip(reversed(stages), reversed(inputs)):
        op = OPS[st.kind]
        ct, g = op.numpy_vjp(st, w if op.weighted else None, x, ct)
        if op.weighted:
            dw = g
    return ct, dw
