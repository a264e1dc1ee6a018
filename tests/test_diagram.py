"""Graph → diagram: golden DOT sources, real SVGs, and the no-graphviz path."""

from __future__ import annotations

import html
import re
import shutil
import xml.etree.ElementTree as ET

import pytest

import circuitlang as cl
from circuitlang import diagram
from circuitlang.plasticity import Plasticity, plasticity

from .conftest import EXAMPLES, ROOT, regen

GOLDEN = ROOT / "tests" / "golden"
needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None,
    reason="graphviz's `dot` program is not installed (apt-get install graphviz; .ci/run installs it)",
)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_golden_dot(path):
    source = diagram.to_dot(cl.load(path.relative_to(ROOT))).source
    golden = GOLDEN / (path.stem + ".dot")
    if regen():
        golden.write_text(source, encoding="utf-8")
    assert source == golden.read_text(encoding="utf-8"), f"diagram of {path.name} changed; CIRCUITLANG_REGEN=1 to accept"


# ------------------------------------------------------------ DOT reading --
_EDGE = re.compile(r"^\t+(?P<tail>\S+) -> (?P<head>\S+) \[(?P<attrs>.*)\]$")
_LABEL = re.compile(r'label=(<<TABLE.*?</TABLE>>|<<.*?>>|"[^"]*"|\S+)')
_ATTR = re.compile(r'(\w+)=("[^"]*"|\S+)')


def _edges(source: str) -> list[dict]:
    """The edges of a DOT source: tail, head, attributes, and the label's text without its tags.

    `src`/`dst` are the ends as drawn: a feedback edge is declared upwards with `dir=back`."""
    out = []
    for line in source.splitlines():
        m = _EDGE.match(line)
        if not m:
            continue
        attrs = m["attrs"]
        label = _LABEL.search(attrs)
        rest = _LABEL.sub("", attrs) if label else attrs
        d = {k: v.strip('"') for k, v in _ATTR.findall(rest)}
        text = re.sub(r"<BR/>", " / ", label.group(1)) if label else ""
        text = html.unescape(re.sub(r"<[^<>]*>", "", text)).strip(' "<>')
        back = d.get("dir") == "back"
        out.append({"tail": m["tail"], "head": m["head"], "attrs": d, "label": text,
                    "src": m["head"] if back else m["tail"], "dst": m["tail"] if back else m["head"]})
    return out


def _edge(edges: list[dict], name: str) -> dict:
    return next(e for e in edges if e["label"] == name or e["label"].startswith(name + " "))


def _node_label(source: str, name: str) -> str:
    line = next(x for x in source.splitlines() if x.startswith(f"\t{name} [label="))
    return html.unescape(re.sub(r"<[^<>]*>", " ", line))


def _dot(root, name: str) -> str:
    return diagram.to_dot(cl.load(root / "examples" / f"{name}.circ")).source


def test_dot_encodes_the_conventions(root):
    edges = _edges(_dot(root, "mirror_interneurons"))
    # the tied feedback weight: dashed, labelled with a transpose, into the apical compartment
    b2 = _edge(edges, "B2 = W2ᵀ")
    assert b2["attrs"]["style"] == "dashed" and b2["dst"].startswith('s1:"apical.')
    assert _edge(edges, "V1b")["attrs"]["arrowtail"] == "tee"  # inhibitory: a bar head (drawn backwards)
    mirror = _dot(root, "mirror_interneurons")
    assert 'PORT="basal"' in mirror and 'PORT="apical"' in mirror  # compartments are cells of the table
    hop = _dot(root, "eqprop_hopfield")
    assert _edge(_edges(hop), "W1")["attrs"]["dir"] == "none"  # undirected: no arrowheads
    assert "legend" in hop and "input" in hop and "output" in hop


def test_fixed_and_one_to_one_styles():
    circ = cl.loads(
        "population a [4] input\npopulation b [4]\npopulation c [3] output\n"
        "a => b gain=0.5\nb -> c : W\nc -> b : F fixed init=normal(0.1)\ndynamics leaky\n"
    )
    src = diagram.to_dot(circ).source
    edges = _edges(src)
    assert _edge(edges, "1:1 ×0.5")["attrs"]["color"] == "black:invis:black"
    fixed = _edge(edges, "F")
    # feedback: declared from b up to c and drawn backwards, so the layers stay bottom-up
    assert (fixed["tail"], fixed["head"], fixed["attrs"]["dir"]) == ("b", "c", "back")
    # without a learn block nothing is said about learning (no colour, no rule, no panel), but `fixed`
    assert fixed["label"] == "F / fixed" and fixed["attrs"]["color"] == diagram.STATIC_COLOR
    assert _edge(edges, "W")["label"] == "W" and _edge(edges, "W")["attrs"].get("color", "black") == "black"
    assert "learn" not in src and "fixed</FONT>" in src  # the legend's entry
    assert "legend" not in diagram.to_dot(circ, legend=False).source


