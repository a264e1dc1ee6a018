"""Local learning rules (`learn rules`): per-synapse equations lowered to matmuls.

    during nudge: dW2/dt = eta * post.apical * rho'(post.s) * rho(pre.s)

A rule is written per synapse (post index i, pre index j). The compiler
expands its right-hand side into a **sum of terms**, each a product of

* a *scalar* factor (numbers, params, `beta`, `dt`, `t`),
* a *post-side* factor (`post.…`, or a population aligned with the post end),
* a *pre-side* factor (`pre.…`, or a population aligned with the pre end),
* optionally a *synaptic* factor (the weight itself, e.g. a decay `- lam * W`),

and computes each term as an outer product summed over the batch with one
`dot_general`: ΔW = (1/B) Σ_terms c · (P_termᵀ Q_term) ⊙ S_term. Terms that
share their pre-side factor share one matmul. Nothing of size
batch × post × pre is ever built; a rule that cannot be written this way
(e.g. ``exp(post.s * pre.s)``) is a located compile error.

A population named in a rule is aligned with the end it *is* (``post`` first),
otherwise with the end of its size (``post`` first); anything else is an error.

**Integration.** Over a step from state s_t to s_(t+1), every single-sided
factor is averaged between both ends (the trapezoid rule per factor), and
``d(X)/dt`` is the finite difference (X(s_(t+1)) − X(s_t)) / dt, expanded by
terms. With this pairing the STDP-like rule ``d(ρ(post.s))/dt · ρ(pre.s)``
applied to both ends of an undirected coupling telescopes exactly: summed
over a phase it equals ΔW = ρ(a_T)ρ(b_T)ᵀ − ρ(a_0)ρ(b_0)ᵀ, the one-sided
EqProp update times β (Bengio et al. 2017).

Updates: in an ordinary phase a rule's update is accumulated (the weights
stay fixed during the phases) and `estimate(..., method="rules")` returns
minus the total, as a gradient estimate for the optimizer (default: SGD with
rate 1, so the rule's own constants set the step). In a streaming phase
(`present N`) the weights change at every step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from . import syntax as S
from .errors import CircuitError, Diagnostic
from .graph import PhaseSpec
from .lower.energy import weights_of
from .lower.relax import OK

__all__ = ["RuleProgram", "Term", "Atom"]

Array = Any
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
    target: str  # the parameter name: a weight or `pop.bias`
    kind: str  # matrix | vector (one-to-one) | bias
    phases: tuple[str, ...]
    always: bool
    orientations: tuple[Orientation, ...]
    placeholder: str | None
    span: Any

    def active(self, phase: str) -> bool:
        return self.always or not self.phases or phase in self.phases


class RuleProgram:
    """Every rule of the file, factored; `run` executes a phase while integrating them."""

    def __init__(self, model) -> None:
        self.model = model
        self.fns = model.fns
        self.source = model.circuit.source
        spec = model.spec
        self.weights = model.circuit.weights
        self.rules: list[CompiledRule] = []
        errors: list[Diagnostic] = []
        for rule in spec.learning.rules:
            for target in rule.weights:
                try:
                    self.rules.append(self._compile(rule, target))
                except _NotFactorable as err:
                    errors.append(err.diagnostic)
        if errors:
            raise CircuitError(errors, self.source)
        self.targets = tuple(dict.fromkeys(r.target for r in self.rules))
        for ph in spec.learning.phases:
            if ph.integrator != "euler" and any(r.active(ph.name) for r in self.rules):
                raise CircuitError(
                    Diagnostic(f"phase `{ph.name}`: local rules are integrated along Euler steps",
                               ph.span, "remove `integrator ...` from this phase"),
                    self.source,
                )
            if ph.forward and any(r.active(ph.name) for r in self.rules):
                raise CircuitError(
                    Diagnostic(f"phase `{ph.name}` is one `forward` pass: it has no trajectory for rules to follow",
                               ph.span, "give it `steps N; dt ...`"),
                    self.source,
                )

    # ------------------------------------------------------------- compile --
    def _compile(self, rule, target: str) -> CompiledRule:
        pops = self.fns.pops
        if target.endswith(".bias"):
            n = target[: -len(".bias")]
            orients = [(n, n, False)]
            kind = "bias"
        else:
            e = self.weights[target]
            kind = "vector" if e.kind == "one_to_one" else "matrix"
            orients = [(e.post, e.pre, False)]
            if e.kind == "undirected":  # both ends take a turn as `post`
                orients.append((e.pre, e.post, True))
        out = []
        for post, pre, transpose in orients:
            ctx = _Context(post, pre, pops, kind, target, rule.placeholder, self.weights)
            terms = tuple(_expand(rule.expr, ctx))
            out.append(Orientation(post, pre, transpose, terms))
        return CompiledRule(target, kind, rule.phases, rule.always, tuple(out), rule.placeholder, rule.span)

    def wanted(self, phase: str) -> set[tuple[str, str]]:
        """The (population, member) values the rules active in `phase` read."""
        want: set[tuple[str, str]] = set()
        for r in self.rules:
            if not r.active(phase):
                continue
            for o in r.orientations:
                for term in o.terms:
                    for a in term.atoms:
                        for node in S.walk(a.expr):
                            if isinstance(node, S.Member):
                                obj = {"post": o.post, "pre": o.pre}.get(node.obj.name, node.obj.name)
                                want.add((obj, node.attr.name))
        return want

    # ----------------------------------------------------------- evaluate --
    def update(self, phase: PhaseSpec, params, obs_now, obs_next, beta, t) -> dict[str, Array]:
        """Each target's update rate (dθ/dt) over one step, batch-averaged."""
        w = weights_of(self.fns.edges, params)
        batch = next(iter(obs_now["state"].values())).shape[0]
        out: dict[str, Array] = {}
        for r in self.rules:
            if not r.active(phase.name):
                continue
            total = None
            for o in r.orientations:
                envs = {
                    point: _env(self.model, o, obs, w, r, phase, beta, t + (phase.dt if point == "next" else 0.0))
                    for point, obs in (("now", obs_now), ("next", obs_next))
                }
                m = self._terms(o, r, envs, params, batch)
                if o.transpose:
                    m = m.T
                total = m if total is None else total + m
            out[r.target] = out[r.target] + total if r.target in out else total
        return out

    def _terms(self, o: Orientation, r: CompiledRule, envs, params, B: int):
        """ΔW of one orientation: per group of terms sharing their pre-side factor,
        one (B, post)ᵀ (B, pre) product over the batch."""
        ev = self.model.ev
        shape = params[r.target].shape
        if o.transpose:
            shape = shape[::-1]

        def value(a: Atom):
            if a.point == "avg":
                return 0.5 * (ev.eval(a.expr, envs["now"]) + ev.eval(a.expr, envs["next"]))
            return ev.eval(a.expr, envs[a.point])

        n_post = shape[0]
        groups: dict[tuple, list[Term]] = {}
        for term in o.terms:
            key = tuple(a for a in term.atoms if a.side in (PRE, SYN))
            groups.setdefault(key, []).append(term)
        total = 0.0
        for key, terms in groups.items():
            P = None
            for term in terms:
                p = term.coef
                for a in term.atoms:
                    if a.side in (POST, SCALAR):
                        p = p * value(a)
                p = jnp.broadcast_to(p, (B, n_post))
                P = p if P is None else P + p
            pre = [a for a in key if a.side == PRE]
            syn = [a for a in key if a.side == SYN]
            if r.kind == "bias" or r.kind == "vector":
                Q = 1.0
                for a in pre:
                    Q = Q * value(a)
                m = jnp.mean(P * Q, axis=0)
            elif pre:
                Q = 1.0
                for a in pre:
                    Q = Q * value(a)
                Q = jnp.broadcast_to(Q, (B, shape[1]))
                m = lax.dot_general(P, Q, (((0,), (0,)), ((), ()))) / B
            else:
                m = jnp.broadcast_to(jnp.mean(P, axis=0)[:, None], shape)
            for a in syn:
                m = m * value(a)
            total = total + m
        return jnp.broadcast_to(total, shape)

    # ---------------------------------------------------------------- run --
    def run(self, phase: PhaseSpec, params, x, s0, beta=None, y=None, stream: bool = False,
            opt=None, opt_state=None):
        """One phase of `phase.steps` Euler steps, integrating the active rules.

        Returns (Relaxation, total update {target: Δθ}). With `stream`, the weights
        change at every step instead: the step's update, as the gradient estimate
        −dt · rule, goes through the optax transformation `opt` (default: adding it
        as is), and the result is (Relaxation, params, opt_state).
        """
        model = self.model
        fns = self.fns
        dt = phase.dt
        want = self.wanted(phase.name)
        active = [r for r in self.rules if r.active(phase.name)]
        steps = phase.steps if phase.steps is not None else phase.present
        nudge = beta is not None
        b = beta if nudge else 0.0

        def observe(s, p, t):
            return _observe(model, s, p, x, beta if nudge else None, y, t, want)

        zero = {r.target: jnp.zeros_like(params[r.target]) for r in active}

        def body(i, carry):
            s, obs, acc, p, st = carry
            t = i * dt
            new = fns.project({k: s[k] + dt * obs["force"][k] for k in s})
            obs_new = observe(new, p, t + dt)
            upd = self.update(phase, p, obs, obs_new, b, t)
            if stream and opt is None:
                p = {k: (p[k] + dt * upd[k] if k in upd and model.trainable[k] else p[k]) for k in p}
            elif stream:
                g = {k: (-dt * upd[k] if k in upd and model.trainable[k] else jnp.zeros_like(v)) for k, v in p.items()}
                change, st = opt.update(g, st, p)
                p = {k: p[k] + change[k] for k in p}
            else:
                acc = {k: acc[k] + dt * upd[k] for k in acc}
            return new, obs_new, acc, p, st

        start = dict(s0)
        carry = (start, observe(start, params, 0.0), zero, params, opt_state if opt is not None else ())
        _, last, acc, p, opt_state = lax.fori_loop(0, steps, body, carry)
        # what the circuit shows (s, or ŭ with `prospective`), with the relaxations' result code
        res = model.relaxer._finish(last["state"], x, jnp.asarray(steps), jnp.asarray(OK))
        return (res, p, opt_state) if stream else (res, acc)


