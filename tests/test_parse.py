"""Text → syntax tree: the grammar accepts the language and keeps positions."""

from __future__ import annotations

import pytest

import circuitlang as cl
from circuitlang import syntax as S
from circuitlang.errors import CircuitSyntaxError
from circuitlang.parse import parse

from .conftest import EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_parse(path):
    program = parse(path.read_text(), str(path))
    assert program.statements
    for st in program.statements:
        assert st.span.line >= 1 and st.span.col >= 1


def test_examples_present():
    names = {p.stem for p in EXAMPLES}
    assert {
        "eqprop_hopfield", "predictive_coding", "vector_field",
        "mirror_interneurons", "stdp_eqprop", "continuous_learning",
    } <= names


def _one(text, cls):
    found = [s for s in parse(text).statements if isinstance(s, cls)]
    assert len(found) == 1
    return found[0]


def test_derivatives_and_primes():
    rule = _one(
        "learn rules { phase p { steps 1 }\n during p: dW/dt = 0.2 / beta * d(rho(post.s))/dt * rho'(pre.s) }",
        S.Learn,
    ).rules[0]
    assert rule.lhs.name == "W"
    nodes = list(S.walk(rule.expr))
    assert any(isinstance(n, S.TimeDerivative) for n in nodes)
    prime = [n for n in nodes if isinstance(n, S.Call) and n.primes]
    assert prime and prime[0].fn.name == "rho"


def test_dt_is_an_ordinary_name_outside_derivatives():
    ph = _one("learn e { phase free { steps 20; dt 0.5 } }", S.Learn).phases[0]
    assert [a.key.name for a in ph.attrs] == ["steps", "dt"]
    p = _one("param dt = 0.1", S.Param)
    assert p.name.name == "dt"


def test_function_named_d_still_callable_with_space():
    # `d(` opens a time derivative; `d (x)` is a call of a function `d`
    p = _one("param q = d (3)", S.Param)
    assert isinstance(p.value, S.Call) and p.value.fn.name == "d"


def test_neuron_block():
    n = _one("neuron pyr {\n compartment basal, apical\n tau * ds/dt = -s + basal + apical\n v = 2 * s\n}", S.Neuron)
    assert [c.name for c in n.compartments] == ["basal", "apical"]
    assert n.odes[0].state.name == "s" and isinstance(n.odes[0].tau, S.Var)
    assert n.lets[0].name.name == "v"


def test_connection_forms():
    prog = parse(
        "a -- b : W1 init=glorot\n"
        "a -> b.apical : W2 fixed inhibitory\n"
        "b -> a : B = transpose(W2)\n"
        "a => b.soma gain=0.8\n"
    )
    c1, c2, c3, c4 = prog.statements
    assert (c1.arrow, c1.weight.name, c1.options[0].key) == ("--", "W1", "init")
    assert c2.post.compartment.name == "apical" and [o.key for o in c2.options] == ["fixed", "inhibitory"]
    assert isinstance(c3.tie, S.Call) and c3.tie.fn.name == "transpose"
    assert c4.arrow == "=>" and c4.weight is None and c4.options[0].key == "gain"


def test_per_weight_learning_rates():
    opt = _one("learn e { optimizer sgd { lr W1=0.1, W2=0.05, h.bias=0.1 } }", S.Learn).optimizers[0]
    lr = opt.attrs[0]
    assert lr.value is None and [k.key for k in lr.kwargs] == ["W1", "W2", "h.bias"]


def test_precedence():
    p = _one("param a = -2 ^ 2 + 3 * 4", S.Param)
    # (-(2^2)) + (3*4)
    assert isinstance(p.value, S.Binary) and p.value.op == "+"
    assert isinstance(p.value.left, S.Unary) and p.value.left.operand.op == "^"
    assert cl.loads("param a = -2 ^ 2 + 3 * 4").spec.params["a"] == 8.0


@pytest.mark.parametrize(
    "text",
    [
        "population x [3] input\r\npopulation y [2]\r\n",  # CRLF
        "population x [3] input\n\tpopulation y [2]",  # tab, no final newline
        "population x [3] input; population y [2]",  # ';' separates statements
        "# only a comment",
        "",
        "param a = (1 +\n   2)\n",  # newlines inside brackets are ignored
        "param a = 1 + \\\n 2\n",  # explicit line continuation
    ],
)
def test_layout_variants(text):
    cl.loads(text)