# ---------------------------------------------------- where edges attach --
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_connections_leave_from_the_body(path):
    """A connection starts at its population's body (its node, or the body port of a
    cell-type population), never at one of its compartments."""
    circ = cl.load(path)
    edges = [e for e in _edges(diagram.to_dot(circ).source) if not e["src"].startswith("legend_")]
    for conn in circ.connections:
        pop = circ.populations[conn.pre]
        ends = [e["src"] for e in edges if e["src"].split(":")[0] == conn.pre
                and not e["dst"].startswith("target_")]
        assert ends, conn.pre
        for end in ends:
            body = f'{conn.pre}:"{diagram.BODY}"' if pop.cell_type else conn.pre
            assert end == body or end.startswith(body + ":"), (path.name, end)  # `:n`, `:s`: its top, bottom


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_each_arrow_into_a_compartment_has_its_own_port(path):
    """Two connections (or a connection and the nudge) into one compartment end on
    different ports of it, and every port is a slot of the compartment it feeds."""
    circ = cl.load(path)
    src = diagram.to_dot(circ).source
    edges = _edges(src)
    for name, pop in circ.populations.items():
        if not pop.cell_type:
            continue
        ends = [e["dst"] for e in edges if e["dst"].startswith(name + ":")]  # the nudge's too (drawn backwards)
        assert len(ends) == len(set(ends)), (path.name, ends)
        for end in ends:
            port = end.split(":")[1].strip('"')
            assert f'PORT="{port}"' in src
    # mirror_interneurons: B2 and V1b both feed s1.apical, the nudge feeds s2.apical
    if path.stem == "mirror_interneurons":
        ports = sorted(e["dst"] for e in edges if e["dst"].startswith('s1:"apical'))
        assert ports == ['s1:"apical.1"', 's1:"apical.2"']
        nudge = next(e for e in edges if e["head"] == "target_s2")
        assert nudge["dst"].startswith('s2:"apical.') and nudge["attrs"]["dir"] == "back"


# ------------------------------------------------------------------ layers --
def test_interneurons_sit_with_the_layer_they_serve(root):
    dend = cl.load(root / "examples" / "dendritic_microcircuit.circ")
    assert diagram.interneurons(dend) == {"i1": "p1"}
    r = diagram.ranks(dend)
    assert r["x"] < r["p1"] < r["i1"] < r["p2"]  # beside the hidden layer, below the output that teaches it
    assert r["i1"] == r["p1"] + 1 and r["p2"] == r["p1"] + 2
    mirror = cl.load(root / "examples" / "mirror_interneurons.circ")
    assert diagram.interneurons(mirror) == {"g1": "s1"}
    assert diagram.ranks(mirror)["g1"] == diagram.ranks(mirror)["s1"] + 1
    # a hidden layer on the way up is no interneuron, though it projects to one population that drives it
    for name in ("vector_field", "feedback_alignment", "eqprop_hopfield", "deep_eqprop"):
        assert diagram.interneurons(cl.load(root / "examples" / f"{name}.circ")) == {}, name
    # two hidden populations that only serve each other are layers of their own
    pair = cl.loads("population x [2] input\npopulation h [3]\npopulation a [2]\npopulation b [2]\n"
                    "population y [2] output\nx -> h : W\nh -> y : V\nh -> a : A\nh -> b : B\n"
                    "a -> b : AB\nb -> a : BA\ndynamics leaky\n")
    assert diagram.interneurons(pair) == {} and diagram.ranks(pair) == {"x": 0, "h": 2, "a": 4, "b": 4, "y": 4}
    # the ranks are in the DOT: one rank=same group per rank
    groups = re.findall(r"\{\s*rank=same\s*([^{}]*?)\s*\}", diagram.to_dot(dend).source)
    assert [g.split() for g in groups[:4]] == [["x"], ["p1"], ["i1"], ["p2"]]


