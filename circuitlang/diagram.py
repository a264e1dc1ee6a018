"""Circuit graph → graphviz diagram (DOT, SVG, PNG, PDF).

Populations are drawn bottom-up (inputs at the bottom, outputs at the top),
as tables whose cells are the compartments, so a directed connection ends on
the compartment it feeds: apical compartments sit above the cell's name,
the other compartments below it. The edge styles (undirected, tied,
inhibitory, fixed, one-to-one) are defined once in `EDGE_STYLES`, which the
legend also reads.
"""

from __future__ import annotations

import html
import shutil
import sys
from pathlib import Path

import graphviz

from .circuit import Circuit
from .graph import ConnectionEdge, PopulationNode
from .layout import describe
from .ops import OPS

__all__ = ["to_dot", "render", "EDGE_STYLES"]

FONT = "Helvetica"
ROLE_COLORS = {"input": "#dbeafe", "hidden": "#f3f4f6", "output": "#fde68a"}
ROLE_BORDER = {"input": "#1d4ed8", "hidden": "#4b5563", "output": "#b45309"}
NUDGE_COLOR = "#dc2626"

# name -> (graphviz edge attributes, legend text)
EDGE_STYLES: dict[str, tuple[dict[str, str], str]] = {
    "directed": ({"arrowhead": "normal"}, "learned"),
    "undirected": ({"dir": "none", "penwidth": "1.6"}, "undirected (energy)"),
    "tied": ({"style": "dashed", "arrowhead": "normal"}, "tied (Wᵀ)"),
    "fixed": ({"color": "#6b7280", "fontcolor": "#6b7280", "arrowhead": "empty"}, "fixed"),
    "inhibitory": ({"arrowhead": "tee"}, "inhibitory"),
    "one_to_one": ({"color": "black:invis:black", "arrowhead": "normal"}, "one-to-one"),
    "nudge": ({"style": "dashed", "color": NUDGE_COLOR, "fontcolor": NUDGE_COLOR, "arrowhead": "normal"},
              "nudge −β∂C/∂s"),
}

_SUPERSCRIPT_T = "ᵀ"


def _edge_kinds(e: ConnectionEdge) -> list[str]:
    kinds = ["one_to_one" if e.kind == "one_to_one" else e.kind]
    if e.plasticity == "tied":
        kinds.append("tied")
    elif e.plasticity == "fixed" and e.kind != "one_to_one":
        kinds.append("fixed")
    if e.sign < 0:
        kinds.append("inhibitory")
    return kinds


def _edge_attrs(e: ConnectionEdge) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for k in _edge_kinds(e):
        attrs.update(EDGE_STYLES[k][0])
    if e.kind == "undirected":
        attrs.pop("arrowhead", None)
    return attrs


def _edge_label(e: ConnectionEdge) -> str:
    """The weight's name, and its operators when they are not a plain dense map or 1:1."""
    if e.plasticity == "tied":
        tied = e.tied_to + (_SUPERSCRIPT_T if e.transposed else "")
        return f"{e.weight} = {tied}"
    if e.kind == "one_to_one":
        gain = f" ×{e.gain:g}" if e.gain != 1 else ""
        return (e.weight or "1:1") + gain
    kinds = [s.kind for s in e.stages]
    if kinds == ["dense"]:
        return e.weight or ""
    ops = " → ".join(OPS[s.kind].label(s.kw) for s in e.stages)
    return f"{e.weight}: {ops}" if e.weight else ops


def _is_top(compartment: str) -> bool:
    return "apical" in compartment.lower()


def _population_label(pop: PopulationNode, default_activation: str) -> str:
    esc = html.escape
    fill, border = ROLE_COLORS[pop.role], ROLE_BORDER[pop.role]
    title = f"<B>{esc(pop.name)}</B>"
    if pop.cell_type:
        title += f" : <I>{esc(pop.cell_type)}</I>"
    title += f"  {describe(pop.shape)}"
    notes = []
    if pop.role != "hidden":
        notes.append(pop.role)
    if pop.activation != default_activation:
        notes.append(f"ρ = {pop.activation}")
    if pop.bias:
        notes.append("+ bias" if len(pop.shape) == 1 else f"+ bias per {pop.bias_per}")
    sub = f'<BR/><FONT POINT-SIZE="9">{esc(" · ".join(notes))}</FONT>' if notes else ""
    if not pop.cell_type:
        return (
            f'<<TABLE BORDER="1" COLOR="{border}" CELLBORDER="0" CELLSPACING="0" CELLPADDING="6" '
            f'BGCOLOR="{fill}" STYLE="ROUNDED"><TR><TD PORT="soma">{title}{sub}</TD></TR></TABLE>>'
        )
    top = [c for c in pop.compartments if _is_top(c)]
    bottom = [c for c in pop.compartments if not _is_top(c)]
    width = max(len(top), len(bottom), 1)

    def row(comps: list[str], side: str) -> str:
        if not comps:
            return ""
        cells = []
        for i, c in enumerate(comps):
            span = width - len(comps) + 1 if i == len(comps) - 1 else 1
            sides = side + ("L" if i else "")
            cells.append(
                f'<TD PORT="{esc(c)}" COLSPAN="{span}" BGCOLOR="white" BORDER="1" SIDES="{sides}" '
                f'COLOR="{border}"><FONT POINT-SIZE="10"><I>{esc(c)}</I></FONT></TD>'
            )
        return "<TR>" + "".join(cells) + "</TR>"

    head = f'<TR><TD COLSPAN="{width}" BGCOLOR="{fill}">{title}{sub}</TD></TR>'
    return (
        f'<<TABLE BORDER="1" COLOR="{border}" CELLBORDER="0" CELLSPACING="0" CELLPADDING="5" '
        f'STYLE="ROUNDED">{row(top, "B")}{head}{row(bottom, "T")}</TABLE>>'
    )


