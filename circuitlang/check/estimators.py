"""What each estimator and integrator needs, checked before anything is lowered.

The entries of `primitives.ESTIMATORS` and `primitives.INTEGRATORS` say what
they need (`Kind.needs`); this module is the one place that gives those
words a meaning on a circuit:

* ``nudge``: a phase after the first sets `beta` (EqProp's nudged phase);
* ``clamp``: a phase after the first (CHL's clamped phase);
* ``energy``: the states follow the gradient of an energy (not `dynamics
  leaky` or cell equations);
* ``analytic``: with complex β (holomorphic, more than 2 points), every free
  population's activation and every connection operator is analytic;
* ``rules``: the file has local rules;
* ``rate_form``: the energy is ½|s|² + E(ρ(s)) (`hopfield`, custom terms), so
  its states can be read as rates (the prototypical step);
* ``layered``: each free layer's minimum given the others is closed form (the
  async step): the energy's presets provide `layer_minimum`, no custom terms,
  no cell types, every coupling joins two populations and the couplings among
  free populations form a bipartite graph (`layers.colour_layers`), a coupling's
  drive into a free end does not depend on that end (a max-pooling chain only
  from a clamped population), and a phase that may be nudged has a
  `closed_form` cost on an output whose ρ is the identity on its bounds, with
  |β| < 1 (the nudged minimum divides by 1 + β, and estimators also use −β).

The checker calls `estimator_problems` for the file's estimator, and
`Model.estimate(method=...)` / `circuitc ... --estimator` for another one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import collections

import networkx as nx
import numpy as np

from .. import primitives as P
from .. import syntax as S
from ..errors import Diagnostic, did_you_mean
from ..expr import EvalError, evaluate
from ..layers import colour_layers
from ..ops import OPS
from ..ops.base import chain_is_linear
from ..source import Span

__all__ = ["estimator_problems", "estimator_parts_problems", "integrator_problems", "NON_ANALYTIC"]

# built-in functions with no complex extension that agrees with them
NON_ANALYTIC = frozenset({"clip", "hard_sigmoid", "relu", "abs", "sign", "min", "max", "where"})


def estimator_problems(graph: nx.MultiDiGraph, method: str, span: Span | None,
                       beta_given: bool = False) -> list[Diagnostic]:
    """Why `method` cannot estimate the gradient of this (checked) circuit; [] when it can.
    With `beta_given` (a β passed by the caller), any second phase can be the nudged one."""
    spec = graph.graph["circuit"]
    pops = {n: d["payload"] for n, d in graph.nodes(data=True)}
    edges = [d["payload"] for _, _, d in graph.edges(data=True)]
    skip = ("nudge",) if beta_given and spec.learning is not None and len(spec.learning.phases) > 1 else ()
    return estimator_parts_problems(method, spec.learning, spec.energy, pops, edges, spec.functions, span, skip)


def estimator_parts_problems(method: str, learning, energy, pops: Mapping, edges: Sequence, functions: Mapping,
                             span: Span | None, skip=()) -> list[Diagnostic]:
    """`estimator_problems` on the pieces the checker has while it builds the graph."""
    kind = P.ESTIMATORS.get(method)
    if kind is None:
        return [Diagnostic(f"unknown estimator `{method}`{did_you_mean(method, P.ESTIMATORS)}", span,
                           "estimators: " + ", ".join(P.ESTIMATORS))]
    out: list[Diagnostic] = []
    phases = learning.phases if learning is not None else ()
    where = span or (learning.span if learning is not None else None)
    for need in kind.needs:
        if need in skip:
            continue
        if need == "nudge" and not any(p.beta != 0 for p in phases[1:]):
            out.append(Diagnostic(
                f"estimator `{method}` needs a nudged phase, but no phase after the first sets `beta`",
                phases[-1].span if phases else where,
                "give a later phase a `beta`, e.g. `phase nudge { steps 4; dt 0.5; beta 0.5 }`"))
        elif need == "clamp" and len(phases) < 2:
            out.append(Diagnostic(f"estimator `{method}` needs a second phase (the clamped one)", where,
                                  "add e.g. `phase clamped { steps 8; dt 0.5; clamp output }`"))
        elif need == "energy" and energy is None:
            out.append(Diagnostic(
                f"estimator `{method}` needs an energy; without one (a vector field or cell equations) "
                "use " + ", ".join(n for n, k in P.ESTIMATORS.items() if "energy" not in k.needs and n != "rules"),
                where))
        elif need == "analytic" and method == "holomorphic" and _points(learning) > 2:
            bad = non_analytic(pops, edges, functions)
            if bad is not None:
                name, at = bad
                out.append(Diagnostic(
                    f"the holomorphic estimator runs the dynamics with complex β, but `{name}` is not analytic",
                    at,
                    "use analytic activations (tanh, sigmoid, identity, exp, ...) and operators "
                    "(`pool(softmax, 2)` or `pool(avg, 2)` instead of `pool(max, 2)`), or `points=2` (= symmetric)"))
        elif need == "rules" and not (learning is not None and learning.rules):
            out.append(Diagnostic(f"estimator `{method}` needs local rules: write them in `learn rules {{ ... }}`",
                                  where))
    return out


def _points(learning) -> int:
    return int(learning.estimator_options.get("points", 4)) if learning is not None else 4


def non_analytic(pops: Mapping, edges: Sequence, functions: Mapping) -> tuple[str, Span] | None:
    """The first activation or operator without a complex extension, and where it is."""
    for pop in pops.values():  # inputs too: their rates carry the complex relaxation's inputs
        name = pop.activation
        if name in NON_ANALYTIC:
            return name, pop.span
        fn = functions.get(name)
        if fn is not None:
            for node in S.walk(fn.body):
                if isinstance(node, S.Call) and node.fn.name in NON_ANALYTIC:
                    return node.fn.name, node.fn.span
    for e in edges:
        for st in e.stages:
            if not OPS[st.kind].is_analytic(st.kw):
                return OPS[st.kind].label(st.kw), st.span or e.span
    return None


def integrator_problems(phase, energy, typed: bool, pops: Mapping | None = None, edges: Sequence = (),
                        costs: Sequence = (), functions: Mapping | None = None, params: Mapping | None = None,
                        nudgeable: bool = False) -> list[Diagnostic]:
    """Why `phase`'s integrator cannot step this circuit; [] when it can. `nudgeable`: an
    estimator may run this phase with a β (it sets `beta`, or it is the phase after the
    first of a file whose phases set none)."""
    kind = P.INTEGRATORS[phase.integrator]
    out: list[Diagnostic] = []
    for need in kind.needs:
        if need == "energy" and energy is None:
            out.append(Diagnostic(
                f"phase `{phase.name}`: the {kind.name} step needs an energy",
                phase.span,
                "use `integrator euler` (the default) with `dynamics leaky` or cell equations"))
        elif need == "rate_form" and energy is not None:
            bad = [p for p in energy.presets if "rate_form" not in P.ENERGIES[p].provides]
            if bad:
                out.append(Diagnostic(
                    f"phase `{phase.name}`: the {kind.name} step needs an energy of the form "
                    f"½|s|² + E(ρ(s)) (like `hopfield`); `{bad[0]}` is not",
                    phase.span,
                    "use `integrator euler` (the default) with this energy"))
        elif need == "layered" and energy is not None and not out:
            out.extend(_layered_problems(phase, kind.name, energy, typed, pops or {}, edges, costs,
                                         functions or {}, params or {}, nudgeable))
    return out


def _layered_problems(phase, name, energy, typed, pops, edges, costs, functions, params, nudgeable):
    """The `layered` need (the async step): see the module docstring."""
    fix = "use `integrator euler` (the default) or `integrator prototypical` for this circuit"
    head = f"`integrator {name}` sets each layer to its closed-form minimum"  # the same for every phase
    bad = [p for p in energy.presets if "layer_minimum" not in P.ENERGIES[p].provides]
    if bad:
        return [Diagnostic(f"{head}, which the `{bad[0]}` energy does not have", phase.span, fix)]
    if energy.terms:
        return [Diagnostic(f"{head}, which a custom energy `term` does not have", energy.terms[0].span, fix)]
    if typed:
        return [Diagnostic(f"{head}, but cell types follow their own equations", phase.span, fix)]
    free = [n for n, p in pops.items() if p.role != "input"]
    out: list[Diagnostic] = []
    for e in edges:
        if e.kind != "undirected":
            continue  # a directed connection in an energy of undirected terms is reported already
        if e.pre == e.post:
            out.append(Diagnostic(f"{head}, but `{e.pre}` is coupled to itself", e.span,
                                  "couple a population only to other populations, or " + fix[0].lower() + fix[1:]))
        else:
            st = _self_dependent_stage(e, pops)
            if st is not None:
                out.append(Diagnostic(
                    f"{head}, but `{OPS[st.kind].label(st.kw)}` makes the drive into a free population depend "
                    "on that population's own state",
                    st.span or e.span, "use a linear chain (conv, `pool(avg, …)`, dense) between free populations, "
                    "or " + fix[0].lower() + fix[1:]))
    if out:
        return out
    (even, odd), conflict = colour_layers(free, edges)
    if conflict is not None:
        return [Diagnostic(
            f"{head}, so the circuit must be layered, but the coupling `{conflict.post} -- {conflict.pre}` joins two "
            "populations of the same layer parity (the couplings among free populations have an odd cycle)",
            conflict.span, fix)]
    if nudgeable:
        for c in costs:
            cost = P.COSTS.get(c.kind)
            if cost is None:
                continue
            if "closed_form" not in cost.provides:
                ok = ", ".join(k for k, v in P.COSTS.items() if "closed_form" in v.provides)
                out.append(Diagnostic(
                    f"phase `{phase.name}` nudges `{c.population}` with the `{c.kind}` cost, whose nudged "
                    f"minimum `integrator {name}` cannot write in closed form", c.span,
                    f"use a cost with a closed-form minimum ({ok}), or `integrator euler` in this phase"))
            elif c.population in pops and not _projection_absorbs(pops[c.population], functions, params):
                pop = pops[c.population]
                out.append(Diagnostic(
                    f"phase `{phase.name}` nudges `{c.population}`: `integrator {name}` writes its minimum in "
                    f"closed form only where its activation `{pop.activation}` is the identity on its bounds "
                    "(P(ρ(v)) = P(v)), which it is not",
                    pop.span, "give it e.g. `rho=identity`, or `min=0 max=1` with `rho=hard_sigmoid`; or use "
                    "`integrator euler` in this phase"))
        if abs(phase.beta) >= 1:
            out.append(Diagnostic(
                f"phase `{phase.name}`: `integrator {name}`'s nudged minimum divides by 1 + β, and estimators "
                f"also nudge with −β, so |β| must be below 1 (here {phase.beta:g})", phase.span,
                "use e.g. `beta 0.5`"))
    return out


def _self_dependent_stage(e, pops):
    """The first stage of a coupling that makes the drive into a free end depend on that
    end (a non-linear chain read backwards to a free `pre`, or a tied transpose of one
    into a free `post`), or None."""
    if chain_is_linear(e.stages):
        return None
    free_pre = pops[e.pre].role != "input" if e.pre in pops else False
    free_post = pops[e.post].role != "input" if e.post in pops else False
    if free_pre or (free_post and e.transposed):
        return next(st for st in e.stages if not OPS[st.kind].is_linear(st.kw))
    return None


def _projection_absorbs(pop, functions: Mapping, params: Mapping) -> bool:
    """Whether P(ρ(v)) = P(v) for every v, P the projection onto the state's bounds (ρ
    the identity on them, and monotone outside), tested on a grid around the bounds."""
    lo = -np.inf if pop.lo is None else pop.lo
    hi = np.inf if pop.hi is None else pop.hi
    a = pop.lo if pop.lo is not None else min(-10.0, hi - 10.0)
    b = pop.hi if pop.hi is not None else max(10.0, a + 10.0)
    w = b - a + 1.0
    v = np.concatenate([np.linspace(a - 2 * w, b + 2 * w, 241), [a, b]])
    r = _activation(pop.activation, v, functions, params)
    if r is None:
        return False
    return bool(np.all(np.abs(np.clip(r, lo, hi) - np.clip(v, lo, hi)) <= 1e-9 * (1.0 + np.abs(v))))


def _activation(name: str, v, functions: Mapping, params: Mapping):
    """ρ(v) for a built-in or user function, in float64 NumPy; None where it fails."""
    fn = P.FUNCTIONS.get(name)
    try:
        with np.errstate(all="ignore"):
            if name not in functions and fn is not None and 1 in fn.arity and fn.elementwise:
                return np.asarray(fn.impl_fn()(np, v), float)
            user = functions.get(name)
            if user is None or len(user.params) != 1:
                return None
            return np.array([evaluate(user.body, collections.ChainMap({user.params[0]: float(t)}, dict(params)),
                                      functions, "an activation") for t in v])
    except (EvalError, ArithmeticError, ValueError, TypeError):
        return None