# ---------------------------------------------------------------- learning --
def test_plasticity_reads_the_learn_block(root):
    dend = plasticity(cl.load(root / "examples" / "dendritic_microcircuit.circ"))
    assert dend["W_IP"] == Plasticity("rule", ("predict",)) and dend["W1"].label == "rule (nudge)"
    assert dend["B2"].how == "tied" and dend["B2"].tied_to == "W2" and not dend["B2"].learned
    hop = plasticity(cl.load(root / "examples" / "eqprop_hopfield.circ"))
    assert hop["W1"].label == "eqprop" and hop["h.bias"].learned
    fa = plasticity(cl.load(root / "examples" / "feedback_alignment.circ"))
    assert fa["B2"].label == "fixed" and not fa["B2"].learned
    cont = plasticity(cl.load(root / "examples" / "continuous_learning.circ"))
    assert cont["W2"].label == "rule (always)" and cont["y.bias"].label == "rule (always)"
    # under `learn rules` a weight no rule names keeps its initial value
    circ = cl.loads(
        "fn rho(x) = x\npopulation x [2] input\npopulation h [3]\npopulation y [2] output\n"
        "x -> h : W1\nh -> y : W2\ndynamics leaky\ncost y squared\n"
        "learn rules {\n  phase free { steps 3 }\n  phase nudge { steps 3; beta 0.5 }\n"
        "  during nudge: dW2/dt = post.s * pre.rate\n  during free, nudge: dW2/dt = post.s * pre.rate\n}\n"
    )
    p = plasticity(circ)
    assert p["W1"].how == "no rule" and not p["W1"].learned
    assert p["W2"].phases == ("free", "nudge")  # in the block's order, once each
    edges = _edges(diagram.to_dot(circ).source)
    assert _edge(edges, "W1")["label"] == "W1 / not learned"
    assert _edge(edges, "W1")["attrs"]["color"] == diagram.STATIC_COLOR
    assert _edge(edges, "W2")["attrs"]["color"] == diagram.LEARNED_COLOR


def test_edges_say_how_each_weight_learns(root):
    hop, stdp = _edges(_dot(root, "eqprop_hopfield")), _edges(_dot(root, "stdp_eqprop"))
    # the same network, learned two ways: the drawings differ on every weight, not only in the title
    assert _edge(hop, "W1")["label"] == "W1 / eqprop" and _edge(stdp, "W1")["label"] == "W1 / rule (nudge)"
    for e in hop + stdp:
        if e["label"].startswith("W"):
            assert e["attrs"]["color"] == diagram.LEARNED_COLOR
    dend = _edges(_dot(root, "dendritic_microcircuit"))
    assert _edge(dend, "W_IP")["label"] == "W_IP / rule (predict)"
    assert _edge(dend, "B2 = W2ᵀ")["attrs"]["color"] == diagram.LEARNED_COLOR  # follows W2, which learns
    assert _edge(dend, "1:1 ×0.8")["attrs"]["color"].startswith(diagram.STATIC_COLOR)
    fa = _edges(_dot(root, "feedback_alignment"))
    assert _edge(fa, "B2")["label"] == "B2 / fixed" and _edge(fa, "B2")["attrs"]["color"] == diagram.STATIC_COLOR
    conv = _edges(_dot(root, "conv_eqprop"))
    assert _edge(conv, "K1:")["label"] == "K1: conv 3×3 pad 1 → max-pool 2×2 / eqprop"


def test_the_learning_panel_and_legend(root):
    stdp = _dot(root, "stdp_eqprop")
    title = html.unescape(stdp.splitlines()[1])
    assert "phases: free (20 steps, dt 0.5) → nudge (8 steps, dt 0.5, β 0.5)" in title
    assert "during nudge: dW1/dt = 0.2 / beta * d(rho(post.s))/dt * rho(pre.s)" in title  # the rule as written
    assert "learned by its rule" in stdp
    hop = html.unescape(_dot(root, "eqprop_hopfield"))
    assert "estimator symmetric: -(1/2β)(∂E/∂θ(s^+β) - ∂E/∂θ(s^-β))" in hop
    assert "learned (eqprop, symmetric)" in hop
    cont = html.unescape(_dot(root, "continuous_learning"))
    assert "stream (20 steps per sample, dt 0.1, β 0.1)" in cont and "prospective" in cont
    assert "always for W1, W2, W3: dW/dt = eta * post.error * pre.rate" in cont


