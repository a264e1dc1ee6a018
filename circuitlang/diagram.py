"""Circuit graph → graphviz diagram (DOT, SVG, PNG, PDF).

What the drawing says, so that it reads right to someone who has only the
`.circ` file:

* **Layers** run bottom-up: inputs at the bottom, outputs at the top, each
  population one layer above the nearest one that drives it (`ranks`). An
  interneuron (a hidden population that is driven by one population and
  projects back into it alone, `interneurons`) is drawn beside the layer it
  serves, half a layer up, not above the layer that teaches it.
* **Populations** are tables (`nodes.py`): the body names the population,
  its cell type, shape, role, rate function ρ, state bounds and bias; a
  population with a cell type shows its compartments beside the body,
  `apical` ones above the others. A connection leaves from the body and
  ends on its own port of the compartment it feeds, so no two arrow heads
  share a point.
* **Learning**: a weight's colour says whether it learns; its label gives
  the weight and its operators over how it learns (`W1` / `eqprop`,
  `W_IP` / `rule (predict)`, `B2` / `fixed`, or `B2 = W2ᵀ`; see
  `plasticity.py`). Under the title, the phases in order and the estimator,
  or the file's own rules as written (`nodes.learning_panel`).

The edge styles are defined once in `EDGE_STYLES`, which the legend reads.
"""

from __future__ import annotations

import html
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

import graphviz
import networkx as nx

from . import primitives as P
from .circuit import Circuit
from .graph import ConnectionEdge
from .nodes import BODY, Ports, learning_panel, population_label
from .ops import OPS
from .plasticity import Plasticity, plasticity

__all__ = ["to_dot", "render", "EDGE_STYLES", "ranks", "interneurons", "BODY"]

FONT = "Helvetica"
NUDGE_COLOR = "#dc2626"
PERTURB_COLOR = "#d97706"
LEARNED_COLOR = "#0f766e"
STATIC_COLOR = "#6b7280"

# name -> (graphviz edge attributes, legend text); `one_to_one` doubles the line in the edge's colour
EDGE_STYLES: dict[str, tuple[dict[str, str], str]] = {
    "weight": ({"arrowhead": "normal"}, "weight"),
    "learned": ({"color": LEARNED_COLOR, "fontcolor": LEARNED_COLOR, "arrowhead": "normal"}, "learned"),
    "static": ({"color": STATIC_COLOR, "fontcolor": STATIC_COLOR, "arrowhead": "empty"}, "not learned"),
    "undirected": ({"dir": "none", "penwidth": "1.6"}, "undirected (energy)"),
    "tied": ({"style": "dashed"}, "tied (Wᵀ)"),
    "inhibitory": ({"arrowhead": "tee"}, "inhibitory"),
    "one_to_one": ({}, "one-to-one"),
    "nudge": ({"style": "dashed", "color": NUDGE_COLOR, "fontcolor": NUDGE_COLOR, "arrowhead": "normal"},
              "nudge −β∂C/∂s"),
    "perturb": ({"style": "bold,dashed", "color": PERTURB_COLOR, "fontcolor": PERTURB_COLOR, "arrowhead": "vee"},
                "⚡ perturbation (off unless enabled)"),
}

# `pathway=NAME` on connections: each pathway's colour, in the order the file first names them
# (away from the learned teal, the static grey, the nudge red and the perturbation amber;
# an eighth pathway and later ones take the colours again)
PATHWAY_COLORS = ("#1d4ed8", "#7e22ce", "#4d7c0f", "#c026d3", "#78350f", "#0284c7", "#9f1239", "#334155")

_SUPERSCRIPT_T = "ᵀ"
# graphviz 2.43 reads an edge's arrowhead from the wrong attribute when the attribute
# was first declared on an edge that dot then re-routes (a label, a port, a flat or a
# non-constraining edge): "Arrow type ... unknown". Declared here, they are known up front.
_EDGE_DEFAULTS = {"arrowhead": "normal", "arrowtail": "normal", "dir": "forward", "constraint": "true",
                  "style": "solid", "color": "black", "fontcolor": "black", "minlen": "1"}


