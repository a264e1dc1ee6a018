"""Graph → diagram: golden DOT sources, real SVGs, and the no-graphviz path."""

from __future__ import annotations

import shutil

import pytest

import circuitlang as cl
from circuitlang import diagram

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


def test_dot_encodes_the_conventions(root):
    mirror = diagram.to_dot(cl.load(root / "examples" / "mirror_interneurons.circ")).source
    # the tied feedback weight: dashed, labelled with a transpose, into the apical compartment
    line = next(l for l in mirror.splitlines() if "B2 = W2ᵀ" in l)
    assert "style=dashed" in line and "s1:apical" in line
    # the inhibitory connection has a bar head
    assert "arrowhead=tee" in next(l for l in mirror.splitlines() if " V1b " in l)
    # compartments are ports of the population's table
    assert 'PORT="basal"' in mirror and 'PORT="apical"' in mirror
    hop = diagram.to_dot(cl.load(root / "examples" / "eqprop_hopfield.circ")).source
    assert "dir=none" in next(l for l in hop.splitlines() if " W1 " in l)  # undirected: no arrowheads
    assert "legend" in hop and "input" in hop and "output" in hop


def test_fixed_and_one_to_one_styles():
    circ = cl.loads(
        "population a [4] input\npopulation b [4]\npopulation c [3] output\n"
        "a => b gain=0.5\nb -> c : W\nc -> b : F fixed init=normal(0.1)\ndynamics leaky\n"
    )
    src = diagram.to_dot(circ).source
    assert "black:invis:black" in next(l for l in src.splitlines() if "×0.5" in l)
    fixed = next(l for l in src.splitlines() if " F " in l)
    assert "#6b7280" in fixed and "constraint=false" in fixed  # gray; feedback keeps layers bottom-up
    assert "fixed" in src  # legend entry
    assert "legend" not in diagram.to_dot(circ, legend=False).source


@needs_dot
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_render_svg(path, tmp_path, capsys):
    out = tmp_path / (path.stem + ".svg")
    assert diagram.render(cl.load(path), out) == 0
    svg = out.read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    for pop in cl.load(path).populations:
        assert f">{pop}<" in svg or f">{pop} <" in svg or pop in svg


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
