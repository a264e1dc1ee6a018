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
  its states can be read as rates (the prototypical step).

The checker calls `estimator_problems` for the file's estimator, and
`Model.estimate(method=...)` / `circuitc ... --estimator` for another one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import networkx as nx

from .. import primitives as P
from .. import syntax as S
from ..errors import Diagnostic, did_you_mean
from ..ops import OPS
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


def integrator_problems(phase, energy, typed: bool) -> list[Diagnostic]:
    """Why `phase`'s integrator cannot step this circuit; [] when it can."""
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
    return out