# ------------------------------------------------------------------ layers --
def interneurons(circ: Circuit) -> dict[str, str]:
    """Interneuron → the population it serves.

    A hidden population is an interneuron of P when it projects to P alone,
    P drives it, and it is no link in the way up: every other population is
    still reached from the inputs without it. (Its teacher, if any, may sit
    higher.)
    """
    pops = circ.populations
    conns = [e for e in circ.connections if e.pre != e.post]
    inputs = [n for n, p in pops.items() if p.role == "input"]
    out: dict[str, str] = {}
    for name, pop in pops.items():
        if pop.role != "hidden":
            continue
        targets = {e.post for e in conns if e.pre == name}
        sources = {e.pre for e in conns if e.post == name}
        if len(targets) != 1 or not targets <= sources:
            continue
        reached = _reach(inputs, [(e.pre, e.post) for e in conns if name not in (e.pre, e.post)])
        if set(pops) - {name} <= reached | set(inputs):
            out[name] = next(iter(targets))
    # interneurons serving each other are drawn as layers of their own
    return {n: p for n, p in out.items() if p not in out}


def _reach(start: list[str], edges: list[tuple[str, str]]) -> set[str]:
    """`start` and every population reached from it along `edges` (networkx's descendants)."""
    g = nx.DiGraph(edges)
    g.add_nodes_from(start)
    return set(start).union(*(nx.descendants(g, n) for n in start))


def ranks(circ: Circuit) -> dict[str, int]:
    """Each population's rank, 0 at the bottom: 2 × its layer, +1 for an interneuron.

    The layer is the distance from the inputs along connections (ties and
    interneurons aside); an interneuron sits half a layer above the one it serves.
    """
    pops = circ.populations
    inter = interneurons(circ)
    edges = [(e.pre, e.post) for e in circ.connections
             if e.plasticity != "tied" and e.pre not in inter and e.post not in inter]
    if not pops:
        return {}
    depth = {n: 0 for n, p in pops.items() if p.role == "input"} or {next(iter(pops)): 0}
    frontier = list(depth)
    while frontier:
        nxt = []
        for u in frontier:
            for a, b in edges:
                if a == u and b not in depth:
                    depth[b] = depth[u] + 1
                    nxt.append(b)
        frontier = nxt
    rank = {n: 2 * depth.get(n, 0) for n in pops if n not in inter}
    for n, served in inter.items():
        rank[n] = rank[served] + 1
    return {n: rank[n] for n in pops}


# ------------------------------------------------------------------- edges --
def _edge_kinds(e: ConnectionEdge, plastic: Mapping[str, Plasticity], learning: bool) -> list[str]:
    p = plastic.get(e.weight or "")
    if p is not None and p.how == "tied":
        p = plastic.get(p.tied_to or "")
    if not learning:
        base = "static" if p is not None and p.how == "fixed" else "weight"
    else:
        base = "learned" if p is not None and p.learned else "static"
    kinds = [base]
    if e.kind in ("undirected", "one_to_one"):
        kinds.append(e.kind)
    if e.plasticity == "tied":
        kinds.append("tied")
    if e.sign < 0:
        kinds.append("inhibitory")
    return kinds


def _edge_attrs(kinds: list[str]) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for k in kinds:
        attrs.update(EDGE_STYLES[k][0])
    if "one_to_one" in kinds:
        c = attrs.get("color", "black")
        attrs["color"] = f"{c}:invis:{c}"
    if "undirected" in kinds:
        attrs.pop("arrowhead", None)
    return attrs


def pathways(circ: Circuit) -> dict[str, str]:
    """Each `pathway=` name of the file (first use first) and its colour."""
    names = list(dict.fromkeys(e.pathway for e in circ.connections if e.pathway))
    return {n: PATHWAY_COLORS[i % len(PATHWAY_COLORS)] for i, n in enumerate(names)}


def _in_colour(attrs: dict[str, str], colour: str) -> dict[str, str]:
    """`attrs` drawn in `colour` (a doubled one-to-one line stays doubled), a little thicker."""
    doubled = ":invis:" in attrs.get("color", "")
    return {**attrs, "color": f"{colour}:invis:{colour}" if doubled else colour, "fontcolor": colour,
            "penwidth": "1.5"}