def test_keywords_are_soft():
    circ = cl.loads("population phase [3] input\npopulation term [2] output\n")
    assert set(circ.populations) == {"phase", "term"}


def test_spans_point_at_names():
    text = "population x [64] input\npopulation h [256]\nh -- x : W1\n"
    prog = parse(text, "f.circ")
    conn = prog.statements[2]
    assert (conn.weight.span.line, conn.weight.span.col) == (3, 10)
    assert str(conn.span) == "f.circ:3:1"


# ------------------------------------------------------------ recovery --
def _syntax_errors(text):
    with pytest.raises(CircuitSyntaxError) as info:
        parse(text, "r.circ")
    return info.value.diagnostics


def test_every_broken_statement_is_reported_once_in_one_run():
    good = "population h [8]\nh -- x : W1\n"
    text = "population x [4 input\n" + good + "bias h y z(\n" + good + "cost y squared squared {\n" \
           "  nothing\n}\n" + good
    diags = _syntax_errors(text)
    assert [d.span.line for d in diags] == [1, 4, 7], [d.render() for d in diags]


def test_an_error_in_a_block_does_not_cascade_into_the_rest_of_it():
    text = ("population x [4] input\nlearn eqprop {\n  phase free { steps 20 dt }\n  phase nudge { steps 4 }\n"
            "  batch 32\n}\npopulation y [3 output\n")
    diags = _syntax_errors(text)
    assert [d.span.line for d in diags] == [3, 7], [d.render() for d in diags]


def test_a_forgotten_closing_brace_points_where_it_opened():
    text = "learn eqprop {\n  phase free  { steps 20; dt 0.5\n  phase nudge { steps 4; beta 0.5 }\n}\n"
    (d,) = _syntax_errors(text)
    assert d.message == "the `{` at line 2, column 15 is never closed"
    assert (d.span.line, d.span.col) == (2, 15) and "close it with `}` at the end of line 2" in d.hint


def _parse_seconds(text):
    import time

    t0 = time.perf_counter()
    parse(text)
    return time.perf_counter() - t0


def test_many_errors_in_a_long_file_are_capped_and_cheap():
    import time

    from circuitlang.parse import MAX_SYNTAX_ERRORS

    text = "population h [8]\n" * 20000 + "population x [4 input\n" * 100
    t0 = time.perf_counter()
    diags = _syntax_errors(text)
    assert len(diags) == MAX_SYNTAX_ERRORS
    assert time.perf_counter() - t0 < 10 * _parse_seconds("population h [8]\n" * 20000) + 2


def test_function_chains_are_bounded_at_check_time_and_cheap():
    """600 chained functions used to raise RecursionError in compile, 5000 in check itself;
    now the depth is a located error, found in seconds."""
    import time

    lines = ["fn f0(x) = x"] + [f"fn f{i}(x) = f{i - 1}(x) + 1" for i in range(1, 5001)]
    text = "\n".join(lines) + "\npopulation x [4] input\npopulation y [3] output rho=f5000\ny -- x : W\n" \
        "energy hopfield\ncost y squared\n"
    t0 = time.perf_counter()
    with pytest.raises(cl.CircuitError) as info:
        cl.loads(text, "chain.circ")
    assert time.perf_counter() - t0 < 30
    (d,) = info.value.diagnostics
    assert d.message == "function `f257` nests 257 operations deep when expanded (at most 256, as for any expression)"
    assert d.span.line == 258
    # 256 deep checks, and compiles and relaxes (check passes => compile passes)
    ok = "\n".join(lines[:257]) + "\npopulation x [4] input\npopulation y [3] output rho=f256\ny -- x : W\n" \
        "energy hopfield\ncost y squared\n"
    import jax
    import jax.numpy as jnp

    m = cl.compile(cl.loads(ok))
    state = m.relax(m.init(jax.random.key(0)), jnp.ones((2, 4)))
    assert state["y"].shape == (2, 3)


