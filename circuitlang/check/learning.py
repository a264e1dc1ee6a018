"""Checks of the `learn` block: method, settings, phases, optimizer and local rules.

* `learn eqprop` / `learn rules`: a known method, with a cost and an input
  population to learn from; settings from `P.LEARN_SETTINGS`, an estimator
  that fits the method and a nudged phase for the EqProp estimators.
* `phase NAME { ... }`: once per name; `steps N` or `forward`, and a
  `forward` phase only on an acyclic circuit of directed connections.
* `optimizer NAME { ... }`: a known optimizer; per-weight `lr` only for
  learned weights and biases.
* `[during P | always] [for W1, W2]: dW/dt = ...`: known phases, learned
  targets, and an update over `pre.`/`post.` values, params, `beta`, `dt`, `t`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from types import MappingProxyType

import networkx as nx

from .. import primitives as P
from .. import syntax as S
from ..errors import did_you_mean
from ..expr import Scope, check_expr
from ..graph import (
    ConnectionEdge,
    CostSpec,
    DynamicsSpec,
    EnergySpec,
    LearningSpec,
    OptimizerSpec,
    PhaseSpec,
    RuleSpec,
)
from ..source import Span
from ..factor import rule_problems
from .base import BuilderBase
from .estimators import estimator_parts_problems, integrator_problems


class LearningMixin(BuilderBase):
    """The `learn` block."""

    # --------------------------------------------------------------- learn --
    def learn(
        self, s: S.Learn, energy: EnergySpec | None, dyn: DynamicsSpec | None, costs: list[CostSpec]
    ) -> LearningSpec | None:
        method = s.method.name
        if method not in P.LEARN_METHODS:
            self._unknown_name("learning method", s.method, P.LEARN_METHODS, "methods")
        if not costs and not self.cost_statements and method in P.LEARN_METHODS:
            self.error("learning needs a cost", s.method.span, "add e.g. `cost y squared` for the output `y`")
        if not any(p.role == "input" for p in self.pops.values()):
            self.error("learning needs an input population", s.method.span, "mark one: `population x [64] input`")
        phases = []
        every = []  # duplicates included: their bodies are checked too
        seen: dict[str, Span] = {}
        for ph in s.phases:
            spec = self.phase(ph, energy, dyn)
            if spec is not None:
                every.append(spec)
            if ph.name.name in seen:
                self.error(
                    f"phase `{ph.name.name}` is defined twice (first at line {seen[ph.name.name].line})",
                    ph.name.span,
                    "give each phase its own name; rules refer to phases by name",
                )
                continue
            seen[ph.name.name] = ph.span
            if spec is not None:
                phases.append(spec)
        if not s.phases:
            self.error("`learn` needs at least one phase", s.method.span, "e.g. `phase free { steps 20; dt 0.5 }`")
        settings = self._attrs(s.attrs, P.LEARN_SETTINGS, "a `learn` block")
        estimator = settings.get("estimator")
        est_opts = {}
        est_attr = next((a for a in s.attrs if a.key.name == "estimator"), None)
        if est_attr is not None:
            for kw in est_attr.kwargs:
                if kw.key != "points":
                    self.error(f"unknown option `{kw.key}` for an estimator", kw.key_span, "estimator options: points")
                else:
                    v = self._checked_number(kw.value, P.Setting("points", "int", "", minimum=2), "`points`")
                    if v is not None:
                        est_opts["points"] = v
        if method == "eqprop":
            if estimator in ("rules",):
                self.error("`estimator rules` needs `learn rules`", est_attr.value.span)
            estimator = estimator or "one_sided"
            self._eqprop_phases(every, estimator, est_attr or s)
            if s.rules:
                self.error(
                    "local rules belong in `learn rules { ... }`; `learn eqprop` derives its own update",
                    s.rules[0].span,
                )
        elif method == "rules":
            if not s.rules:
                self.error("`learn rules` has no rules", s.method.span,
                           "add e.g. `during nudge: dW/dt = eta * post.error * rho(pre.s)`")
            estimator = estimator or "rules"
        optimizer = None
        for extra in s.optimizers[1:]:
            self.error("a `learn` block has one optimizer; this is the second", extra.name.span)
        if s.optimizers:
            optimizer = self.optimizer(s.optimizers[0])
        rules = tuple(r for r in (self.rule(r, seen) for r in s.rules) if r is not None)
        batch = settings.get("batch", 1)
        spec = LearningSpec(
            method=method,
            phases=tuple(phases),
            estimator=estimator,
            estimator_options=MappingProxyType(est_opts),
            batch=int(batch),
            prospective=bool(settings.get("prospective", False)),
            epochs=int(settings["epochs"]) if "epochs" in settings else None,
            optimizer=optimizer,
            rules=rules,
            span=s.span,
            persistent=bool(settings.get("persistent", False)),
            health=str(settings.get("health", "warn")),
        )
        spec = dataclasses.replace(spec, phases=self.phase_noise(spec))  # each phase's sigma (`noise.py`)
        self._lowerable(spec, energy, dyn, costs, est_attr, rules_ok=len(rules) == len(s.rules))
        return spec

    def _lowerable(self, spec: LearningSpec, energy: EnergySpec | None, dyn: DynamicsSpec | None,
                   costs: Sequence[CostSpec], est_attr: S.Attr | None, rules_ok: bool) -> None:
        """What the lowering of a `learn` block relies on: the estimator's and the
        integrators' needs, rules that factor into post × pre products, and what
        `prospective` needs. (With an unknown energy or dynamics name, or errors in
        the rules, these would only repeat what is reported.)"""
        if self.unknown_dynamics:
            return
        typed = any(p.cell_type for p in self.pops.values())
        span = est_attr.value.span if est_attr is not None and est_attr.value is not None else None
        if spec.estimator in P.ESTIMATORS:
            skip = {"nudge"} if spec.method == "eqprop" else set()  # `_eqprop_phases` says it
            if not rules_ok:
                skip.add("rules")  # a rule with errors is reported already
            problems = estimator_parts_problems(spec.estimator, spec, energy, self.pops, self.edges,
                                                self.functions, span, skip=skip)
            self.errors.extend(problems)
        nudged = any(ph.beta != 0 for ph in spec.phases[1:])
        for i, ph in enumerate(spec.phases):
            nudgeable = ph.beta != 0 or (i == 1 and not nudged and ph.clamp is None)
            for d in integrator_problems(ph, energy, typed, self.pops, self.edges, costs,
                                         self.functions, self.params, nudgeable):
                if d not in self.errors:  # what is said of the circuit, once for all its phases
                    self.errors.append(d)
        if spec.rules and rules_ok:
            self.errors.extend(rule_problems(spec, self.pops, self.weight_edges(), self.params, self.functions))
        if spec.prospective:
            self._prospective(spec, energy, costs)
            if spec.estimator == "holomorphic" and int(spec.estimator_options.get("points", 4)) > 2:
                self.error(
                    "the holomorphic estimator relaxes with complex β, but `prospective` computes the "
                    "states in one real-valued pass",
                    span or spec.span,
                    "use `estimator symmetric` (= holomorphic with points=2) with `prospective`",
                )

    def _prospective(self, spec: LearningSpec, energy: EnergySpec | None, costs: list[CostSpec]) -> None:
        """Latent equilibrium needs a feed-forward predictive circuit, and costs whose
        registry entry names the exact nudged output (`COSTS[kind].nudged`)."""
        for c in costs:
            if not P.COSTS[c.kind].nudged:
                able = ", ".join(k.name for k in P.COSTS.values() if k.nudged)
                self.error(
                    f"`prospective` (latent equilibrium) nudges the output `{c.population}` to the solution "
                    f"u of u = mu - beta dC/du(u), but cost `{c.kind}` names no solver for it",
                    c.span,
                    f"use one of the costs that do ({able}), or remove `prospective`",
                )
        est = spec.estimator or "one_sided"
        if costs and est in P.ESTIMATORS and "negative_beta" in P.ESTIMATORS[est].provides:
            for ph in spec.phases:
                if ph.beta is not None and abs(ph.beta) >= 1:
                    self.error(
                        f"`prospective` with the {est} estimator also nudges with -beta = {-ph.beta:g}, where "
                        f"the nudged output u = mu - beta dC/du(u) has no solution (for the squared cost "
                        f"u = (mu + beta t) / (1 + beta): singular at beta = -1)",
                        ph.span,
                        "use |beta| < 1 in this phase, or `estimator one_sided`, which nudges with +beta only",
                    )
        ok = energy is not None and set(energy.presets) == {"predictive"} and not energy.terms
        ok = ok and not any(e.kind == "undirected" for e in self.edges)
        if ok:
            g = nx.DiGraph()
            g.add_nodes_from(self.pops)
            g.add_edges_from((e.pre, e.post) for e in self.edges)
            ok = nx.is_directed_acyclic_graph(g)
        if not ok:
            self.error(
                "`prospective` (latent equilibrium) needs a feed-forward predictive circuit: "
                "`energy predictive` with directed connections only, and no cycle",
                spec.span,
                "use `energy predictive` with feed-forward connections, or remove `prospective`",
            )

    def _attrs(self, attrs: Sequence[S.Attr], table: Mapping[str, P.Setting], what: str) -> dict[str, object]:
        out: dict[str, object] = {}
        spans: dict[str, Span] = {}
        for a in attrs:
            key = a.key.name
            spec = table.get(key)
            if spec is None:
                self.error(
                    f"unknown setting `{key}` in {what}{did_you_mean(key, table)}",
                    a.key.span,
                    "settings: " + ", ".join(table),
                )
                continue
            if key in spans:
                self.error(f"`{key}` is set twice in {what} (first at line {spans[key].line})", a.key.span)
                continue
            spans[key] = a.span
            if spec.kind == "flag":
                if a.value is not None or a.kwargs:
                    self.error(f"`{key}` takes no value", a.span, f"write just `{key}`")
                out[key] = True
                continue
            if a.value is None and spec.kind != "per_weight":
                example = spec.choices[0] if spec.choices else "10"
                self.error(f"`{key}` needs a value", a.key.span, f"e.g. `{key} {example}`")
                continue
            if spec.kind == "choice":
                if not isinstance(a.value, S.Var) or a.value.name not in spec.choices:
                    got = a.value.name if isinstance(a.value, S.Var) else "this"
                    self.error(
                        f"`{got}` is not a valid `{key}`{did_you_mean(got, spec.choices)}" if isinstance(a.value, S.Var) else f"`{key}` takes a name",
                        a.value.span,
                        f"`{key}` is one of: " + ", ".join(spec.choices),
                    )
                    continue
                out[key] = a.value.name
                for kw in a.kwargs:
                    if kw.key not in spec.options:
                        self.error(f"unknown option `{kw.key}` for `{key}`", kw.key_span,
                                   ("options: " + ", ".join(spec.options)) if spec.options else f"`{key}` takes no options")
                    elif kw.value is not None:
                        v = self.const(kw.value, f"`{kw.key}`")
                        if v is not None:
                            out[f"{key}.{kw.key}"] = v
                continue
            if spec.kind == "per_weight":
                continue  # handled by the optimizer
            for kw in a.kwargs:
                self.error(f"`{key}` takes one value, not `{kw.key}=`", kw.key_span)
            v = self._checked_number(a.value, spec, f"`{key}` in {what}")
            if v is not None:
                out[key] = int(v) if spec.kind == "int" else v
        return out

    def phase(self, ph: S.Phase, energy: EnergySpec | None, dyn: DynamicsSpec | None) -> PhaseSpec | None:
        what = f"phase `{ph.name.name}`"
        v = self._attrs(ph.attrs, P.PHASE_SETTINGS, what)
        forward = bool(v.get("forward"))
        steps = v.get("steps")
        present = v.get("present")
        if forward and steps is not None:
            self.error(f"{what} is `forward` (one exact pass), so it takes no `steps`", ph.name.span)
        if not forward and steps is None and present is None:
            # a bad `steps` value or a misspelled setting is reported already
            has_error = any(a.key.name == "steps" or a.key.name not in P.PHASE_SETTINGS for a in ph.attrs)
            if not has_error:
                self.error(
                    f"{what} has no steps",
                    ph.name.span,
                    "add `steps N` (and `dt`), or `forward` for an exact feed-forward pass",
                )
        if forward:
            self._forward_ok(ph, energy, dyn)
        return PhaseSpec(
            name=ph.name.name,
            steps=None if forward else (int(steps) if steps is not None else None),
            dt=float(v.get("dt", 1.0)),
            beta=float(v.get("beta", 0.0)),
            forward=forward,
            present=int(present) if present is not None else None,
            tol=v.get("tol"),
            integrator=str(v.get("integrator", "euler")),
            clamp=v.get("clamp"),
            span=ph.span,
            noise=float(v.get("noise", 1.0)),
        )

    def _forward_ok(self, ph: S.Phase, energy: EnergySpec | None, dyn: DynamicsSpec | None) -> None:
        typed = next((p for p in self.pops.values() if p.cell_type and p.role != "input"), None)
        if typed is not None:
            self.error(
                f"phase `{ph.name.name}` is `forward`: each population is computed from its inputs in one "
                f"pass, but `{typed.name}` follows the equations of cell type `{typed.cell_type}`",
                ph.name.span,
                "use `steps N` to run the cell equations",
            )
            return
        if any(e.kind == "undirected" for e in self.edges):
            self.error(
                f"phase `{ph.name.name}` is `forward`, but undirected couplings (`--`) have no direction to follow",
                ph.name.span,
                "use `steps N` to relax the circuit instead",
            )
            return
        g = nx.DiGraph()
        g.add_nodes_from(self.pops)
        g.add_edges_from((e.pre, e.post) for e in self.edges)  # tied connections drive too
        try:
            cycle = nx.find_cycle(g)
        except nx.NetworkXNoCycle:
            return
        path = " -> ".join([cycle[0][0]] + [b for _, b in cycle])
        self.error(
            f"phase `{ph.name.name}` is `forward`, but the circuit has a cycle: {path}",
            ph.name.span,
            "a one-pass fixed point needs a feed-forward (acyclic) circuit; use `steps N` instead",
        )

    def _eqprop_phases(self, phases: list[PhaseSpec], estimator: str, where: S.Attr | S.Learn) -> None:
        if not phases:
            return
        if phases[0].beta != 0:
            self.error(
                f"the first phase `{phases[0].name}` is the free phase, so it has no `beta`",
                phases[0].span,
                "EqProp starts from the free fixed point: put the nudged phase second",
            )
        nudged = [p for p in phases[1:] if p.beta != 0]
        if estimator in P.ESTIMATORS and "nudge" in P.ESTIMATORS[estimator].needs and not nudged:
            written = isinstance(where, S.Attr)
            self.error(
                f"estimator `{estimator}` needs a nudged phase, but no phase after the first sets `beta`"
                if written else
                f"EqProp needs a nudged phase (the default estimator is `{estimator}`), but no phase after the first sets `beta`",
                phases[-1].span,
                "give a later phase a `beta`, e.g. `phase nudge { steps 4; dt 0.5; beta 0.5 }`",
            )

    def optimizer(self, o: S.Optimizer) -> OptimizerSpec | None:
        kind = P.OPTIMIZERS.get(o.name.name)
        if kind is None:
            self._unknown_name("optimizer", o.name, P.OPTIMIZERS, "optimizers")
            return None
        table = kind.settings
        for opt in o.options:
            self.error(f"optimizer settings go in braces: `optimizer {o.name.name} {{ {opt.key} ... }}`", opt.key_span)
        settings = self._attrs(o.attrs, table, f"optimizer `{o.name.name}`")
        lr, per = None, {}
        params = {e.weight for e in self.edges if e.weight and e.plasticity == "plastic"}
        params |= self.bias_params()
        for a in o.attrs:
            if a.key.name != "lr":
                continue
            if a.value is not None:
                lr = self._checked_number(a.value, table["lr"], "`lr`")
            for kw in a.kwargs:
                if kw.key not in params:
                    tied = {e.weight: e for e in self.edges if e.weight and e.plasticity != "plastic"}
                    if kw.key in tied:
                        why = "tied to " + tied[kw.key].tied_to if tied[kw.key].tied_to else "fixed"
                        self.error(f"`{kw.key}` is {why}: it has no learning rate", kw.key_span)
                    elif kw.key not in self.written_parameters():  # else its own statement is broken, reported there
                        self.error(
                            f"`lr` names `{kw.key}`, which is not a learned parameter{did_you_mean(kw.key, params)}",
                            kw.key_span,
                            "learned parameters: " + ", ".join(sorted(params)),
                        )
                    continue
                v = self._checked_number(kw.value, table["lr"], f"`lr` of `{kw.key}`")
                if v is not None:
                    per[kw.key] = v
            if a.value is None and not a.kwargs:
                self.error("`lr` needs a value", a.key.span, "e.g. `lr 0.05` or `lr W1=0.1, W2=0.05`")
        settings.pop("lr", None)
        return OptimizerSpec(o.name.name, lr, MappingProxyType(per), MappingProxyType(settings), o.span)

    def rule(self, r: S.Rule, phases: dict[str, Span]) -> RuleSpec | None:
        ok = True
        for p in r.phases:
            if p.name not in phases:
                self.error(f"unknown phase `{p.name}`{did_you_mean(p.name, phases)}", p.span,
                           "phases: " + ", ".join(phases) if phases else None)
                ok = False
        weights = self.weight_edges()
        biases = self.bias_params()
        placeholder = None
        if r.targets:
            placeholder = r.lhs.name
            if placeholder in weights or placeholder in biases:
                self.error(
                    f"with `for {', '.join(t.name for t in r.targets)}`, write the rule for a placeholder, not for `{placeholder}`",
                    r.lhs.span,
                    "e.g. `always for W1, W2: dW/dt = ...`",
                )
                ok = False
            targets = list(r.targets)
        else:
            targets = [r.lhs]
        names: list[str] = []
        unknown = False
        for t in targets:
            if t.name in biases:
                names.append(t.name)
                continue
            e = weights.get(t.name)
            if e is None and t.name in self.written_parameters():  # its connection is broken: reported there
                ok, unknown = False, True
            elif e is None:
                pool = list(weights) + sorted(biases)
                self.error(
                    f"the rule names `{t.name}`, which is not a weight{did_you_mean(t.name, pool)}",
                    t.span,
                    ("weights: " + ", ".join(weights)) if weights else "name a weight after a connection's colon",
                )
                ok, unknown = False, True
            elif e.plasticity == "tied" and e.transposed:
                self.error(
                    f"`{t.name}` is tied to `transpose({e.tied_to})`: it follows `{e.tied_to}`, so it has no rule of its own",
                    t.span,
                    f"write the rule for `{e.tied_to}` (a plain tie `= {e.tied_to}` may carry one)",
                )
                ok = False
            elif e.plasticity == "tied" and getattr(weights.get(e.tied_to), "plasticity", "") != "plastic":
                if getattr(weights.get(e.tied_to), "plasticity", "") != "fixed":
                    # a tie of a tie, or a tie to a weight whose connection is broken: said where it is
                    ok = False
                    continue
                self.error(
                    f"`{t.name}` is tied to `{e.tied_to}`, which does not learn: a rule on a plain tie updates "
                    f"the weight it is tied to",
                    t.span,
                    f"remove `fixed` from `{e.tied_to}`'s connection, or drop the rule",
                )
                ok = False
            elif e.plasticity == "tied":  # a plain tie: the rule reads the tie's ends and updates `e.tied_to`
                names.append(t.name)
            elif e.plasticity == "fixed":
                self.error(f"`{t.name}` is `fixed`, so it cannot learn", t.span, "remove `fixed` from its connection")
                ok = False
            else:
                names.append(t.name)
        names_scope = self.param_names()
        names_scope.update({w: "weight" for w in weights})
        names_scope.update({"beta": "phase", "dt": "phase", "t": "time"})
        if placeholder:
            names_scope[placeholder] = "weight"
        # with an unknown weight the ends of the synapse are unknown too: accept
        # any population's values for `pre.` / `post.` rather than guess
        ends = list(self.pops) if unknown else None
        members = lambda obj: self._rule_members(obj, names, weights, ends)  # noqa: E731
        scope = Scope(
            "a learning rule", names_scope, self.fn_arities(), members, time_derivative=True,
            hint="a rule may use params, `pre.s` and `post.s`, population values like `y.s`, "
            "`beta`, `dt` and `t`; define constants with `param NAME = ...`",
            objects=("pre", "post", *self.pops),
        )
        before = len(self.errors)
        check_expr(r.expr, scope, self.errors)
        if not ok or len(self.errors) > before:
            return None
        return RuleSpec(tuple(p.name for p in r.phases), r.always, tuple(names), placeholder, r.expr, r.span)

    def _rule_members(
        self,
        obj: str,
        names: Sequence[str],
        weights: Mapping[str, ConnectionEdge],
        any_of: Sequence[str] | None = None,
    ) -> tuple[str, ...] | None:
        """The values of `obj.`: for `pre.` / `post.`, those that every end the rule is read
        at has (each target's own end; both ends of an undirected coupling, which take
        turns as `post`). With an unknown target, any population's values (no guess)."""
        if obj not in ("pre", "post"):
            return self._members(obj)
        if any_of:
            allowed: list[str] = []
            for end in any_of:
                allowed.extend(m for m in self._members(end) or () if m not in allowed)
            return tuple(allowed) or ("s",)
        ends = []
        for n in names:
            e = weights.get(n)
            if e is None:
                ends.append(n.split(".")[0])  # `h.bias`: the population itself
            elif e.kind == "undirected":
                ends += [e.pre, e.post]
            else:
                ends.append(e.pre if obj == "pre" else e.post)
        common: list[str] | None = None
        for end in ends:
            have = self._members(end) or ()
            common = list(have) if common is None else [m for m in common if m in have]
        return tuple(common or ()) or ("s",)
