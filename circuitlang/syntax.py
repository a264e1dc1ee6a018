"""The syntax tree: frozen dataclasses, one per construct, each with a `Span`.

The parser (`parse.py`) produces a `Program`; the builder (`check.py`) turns
it into the circuit graph. Nothing here knows about semantics: names are not
resolved and numbers are kept as written.
"""

from __future__ import annotations

import dataclasses
from typing import Union

from .source import Span

_node = dataclasses.dataclass(frozen=True)


# ------------------------------------------------------------------ names --
@_node
class Ident:
    """A name as written, with its position."""

    name: str
    span: Span


# ------------------------------------------------------------ expressions --
@_node
class Number:
    value: float
    text: str
    span: Span


@_node
class Var:
    name: str
    span: Span


@_node
class Member:
    """`obj.attr`, e.g. `post.apical` or `s2.s`."""

    obj: Ident
    attr: Ident
    span: Span


@_node
class Call:
    """`f(a, b)`; `primes` counts the quotes of `rho'(x)`."""

    fn: Ident
    args: tuple["Expr", ...]
    primes: int
    span: Span


@_node
class TimeDerivative:
    """`d(expr)/dt`: the time derivative of `expr` along the trajectory."""

    expr: "Expr"
    span: Span


@_node
class Unary:
    op: str
    operand: "Expr"
    span: Span


@_node
class Binary:
    """Arithmetic (`+ - * / @ ^`) and comparisons (`< <= > >= == !=`)."""

    op: str
    left: "Expr"
    right: "Expr"
    span: Span


Expr = Union[Number, Var, Member, Call, TimeDerivative, Unary, Binary]


def children(expr: Expr) -> tuple[Expr, ...]:
    """The direct sub-expressions of `expr`."""
    if isinstance(expr, Call):
        return expr.args
    if isinstance(expr, (TimeDerivative,)):
        return (expr.expr,)
    if isinstance(expr, Unary):
        return (expr.operand,)
    if isinstance(expr, Binary):
        return (expr.left, expr.right)
    return ()


def walk(expr: Expr):
    """Every node of `expr`, parents first (iterative: no recursion limit)."""
    stack = [expr]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(children(node)))


# ------------------------------------------------------------- statements --
@_node
class Option:
    """`key` or `key=value` after a population, connection, cost, ...

    Also `key=value` inside an attribute (`lr W1=0.1`). `key` may be dotted.
    """

    key: str
    value: Expr | None
    span: Span
    key_span: Span


@_node
class Header:
    name: Ident
    doc: str | None
    span: Span


@_node
class Param:
    name: Ident
    value: Expr
    span: Span


@_node
class FnDef:
    name: Ident
    params: tuple[Ident, ...]
    body: Expr
    span: Span


@_node
class Ode:
    """`tau * dX/dt = rhs` (or `dX/dt = rhs`, tau = None)."""

    state: Ident
    tau: Expr | None
    rhs: Expr
    span: Span


@_node
class Let:
    """A named intermediate inside a neuron: `v = expr`."""

    name: Ident
    value: Expr
    span: Span


@_node
class Neuron:
    name: Ident
    compartments: tuple[Ident, ...]
    odes: tuple[Ode, ...]
    lets: tuple[Let, ...]
    span: Span


@_node
class Population:
    """`population NAME [: TYPE] [d1, d2, ...] options`; `shape` as written
    (one size for a vector; channels, height, width for an image)."""

    name: Ident
    cell_type: Ident | None
    shape: tuple[Expr, ...]
    options: tuple[Option, ...]
    span: Span

    @property
    def size(self) -> Expr:
        """The first dimension (the size of a vector population)."""
        return self.shape[0]


@_node
class Endpoint:
    population: Ident
    compartment: Ident | None
    span: Span


@_node
class OpCall:
    """A connection operator as written: `conv(5, padding=2)`, `pool(max, 2)`."""

    name: Ident
    args: tuple[Expr, ...]
    kwargs: tuple[Option, ...]
    span: Span


@_node
class Connection:
    """`pre ARROW post : W [= tie] ops options`; `arrow` is `--`, `->` or `=>`;
    `ops` the operators in the order written (empty: dense, or one-to-one for `=>`)."""

    pre: Endpoint
    arrow: str
    post: Endpoint
    weight: Ident | None
    tie: Expr | None
    options: tuple[Option, ...]
    span: Span
    ops: tuple[OpCall, ...] = ()


@_node
class Bias:
    populations: tuple[Ident, ...]
    options: tuple[Option, ...]
    span: Span


@_node
class EnergyUse:
    """A preset named inside an `energy { ... }` block, or `energy NAME`."""

    name: Ident
    options: tuple[Option, ...]
    span: Span


@_node
class EnergyTerm:
    """`term [for A, B:] expr`: a scalar added to the energy."""

    targets: tuple[Ident, ...]
    expr: Expr
    span: Span


@_node
class Energy:
    uses: tuple[EnergyUse, ...]
    terms: tuple[EnergyTerm, ...]
    span: Span


@_node
class Dynamics:
    name: Ident
    options: tuple[Option, ...]
    span: Span


@_node
class Cost:
    population: Ident
    kind: Ident
    options: tuple[Option, ...]
    span: Span


@_node
class Attr:
    """`key [value] [k=v ...]` inside a phase, learn or optimizer block."""

    key: Ident
    value: Expr | None
    kwargs: tuple[Option, ...]
    span: Span


@_node
class Phase:
    name: Ident
    attrs: tuple[Attr, ...]
    span: Span


@_node
class Optimizer:
    name: Ident
    options: tuple[Option, ...]
    attrs: tuple[Attr, ...]
    span: Span


@_node
class Rule:
    """`during P[, Q] [for W1, W2]: dW/dt = expr` or `always [for ...]: ...`."""

    phases: tuple[Ident, ...]  # empty for `always`
    always: bool
    targets: tuple[Ident, ...]  # the `for` list; empty when the lhs names the weight
    lhs: Ident  # the weight in `dW/dt` (a placeholder when `targets` is given)
    expr: Expr
    span: Span


@_node
class Learn:
    method: Ident
    phases: tuple[Phase, ...]
    optimizers: tuple[Optimizer, ...]
    rules: tuple[Rule, ...]
    attrs: tuple[Attr, ...]
    span: Span


@_node
class PerturbWindow:
    """`PHASE` or `PHASE[start:stop]` (the phase's steps start .. stop-1) in a `perturb`."""

    phase: Ident
    start: Expr | None
    stop: Expr | None
    span: Span


@_node
class Perturb:
    """`perturb NAME : pop[.compartment] KIND [value] during PHASE[a:b], ... options`."""

    name: Ident
    target: Endpoint
    kind: Ident
    value: Expr | None
    windows: tuple[PerturbWindow, ...]
    options: tuple[Option, ...]
    span: Span


Statement = Union[
    Header, Param, FnDef, Neuron, Population, Connection, Bias, Energy, Dynamics, Cost, Learn, Perturb
]


@_node
class Program:
    """A parsed `.circ` file: its statements in source order."""

    path: str
    statements: tuple[Statement, ...]