# ---------------------------------------------------------------- the parser's tables --
def test_grammar_is_strict():
    """No shift/reduce conflict and no two terminals that match one text: lark's strict mode
    (interegular) proves it. The CLI builds without that check, so this test is what holds it."""
    from circuitlang import parse as P

    P._parser.cache_clear()
    try:
        parser = P._parser(strict=True)[0]
        assert parser.options.strict
    finally:
        P._parser.cache_clear()


def _outcome(text, path):
    try:
        return repr(parse(text, path).statements)
    except CircuitSyntaxError as exc:
        return exc.render()


def test_cached_tables_parse_as_built(tmp_path, monkeypatch):
    """The tables read back from the cache give the same trees and the same syntax errors as
    tables built from the grammar; a damaged or foreign cache file is rebuilt, not trusted."""
    from pathlib import Path

    from circuitlang import parse as P

    texts = [(p.read_text(), str(p)) for p in EXAMPLES]
    diag = Path(__file__).parent / "diagnostics"
    texts += [(p.read_text(), p.name) for p in sorted(diag.glob("*.circ"))]
    monkeypatch.setenv("CIRCUITLANG_CACHE", "off")
    P._parser.cache_clear()
    built = [_outcome(*t) for t in texts]
    monkeypatch.setenv("CIRCUITLANG_CACHE", str(tmp_path))
    try:
        P._parser.cache_clear()
        P._parser()  # builds and stores
        (stored,) = tmp_path.glob("parser-*.json")
        P._parser.cache_clear()
        assert P._cached_parser({}) is not None
        assert [_outcome(*t) for t in texts] == built  # read back from the file
        stored.write_text(stored.read_text()[:1000])  # damaged
        assert P._cached_parser({}) is None
        P._parser.cache_clear()
        assert [_outcome(*t) for t in texts[:3]] == built[:3]
        assert P._cached_parser({}) is not None  # and stored again
    finally:
        P._parser.cache_clear()


def test_cache_key_follows_grammar(monkeypatch, tmp_path):
    from circuitlang import parse as P

    monkeypatch.setenv("CIRCUITLANG_CACHE", str(tmp_path))
    before = P._parser_cache()
    monkeypatch.setattr(P, "_grammar_text", lambda: "start: \"x\"\n")
    assert P._parser_cache() != before and P._parser_cache().parent == tmp_path
    monkeypatch.setenv("CIRCUITLANG_CACHE", "off")
    assert P._parser_cache() is None


def test_a_damaged_or_foreign_cache_file_is_rebuilt_not_trusted(tmp_path, monkeypatch):
    """A cache file whose checksum does not match, or whose tables were built with other
    options, is ignored; tables that fail while parsing are dropped and rebuilt (a damaged
    cache used to turn every `check` into exit 3)."""
    import hashlib
    import json

    from circuitlang import parse as P

    monkeypatch.setenv("CIRCUITLANG_CACHE", str(tmp_path))
    text = (EXAMPLES[0]).read_text()
    try:
        P._parser.cache_clear()
        expected = repr(parse(text).statements)  # builds and stores
        (stored,) = tmp_path.glob("parser-*.json")
        body, _, digest = stored.read_text().rpartition("\n")
        data = json.loads(body)
        data["data"]["options"]["lexer_callbacks"] = {"NAME": "x"}
        edited = json.dumps(data)
        stored.write_text(f"{edited}\n{digest}")  # the checksum no longer matches
        assert P._cached_parser({}) is None
        stored.write_text(f"{edited}\n{hashlib.sha256(edited.encode()).hexdigest()}")  # options differ
        assert P._cached_parser({}) is None
        P._parser.cache_clear()
        assert repr(parse(text).statements) == expected
        # a cached parser that fails in a way no syntax error does is dropped and rebuilt
        P._parser.cache_clear()
        cached = P._parser()[0]
        assert cached._circuitlang_cached

        def broken(*a, **k):
            raise TypeError("'str' object is not callable")

        monkeypatch.setattr(cached, "parse", broken)
        assert repr(parse(text).statements) == expected
        assert P._parser()[0] is not cached
    finally:
        P._parser.cache_clear()