# --------------------------------------------------------------- expansion --
class _NotFactorable(Exception):
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
        size = self.pops[obj].size
        if size == self.pops[self.post].size:
            return POST
        if size == self.pops[self.pre].size and self.kind != "bias":
            return PRE
        ends = f"{self.pops[self.pre].size} → {self.pops[self.post].size}"
        raise _NotFactorable(Diagnostic(
            f"`{obj}.{node.attr.name}` has {size} values, but `{self.target}` connects {ends} neurons: "
            "a population named in a rule must have the size of one end of the synapse",
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
            if ctx.kind == "bias" or ctx.weights[name].shape != ctx.weights.get(ctx.target, ctx.weights[name]).shape:
                raise _NotFactorable(Diagnostic(
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
            raise _NotFactorable(Diagnostic("a time derivative inside a time derivative is not supported", expr.span))
        inv_dt = Atom(SCALAR, S.Binary("/", S.Number(1.0, "1", expr.span), S.Var("dt", expr.span), expr.span), "now")
        out = []
        for t in _expand(expr.expr, ctx):
            out.append(Term(t.coef, t.at("next").atoms + (inv_dt,)))
            out.append(Term(-t.coef, t.at("now").atoms + (inv_dt,)))
        return out
    raise _NotFactorable(Diagnostic(
        "this part of the rule mixes the post and pre ends of the synapse in a way that is not a "
        "product of a post-side and a pre-side factor, so it would need a batch × post × pre tensor",
        expr.span,
        "write the rule as a sum of products like `f(post.…) * g(pre.…)`",
    ))


# ------------------------------------------------------------ observations --
def _observe(model, s, params, x, beta, y, t, want) -> dict[str, Any]:
    """At state `s`: {"force": ds/dt, "values": {"pop.member": value} for the members in
    `want`, "state": what the circuit shows (s, or ŭ with `prospective`)}."""
    fns = model.fns
    vals: dict[str, Any] = {}
    if model.relaxer.prospective:
        # latent equilibrium: the circuit shows (and its rules read) the prospective
        # state ŭ; the slow membrane state s only follows it
        u, mu = model.relaxer.prospective_state(params, x, s, beta, y, with_forward=True)
        force = {n: (u[n] - s[n]) / fns.pops[n].tau for n in s}
        for pop, member in want:
            if member == "error" and pop in u:  # the prospective error: ŭ − its feed-forward prediction
                vals[f"{pop}.error"] = u[pop] - mu[pop]
        s = u
    elif getattr(fns, "vector_field", False):
        if hasattr(fns, "compartments"):
            force, comps = fns.force(s, params, x, None, beta, y, t=t, observe=True)
            for n, d in comps.items():
                for c, v in d.items():
                    vals[f"{n}.{c}"] = v
        else:
            force = fns.force(s, params, x, None, beta, y)
    else:
        def total(u):
            E = fns.energy(u, params, x, None)
            if beta is not None:
                E = E + beta * fns.cost(u, y)
            return E

        g = jax.grad(total)(dict(s))
        force = {k: -v for k, v in g.items()}
    full = {**x, **s}
    need_mu = any(m == "error" for _, m in want)
    mu = _net_input(model, full, params, x) if need_mu else {}
    for pop, member in want:
        key = f"{pop}.{member}"
        if key in vals:
            continue
        if member == "target":
            vals[key] = y[pop] if isinstance(y, Mapping) else (y if y is not None else jnp.zeros_like(full[pop]))
        elif member == "error":
            vals[key] = full[pop] - mu[pop] if pop in mu else full[pop]
        elif member == "rate":  # what the population transmits: its own activation of its state
            vals[key] = fns.act[pop](full[pop])
        elif pop in full and member == fns_main(fns, pop):
            vals[key] = full[pop]
        else:  # a cell's other state variable (compartments came with the force)
            vals[key] = full[key]
    return {"force": force, "values": vals, "state": dict(s)}


def fns_main(fns, pop: str) -> str:
    main = getattr(fns, "main", {})
    return main.get(pop, "s")


def _net_input(model, full, params, x) -> dict[str, Array]:
    """μ per population: Σ ± W ρ(pre) over its inputs plus its bias (both ways for `--`)."""
    fns = model.fns
    w = weights_of(fns.edges, params)
    r = {n: fns.act[n](v) for n, v in full.items() if n in fns.pops}
    out: dict[str, Array] = {}

    def add(n, v):
        out[n] = out[n] + v if n in out else v

    for e in fns.edges:
        if e.kind == "undirected":
            add(e.post, r[e.pre] @ w[e.weight].T)
            add(e.pre, r[e.post] @ w[e.weight])
        else:
            add(e.post, fns._predict(e, w, r[e.pre]))
    for n in fns.biased:
        add(n, params[f"{n}.bias"][None, :])
    return out


def _env(model, o: Orientation, obs, w, rule: CompiledRule, phase: PhaseSpec, beta, t) -> dict[str, Any]:
    env: dict[str, Any] = {"beta": beta, "dt": phase.dt, "t": t}
    for key, v in obs["values"].items():
        pop, member = key.split(".", 1)
        env[f"{pop}.{member}"] = v
        if pop == o.post:
            env[f"post.{member}"] = v
        if pop == o.pre:
            env[f"pre.{member}"] = v
    for name, value in w.items():
        env[name] = value.T if o.transpose else value
    if rule.placeholder:
        env[rule.placeholder] = env[rule.target] if rule.target in env else None
    return env
