"""The driver of the front end: text → syntax tree → checked circuit graph.

    cl.load("net.circ")  /  cl.loads(text)   →   Circuit
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import networkx as nx

from .check import build
from .graph import CircuitSpec, ConnectionEdge, PopulationNode, weights
from .overrides import apply_overrides
from .parse import parse, read_source
from .source import Source, decode

__all__ = ["Circuit", "load", "loads"]


@dataclasses.dataclass(frozen=True)
class Circuit:
    """A checked circuit: its frozen graph and the source it came from."""

    graph: nx.MultiDiGraph
    source: Source
    overrides: tuple[tuple[str, object], ...] = ()

    def with_overrides(self, overrides) -> "Circuit":
        """The same file with `--set`-style overrides applied (checked again)."""
        if not overrides:
            return self
        program = apply_overrides(parse(self.source.text, self.source.path), overrides)
        graph = build(program, self.source)
        return Circuit(graph, self.source, self.overrides + tuple(dict(overrides).items()))

    @property
    def spec(self) -> CircuitSpec:
        return self.graph.graph["circuit"]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def populations(self) -> dict[str, PopulationNode]:
        return {n: d["payload"] for n, d in self.graph.nodes(data=True)}

    @property
    def connections(self) -> list[ConnectionEdge]:
        found = [d["payload"] for _, _, d in self.graph.edges(data=True)]
        return sorted(found, key=lambda e: (e.span.line, e.span.col))

    @property
    def weights(self) -> dict[str, ConnectionEdge]:
        return weights(self.graph)

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of the learned (and fixed) arrays: weights, then biases."""
        shapes: dict[str, tuple[int, ...]] = {
            w: tuple(e.shape) for w, e in self.weights.items() if e.plasticity != "tied"
        }
        for name, pop in self.populations.items():
            if pop.bias:
                shapes[f"{name}.bias"] = tuple(pop.bias_shape)
        return shapes

    def parameter_count(self) -> int:
        total = 0
        for shape in self.parameter_shapes().values():
            n = 1
            for d in shape:
                n *= d
            total += n
        return total


def loads(text: str, path: str = "<string>") -> Circuit:
    """Parse and check `.circ` text. Raises `CircuitError` (located)."""
    source = Source(text, path)
    program = parse(text, path)
    graph = build(program, source)
    return Circuit(graph, source)


def load(path: str | Path) -> Circuit:
    """Read, parse and check a `.circ` file. Raises `CircuitError` (located)."""
    p = str(path)
    return loads(decode(read_source(path), p), p)