def test_populations_show_bounds_rate_and_bias(root):
    hop = _dot(root, "eqprop_hopfield")
    h = _node_label(hop, "h")
    assert "s ∈ [0, 1]" in h and "ρ(x) = clip(x, 0, 1)" in h and "+ bias · eqprop" in h
    assert "output · s ∈ [0, 1]" in _node_label(hop, "y")
    cont = _dot(root, "continuous_learning")
    assert "ρ = centered(x) = x - 0.5" in _node_label(cont, "x") and "ρ = identity" in _node_label(cont, "y")
    assert "+ bias · rule (always)" in _node_label(cont, "h1")
    dend = _dot(root, "dendritic_microcircuit")
    assert "ρ(x) = sigmoid(x)" in _node_label(dend, "p1") and "ρ = identity" in _node_label(dend, "i1")
    one_sided = cl.loads("population x [2] input\npopulation h [2] min=0\npopulation y [2] output max=2\n"
                         "x -> h : W\nh -> y : V\ndynamics leaky\n")
    src = diagram.to_dot(one_sided).source
    assert "s ≥ 0" in _node_label(src, "h") and "s ≤ 2" in _node_label(src, "y")
    assert "+ bias per channel" in _node_label(_dot(root, "conv_eqprop"), "h1")


@needs_dot
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_render_svg(path, tmp_path, capsys):
    out = tmp_path / (path.stem + ".svg")
    assert diagram.render(cl.load(path), out) == 0
    svg = out.read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    for pop in cl.load(path).populations:
        assert f">{pop}<" in svg or f">{pop} <" in svg or pop in svg


# ------------------------------------------------------------- the drawing --
_SVG = "{http://www.w3.org/2000/svg}"
_NUM = re.compile(r"-?\d+(?:\.\d+)?")
LOOP = (
    "circuit Loop\nfn rho(x) = clip(x, 0, 1)\npopulation x [4] input\npopulation h [8] min=0 max=1\n"
    "population y [3] output\nx -> h : W1\nh -> h : R\nh -> y : W2\ny -> h : B2\ndynamics leaky\n"
    "cost y squared\nlearn eqprop {\n  phase free { steps 10; dt 0.5 }\n"
    "  phase nudge { steps 4; dt 0.5; beta 0.5 }\n}\n"
)


def _drawn(circ, tmp_path) -> ET.Element:
    out = tmp_path / "d.svg"
    assert diagram.render(circ, out) == 0
    return ET.parse(out).getroot()


def _groups(svg: ET.Element, cls: str) -> list[tuple[str, ET.Element]]:
    return [(g.find(_SVG + "title").text, g) for g in svg.iter(_SVG + "g") if g.get("class") == cls]


def _points(el: ET.Element) -> list[tuple[float, float]]:
    nums = [float(n) for n in _NUM.findall(el.get("points") or el.get("d") or "")]
    return list(zip(nums[::2], nums[1::2]))


def _arrowheads(svg: ET.Element) -> list[tuple[str, tuple[float, float, float, float]]]:
    """The bounding box of every arrowhead: an edge's polygons (a tee is a bar and a stub line)."""
    out = []
    for title, g in _groups(svg, "edge"):
        for poly in g.iter(_SVG + "polygon"):
            pts = _points(poly)
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            out.append((title, (min(xs), min(ys), max(xs), max(ys))))
    return out


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _label_boxes(svg: ET.Element) -> list[tuple[str, tuple[float, float, float, float]]]:
    """Each edge label's bounding box, estimated from its text lines (Helvetica: 0.6 em per character)."""
    out = []
    for title, g in _groups(svg, "edge"):
        boxes = []
        for t in g.iter(_SVG + "text"):
            size, x, y = float(t.get("font-size")), float(t.get("x")), float(t.get("y"))
            width = 0.6 * size * len(t.text or "")
            left = x - width / 2 if t.get("text-anchor") == "middle" else x
            boxes.append((left, y - 0.8 * size, left + width, y))
        if boxes:
            out.append((title, (min(b[0] for b in boxes), min(b[1] for b in boxes),
                                max(b[2] for b in boxes), max(b[3] for b in boxes))))
    return out


def _centre_y(svg: ET.Element, node: str) -> float:
    g = dict(_groups(svg, "node"))[node]
    ys = [p[1] for el in g.iter() for p in _points(el)]
    return (min(ys) + max(ys)) / 2


@needs_dot
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_arrow_heads_never_coincide(path, tmp_path):
    heads = _arrowheads(_drawn(cl.load(path), tmp_path))
    for i, (t1, b1) in enumerate(heads):
        for t2, b2 in heads[i + 1:]:
            assert not _overlap(b1, b2), f"{path.name}: the heads of {t1} and {t2} meet at {b1[:2]}"


