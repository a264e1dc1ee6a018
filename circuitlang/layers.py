"""The layers of an energy circuit: the two colour classes the `async` integrator steps by.

In a layered Hopfield energy every undirected coupling joins two different
populations, so, with the clamped populations fixed, the free populations and
their couplings form a graph; when that graph is bipartite (no odd cycle) its
two colour classes ("even" and "odd" layers) never couple within a class, and
each layer's minimum given the other class is closed form (Scellier et al.
2023, the asynchronous minimiser). Pure Python (networkx-free, JAX-free): the
checker and the lowering both read it.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["colour_layers"]


def colour_layers(free: Sequence[str], edges: Sequence) -> tuple[tuple[tuple[str, ...], tuple[str, ...]], object]:
    """Two-colour the free populations along the undirected couplings between them.

    Returns ``((even, odd), conflict)``: each class in declaration order (a
    population with no free neighbour is even), and `conflict`, the first
    coupling (in breadth-first order from the first free population) that joins
    two populations of one class (a self-coupling, or the edge closing an odd
    cycle), or None when the circuit is layered.
    """
    free = list(free)
    inside = set(free)
    neighbours: dict[str, list[tuple[str, object]]] = {n: [] for n in free}
    conflict = None
    for e in edges:
        if e.kind != "undirected" or e.pre not in inside or e.post not in inside:
            continue
        if e.pre == e.post:
            conflict = conflict or e
            continue
        neighbours[e.pre].append((e.post, e))
        neighbours[e.post].append((e.pre, e))
    colour: dict[str, int] = {}
    for root in free:
        if root in colour:
            continue
        colour[root] = 0
        queue = [root]
        while queue:
            n = queue.pop(0)
            for m, e in neighbours[n]:
                if m not in colour:
                    colour[m] = 1 - colour[n]
                    queue.append(m)
                elif colour[m] == colour[n] and conflict is None:
                    conflict = e
    even = tuple(n for n in free if colour[n] == 0)
    odd = tuple(n for n in free if colour[n] == 1)
    return (even, odd), conflict
