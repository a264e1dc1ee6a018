"""Syntax tree → checked, frozen circuit graph (see `graph.py` for the schema).

All semantic errors are collected and raised together, sorted by position,
as one `CircuitSemanticError`. Nothing here imports JAX.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType

import networkx as nx
import numpy as np

from . import primitives as P
from . import syntax as S
from .errors import CircuitSemanticError, Diagnostic, did_you_mean
from .expr import EvalError, Scope, check_expr, evaluate
from .graph import (
    CircuitSpec,
    ConnectionEdge,
    CostSpec,
    DynamicsSpec,
    EnergySpec,
    EnergyTermSpec,
    FunctionDef,
    InitSpec,
    LearningSpec,
    NeuronType,
    OdeSpec,
    OptimizerSpec,
    PhaseSpec,
    PopulationNode,
    RuleSpec,
)
from .source import Source, Span

__all__ = ["build", "MAX_PARAMETER_BYTES"]

MAX_PARAMETER_BYTES = 16 * 2**30  # float32 weights beyond this fail early
MAX_POPULATION = 10**8
DERIVED_MEMBERS = ("error", "target")  # `h.error` = s - mu (predictive); `y.target`


def build(program: S.Program, source: Source | None = None) -> nx.MultiDiGraph:
    """Check a parsed program and build its frozen circuit graph.

    Raises:
        CircuitSemanticError: every problem found, sorted by position.
    """
    b = _Builder(program)
    graph = b.run()
    if b.errors:
        raise CircuitSemanticError(_dedupe(b.errors), source)
    return nx.freeze(graph)


def _dedupe(errors: list[Diagnostic]) -> list[Diagnostic]:
    seen, out = set(), []
    for d in errors:
        key = (d.span, d.message)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


class _Builder:
    def __init__(self, program: S.Program) -> None:
        self.program = program
        self.path = program.path
        self.errors: list[Diagnostic] = []
        self.params: dict[str, float] = {}
        self.functions: dict[str, FunctionDef] = {}
        self.neurons: dict[str, NeuronType] = {}
        self.pops: dict[str, PopulationNode] = {}
        self.pop_spans: dict[str, Span] = {}
        self.edges: list[ConnectionEdge] = []
        self.weight_spans: dict[str, Span] = {}
        self.biased: dict[str, Span] = {}
        self.names: dict[str, tuple[str, Span]] = {}  # global namespace: name -> (kind, span)
        self.param_decls: dict[str, Span] = {}  # every param of the file, defined yet or not
        self.broken: set[str] = set()  # params whose value could not be computed
        self.cost_spans: dict[str, Span] = {}  # population -> its `cost` statement
        self.tie_spans: dict[str, Span] = {}  # tied weight -> its `= W` / `= transpose(W)`
        self.unknown_dynamics = False  # an energy preset or `dynamics` name was misspelled

    # ------------------------------------------------------------- helpers --
    def error(self, message: str, span: Span | None, hint: str | None = None) -> None:
        self.errors.append(Diagnostic(message, span, hint))

    def declare(self, ident: S.Ident, kind: str) -> bool:
        prev = self.names.get(ident.name)
        if prev is not None:
            pkind, pspan = prev
            self.error(
                f"`{ident.name}` is already defined as a {pkind} at line {pspan.line}",
                ident.span,
                "every param, function, cell type, population and weight needs its own name",
            )
            return False
        if kind in ("param", "population", "weight") and ident.name in P.FUNCTIONS:
            self.error(f"`{ident.name}` is a built-in function; choose another name", ident.span)
            return False
        self.names[ident.name] = (kind, ident.span)
        return True

    def const(self, expr: S.Expr, what: str) -> float | None:
        if self.broken and any(isinstance(n, S.Var) and n.name in self.broken for n in S.walk(expr)):
            return None  # it uses a param whose error is reported already
        try:
            return evaluate(expr, self.params, self.functions, what)
        except EvalError as exc:
            self.errors.append(exc.diagnostic)
            return None

    def of_kind(self, kind: str) -> list[str]:
        return [n for n, (k, _) in self.names.items() if k == kind]

    def fn_arities(self) -> dict[str, int]:
        return {n: len(f.params) for n, f in self.functions.items()}

    # ----------------------------------------------------------------- run --
    def run(self) -> nx.MultiDiGraph:
        st = self.program.statements
        by = lambda cls: [s for s in st if isinstance(s, cls)]  # noqa: E731
        headers = by(S.Header)
        for extra in headers[1:]:
            self.error("a file describes one circuit: the `circuit` header appears twice", extra.span)
        # declarations first, so order of statements does not matter for names
        for s in by(S.FnDef):
            if self.declare(s.name, "function"):
                self.functions[s.name.name] = FunctionDef(
                    s.name.name, tuple(p.name for p in s.params), s.body, s.span
                )
        for s in by(S.Param):
            self.param_decls.setdefault(s.name.name, s.name.span)
        for s in by(S.Param):
            self.param(s)
        for s in by(S.FnDef):
            self.fn_body(s)
        for s in by(S.Neuron):
            self.neuron(s)
        for s in by(S.Population):
            self.population(s)
        for s in by(S.Bias):
            self.bias(s)
        connections = by(S.Connection)
        for s in connections:
            weight = s.weight or _colonless_weight(s)
            if weight is not None:
                self.declare(weight, "weight")
        for s in connections:
            self.connection(s)
        self.ties(connections)
        energies = by(S.Energy)
        dynamics = by(S.Dynamics)
        energy = self.energy(energies)
        dyn = self.dynamics(dynamics, energy)
        self.coupling_meaning(energy, dyn)
        self.cost_statements = len(by(S.Cost))  # a bad cost is reported, not also "missing"
        costs = [c for c in (self.cost(s) for s in by(S.Cost)) if c is not None]
        learns = by(S.Learn)
        for extra in learns[1:]:
            self.error(
                "a circuit has one `learn` block; this is the second",
                extra.method.span,
                f"put its phases, rules and settings into the first one (line {learns[0].span.line})",
            )
        learning = self.learn(learns[0], energy, dyn, costs) if learns else None
        self.memory_estimate()

        pops = {
            n: dataclasses.replace(p, bias=n in self.biased) for n, p in self.pops.items()
        }
        header = headers[0] if headers else None
        spec = CircuitSpec(
            name=header.name.name if header else _stem(self.path),
            doc=header.doc if header else None,
            path=self.path,
            params=MappingProxyType(dict(self.params)),
            functions=MappingProxyType(dict(self.functions)),
            neuron_types=MappingProxyType(dict(self.neurons)),
            energy=energy,
            dynamics=dyn,
            costs=tuple(costs),
            learning=learning,
        )
        g = nx.MultiDiGraph(circuit=spec)
        for name, pop in pops.items():
            g.add_node(name, payload=pop)
        for e in self.edges:
            g.add_edge(e.pre, e.post, key=e.weight or f"{e.pre}=>{e.post}", payload=e)
        return g

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
        names.update({n: "param" for n in self.params})
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
        names = {n: "param" for n in self.params}
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

    # --------------------------------------------------------- populations --
    def population(self, s: S.Population) -> None:
        ok = self.declare(s.name, "population")
        size = self.const(s.size, f"the size of `{s.name.name}`")
        if size is not None:
            if size != int(size) or size < 1:
                self.error(
                    f"the size of `{s.name.name}` must be a positive whole number, not {_num(size)}",
                    s.size.span,
                )
                size = 1
            elif size > MAX_POPULATION:
                self.error(
                    f"`{s.name.name}` has {_num(size)} neurons; the limit is {MAX_POPULATION:,}",
                    s.size.span,
                    f"its state alone would take {_bytes(size * 4)} per example; check the size",
                )
                size = 1
        size = int(size) if size is not None else 1
        roles = []
        activation = "rho" if "rho" in self.functions else "identity"
        tau = 1.0
        for opt in self._own_options(s.options):
            spec = self._option(opt, P.POPULATION_OPTIONS, "a population")
            if spec is None:
                continue
            if opt.key in P.ROLES:
                roles.append(opt)
            elif opt.key == "rho":
                activation = self._function_name(opt) or activation
            elif opt.key == "tau" and opt.value is not None:
                tau = self._checked_number(opt.value, spec, f"`tau` of `{s.name.name}`") or tau
        if len(roles) > 1:
            self.error(
                f"`{s.name.name}` has two roles: `{roles[0].key}` and `{roles[1].key}`",
                roles[1].span,
                "a population is one of input, hidden (the default) or output",
            )
        role = roles[0].key if roles else "hidden"
        comps: tuple[str, ...] = (P.DEFAULT_COMPARTMENT,)
        state: tuple[str, ...] = ("s",)
        ctype = None
        if s.cell_type is not None:
            ctype = s.cell_type.name
            nt = self.neurons.get(ctype)
            if nt is None:
                kinds = self.names.get(ctype, (None,))[0]
                msg = (
                    f"`{ctype}` is a {kinds}, not a cell type"
                    if kinds
                    else f"unknown cell type `{ctype}`{did_you_mean(ctype, self.neurons)}"
                )
                self.error(msg, s.cell_type.span, "declare it with `neuron NAME { ... }`")
                ctype = None
            else:
                comps = nt.compartments or (P.DEFAULT_COMPARTMENT,)
                state = tuple(o.state for o in nt.odes) or ("s",)
        if ok:
            self.pops[s.name.name] = PopulationNode(
                s.name.name, size, role, ctype, comps, state, activation, tau, False, s.span
            )
            self.pop_spans[s.name.name] = s.span

    def _own_options(self, options: tuple[S.Option, ...]) -> tuple[S.Option, ...]:
        """The options up to a statement keyword; `input population y` is two statements.

        Keywords are soft, so `population x [4] input population y [2]` only
        fails to parse at the second `[`; and `... input bias x` parses as
        options. No option is named like a statement, so report the keyword
        and leave what follows it alone.
        """
        for i, opt in enumerate(options):
            if opt.value is None and opt.key in _STATEMENT_WORDS:
                self.error(
                    f"`{opt.key}` starts a new statement, but it is on the same line as the one before",
                    opt.key_span,
                    "put each statement on its own line, or separate them with `;`",
                )
                if opt.key in ("energy", "dynamics", "neuron"):
                    self.unknown_dynamics = True  # the swallowed statement may have said how states evolve
                return options[:i]
        return options

    def _option(self, opt: S.Option, table: Mapping[str, P.Setting], what: str) -> P.Setting | None:
        spec = table.get(opt.key)
        if spec is None:
            hint = "options: " + ", ".join(table)
            if what == "a connection" and opt.value is None and "." not in opt.key:
                hint = f"to name the weight, write `: {opt.key}` after the target; {hint}"
            self.error(f"unknown option `{opt.key}` for {what}{did_you_mean(opt.key, table)}", opt.key_span, hint)
            return None
        if spec.kind == "flag" and opt.value is not None:
            self.error(f"`{opt.key}` takes no value", opt.span, f"write just `{opt.key}`")
            return None
        if spec.kind != "flag" and opt.value is None:
            self.error(f"`{opt.key}` needs a value", opt.span, f"write `{opt.key}=...`")
            return None
        return spec

    def _function_name(self, opt: S.Option) -> str | None:
        v = opt.value
        if not isinstance(v, S.Var):
            self.error(f"`{opt.key}=` takes the name of a function", v.span, "e.g. `rho=tanh`")
            return None
        if v.name in self.functions:
            if len(self.functions[v.name].params) != 1:
                self.error(f"`{v.name}` takes {len(self.functions[v.name].params)} arguments; an activation takes 1", v.span)
                return None
            return v.name
        fn = P.FUNCTIONS.get(v.name)
        if fn is not None and (fn.arity != (1,) or not fn.elementwise):
            why = f"takes {' or '.join(map(str, fn.arity))} arguments" if fn.elementwise else "is not element-wise"
            self.error(
                f"`{v.name}` {why}, so it cannot be an activation",
                v.span,
                f"wrap it in a function of one argument, e.g. `fn rho(x) = {v.name}(x, 0, 1)` and `rho=rho`"
                if v.name == "clip" else "an activation is a function of one argument, like `tanh` or your own `fn`",
            )
            return None
        if fn is None:
            pool = [f for f in P.FUNCTIONS if P.FUNCTIONS[f].arity == (1,) and P.FUNCTIONS[f].elementwise]
            self.error(
                f"unknown activation `{v.name}`{did_you_mean(v.name, pool + list(self.functions))}",
                v.span,
                "use a function of one argument: a built-in (" + ", ".join(pool[:6]) + ", ...) or your own `fn`",
            )
            return None
        return v.name

    def _checked_number(self, expr: S.Expr, spec: P.Setting, what: str) -> float | None:
        value = self.const(expr, what)
        if value is None:
            return None
        if spec.kind == "int" and value != int(value):
            self.error(f"{what} must be a whole number, not {_num(value)}", expr.span)
            return None
        if spec.minimum is not None:
            low = value <= spec.minimum if spec.exclusive else value < spec.minimum
            if low:
                bound = f"greater than {_num(spec.minimum)}" if spec.exclusive else f"at least {_num(spec.minimum)}"
                self.error(f"{what} must be {bound}, not {_num(value)}", expr.span)
                return None
        return value

    # ---------------------------------------------------------------- bias --
    def bias(self, s: S.Bias) -> None:
        for opt in self._own_options(s.options):
            self.error(f"unknown option `{opt.key}` for `bias`", opt.key_span, "write `bias h, y`")
        for p in s.populations:
            if p.name not in self.pops:
                self._unknown_population(p)
            elif p.name in self.biased:
                self.error(f"`{p.name}` already has a bias (line {self.biased[p.name].line})", p.span)
            elif self.pops[p.name].role == "input":
                self.error(
                    f"`{p.name}` is an input population: it is clamped to the data, so a bias has no effect",
                    p.span,
                    f"remove `{p.name}` from the `bias` list",
                )
            else:
                self.biased[p.name] = p.span

    def _unknown_population(self, ident: S.Ident) -> None:
        kind = self.names.get(ident.name, (None,))[0]
        if kind and kind != "population":
            self.error(f"`{ident.name}` is a {kind}, not a population", ident.span)
        else:
            self.error(
                f"unknown population `{ident.name}`{did_you_mean(ident.name, self.pops)}",
                ident.span,
                f"declare it with `population {ident.name} [SIZE]`",
            )

    # --------------------------------------------------------- connections --
    def connection(self, s: S.Connection) -> None:
        kind = P.CONNECTION_KINDS[s.arrow]
        pre, post = s.pre.population, s.post.population
        ok = True
        for end in (pre, post):
            if end.name not in self.pops:
                self._unknown_population(end)
                ok = False
        if s.pre.compartment is not None:
            self.error(
                f"a connection leaves a population's rate, not a compartment: drop `.{s.pre.compartment.name}`",
                s.pre.compartment.span,
            )
        target = f"{post.name}{'.' + s.post.compartment.name if s.post.compartment else ''}"
        weight, options = s.weight, self._own_options(s.options)
        if weight is None and (guess := _colonless_weight(s)) is not None:
            # `x -> y W1`: the colon is missing; report it once and go on as if it were there
            self.error(
                f"a `:` is missing before the weight name `{guess.name}`",
                guess.span,
                f"write `{pre.name} {s.arrow} {target} : {guess.name}`",
            )
            weight, options = guess, options[1:]
        if weight is None and kind != "one_to_one":
            self.error(
                f"this `{s.arrow}` connection needs a weight name",
                s.span,
                f"write `{pre.name} {s.arrow} {target} : W`",
            )
            ok = False
        init, plasticity, sign, gain = InitSpec("glorot"), "plastic", 1, 1.0
        init_given = fixed_given = False
        for opt in options:
            spec = self._option(opt, P.CONNECTION_OPTIONS, "a connection")
            if spec is None:
                continue
            if opt.key == "init":
                init = self._init(opt.value) or init
                init_given = True
            elif opt.key == "fixed":
                plasticity, fixed_given = "fixed", True
            elif opt.key == "inhibitory":
                sign = -1
            elif opt.key == "gain":
                if kind != "one_to_one":
                    self.error("`gain` applies to one-to-one connections (`=>`)", opt.key_span,
                               "for a weight matrix, scale its `init` instead")
                gain = self._checked_number(opt.value, spec, "`gain`") or gain
        if kind == "one_to_one" and weight is None:
            plasticity = "fixed"
        tie_target, transposed = None, False
        if s.tie is not None:
            tie_target, transposed = self._tie_form(s)
            if tie_target is not None:
                plasticity = "tied"
                self.tie_spans[weight.name] = s.tie.span
                if init_given or fixed_given:
                    self.error(
                        f"`{weight.name}` is tied to `{tie_target}`; it takes its values (and learning) from there",
                        s.tie.span,
                        "remove `init=` / `fixed` from the tied connection",
                    )
        if not ok:
            return
        comp = P.DEFAULT_COMPARTMENT
        post_pop = self.pops[post.name]
        if kind == "undirected":
            if s.post.compartment is not None:
                self.error(
                    "an undirected coupling `--` joins two populations; it has no target compartment",
                    s.post.compartment.span,
                    f"write `{pre.name} -- {post.name} : {weight.name}`",
                )
            comp = post_pop.compartments[0]
        elif s.post.compartment is not None:
            comp = s.post.compartment.name
            if comp not in post_pop.compartments:
                where = (
                    f"cell type `{post_pop.cell_type}` has compartments {', '.join(post_pop.compartments)}"
                    if post_pop.cell_type
                    else f"`{post.name}` has no cell type, so its only compartment is `{P.DEFAULT_COMPARTMENT}`"
                )
                self.error(
                    f"`{post.name}` has no compartment `{comp}`{did_you_mean(comp, post_pop.compartments)}",
                    s.post.compartment.span,
                    where,
                )
                return
        else:
            if len(post_pop.compartments) > 1:
                self.error(
                    f"`{post.name}` has compartments {', '.join(post_pop.compartments)}: say which one this connection targets",
                    s.post.span,
                    f"e.g. `{pre.name} {s.arrow} {post.name}.{post_pop.compartments[0]}`",
                )
                return
            comp = post_pop.compartments[0]
        pre_pop = self.pops[pre.name]
        # shape: undirected a -- b stores W as (|a|, |b|): post = a, pre = b
        if kind == "undirected":
            pre_name, post_name = post.name, pre.name
            shape = (pre_pop.size, post_pop.size)
        else:
            pre_name, post_name = pre.name, post.name
            shape = (post_pop.size, pre_pop.size)
        if kind == "one_to_one" and pre_pop.size != post_pop.size:
            self.error(
                f"a one-to-one connection needs equal sizes, but `{pre.name}` has {pre_pop.size} neurons and `{post.name}` {post_pop.size}",
                s.span,
                "use `->` with a weight for a full connection",
            )
            return
        if kind == "one_to_one":
            shape = (post_pop.size, pre_pop.size)
        self.edges.append(
            ConnectionEdge(
                kind=kind,
                pre=pre_name,
                post=post_name,
                weight=weight.name if weight is not None else None,
                compartment=comp,
                shape=shape,
                init=init,
                plasticity=plasticity,
                tied_to=tie_target,
                transposed=transposed,
                sign=sign,
                gain=gain,
                span=s.span,
            )
        )

    def _init(self, value: S.Expr) -> InitSpec | None:
        if isinstance(value, S.Var):
            name, args = value.name, ()
            span = value.span
        elif isinstance(value, S.Call) and not value.primes:
            name, args, span = value.fn.name, value.args, value.fn.span
        else:
            self.error("`init=` takes an initializer like `glorot` or `random(0.1)`", value.span)
            return None
        spec = P.INITS.get(name)
        if spec is None:
            self.error(
                f"unknown initializer `{name}`{did_you_mean(name, P.INITS)}",
                span,
                "initializers: " + ", ".join(f"{k}" + ("(x)" if v.arity[0] else "") for k, v in P.INITS.items()),
            )
            return None
        if len(args) not in spec.arity:
            self.error(
                f"`{name}` takes {spec.arity[0]} argument{'s' if spec.arity[0] != 1 else ''}, {len(args)} given",
                value.span,
                f"e.g. `init={name}" + ("(0.1)`" if spec.arity[0] else "`"),
            )
            return None
        values = []
        for a in args:
            v = self.const(a, f"`{name}`")
            if v is None:
                return None
            values.append(v)
        if name in ("normal", "random", "uniform") and values and values[0] < 0:
            self.error(f"`{name}` needs a non-negative scale, not {_num(values[0])}", args[0].span)
            return None
        return InitSpec(name, tuple(values))

    def _tie_form(self, s: S.Connection) -> tuple[str | None, bool]:
        tie = s.tie
        if isinstance(tie, S.Var):
            target, transposed, span = tie.name, False, tie.span
        elif isinstance(tie, S.Call) and tie.fn.name == "transpose" and len(tie.args) == 1 and isinstance(tie.args[0], S.Var):
            target, transposed, span = tie.args[0].name, True, tie.args[0].span
        else:
            self.error(
                "a tied weight is written `= W` or `= transpose(W)`",
                tie.span,
                "e.g. `s2 -> s1.apical : B2 = transpose(W2)`",
            )
            return None, False
        kind = self.names.get(target, (None,))[0]
        if kind != "weight":
            pool = self.of_kind("weight")
            self.error(
                f"unknown weight `{target}` in the tie{did_you_mean(target, pool)}",
                span,
                "a weight is named after the colon of a connection, e.g. `h -> y : W2`",
            )
            return None, False
        if s.weight is not None and target == s.weight.name:
            self.error(f"`{target}` cannot be tied to itself", span)
            return None, False
        return target, transposed

    def ties(self, connections: list[S.Connection]) -> None:
        by_weight = {e.weight: e for e in self.edges if e.weight is not None}
        for i, e in enumerate(self.edges):
            if e.tied_to is None:
                continue
            target = by_weight.get(e.tied_to)
            if target is None:
                continue
            if target.tied_to is not None:
                self.error(
                    f"`{e.weight}` is tied to `{e.tied_to}`, which is itself tied to `{target.tied_to}`",
                    self.tie_spans.get(e.weight, e.span),
                    f"tie `{e.weight}` directly to `{target.tied_to}`",
                )
                continue
            want = target.shape[::-1] if e.transposed else target.shape
            if want != e.shape:
                form = f"transpose({e.tied_to})" if e.transposed else e.tied_to
                hint = (
                    f"use `= {e.tied_to}`" if e.transposed and target.shape == e.shape
                    else f"use `= transpose({e.tied_to})`" if target.shape[::-1] == e.shape else None
                )
                self.error(
                    f"shape mismatch: `{e.weight}` is {e.shape[0]}×{e.shape[1]} ({_rows(e)}), but `{form}` is "
                    f"{want[0]}×{want[1]} ({_rows(target, e.transposed)})",
                    self.tie_spans.get(e.weight, e.span),
                    hint,
                )

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
                self.error(
                    f"unknown energy `{use.name.name}`{did_you_mean(use.name.name, P.ENERGIES)}",
                    use.name.span,
                    "energies: " + ", ".join(P.ENERGIES) + ", or a block of `term ...`",
                )
            elif use.name.name in presets:
                self.error(f"energy `{use.name.name}` is named twice", use.name.span)
            else:
                presets.append(use.name.name)
            for opt in self._own_options(use.options):
                self.error(f"unknown option `{opt.key}` for an energy", opt.key_span)
        terms = []
        weights = {e.weight: e for e in self.edges if e.weight is not None}
        for t in d.terms:
            over = ""
            names = {n: "param" for n in self.params}
            names.update({w: "weight" for w in weights})
            members = self._members
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
                    members = lambda obj: ("s", *DERIVED_MEMBERS) if obj in ("pre", "post") else self._members(obj)  # noqa: E731
                elif over == "populations":
                    objects = ("self",)
                    members = lambda obj: ("s", *DERIVED_MEMBERS) if obj == "self" else self._members(obj)  # noqa: E731
            scope = Scope(
                "an energy term", names, self.fn_arities(), members, matrices=True,
                hint="an energy term may use params, weights and population values like `h.s`",
                objects=(*objects, *self.pops),
            )
            check_expr(t.expr, scope, self.errors)
            terms.append(EnergyTermSpec(tuple(x.name for x in t.targets), over, t.expr, t.span))
        if not presets and not terms and not self.unknown_dynamics:
            self.error("the energy block is empty", d.span, "name a preset (`hopfield`, `predictive`) or add `term ...`")
        return EnergySpec(tuple(presets), tuple(terms), d.span)

    def _members(self, obj: str) -> tuple[str, ...] | None:
        pop = self.pops.get(obj)
        if pop is None:
            return None
        extra = ("target",) if pop.role == "output" else ()
        comps = () if pop.cell_type is None else pop.compartments
        return (*pop.state, *comps, "error", *extra)

    def dynamics(self, decls: list[S.Dynamics], energy: EnergySpec | None) -> DynamicsSpec | None:
        if not decls:
            return None
        for extra in decls[1:]:
            self.error("`dynamics` is declared twice", extra.span)
        d = decls[0]
        if d.name.name not in P.DYNAMICS:
            self.unknown_dynamics = True
            self.error(
                f"unknown dynamics `{d.name.name}`{did_you_mean(d.name.name, P.DYNAMICS)}",
                d.name.span,
                "dynamics: " + ", ".join(P.DYNAMICS) + ", or cell types with their own equations",
            )
            return None
        if energy is not None:
            self.error(
                "a circuit has either an energy (gradient dynamics) or `dynamics`, not both",
                d.span,
                f"remove `dynamics {d.name.name}` or the energy at line {energy.span.line}",
            )
        for opt in self._own_options(d.options):
            self.error(f"unknown option `{opt.key}` for dynamics", opt.key_span)
        return DynamicsSpec(d.name.name, d.span)

    def coupling_meaning(self, energy: EnergySpec | None, dyn: DynamicsSpec | None) -> None:
        """Each connection must mean something under the chosen dynamics."""
        if self.unknown_dynamics:
            return  # which connections fit is unknown until the name is fixed
        presets = set(energy.presets) if energy else set()
        custom = bool(energy and energy.terms)
        typed = any(p.cell_type for p in self.pops.values())
        for e in self.edges:
            if e.kind == "undirected":
                if energy is None:
                    self.error(
                        f"the undirected coupling `{e.weight}` needs an energy: `--` only has a meaning inside one",
                        e.span,
                        "add `energy hopfield`, or use `->` for a directed connection",
                    )
                elif not custom and "hopfield" not in presets:
                    self.error(
                        f"the `{', '.join(presets)}` energy has no term for undirected couplings like `{e.weight}`",
                        e.span,
                        "use `->` (a prediction) with `energy predictive`, or `energy hopfield`",
                    )
            elif e.kind in ("directed", "one_to_one") and energy is not None and not custom and "predictive" not in presets:
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

    # ---------------------------------------------------------------- cost --
    def cost(self, s: S.Cost) -> CostSpec | None:
        ok = True
        if s.population.name not in self.pops:
            self._unknown_population(s.population)
            ok = False
        if s.kind.name not in P.COSTS:
            self.error(
                f"unknown cost `{s.kind.name}`{did_you_mean(s.kind.name, P.COSTS)}",
                s.kind.span,
                "costs: " + ", ".join(P.COSTS),
            )
            ok = False
        for opt in self._own_options(s.options):
            self.error(f"unknown option `{opt.key}` for a cost", opt.key_span, f"write `cost {s.population.name} {s.kind.name}`")
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

    # --------------------------------------------------------------- learn --
    def learn(self, s: S.Learn, energy, dyn, costs) -> LearningSpec | None:
        method = s.method.name
        if method not in P.LEARN_METHODS:
            self.error(
                f"unknown learning method `{method}`{did_you_mean(method, P.LEARN_METHODS)}",
                s.method.span,
                "methods: " + ", ".join(P.LEARN_METHODS),
            )
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
        return LearningSpec(
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
        )

    def _attrs(self, attrs, table: Mapping[str, P.Setting], what: str) -> dict[str, object]:
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

    def phase(self, ph: S.Phase, energy, dyn) -> PhaseSpec | None:
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
        )

    def _forward_ok(self, ph: S.Phase, energy, dyn) -> None:
        if any(e.kind == "undirected" for e in self.edges):
            self.error(
                f"phase `{ph.name.name}` is `forward`, but undirected couplings (`--`) have no direction to follow",
                ph.name.span,
                "use `steps N` to relax the circuit instead",
            )
            return
        g = nx.DiGraph()
        g.add_nodes_from(self.pops)
        g.add_edges_from((e.pre, e.post) for e in self.edges if e.plasticity != "tied")
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

    def _eqprop_phases(self, phases: list[PhaseSpec], estimator: str, where) -> None:
        if not phases:
            return
        if phases[0].beta != 0:
            self.error(
                f"the first phase `{phases[0].name}` is the free phase, so it has no `beta`",
                phases[0].span,
                "EqProp starts from the free fixed point: put the nudged phase second",
            )
        nudged = [p for p in phases[1:] if p.beta != 0]
        if estimator in ("one_sided", "random_sign", "symmetric", "holomorphic") and not nudged:
            written = isinstance(where, S.Attr)
            self.error(
                f"estimator `{estimator}` needs a nudged phase, but no phase after the first sets `beta`"
                if written else
                f"EqProp needs a nudged phase (the default estimator is `{estimator}`), but no phase after the first sets `beta`",
                phases[-1].span,
                "give a later phase a `beta`, e.g. `phase nudge { steps 4; dt 0.5; beta 0.5 }`",
            )

    def optimizer(self, o: S.Optimizer) -> OptimizerSpec | None:
        table = P.OPTIMIZERS.get(o.name.name)
        if table is None:
            self.error(
                f"unknown optimizer `{o.name.name}`{did_you_mean(o.name.name, P.OPTIMIZERS)}",
                o.name.span,
                "optimizers: " + ", ".join(P.OPTIMIZERS),
            )
            return None
        for opt in o.options:
            self.error(f"optimizer settings go in braces: `optimizer {o.name.name} {{ {opt.key} ... }}`", opt.key_span)
        settings = self._attrs(o.attrs, table, f"optimizer `{o.name.name}`")
        lr, per = None, {}
        params = {e.weight for e in self.edges if e.weight and e.plasticity == "plastic"}
        params |= {f"{p}.bias" for p in self.biased}
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
                    else:
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
        weights = {e.weight: e for e in self.edges if e.weight is not None}
        biases = {f"{p}.bias" for p in self.biased}
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
            if e is None:
                pool = list(weights) + sorted(biases)
                self.error(
                    f"the rule names `{t.name}`, which is not a weight{did_you_mean(t.name, pool)}",
                    t.span,
                    ("weights: " + ", ".join(weights)) if weights else "name a weight after a connection's colon",
                )
                ok, unknown = False, True
            elif e.plasticity == "tied":
                self.error(
                    f"`{t.name}` is tied to `{e.tied_to}`: it follows `{e.tied_to}`, so it has no rule of its own",
                    t.span,
                    f"write the rule for `{e.tied_to}`",
                )
                ok = False
            elif e.plasticity == "fixed":
                self.error(f"`{t.name}` is `fixed`, so it cannot learn", t.span, "remove `fixed` from its connection")
                ok = False
            else:
                names.append(t.name)
        names_scope = {n: "param" for n in self.params}
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
        check_expr(r.expr, scope, self.errors)
        if not ok:
            return None
        return RuleSpec(tuple(p.name for p in r.phases), r.always, tuple(names), placeholder, r.expr, r.span)

    def _rule_members(self, obj, names, weights, any_of=None):
        if obj in ("pre", "post"):
            allowed: list[str] = []
            for end in any_of or ():
                allowed.extend(m for m in self._members(end) or () if m not in allowed)
            for n in names:
                e = weights.get(n)
                ends = [e.pre, e.post] if e is not None else [n.split(".")[0]]
                if e is not None and e.kind != "undirected":
                    ends = [e.pre] if obj == "pre" else [e.post]
                for end in ends:
                    for m in self._members(end) or ():
                        if m not in allowed:
                            allowed.append(m)
            return tuple(allowed) or ("s",)
        return self._members(obj)

    # -------------------------------------------------------------- memory --
    def memory_estimate(self) -> None:
        total = sum(e.shape[0] * e.shape[1] for e in self.edges if e.weight and e.plasticity != "tied")
        total += sum(self.pops[p].size for p in self.biased if p in self.pops)
        nbytes = 4 * total
        if nbytes > MAX_PARAMETER_BYTES:
            big = max((e for e in self.edges if e.weight), key=lambda e: e.shape[0] * e.shape[1])
            self.error(
                f"this circuit has {total:,} parameters, which need {_bytes(nbytes)} in float32 "
                f"(the limit is {_bytes(MAX_PARAMETER_BYTES)})",
                big.span,
                f"the largest weight, `{big.weight}` ({big.shape[0]:,}×{big.shape[1]:,}), needs "
                f"{_bytes(4 * big.shape[0] * big.shape[1])}; check the population sizes",
            )


_STATEMENT_WORDS = frozenset(
    ("circuit", "param", "fn", "neuron", "population", "bias", "energy", "dynamics", "cost", "learn")
)


def _colonless_weight(s: S.Connection) -> S.Ident | None:
    """`x -> y W1`: a bare first option that is no connection option is a weight name."""
    if s.weight is not None or s.arrow == "=>" or not s.options:
        return None
    first = s.options[0]
    if first.value is not None or "." in first.key or first.key in P.CONNECTION_OPTIONS or first.key in _STATEMENT_WORDS:
        return None
    return S.Ident(first.key, first.key_span)


def _rows(e: ConnectionEdge, transposed: bool = False) -> str:
    """`|h| × |y|`: which populations a weight's rows and columns follow."""
    rows, cols = (e.pre, e.post) if transposed else (e.post, e.pre)
    return f"`{rows}` × `{cols}`"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            break
        n /= 1024
    if unit == "B":
        return f"{int(n)} B"
    return f"{n:.1f} {unit}" if n < 10**6 else f"{n:.1e} {unit}"


def _stem(path: str) -> str:
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] or "circuit"