def _edge_label(e: ConnectionEdge, plastic: Mapping[str, Plasticity]) -> str:
    """The weight's name and its operators when they are not a plain dense map or 1:1, then
    how it learns (`W1 · eqprop`), as an HTML label of two lines."""
    if e.plasticity == "tied":
        tied = e.tied_to + (_SUPERSCRIPT_T if e.transposed else "")
        text, how = f"{e.weight} = {tied}", ""
    else:
        if e.kind == "one_to_one":
            gain = f" ×{e.gain:g}" if e.gain != 1 else ""
            text = (e.weight or "1:1") + gain
        elif [s.kind for s in e.stages] == ["dense"]:
            text = e.weight or ""
        else:
            ops = " → ".join(OPS[s.kind].label(s.kw) for s in e.stages)
            text = f"{e.weight}: {ops}" if e.weight else ops
        how = plastic[e.weight].label if e.weight in plastic else ""
    second = f'<BR/><FONT POINT-SIZE="9">{html.escape(how)}</FONT>' if how else ""
    return f'<<TABLE BORDER="0" CELLPADDING="3" CELLSPACING="0"><TR><TD>{html.escape(text)}{second}</TD></TR></TABLE>>'


def _side(rank: Mapping[str, int], pre: str, post: str) -> str:
    """Where a connection comes from, seen from its target: ``"top"`` or ``"bottom"``."""
    return "top" if rank[pre] > rank[post] else "bottom"


# ----------------------------------------------------------------- diagram --
def _title(circ: Circuit) -> str:
    spec = circ.spec
    parts = []
    if spec.energy is not None:
        parts.append("energy " + " + ".join(spec.energy.presets + ("custom",) * bool(spec.energy.terms)))
    elif spec.dynamics is not None:
        parts.append(f"dynamics {spec.dynamics.kind}")
    elif spec.neuron_types:
        parts.append("cell-type equations")
    for c in spec.costs:
        parts.append(f"cost {c.kind} on {c.population}")
    if spec.learning is not None:
        learn = spec.learning
        method = f"learn {learn.method}"
        if learn.method == "eqprop" and learn.estimator:
            method += f" ({learn.estimator})"
        parts.append(method)
    head = html.escape(spec.name + (f" — {spec.doc}" if spec.doc else ""))
    sub = html.escape("  ·  ".join(parts))
    panel = learning_panel(circ)
    # graphviz refuses an empty <FONT> (a circuit with no populations, energy or cost)
    rows = f'<TR><TD><B>{head}</B>' + (f'<BR/><FONT POINT-SIZE="10">{sub}</FONT>' if sub else '') + '</TD></TR>'
    if panel:
        rows += f'<TR><TD ALIGN="CENTER">{panel}</TD></TR>'
    return f'<<TABLE BORDER="0" CELLSPACING="0" CELLPADDING="2">{rows}</TABLE>>'


def _learned_text(circ: Circuit) -> str:
    learn = circ.spec.learning
    if learn is None:
        return EDGE_STYLES["learned"][1]
    if learn.method == "rules":
        return "learned by its rule"
    return f"learned ({learn.method}, {learn.estimator})" if learn.estimator else f"learned ({learn.method})"


