"""Checks of how the states evolve and what is learned against: energy, dynamics, costs.

* `energy PRESET` / `energy { PRESET; term [for X, Y] EXPR }`: known presets,
  once each; terms over params, weights and population values, with `W`,
  `pre.`, `post.` (for weights) or `self.` (for populations) in `term for`.
* `dynamics NAME`: a known vector field, never together with an energy.
* Every connection means something under the chosen energy or dynamics.
* `cost POP KIND`: a known cost, one per population, on an output.
* `rho=` on an output means something: under `energy predictive` an output's
  activation is read only if it drives another population (or a rule reads
  its `.rate`), since the cost and `predict` read its state.
"""

from __future__ import annotations

import dataclasses

from .. import primitives as P
from .. import syntax as S
from ..errors import did_you_mean
from ..expr import Scope, check_expr
from ..graph import ConnectionEdge, CostSpec, DynamicsSpec, EnergySpec, EnergyTermSpec, LearningSpec
from ..layout import describe
from .base import BuilderBase
from .terms import BATCH, Shape, term_problem


def _weight_shape(e, pops) -> tuple | None:
    """A weight's value in an energy term: its matrix (a tied `transpose` of a dense one:
    the transposed matrix), or its operator; None for the tie of a non-matrix operator."""
    if [s.kind for s in e.stages] == ["dense"] or e.value_shape is None:
        return e.value_shape
    return Shape(("op", pops[e.post].size, pops[e.pre].size))


def _members_of(node) -> list[S.Member]:
    """Every `obj.attr` inside a syntax node."""
    if isinstance(node, S.Member):
        return [node]
    if isinstance(node, tuple):
        return [m for item in node for m in _members_of(item)]
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return [m for f in dataclasses.fields(node) for m in _members_of(getattr(node, f.name))]
    return []


def _rates_read_by_rules(learning: LearningSpec, weights: dict[str, ConnectionEdge]) -> set[str]:
    """The populations whose `.rate` (their own activation) a local rule reads: `y.rate`,
    or `post.rate` of a rule for a weight into `y` or for `y.bias`. (`pre.rate` is read
    only from a population that drives a connection.)"""
    read: set[str] = set()
    for rule in learning.rules:
        for m in _members_of(rule.expr):
            if m.attr.name != "rate":
                continue
            if m.obj.name != "post":
                read.add(m.obj.name)
                continue
            for w in rule.weights:
                read.add(weights[w].post if w in weights else w.split(".")[0])
    return read