def _depths(circ: Circuit) -> dict[str, int]:
    """Distance from the inputs, following every connection forward."""
    pops = circ.populations
    depth = {n: 0 for n, p in pops.items() if p.role == "input"} or {next(iter(pops)): 0}
    frontier = list(depth)
    edges = [(e.pre, e.post) for e in circ.connections if e.plasticity != "tied"]
    while frontier:
        nxt = []
        for u in frontier:
            for a, b in edges:
                if a == u and b not in depth:
                    depth[b] = depth[u] + 1
                    nxt.append(b)
        frontier = nxt
    for n in pops:
        depth.setdefault(n, 0)
    return depth


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
    return f'<<B>{head}</B><BR/><FONT POINT-SIZE="10">{sub}</FONT>>'


def to_dot(circ: Circuit, legend: bool = True) -> graphviz.Digraph:
    """The diagram of `circ` as a `graphviz.Digraph` (deterministic source)."""
    spec = circ.spec
    g = graphviz.Digraph(name=spec.name)
    g.attr(rankdir="BT", newrank="true", nodesep="0.5", ranksep="0.7", fontname=FONT,
           labelloc="t", label=_title(circ))
    g.attr("node", shape="plain", fontname=FONT, fontsize="12")
    g.attr("edge", fontname=FONT, fontsize="10", arrowsize="0.8")
    default_act = "rho" if "rho" in spec.functions else "identity"
    depth = _depths(circ)
    for name, pop in circ.populations.items():
        g.node(name, label=_population_label(pop, default_act))
    used: list[str] = []
    for e in circ.connections:
        attrs = _edge_attrs(e)
        # feedback: keep the layers bottom-up. Not for one-to-one edges: graphviz (2.43)
        # cannot draw their parallel lines unconstrained ("Arrow type false unknown")
        if depth[e.post] <= depth[e.pre] and e.pre != e.post and e.kind != "one_to_one":
            attrs["constraint"] = "false"
        head = e.post if e.kind == "undirected" else f"{e.post}:{e.compartment}"
        tail = e.pre
        g.edge(tail, head, label=" " + _edge_label(e) + " ", **attrs)
        for k in _edge_kinds(e):
            if k not in used:
                used.append(k)
    for cost in spec.costs:
        nudge_attrs, _ = EDGE_STYLES["nudge"]
        target = f"target_{cost.population}"
        g.node(target, label=f'<<FONT POINT-SIZE="10" COLOR="{NUDGE_COLOR}">target<BR/>'
                             f'<I>{html.escape(cost.kind)}</I></FONT>>', shape="plaintext")
        # drawn from the output up to the target, arrow pointing back down
        g.edge(cost.population, target, label=" −β∂C/∂s ", dir="back",
               **{("arrowtail" if k == "arrowhead" else k): v for k, v in nudge_attrs.items()})
        if "nudge" not in used:
            used.append("nudge")
    if legend and used:
        inputs = [n for n, p in circ.populations.items() if p.role == "input"]
        _legend(g, used, below=inputs or list(circ.populations)[:1])
    return g


def _legend(g: graphviz.Digraph, kinds: list[str], below: list[str]) -> None:
    """One row of sample edges under the inputs, for the styles in use."""
    order = list(EDGE_STYLES)
    kinds = sorted(kinds, key=order.index)
    with g.subgraph(name="cluster_legend") as lg:
        lg.attr(label="", style="rounded", color="#d1d5db", margin="4", nodesep="0.1")
        with lg.subgraph() as row:
            row.attr(rank="same")
            for i, k in enumerate(kinds):
                attrs, text = EDGE_STYLES[k]
                a, b = f"legend_{i}_a", f"legend_{i}_b"
                row.node(a, label="", shape="point", width="0.01", style="invis")
                row.node(b, label=f'<<FONT POINT-SIZE="9">{html.escape(text)}</FONT>>', shape="plaintext")
                extra = dict(attrs)
                if k == "undirected":
                    extra.pop("arrowhead", None)
                row.edge(a, b, minlen="1", len="0.4", **extra)
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
    dot = to_dot(circ, legend=legend)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "dot":
        out.write_text(dot.source, encoding="utf-8")
        print(f"wrote {out}")
        return 0
    if shutil.which("dot") is None:
        fallback = out.with_suffix(".dot")
        fallback.write_text(dot.source, encoding="utf-8")
        print(
            f"circuitc: error: graphviz's `dot` program is not installed, so {out} cannot be drawn; "
            f"wrote {fallback} instead.\n  To draw it, {INSTALL_HINT}, then rerun, or run "
            f"`dot -T{fmt} {fallback} -o {out}`.",
            file=sys.stderr,
        )
        return 1
    data = dot.pipe(format=fmt)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    print(f"wrote {out}")
    return 0