def to_dot(circ: Circuit, legend: bool = True) -> graphviz.Digraph:
    """The diagram of `circ` as a `graphviz.Digraph` (deterministic source)."""
    spec = circ.spec
    g = graphviz.Digraph(name=spec.name)
    g.attr(rankdir="BT", newrank="true", nodesep="0.5", ranksep="0.35", fontname=FONT,
           labelloc="t", label=_title(circ))
    g.attr("node", shape="plain", fontname=FONT, fontsize="12")
    g.attr("edge", fontname=FONT, fontsize="10", arrowsize="0.8", **_EDGE_DEFAULTS)
    rank = ranks(circ)
    plastic = plasticity(circ)
    learning = spec.learning is not None

    # every connection into a cell-type population gets its own port on its compartment
    ports = {name: Ports(pop) for name, pop in circ.populations.items()}
    heads: list[str] = []
    for e in circ.connections:
        heads.append(ports[e.post].take(e.compartment, _side(rank, e.pre, e.post)))
    nudges: dict[str, str] = {}
    for cost in spec.costs:
        pop = circ.populations[cost.population]
        comp = P.NUDGE_COMPARTMENT if pop.cell_type and P.NUDGE_COMPARTMENT in pop.compartments else None
        nudges[cost.population] = ports[cost.population].take(comp, "top") if comp else BODY
    groups: dict[tuple[str, str | None], list] = {}  # one marker per target: no two arrow heads meet
    for p in spec.perturbations:
        groups.setdefault((p.population, p.compartment), []).append(p)
    perturbs = [(ps, ports[pop].take(comp, "bottom") if comp else BODY) for (pop, comp), ps in groups.items()]

    for name, pop in circ.populations.items():
        g.node(name, label=population_label(circ, pop, ports[name], plastic.get(f"{name}.bias")))
    for r in sorted(set(rank.values())):
        with g.subgraph() as same:
            same.attr(rank="same")
            for name in circ.populations:
                if rank[name] == r:
                    same.node(name)

    used: list[str] = []
    paths = pathways(circ)
    for e, head in zip(circ.connections, heads):
        kinds = _edge_kinds(e, plastic, learning)
        used += [k for k in kinds if k not in used]
        attrs = _edge_attrs(kinds)
        if e.pathway:
            attrs = _in_colour(attrs, paths[e.pathway])
        _connection(g, circ, e, head, rank[e.post] - rank[e.pre], attrs, _edge_label(e, plastic))
    for cost in spec.costs:
        nudge_attrs, _ = EDGE_STYLES["nudge"]
        target = f"target_{cost.population}"
        g.node(target, label=f'<<FONT POINT-SIZE="10" COLOR="{NUDGE_COLOR}">target<BR/>'
                             f'<I>{html.escape(cost.kind)}</I></FONT>>', shape="plaintext")
        # drawn from the output up to the target, arrow pointing back down
        g.edge(_end(circ, cost.population, nudges[cost.population]), target, label=" −β∂C/∂s ", dir="back",
               minlen="2", **{("arrowtail" if k == "arrowhead" else k): v for k, v in nudge_attrs.items()})
        if "nudge" not in used:
            used.append("nudge")
    for group, port in perturbs:
        _perturbation(g, circ, group, port)
        if "perturb" not in used:
            used.append("perturb")
    if legend and used:
        inputs = [n for n, p in circ.populations.items() if p.role == "input"]
        _legend(g, circ, used, below=inputs or list(circ.populations)[:1], paths=paths)
    return g


def _connection(g: graphviz.Digraph, circ: Circuit, e: ConnectionEdge, head: str, span: int,
                attrs: dict[str, str], label: str) -> None:
    """One connection, from the body of `e.pre` to its port `head`; `span`: ranks it climbs."""
    # it leaves from the top of the body when it goes up, from its bottom when it goes down
    tail = _end(circ, e.pre, BODY + (":n" if span > 0 else ":s" if span < 0 else ""))
    head_end = _end(circ, e.post, head)
    if span < 0 and e.kind != "one_to_one":
        # feedback: declared upwards and drawn backwards, so dot ranks and routes it like the
        # layers' own edges (it squeezes a non-constraining edge along the nodes' sides)
        back = {("arrowtail" if k == "arrowhead" else k): v for k, v in attrs.items()}
        if back.get("dir") != "none":
            back["dir"] = "back"
        if span < -1:
            back["minlen"] = str(-span)
        g.edge(head_end, tail, label=label, **back)
        return
    if span < 0:  # graphviz 2.43 draws no tail arrow on a doubled (one-to-one) line drawn backwards
        attrs = {**attrs, "constraint": "false"}
    elif span > 1:
        attrs = {**attrs, "minlen": str(span)}
    g.edge(tail, head_end, label=label, **attrs)


def _perturbation(g: graphviz.Digraph, circ: Circuit, ps: list, port: str) -> None:
    """A stimulus marker: ⚡ and each perturbation's name and effect, with one arrow into their target."""
    first = ps[0]
    node = f"perturb_{first.name}"
    lines = "<BR/>".join(f'⚡ <B>{html.escape(p.name)}</B>: {html.escape(p.describe())}' for p in ps)
    with g.subgraph() as same:  # beside its target, in the same layer
        same.attr(rank="same")
        same.node(node, label=f'<<FONT POINT-SIZE="10" COLOR="{PERTURB_COLOR}">{lines}</FONT>>', shape="plaintext")
        same.node(first.population)
    attrs, _ = EDGE_STYLES["perturb"]
    g.edge(node, _end(circ, first.population, port), **attrs)