class DynamicsMixin(BuilderBase):
    """`energy`, `dynamics` and `cost` statements, and what connections mean under them."""

    # -------------------------------------------------------------- energy --
    def energy(self, decls: list[S.Energy]) -> EnergySpec | None:
        if not decls:
            return None
        for extra in decls[1:]:
            self.error(
                "the energy is declared twice",
                extra.span,
                "combine presets and terms in one block: `energy { hopfield; term ... }`",
            )
        d = decls[0]
        presets = []
        for use in d.uses:
            if use.name.name not in P.ENERGIES:
                self.unknown_dynamics = True
                self._unknown_name("energy", use.name, P.ENERGIES, "energies", ", or a block of `term ...`")
            elif use.name.name in presets:
                self.error(f"energy `{use.name.name}` is named twice", use.name.span)
            else:
                presets.append(use.name.name)
            self._no_options(use.options, "an energy")
        terms = []
        weights = self.weight_edges()
        for t in d.terms:
            over = ""
            names = self.param_names()
            names.update({w: "weight" for w in weights})
            members = lambda obj: ("s",) if obj in self.pops else None  # noqa: E731
            objects: tuple[str, ...] = ()
            if t.targets:
                kinds = {x.name: ("weight" if x.name in weights else "population" if x.name in self.pops else "") for x in t.targets}
                for x in t.targets:
                    if not kinds[x.name]:
                        pool = list(weights) + list(self.pops)
                        self.error(
                            f"`term for` names weights or populations; `{x.name}` is neither{did_you_mean(x.name, pool)}",
                            x.span,
                        )
                found = {k for k in kinds.values() if k}
                if len(found) > 1:
                    self.error("`term for` names either weights or populations, not both", t.span)
                over = (found.pop() + "s") if len(found) == 1 else ""
                if over == "weights":
                    names["W"] = "weight"
                    objects = ("pre", "post")
                elif over == "populations":
                    objects = ("self",)
                if objects:  # `pre.s`, `post.s`, `self.s` of whatever the term is for
                    members = lambda obj, own=objects: ("s",) if obj in own or obj in self.pops else None  # noqa: E731
            scope = Scope(
                "an energy term", names, self.fn_arities(), members, matrices=True,
                hint="an energy term may use params, weights and population values like `h.s`",
                objects=(*objects, *self.pops),
            )
            before = len(self.errors)
            check_expr(t.expr, scope, self.errors)
            spec = EnergyTermSpec(tuple(x.name for x in t.targets), over, t.expr, t.span)
            if len(self.errors) == before:
                self._term_shapes(spec, weights)
            terms.append(spec)
        if not presets and not terms and not self.unknown_dynamics:
            self.error("the energy block is empty", d.span, "name a preset (`hopfield`, `predictive`) or add `term ...`")
        return EnergySpec(tuple(presets), tuple(terms), d.span)

    def _term_shapes(self, term: EnergyTermSpec, weights) -> None:
        """Report the first shape error of a custom term (see `check/terms.py`)."""
        base: dict[str, tuple] = {f"{n}.s": (BATCH, p.size) for n, p in self.pops.items()}
        for w, e in weights.items():
            value = _weight_shape(e, self.pops)
            if value is None:
                if any(isinstance(n, S.Var) and n.name == w for n in S.walk(term.expr)):
                    self.error(f"`{w}` is a tied `transpose({e.tied_to})` of an operator that is not a matrix, "
                               "so it has no array of its own in an energy term", term.span,
                               f"write the term with `{e.tied_to}`")
                    return
                continue
            base[w] = value
        envs = [base]
        if term.over == "weights":
            envs = []
            for w in term.targets:
                e = weights.get(w)
                if e is None:  # its connection has an error, reported already
                    continue
                if w not in base:
                    self.error(f"`term for {w}`: `{w}` is a tied `transpose({e.tied_to})` of an operator that "
                               "is not a matrix, so it has no array of its own in an energy term", term.span,
                               f"write the term `for {e.tied_to}`")
                    return
                envs.append({**base, "W": base[w], "pre.s": (BATCH, self.pops[e.pre].size),
                             "post.s": (BATCH, self.pops[e.post].size)})
        elif term.over == "populations":
            envs = [{**base, "self.s": (BATCH, self.pops[n].size)} for n in term.targets]
        for env in envs:
            problem = term_problem(term.expr, env, self.functions)
            if problem is not None:
                self.errors.append(problem)
                return

    def dynamics(self, decls: list[S.Dynamics], energy: EnergySpec | None) -> DynamicsSpec | None:
        if not decls:
            return None
        for extra in decls[1:]:
            self.error("`dynamics` is declared twice", extra.span)
        d = decls[0]
        if d.name.name not in P.DYNAMICS:
            self.unknown_dynamics = True
            self._unknown_name("dynamics", d.name, P.DYNAMICS, "dynamics", ", or cell types with their own equations")
            return None
        if energy is not None:
            self.error(
                "a circuit has either an energy (gradient dynamics) or `dynamics`, not both",
                d.span,
                f"remove `dynamics {d.name.name}` or the energy at line {energy.span.line}",
            )
        self._no_options(d.options, "dynamics")
        return DynamicsSpec(d.name.name, d.span)

    def coupling_meaning(self, energy: EnergySpec | None, dyn: DynamicsSpec | None) -> None:
        """Each connection must mean something under the chosen dynamics."""
        if self.unknown_dynamics:
            return  # which connections fit is unknown until the name is fixed
        presets = list(energy.presets) if energy else []
        custom = bool(energy and energy.terms)
        typed = any(p.cell_type for p in self.pops.values())
        # what each preset gives a meaning to (`Kind.provides` of `ENERGIES`)
        meant = {kind for p in presets for kind in P.ENERGIES[p].provides}
        for e in self.edges:
            if e.kind == "undirected":
                if energy is None:
                    self.error(
                        f"the undirected coupling `{e.weight}` needs an energy: `--` only has a meaning inside one",
                        e.span,
                        "add `energy hopfield`, or use `->` for a directed connection",
                    )
                elif not custom and e.kind not in meant:
                    self.error(
                        f"the `{', '.join(presets)}` energy has no term for undirected couplings like `{e.weight}`",
                        e.span,
                        "use `->` (a prediction) with `energy predictive`, or `energy hopfield`",
                    )
            elif energy is not None and not custom and e.kind not in meant:
                self.error(
                    f"the directed connection `{e.weight or e.pre + ' => ' + e.post}` has no term in the `{', '.join(presets)}` energy",
                    e.span,
                    "energies are symmetric: use `--`, or `dynamics leaky` for directed circuits",
                )
        if self.edges and energy is None and dyn is None and not typed:
            first = min(self.edges, key=lambda e: (e.span.line, e.span.col))
            self.error(
                "the circuit has connections but nothing says how its states evolve",
                first.span,
                "add `energy hopfield`, `energy predictive` or `dynamics leaky`, or give populations a cell type",
            )
        elif energy is None and dyn is None and not typed:
            free = [p for p in self.pops.values() if p.role != "input"]
            if free and self.learn_statements:
                self.error(
                    "nothing says how the states evolve, so the circuit cannot be run or trained",
                    free[0].span,
                    "add `energy hopfield`, `energy predictive` or `dynamics leaky`, or give populations a cell type",
                )
        if energy is not None and typed:
            pop = next(p for p in self.pops.values() if p.cell_type)
            self.error(
                f"`{pop.name}` has cell type `{pop.cell_type}` with its own equations, but the circuit "
                "also has an energy (whose gradient would be the dynamics)",
                pop.span,
                f"remove the energy at line {energy.span.line}, or the cell type",
            )

    def unread_output_rates(self, energy: EnergySpec | None, learning: LearningSpec | None) -> None:
        """`rho=` on an output that nothing reads it for: under energies that read ρ(s) only
        where a population drives another (`rates_only_sent` in `P.ENERGIES`), the cost,
        `predict` and every estimator read an output's state itself, so a written activation
        of an output that drives nothing (and whose `.rate` no rule reads) would be ignored."""
        if self.unknown_dynamics or energy is None or not energy.presets:
            return
        if not all("rates_only_sent" in P.ENERGIES[p].provides for p in energy.presets):
            return
        read = _rates_read_by_rules(learning, self.weight_edges()) if learning else set()
        which = ", ".join(energy.presets)
        for name, opt in self.rho_options.items():
            pop = self.pops.get(name)
            if pop is None or pop.role != "output" or pop.activation == "identity":
                continue
            if name in read or any(e.pre == name for e in self.edges):
                continue
            fn = pop.activation
            self.error(
                f"`rho={fn}` on `{name}`, an output of the `{which}` energy, has no effect: the cost and "
                f"`predict` read the state of `{name}` itself, and this energy applies an activation "
                f"only to what a population sends to those it drives (`{name}` drives none)",
                opt.span,
                f"remove `rho={fn}`; for {fn} outputs, let `{name}` drive a linear output one-to-one "
                f"(`{name} => out` with `population out [{pop.size}] output rho=identity` and the cost on `out`)",
            )

    # ---------------------------------------------------------------- cost --
    def cost(self, s: S.Cost) -> CostSpec | None:
        ok = True
        if s.population.name not in self.pops:
            self._unknown_population(s.population)
            ok = False
        if s.kind.name not in P.COSTS:
            self._unknown_name("cost", s.kind, P.COSTS, "costs")
            ok = False
        self._no_options(s.options, "a cost", f"write `cost {s.population.name} {s.kind.name}`")
        name = s.population.name
        if name in self.cost_spans:
            self.error(
                f"`{name}` already has a cost (line {self.cost_spans[name].line})",
                s.population.span,
                "a population has one cost; keep one of the two lines",
            )
            return None
        if ok:
            self.cost_spans[name] = s.span
        pop = self.pops.get(name)
        if ok and len(pop.shape) > 1:
            self.error(
                f"a cost compares a vector of outputs with the targets, but `{name}` is {describe(pop.shape)}",
                s.population.span,
                f"make the output a vector (`population {name} [N] output`) fed by a dense connection",
            )
            ok = False
        if ok and pop.role == "input":
            self.error(
                f"the cost is on `{name}`, an input population: it is clamped to the data, so the cost cannot nudge it",
                s.population.span,
                "put the cost on the output population, the one the targets are compared with",
            )
        elif ok and pop.role != "output":
            self.error(
                f"the cost is on `{name}`, which is not an output population",
                s.population.span,
                f"mark it: `population {name} [{pop.size}] output`",
            )
        return CostSpec(name, s.kind.name, s.span) if ok else None
