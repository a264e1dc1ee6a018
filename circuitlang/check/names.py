"""Checks of params, functions and cell types: the names the rest is written in.

* `param`: a constant; computed in file order, so it may use params above it,
  never itself or one below.
* `fn`: a formula over its arguments and params, expanded where it is used,
  so it may not call itself, directly or through other functions.
* `neuron`: a cell type; compartments (summed inputs), one ODE per state
  variable, and values (`v = ...`) defined above their use.
"""

from __future__ import annotations

import dataclasses

from .. import syntax as S
from ..expr import Scope, check_expr
from ..graph import NeuronType, OdeSpec
from ..parse import MAX_EXPR_DEPTH
from .base import BuilderBase


MAX_FN_NODES = 100_000  # operations in one function's expansion


def _expanded_depth(expr: S.Expr, depth: dict[str, int]) -> int:
    """Operators on the longest path of `expr` once the functions in `depth` (their own
    expanded depths) are substituted; an expression is at most `MAX_EXPR_DEPTH` deep, so
    this recursion is bounded."""
    kids = S.children(expr)
    below = max((_expanded_depth(k, depth) for k in kids), default=0)
    if isinstance(expr, S.Call) and expr.fn.name in depth:
        return depth[expr.fn.name] + below
    return below + 1 if kids else 0

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
        if getattr(self, "_arities", None) is None or len(self._arities) != len(self.functions):
            self._arities = self.fn_arities()  # once for all the bodies, not once per function
        scope = Scope(
            f"function `{s.name.name}`", names, self._arities,
            hint=f"a function may use its arguments ({args}) and params",
        )
        check_expr(s.body, scope, self.errors)

    def fn_calls(self) -> dict[str, list[str]]:
        """The call graph of the file's functions: {function: the functions its body calls},
        read from the bodies once (recursion and expansion checks both use it)."""
        if getattr(self, "_fn_calls", None) is None:
            self._fn_calls = {
                f: [n.fn.name for n in S.walk(d.body) if isinstance(n, S.Call) and n.fn.name in self.functions]
                for f, d in self.functions.items()
            }
        return self._fn_calls

    def fn_recursion(self) -> None:
        """A function may not call itself, directly or through others: one located error per
        function on a cycle of the call graph (built once, so thousands of functions cost
        no more than reading them)."""
        import networkx as nx

        g = nx.DiGraph()
        g.add_nodes_from(self.functions)
        g.add_edges_from((f, callee) for f, callees in self.fn_calls().items() for callee in callees)
        for comp in nx.strongly_connected_components(g):
            for f in sorted(comp, key=list(self.functions).index):
                if len(comp) == 1 and not g.has_edge(f, f):
                    continue
                if g.has_edge(f, f):
                    chain = []
                else:  # the shortest way back to f: through which functions it calls itself
                    paths = [nx.shortest_path(g, s, f) for s in g.successors(f) if s in comp]
                    chain = min(paths, key=len)[:-1]
                how = "" if not chain else " through " + ", ".join(f"`{c}`" for c in chain)
                self.error(
                    f"function `{f}` calls itself{how}; recursion is not supported",
                    self.fn_name_spans.get(f, self.functions[f].span),
                    "a function is a formula that is expanded where it is used, so it must not call itself",
                )

    def _traced_functions(self, calls: dict[str, list[str]]) -> set[str]:
        """The functions the compiled program may expand: every one named anywhere but in a
        `param` value (whose constant evaluation caches calls, so a doubling chain stays
        linear there), and those they call."""
        named: set[str] = set()
        stack = [st for st in self.program.statements if not isinstance(st, (S.Param, S.FnDef))]
        while stack:
            node = stack.pop()
            if isinstance(node, S.Ident):
                named.add(node.name)
            elif isinstance(node, str):
                named.add(node)
            elif isinstance(node, (tuple, list)):
                stack.extend(node)
            elif dataclasses.is_dataclass(node):
                stack.extend(getattr(node, f.name) for f in dataclasses.fields(node))
        out, todo = set(), [f for f in named if f in self.functions]
        while todo:
            f = todo.pop()
            if f not in out:
                out.add(f)
                todo.extend(calls[f])
        return out

    def fn_expansion(self) -> None:
        """Functions are expanded where they are used: refuse, at the function, one whose
        expansion nests more than `parse.MAX_EXPR_DEPTH` operations deep (the bound of any
        one expression) or grows past `MAX_FN_NODES` nodes (each function doubling its callee's would otherwise hang `compile`). Only
        the first function over a limit is reported, not every one that calls it."""
        calls = self.fn_calls()
        size: dict[str, int] = {}
        depth: dict[str, int] = {}
        over: set[str] = set()
        traced = self._traced_functions(calls)
        seen: set[str] = set()
        for root in self.functions:  # callees before callers, with an explicit stack
            stack = [(root, False)]
            while stack:
                f, expanded = stack.pop()
                if not expanded:
                    if f in seen:
                        continue
                    seen.add(f)
                    stack.append((f, True))
                    stack.extend((g, False) for g in calls[f] if g not in seen)
                    continue
                if any(g not in size for g in calls[f]):  # a recursive call (reported) or a callee over a limit
                    over.add(f)
                    continue
                nodes = sum(1 for _ in S.walk(self.functions[f].body)) + sum(size[g] - 1 for g in calls[f])
                deep = _expanded_depth(self.functions[f].body, depth)
                span = self.functions[f].span
                if deep > MAX_EXPR_DEPTH:
                    over.add(f)
                    self.error(f"function `{f}` nests {deep} operations deep when expanded (at most "
                               f"{MAX_EXPR_DEPTH}, as for any expression)", span,
                               "flatten the chain: write the formula with fewer intermediate functions")
                elif nodes > MAX_FN_NODES and f in traced:
                    over.add(f)
                    self.error(f"function `{f}` expands to {nodes:,} operations (at most {MAX_FN_NODES:,}): "
                               "each use of a function copies its formula", span,
                               "call an expensive function once and reuse the value (a `v = expr` "
                               "intermediate in a cell type), or simplify the formula")
                else:
                    size[f], depth[f] = nodes, deep

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
            scope = Scope(f"cell type `{s.name.name}`", dict(names), self.fn_arities(), hint=cell_hint, noise=True)
            check_expr(let.value, scope, self.errors)
            self.no_white(let.value, f"a named value like `{let.name.name}`")
            if let.name.name in names and names[let.name.name] != "param":
                self.error(f"`{let.name.name}` is already defined in `{s.name.name}`", let.name.span)
            names[let.name.name] = "value"
            lets.append((let.name.name, let.value))
        scope = Scope(f"cell type `{s.name.name}`", names, self.fn_arities(), hint=cell_hint, noise=True)
        odes = []
        for o in s.odes:
            check_expr(o.rhs, scope, self.errors)
            if o.tau is not None:
                check_expr(o.tau, scope, self.errors)
            odes.append(OdeSpec(o.state.name, o.tau, o.rhs, o.span, self.ode_noise(o, s.name.name)))
        self.neurons[s.name.name] = NeuronType(s.name.name, tuple(comps), tuple(odes), tuple(lets), s.span)
