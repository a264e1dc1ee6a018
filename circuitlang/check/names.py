"""Checks of params, functions and cell types: the names the rest is written in.

* `param`: a constant; computed in file order, so it may use params above it,
  never itself or one below.
* `fn`: a formula over its arguments and params, expanded where it is used,
  so it may not call itself, directly or through other functions.
* `neuron`: a cell type; compartments (summed inputs), one ODE per state
  variable, and values (`v = ...`) defined above their use.
"""

from __future__ import annotations

from .. import syntax as S
from ..expr import Scope, check_expr
from ..graph import NeuronType, OdeSpec
from .base import BuilderBase


class NamesMixin(BuilderBase):
    """`param`, `fn` and `neuron` statements."""

    # -------------------------------------------------------------- params --
    def param(self, s: S.Param) -> None:
        if not self.declare(s.name, "param"):
            return
        name = s.name.name
        ordered = True
        for n in S.walk(s.value):
            if not isinstance(n, S.Var) or n.name in self.params:
                continue
            later = self.param_decls.get(n.name)
            if n.name == name:
                self.error(
                    f"param `{name}` is defined in terms of itself",
                    n.span,
                    "a param is a constant: write its value, or compute it from params defined above it",
                )
                ordered = False
            elif later is not None:
                self.error(
                    f"param `{n.name}` is used before it is defined",
                    n.span,
                    f"params are evaluated in order: move `param {n.name}` (line {later.line}) above line {s.span.line}",
                )
                ordered = False
        value = self.const(s.value, f"param `{name}`") if ordered else None
        if value is None:
            self.broken.add(name)  # already reported; uses of it stay quiet
        self.params[name] = value if value is not None else 0.0

    def fn_body(self, s: S.FnDef) -> None:
        seen = set()
        for p in s.params:
            if p.name in seen:
                self.error(f"parameter `{p.name}` appears twice in `fn {s.name.name}`", p.span)
            seen.add(p.name)
        names = {p.name: "argument" for p in s.params}
        names.update(self.param_names())
        args = ", ".join(f"`{p.name}`" for p in s.params) or "none"
        scope = Scope(
            f"function `{s.name.name}`", names, self.fn_arities(),
            hint=f"a function may use its arguments ({args}) and params",
        )
        check_expr(s.body, scope, self.errors)
        # recursion: a function may not call itself, directly or not
        chain = self._calls(s.name.name, s.body, set())
        if chain is not None:
            how = "" if not chain else " through " + ", ".join(f"`{c}`" for c in chain)
            self.error(
                f"function `{s.name.name}` calls itself{how}; recursion is not supported",
                s.name.span,
                "a function is a formula that is expanded where it is used, so it must not call itself",
            )

    def _calls(self, target: str, body: S.Expr, visiting: set[str]) -> list[str] | None:
        """The functions through which `body` calls `target` (`[]`: directly), or None."""
        for node in S.walk(body):
            if isinstance(node, S.Call) and node.fn.name in self.functions:
                name = node.fn.name
                if name == target:
                    return []
                if name not in visiting:
                    visiting.add(name)
                    rest = self._calls(target, self.functions[name].body, visiting)
                    if rest is not None:
                        return [name, *rest]
        return None

    # ------------------------------------------------------------- neurons --
    def neuron(self, s: S.Neuron) -> None:
        if not self.declare(s.name, "cell type"):
            return
        comps: list[str] = []
        for c in s.compartments:
            if c.name in comps:
                self.error(f"compartment `{c.name}` is declared twice in `{s.name.name}`", c.span)
            comps.append(c.name)
        states: list[str] = []
        for o in s.odes:
            if o.state.name in states:
                self.error(f"`{o.state.name}` has two equations in `{s.name.name}`", o.state.span)
            if o.state.name in comps:
                self.error(
                    f"`{o.state.name}` is a compartment (a summed input), so it has no equation",
                    o.state.span,
                )
            states.append(o.state.name)
        if not s.odes:
            self.error(
                f"cell type `{s.name.name}` has no equation",
                s.name.span,
                "give its state an ODE, e.g. `tau * ds/dt = -s + basal`",
            )
        names = self.param_names()
        names.update({c: "compartment" for c in comps})
        names.update({x: "state" for x in states})
        names["t"] = "time"
        cell_hint = (
            f"the equations of `{s.name.name}` may use its compartments, its state variables, "
            "values defined above them in the cell (`v = ...`), params and `t`"
        )
        lets = []
        for let in s.lets:
            scope = Scope(f"cell type `{s.name.name}`", dict(names), self.fn_arities(), hint=cell_hint)
            check_expr(let.value, scope, self.errors)
            if let.name.name in names and names[let.name.name] != "param":
                self.error(f"`{let.name.name}` is already defined in `{s.name.name}`", let.name.span)
            names[let.name.name] = "value"
            lets.append((let.name.name, let.value))
        scope = Scope(f"cell type `{s.name.name}`", names, self.fn_arities(), hint=cell_hint)
        odes = []
        for o in s.odes:
            check_expr(o.rhs, scope, self.errors)
            if o.tau is not None:
                check_expr(o.tau, scope, self.errors)
            odes.append(OdeSpec(o.state.name, o.tau, o.rhs, o.span))
        self.neurons[s.name.name] = NeuronType(s.name.name, tuple(comps), tuple(odes), tuple(lets), s.span)