@needs_dot
@pytest.mark.parametrize("text", [LOOP, (ROOT / "examples" / "mirror_interneurons.circ").read_text()
                                  + "s1 -> s1.basal : R\n"], ids=["loop", "cell_loop"])
def test_self_loops_are_readable(text, tmp_path):
    """A self-loop's label keeps clear of every other edge label ("RW1" was `R` drawn over `W1`)."""
    svg = _drawn(cl.loads(text), tmp_path)
    boxes = [b for b in _label_boxes(svg) if not b[0].startswith("legend_")]
    loop = [b for t, b in boxes if re.fullmatch(r"(\w+)(:\S*)?(&#45;|-)>\1(:\S*)?", t)]
    assert len(loop) == 1
    for title, box in boxes:
        if box != loop[0]:
            assert not _overlap(loop[0], box), f"the loop's label overlaps {title}'s"
    heads = [b for _, b in _arrowheads(svg)]
    assert not any(_overlap(a, b) for i, a in enumerate(heads) for b in heads[i + 1:])


@needs_dot
def test_the_interneuron_is_drawn_with_its_layer(root, tmp_path):
    svg = _drawn(cl.load(root / "examples" / "dendritic_microcircuit.circ"), tmp_path)
    y = {n: _centre_y(svg, n) for n in ("x", "p1", "i1", "p2")}  # SVG: y grows downwards
    assert y["x"] > y["p1"] > y["i1"] > y["p2"]  # above the layer it serves, below the output above it


@needs_dot
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_docs_diagrams_are_current(path, tmp_path):
    """docs/NAME.svg is the diagram of examples/NAME.circ as drawn now (its texts: names, labels,
    notes, legend); `CIRCUITLANG_REGEN=1` redraws it."""
    doc = ROOT / "docs" / (path.stem + ".svg")
    if regen():
        assert diagram.render(cl.load(path), doc) == 0
    fresh = _drawn(cl.load(path), tmp_path)

    def texts(svg: ET.Element) -> list[str]:
        return sorted(t.text or "" for t in svg.iter(_SVG + "text"))

    assert texts(ET.parse(doc).getroot()) == texts(fresh), f"{doc.name} is stale; CIRCUITLANG_REGEN=1 redraws it"


@needs_dot
@pytest.mark.parametrize("ext", ["png", "pdf"])
def test_render_binary_formats(ext, tmp_path, root):
    out = tmp_path / f"m.{ext}"
    assert diagram.render(cl.load(root / "examples" / "mirror_interneurons.circ"), out) == 0
    magic = {"png": b"\x89PNG", "pdf": b"%PDF"}[ext]
    assert out.read_bytes().startswith(magic)


def test_without_graphviz_writes_dot_and_explains(tmp_path, monkeypatch, capsys, root):
    monkeypatch.setattr(diagram.shutil, "which", lambda name: None)
    out = tmp_path / "net.svg"
    code = diagram.render(cl.load(root / "examples" / "eqprop_hopfield.circ"), out)
    err = capsys.readouterr().err
    assert code == 1 and not out.exists()
    assert (tmp_path / "net.dot").read_text().startswith("digraph")
    assert "apt-get install graphviz" in err and "net.dot" in err


def test_unknown_format(tmp_path, root, capsys):
    assert diagram.render(cl.load(root / "examples" / "eqprop_hopfield.circ"), tmp_path / "x.jpeg") == 2
    assert ".svg" in capsys.readouterr().err


def test_pathways_are_drawn_in_colours_of_their_own(root):
    """`pathway=NAME` colours a connection by its path (forward, target, feedback in
    examples/dtp.circ), each colour distinct and named in the legend."""
    circ = cl.load(root / "examples" / "dtp.circ")
    src = diagram.to_dot(circ).source
    edges = [e for e in _edges(src) if not e["src"].startswith("legend_") and not e["dst"].startswith("target_")]
    colours = diagram.pathways(circ)
    assert list(colours) == ["forward", "feedback", "target"] and len(set(colours.values())) == 3
    by_weight = {e["label"].split(" ")[0]: e["attrs"]["color"].split(":")[0] for e in edges if e["label"]}
    assert by_weight["W1"] == colours["forward"] and by_weight["G2"] == colours["feedback"]
    assert by_weight["G2t"] == colours["target"]
    for name, colour in colours.items():
        assert f'COLOR="{colour}"><B>{name}</B> pathway' in src