def _end(circ: Circuit, pop: str, port: str) -> str:
    """`pop:port`; a population without a cell type is one box, so its edges end on the node itself."""
    return f"{pop}:{port}" if circ.populations[pop].cell_type else pop


def _legend(g: graphviz.Digraph, circ: Circuit, kinds: list[str], below: list[str],
            paths: Mapping[str, str] | None = None) -> None:
    """One row of sample edges under the inputs, for the styles in use, then one per pathway."""
    order = list(EDGE_STYLES)
    kinds = sorted(kinds, key=order.index) + [f"pathway:{n}" for n in paths or {}]
    with g.subgraph(name="cluster_legend") as lg:
        lg.attr(label="", style="rounded", color="#d1d5db", margin="4", nodesep="0.1")
        with lg.subgraph() as row:
            row.attr(rank="same")
            for i, k in enumerate(kinds):
                a, b = f"legend_{i}_a", f"legend_{i}_b"
                row.node(a, label="", shape="point", width="0.01", style="invis")
                if k.startswith("pathway:"):
                    name = k[len("pathway:"):]
                    colour = (paths or {})[name]
                    row.node(b, label=f'<<FONT POINT-SIZE="9" COLOR="{colour}"><B>{html.escape(name)}</B> pathway'
                                      f'</FONT>>', shape="plaintext")
                    row.edge(a, b, minlen="1", len="0.4", **_in_colour(_edge_attrs(["weight"]), colour))
                else:
                    text = _learned_text(circ) if k == "learned" else EDGE_STYLES[k][1]
                    if k == "static" and circ.spec.learning is None:
                        text = "fixed"
                    row.node(b, label=f'<<FONT POINT-SIZE="9">{html.escape(text)}</FONT>>', shape="plaintext")
                    sample = [k] if k in ("weight", "learned", "static", "nudge", "perturb") else ["weight", k]
                    attrs = _edge_attrs(sample)
                    if paths and k in ("learned", "static") and all(e.pathway for e in circ.connections):
                        # every edge wears its pathway's colour: learned and not are told by the arrowhead
                        attrs = {**attrs, "color": "black", "fontcolor": "black"}
                    row.edge(a, b, minlen="1", len="0.4", **attrs)
                if i:
                    row.edge(f"legend_{i - 1}_b", a, style="invis", minlen="0")
    middle = f"legend_{(len(kinds) - 1) // 2}_b"
    for n in below:
        g.edge(middle, n, style="invis")


_FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": "dot", ".gv": "dot"}

INSTALL_HINT = (
    "install graphviz: `apt-get install graphviz` (Debian/Ubuntu), `brew install graphviz` (macOS) "
    "or `conda install graphviz`"
)


def render(circ: Circuit, output: str | Path, legend: bool = True) -> int:
    """Write the diagram to `output`; its extension picks the format.

    Without graphviz's `dot` program only `.dot` can be written: then the
    `.dot` file is written next to `output` and the return code is 1.
    """
    out = Path(output)
    fmt = _FORMATS.get(out.suffix.lower())
    if fmt is None:
        print(
            f"circuitc: error: cannot tell the format of `{out}`: use .svg, .png, .pdf or .dot",
            file=sys.stderr,
        )
        return 2
    from .errors import CircuitError
    from .rundir import atomic_write

    dot = to_dot(circ, legend=legend)
    if out.is_dir():
        raise CircuitError(f"{out}: is a directory; name the file to draw into, e.g. {out / 'circuit.svg'}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CircuitError(f"{out.parent}: cannot make the directory ({exc.strerror or exc})") from None
    if fmt == "dot":
        atomic_write(out, dot.source.encode("utf-8"))
        print(f"wrote {out}")
        return 0
    if shutil.which("dot") is None:
        fallback = out.with_suffix(".dot")
        atomic_write(fallback, dot.source.encode("utf-8"))
        print(
            f"circuitc: error: graphviz's `dot` program is not installed, so {out} cannot be drawn; "
            f"wrote {fallback} instead.\n  To draw it, {INSTALL_HINT}, then rerun, or run "
            f"`dot -T{fmt} {fallback} -o {out}`.",
            file=sys.stderr,
        )
        return 1
    atomic_write(out, dot.pipe(format=fmt))
    print(f"wrote {out}")
    return 0
