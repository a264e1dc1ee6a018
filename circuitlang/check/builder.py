"""The checker's driver: every statement kind checked in a fixed order, then the graph.

Declarations come first, so the order of statements in a file does not matter
for names: functions and params, cell types, populations and biases, weight
names, then connections and ties, energy and dynamics, costs, the `learn`
block, and the memory estimate. The checks live in the mixins `Builder`
combines, one module per concern.
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

import networkx as nx

from .. import syntax as S
from ..errors import CircuitSemanticError, Diagnostic
from ..graph import CircuitSpec, FunctionDef
from ..source import Source
from .connections import ConnectionsMixin, colonless_weight
from .dynamics import DynamicsMixin
from .learning import LearningMixin
from .names import NamesMixin
from .noise import NoiseMixin
from .perturbations import PerturbationsMixin
from .populations import PopulationsMixin


def build(program: S.Program, source: Source | None = None) -> nx.MultiDiGraph:
    """Check a parsed program and build its frozen circuit graph.

    Raises:
        CircuitSemanticError: every problem found, sorted by position.
    """
    b = Builder(program)
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


class Builder(NamesMixin, PopulationsMixin, ConnectionsMixin, DynamicsMixin, LearningMixin, PerturbationsMixin,
              NoiseMixin):
    """Checks one program; `run` returns its (unfrozen) graph and leaves the problems in `errors`."""

    def run(self) -> nx.MultiDiGraph:
        st = self.program.statements
        by = lambda cls: [s for s in st if isinstance(s, cls)]  # noqa: E731
        headers = by(S.Header)
        for extra in headers[1:]:
            self.error("a file describes one circuit: the `circuit` header appears twice", extra.span)
        # declarations first, so order of statements does not matter for names
        for s in by(S.FnDef):
            self.fn_name_spans.setdefault(s.name.name, s.name.span)
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
        self.fn_recursion()
        self.fn_expansion()
        for s in by(S.Neuron):
            self.neuron(s)
        for s in by(S.Population):
            self.population(s)
        for s in by(S.Bias):
            self.bias(s)
        connections = by(S.Connection)
        for s in connections:
            weight = s.weight or colonless_weight(s)
            if weight is not None:
                self.declare(weight, "weight")
        for s in connections:
            self.connection(s)
        self.ties()
        self.learn_statements = len(by(S.Learn))
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
        self.unread_output_rates(energy, learning)
        perturbations = self.perturbations(by(S.Perturb), energy, learning)
        self.memory_estimate()

        pops = {
            n: dataclasses.replace(p, bias=n in self.biased, bias_init=self.bias_inits.get(n),
                                   bias_per=self.bias_per.get(n, "channel"))
            for n, p in self.pops.items()
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
            perturbations=perturbations,
        )
        g = nx.MultiDiGraph(circuit=spec)
        for name, pop in pops.items():
            g.add_node(name, payload=pop)
        for e in self.edges:  # a weightless connection is keyed by its ends (and its number among them)
            key = e.weight or f"{e.pre}=>{e.post}"
            n = 1
            while g.has_edge(e.pre, e.post, key):
                n += 1
                key = f"{e.pre}=>{e.post}#{n}"
            g.add_edge(e.pre, e.post, key=key, payload=e)
        return g


def _stem(path: str) -> str:
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] or "circuit"
