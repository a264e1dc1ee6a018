"""Local rules factored into sums of (post-side) × (pre-side) products (no JAX).

    during nudge: dW2/dt = eta * post.apical * rho'(post.s) * rho(pre.s)

A rule is written per synapse. `factor_rule` expands its right-hand side into
a **sum of terms**, each a product of

* a *scalar* factor (numbers, params, `beta`, `dt`, `t`),
* a *post-side* factor (`post.…`, or a population of the post end's shape),
* a *pre-side* factor (`pre.…`, or a population of the pre end's shape),
* optionally a *synaptic* factor (the weight itself, e.g. a decay `- lam * W`),

so `rules.py` can lower each term through the connection's operator without
a batch × post × pre tensor. A rule that cannot be written this way (e.g.
``exp(post.s * pre.s)``) is a located error: `rule_problems` reports it at
`check` time, so the lowering never meets one. `d(X)/dt` expands into the
difference of X at the two ends of an integration step, over dt.

A population named in a rule is aligned with the end it *is* (``post``
first), otherwise with the end of its shape (``post`` first).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from . import primitives as P
from . import syntax as S
from .errors import Diagnostic
from .layout import describe

__all__ = ["Atom", "Term", "Orientation", "CompiledRule", "factor_rule", "rule_problems", "NotFactorable"]

SCALAR, POST, PRE, SYN = "scalar", "post", "pre", "syn"
PHASE_NAMES = ("beta", "dt", "t")


@dataclasses.dataclass(frozen=True)
class Atom:
    """A single-sided factor: `expr` evaluated at a `point` of the step (avg, now, next)."""

    side: str
    expr: S.Expr
    point: str = "avg"


@dataclasses.dataclass(frozen=True)
class Term:
    coef: float
    atoms: tuple[Atom, ...]

    def at(self, point: str) -> "Term":
        return Term(self.coef, tuple(dataclasses.replace(a, point=point) if a.side != SCALAR or _timed(a.expr) else a
                                     for a in self.atoms))


def _timed(expr) -> bool:
    return any(isinstance(n, S.Var) and n.name == "t" for n in S.walk(expr))


@dataclasses.dataclass(frozen=True)
class Orientation:
    """One way of reading a target: `post`/`pre` populations, and whether ΔW is transposed."""

    post: str
    pre: str
    transpose: bool
    terms: tuple[Term, ...]


@dataclasses.dataclass(frozen=True)
class CompiledRule:
    """One rule on one target, factored: its orientations (two for an undirected
    coupling, whose ends both take a turn as `post`)."""

    target: str  # the parameter name: a weight or `pop.bias`
    kind: str  # matrix | vector (one-to-one) | bias
    phases: tuple[str, ...]
    always: bool
    orientations: tuple[Orientation, ...]
    placeholder: str | None
    span: Any

    def active(self, phase: str) -> bool:
        return self.always or not self.phases or phase in self.phases


def factor_rule(rule, target: str, pops: Mapping[str, Any], weights: Mapping[str, Any]) -> CompiledRule:
    """The rule `rule` (a `graph.RuleSpec`) on `target`, factored; raises `NotFactorable`."""
    if target.endswith(".bias"):
        n = target[: -len(".bias")]
        orients = [(n, n, False)]
        kind = "bias"
    else:
        e = weights[target]
        kind = "vector" if e.kind == "one_to_one" else "matrix"
        orients = [(e.post, e.pre, False)]
        if e.kind == "undirected":  # both ends take a turn as `post`
            orients.append((e.pre, e.post, True))
    out = []
    for post, pre, transpose in orients:
        ctx = _Context(post, pre, pops, kind, target, rule.placeholder, weights)
        terms = tuple(_expand(rule.expr, ctx))
        out.append(Orientation(post, pre, transpose, terms))
    return CompiledRule(target, kind, rule.phases, rule.always, tuple(out), rule.placeholder, rule.span)



def rule_problems(learning, pops: Mapping[str, Any], weights: Mapping[str, Any],
                  params: Mapping[str, float] | None = None, functions: Mapping[str, Any] | None = None,
                  ) -> list[Diagnostic]:
    """Every reason the local rules of a `learn` block cannot be lowered: terms that
    are not post × pre products, rules in phases without Euler steps to follow, and
    divisions by a constant that is zero in a phase the rule is active in (`/ beta`
    in an un-nudged phase)."""
    problems: list[Diagnostic] = []
    for rule in learning.rules:
        problems.extend(_zero_divisors(rule, learning.phases, params or {}, functions or {}))
    for rule in learning.rules:
        for target in rule.weights:
            try:
                factor_rule(rule, target, pops, weights)
            except NotFactorable as err:
                problems.append(err.diagnostic)
    for ph in learning.phases:
        active = any(r.always or not r.phases or ph.name in r.phases for r in learning.rules)
        if not active:
            continue
        if "trajectory" not in P.INTEGRATORS[ph.integrator].provides:
            problems.append(Diagnostic(f"phase `{ph.name}`: local rules are integrated along Euler steps",
                                       ph.span, "remove `integrator ...` from this phase"))
        if ph.forward:
            problems.append(Diagnostic(
                f"phase `{ph.name}` is one `forward` pass: it has no trajectory for rules to follow",
                ph.span, "give it `steps N; dt ...`"))
    return problems


def _zero_divisors(rule, phases, params, functions) -> list[Diagnostic]:
    """A divisor made of numbers, params, `beta` and `dt` only, that is 0 in an active phase."""
    from .expr import EvalError, evaluate

    out: list[Diagnostic] = []
    for node in S.walk(rule.expr):
        if not (isinstance(node, S.Binary) and node.op == "/"):
            continue
        names = {n.name for n in S.walk(node.right) if isinstance(n, S.Var)}
        if any(isinstance(n, (S.Member, S.TimeDerivative)) for n in S.walk(node.right)) or \
                not names <= set(params) | {"beta", "dt"}:
            continue
        for ph in phases:
            if not (rule.always or not rule.phases or ph.name in rule.phases):
                continue
            try:
                value = evaluate(node.right, {**params, "beta": ph.beta, "dt": ph.dt}, functions, "a divisor")
            except EvalError:
                continue
            if value == 0:
                out.append(Diagnostic(
                    f"this rule divides by {'`beta`, which is 0' if 'beta' in names else 'zero'} in phase "
                    f"`{ph.name}`, where it is active",
                    node.right.span,
                    "make the rule `during` the nudged phases only, or divide by something nonzero",
                ))
                break
    return out


# --------------------------------------------------------------- expansion --
class NotFactorable(Exception):
    def __init__(self, diagnostic: Diagnostic) -> None:
        self.diagnostic = diagnostic


@dataclasses.dataclass
class _Context:
    post: str
    pre: str
    pops: Mapping[str, Any]
    kind: str
    target: str
    placeholder: str | None
    weights: Mapping[str, Any]

    def side_of_member(self, node: S.Member) -> str:
        obj = node.obj.name
        if obj == "post":
            return POST
        if obj == "pre":
            return POST if self.kind == "bias" else PRE
        if obj == self.post:
            return POST
        if obj == self.pre:
            return POST if self.kind == "bias" else PRE
        shape = self.pops[obj].shape
        if shape == self.pops[self.post].shape:
            return POST
        if shape == self.pops[self.pre].shape and self.kind != "bias":
            return PRE
        if len(shape) == 1 and len(self.pops[self.pre].shape) == len(self.pops[self.post].shape) == 1:
            what = f"has {shape[0]} values, but `{self.target}` connects " \
                   f"{self.pops[self.pre].size} → {self.pops[self.post].size} neurons"
        else:
            what = f"is {describe(shape)}, but `{self.target}` connects " \
                   f"{describe(self.pops[self.pre].shape)} → {describe(self.pops[self.post].shape)}"
        raise NotFactorable(Diagnostic(
            f"`{obj}.{node.attr.name}` {what}: "
            "a population named in a rule must have the shape of one end of the synapse",
            node.span,
            "use `post.` / `pre.` for the ends of the synapse",
        ))


def _sides(expr, ctx: _Context) -> set[str]:
    sides: set[str] = set()
    for node in S.walk(expr):
        if isinstance(node, S.Member):
            sides.add(ctx.side_of_member(node))
        elif isinstance(node, S.Var) and (node.name in ctx.weights or node.name == ctx.placeholder):
            name = ctx.target if node.name == ctx.placeholder else node.name
            shape = ctx.weights[name].value_shape
            if shape is None:
                raise NotFactorable(Diagnostic(
                    f"`{node.name}` is a tied transpose of an operator that is not a matrix: "
                    "it has no array of its own to multiply a rule by",
                    node.span, f"use `{ctx.weights[name].tied_to}`"))
            if ctx.kind == "bias" or shape != ctx.weights.get(ctx.target, ctx.weights[name]).shape:
                raise NotFactorable(Diagnostic(
                    f"`{node.name}` has a different shape from `{ctx.target}`, the weight this rule updates",
                    node.span,
                ))
            sides.add(SYN)
    return sides


def _has_derivative(expr) -> bool:
    return any(isinstance(n, S.TimeDerivative) for n in S.walk(expr))


def _expand(expr, ctx: _Context) -> list[Term]:
    sides = _sides(expr, ctx)
    if len(sides) <= 1 and not _has_derivative(expr):
        side = next(iter(sides)) if sides else SCALAR
        return [Term(1.0, (Atom(side, expr),))]
    if isinstance(expr, S.Binary) and expr.op in "+-" and len(expr.op) == 1:
        left, right = _expand(expr.left, ctx), _expand(expr.right, ctx)
        if expr.op == "-":
            right = [Term(-t.coef, t.atoms) for t in right]
        return left + right
    if isinstance(expr, S.Binary) and expr.op == "*":
        left, right = _expand(expr.left, ctx), _expand(expr.right, ctx)
        return [Term(a.coef * b.coef, a.atoms + b.atoms) for a in left for b in right]
    if isinstance(expr, S.Binary) and expr.op == "/":
        rs = _sides(expr.right, ctx)
        if len(rs) <= 1 and not _has_derivative(expr.right):
            side = next(iter(rs)) if rs else SCALAR
            inv = S.Binary("/", S.Number(1.0, "1", expr.span), expr.right, expr.right.span)
            return [Term(t.coef, t.atoms + (Atom(side, inv),)) for t in _expand(expr.left, ctx)]
    if isinstance(expr, S.Unary):
        inner = _expand(expr.operand, ctx)
        return [Term(-t.coef, t.atoms) for t in inner] if expr.op == "-" else inner
    if isinstance(expr, S.TimeDerivative):
        if any(isinstance(n, S.TimeDerivative) for n in list(S.walk(expr))[1:]):
            raise NotFactorable(Diagnostic("a time derivative inside a time derivative is not supported", expr.span))
        inv_dt = Atom(SCALAR, S.Binary("/", S.Number(1.0, "1", expr.span), S.Var("dt", expr.span), expr.span), "now")
        out = []
        for t in _expand(expr.expr, ctx):
            out.append(Term(t.coef, t.at("next").atoms + (inv_dt,)))
            out.append(Term(-t.coef, t.at("now").atoms + (inv_dt,)))
        return out
    raise NotFactorable(Diagnostic(
        "this part of the rule mixes the post and pre ends of the synapse in a way that is not a "
        "product of a post-side and a pre-side factor, so it would need a batch × post × pre tensor",
        expr.span,
        "write the rule as a sum of products like `f(post.…) * g(pre.…)`",
    ))


