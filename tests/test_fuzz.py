"""Property tests of the front end: no input makes it raise anything but a
located `CircuitError`, and none takes long.

Three sources of input:

* programs generated from `grammar/circuit.lark` itself
  (`hypothesis.extra.lark.from_lark`): every one must parse, since the
  parser is built from the same grammar, and then load or fail the checks;
* mutations of the six examples (characters, tokens and lines deleted,
  inserted, replaced, duplicated and swapped; random unicode; truncation);
* random bytes, alone or spliced into an example, read by `circuitlang.load`
  from a file (the decoding path).

Each property runs `CIRCUITLANG_FUZZ_EXAMPLES` examples (default: a few
hundred, so the file takes well under a minute); raise it for a long run:

    CIRCUITLANG_FUZZ_EXAMPLES=5000 python -m pytest -q tests/test_fuzz.py
"""

from __future__ import annotations

import os
import re
import time

import lark
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.lark import from_lark

import circuitlang as cl
from circuitlang.parse import grammar_path, parse

from .conftest import EXAMPLES

EXAMPLES_TEXT = [p.read_text(encoding="utf-8") for p in EXAMPLES]
N = int(os.environ.get("CIRCUITLANG_FUZZ_EXAMPLES", "0"))
SLOW = 10.0  # seconds: no single input may take longer (a small input takes milliseconds)


def fuzz(default: int) -> settings:
    """Hypothesis settings for one property: `default` examples unless the
    environment asks for more; no per-example deadline (a loaded CI machine
    is slow), the time bound is checked by `_load` instead."""
    return settings(
        max_examples=N or default,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


@pytest.fixture(scope="module", autouse=True)
def _warm_parser():
    cl.loads("param a = 1")  # build the lark parser once, outside the timed calls


# ------------------------------------------------------------------ oracle --
_CARETS = re.compile(r" *\| *\^+")


def assert_located(exc: cl.CircuitError) -> None:
    """Every diagnostic has a position, and renders as `path:line:col: error:`
    with the source line and carets under it."""
    assert exc.diagnostics, "a CircuitError without diagnostics"
    for d in exc.diagnostics:
        span = d.span
        assert span is not None, f"unlocated diagnostic: {d.message}"
        assert span.line >= 1 and span.col >= 1, f"bad position {span} for: {d.message}"
        assert (span.end_line, span.end_col) >= (span.line, span.col), f"span ends before it starts: {span}"
        text = d.render(exc.source)
        head, *rest = text.splitlines()
        assert head.startswith(f"{span.path}:{span.line}:{span.col}: error: "), text
        assert any(_CARETS.fullmatch(line) for line in rest), f"no caret line in:\n{text}"
    assert exc.render()  # the whole error renders too


def _timed(fn, *args):
    start = time.perf_counter()
    try:
        return fn(*args)
    finally:
        took = time.perf_counter() - start
        assert took < SLOW, f"took {took:.1f} s"


def check_input(text: str, path: str = "fuzz.circ") -> None:
    """The property: `loads` returns a circuit or raises a located CircuitError."""
    try:
        _timed(cl.loads, text, path)
    except cl.CircuitError as exc:
        assert_located(exc)


# --------------------------------------------------- programs from the grammar --
# Generation strings the terminals together, so each one is followed by a
# space, names avoid the (soft) keywords, and the ignored terminals are
# spelled so that they stay ignorable wherever they land.
_GRAMMAR = lark.Lark(grammar_path().read_text(encoding="utf-8"), parser="lalr", lexer="contextual", maybe_placeholders=True)
_KEYWORDS = {t.pattern.value for t in _GRAMMAR.terminals if t.pattern.type == "str" and t.pattern.value.isalpha()}
_NAMES = [
    "x", "y", "h", "h1", "h2", "s", "W1", "W2", "B2", "rho", "tanh", "clip", "sigmoid", "exp",
    "input", "output", "hopfield", "predictive", "leaky", "squared", "eqprop", "rules", "free",
    "nudge", "steps", "beta", "lr", "sgd", "estimator", "symmetric", "batch", "tau", "post", "pre",
    "error", "apical", "basal", "soma", "pyramidal", "transpose", "fixed", "inhibitory", "gain",
    "init", "glorot", "forward", "present", "prospective", "identity", "random", "d", "e",
]
assert not _KEYWORDS & set(_NAMES)
_name = st.sampled_from(_NAMES) | st.text("abxyzW_019", min_size=1, max_size=5).map(lambda s: "n" + s)
_ALTERNATIVES = {
    "ARROW": ["--", "->", "=>"],
    "CMP_OP": ["<=", ">=", "==", "!=", "<", ">"],
    "ADD_OP": ["+", "-"],
    "MUL_OP": ["*", "/", "@"],
    "POW_OP": ["^", "**"],
}


def _spaced(strategy):
    return strategy.map(lambda s: s + " ")


def _explicit() -> dict[str, st.SearchStrategy[str]]:
    numbers = st.sampled_from(["0", "1", "2", "0.5", "10", "1e-3", "3.", ".5", "256", "1E+2", "2.5e1"])
    strategies = {
        "NAME": _spaced(_name),
        "PRIMED": _spaced(st.builds(lambda n, k: n + "'" * k, _name, st.integers(1, 2))),
        "DERIV": _spaced(st.builds(lambda a, b: f"d{a}{'.' + b if b else ''}/dt", _name, st.none() | _name)),
        "NUMBER": _spaced(numbers | st.integers(0, 10**6).map(str)),
        "STRING": _spaced(st.text(st.characters(exclude_characters='"\n\r'), max_size=8).map(lambda s: f'"{s}"')),
        "_NL": st.sampled_from(["\n", "\r\n", "\n  ", "\n# a comment\n", "\n\t\n", "\r"]),
        "WS": st.sampled_from([" ", "\t", "   ", "\f"]),
        "COMMENT": st.just(" "),  # a comment runs to the end of the line: `_NL` spells them
        "LINE_CONT": st.sampled_from(["\\\n", "\\  \r\n"]),
    }
    for term in _GRAMMAR.terminals:
        if term.name in strategies:
            continue
        if term.pattern.type == "str":
            strategies[term.name] = st.just(term.pattern.value + " ")
        else:
            strategies[term.name] = st.sampled_from([a + " " for a in _ALTERNATIVES[term.name]])
    return strategies


PROGRAMS = from_lark(_GRAMMAR, start="start", explicit=_explicit())

# the parser may still refuse a sentence of the grammar for these reasons
_PARSE_LIMITS = ("nested more than", "expected `*` between the time constant")


@fuzz(150)
@given(PROGRAMS)
def test_generated_programs_parse_then_load_or_fail_located(text):
    try:
        _timed(parse, text, "gen.circ")
    except cl.CircuitSyntaxError as exc:
        assert any(s in exc.message for s in _PARSE_LIMITS), f"a sentence of the grammar does not parse:\n{exc}"
        assert_located(exc)
        return
    check_input(text, "gen.circ")


# ------------------------------------------------------ mutated examples --
_TOKEN = re.compile(r"\s+|[A-Za-z_][A-Za-z0-9_']*|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|.", re.S)
_SNIPPETS = [
    "(", ")", "[", "]", "{", "}", ",", ";", ":", ".", "=", "->", "--", "=>", "d(", "/dt", "'", '"',
    "#", "\\\n", "\n", "\r", "\r\n", "\t", "\x00", "\ufeff", "\u2028", "\x85", "\x0b", "1e999", "-",
    "**", "@", "^", "population", "learn", "energy", "phase", "during", "always", "for", "term",
    "neuron", "compartment", "fn", "param", "circuit", "bias", "cost", "dynamics", "optimizer",
    "dW/dt", "ds/dt", "rho'", "post.s", "pre.s", "x", "h", "W1", "0", "é", "\U0001f600", "\u0301",
    "99999999999999999999", "0.0", "1e308", "-1",
]


def _splice(text: str, at: int, cut: int, new: str) -> str:
    at = min(at, len(text))
    return text[:at] + new + text[at + cut :]


@st.composite
def _mutation(draw, text: str) -> str:
    kind = draw(st.sampled_from(["char", "snippet", "unicode", "token", "line", "truncate", "repeat", "splice"]))
    at = draw(st.integers(0, len(text)))
    if kind == "char":
        return _splice(text, at, draw(st.integers(0, 3)), draw(st.text(max_size=2)))
    if kind == "snippet":
        return _splice(text, at, draw(st.integers(0, 1)), draw(st.sampled_from(_SNIPPETS)))
    if kind == "unicode":
        return _splice(text, at, draw(st.integers(0, 1)), draw(st.characters(codec="utf-8")))
    if kind == "truncate":
        return text[:at]
    if kind == "repeat":  # a region, duplicated a few times
        end = draw(st.integers(at, min(len(text), at + 300)))
        return text[:end] + text[at:end] * draw(st.integers(1, 3)) + text[end:]
    if kind == "splice":  # a piece of another example
        other = draw(st.sampled_from(EXAMPLES_TEXT))
        start = draw(st.integers(0, len(other)))
        return _splice(text, at, 0, other[start : start + draw(st.integers(0, 200))])
    # tokens or lines: deleted, duplicated, replaced by another or swapped
    pieces = _TOKEN.findall(text) if kind == "token" else text.split("\n")
    i = draw(st.integers(0, len(pieces) - 1)) if pieces else 0
    j = draw(st.integers(0, len(pieces) - 1)) if pieces else 0
    op = draw(st.sampled_from(["delete", "duplicate", "replace", "swap"]))
    if not pieces:
        return text
    if op == "delete":
        del pieces[i]
    elif op == "duplicate":
        pieces.insert(j, pieces[i])
    elif op == "replace":
        pieces[i] = pieces[j]
    else:
        pieces[i], pieces[j] = pieces[j], pieces[i]
    return ("" if kind == "token" else "\n").join(pieces)


@st.composite
def mutants(draw) -> str:
    text = draw(st.sampled_from(EXAMPLES_TEXT))
    for _ in range(draw(st.integers(1, 4))):
        text = draw(_mutation(text))
    if draw(st.booleans()) and draw(st.booleans()):  # a quarter of them with other line endings
        text = text.replace("\n", draw(st.sampled_from(["\r\n", "\r"])))
    return text


@fuzz(300)
@given(mutants())
def test_mutated_examples_load_or_fail_located(text):
    check_input(text)


@fuzz(100)
@given(st.sampled_from(EXAMPLES_TEXT), st.data())
def test_numbers_in_examples_replaced(text, data):
    """Numbers replaced by extreme ones: sizes, steps, rates, exponents."""
    extreme = st.sampled_from(
        ["0", "-1", "0.0", "1e308", "1e309", "1e-320", "99999999999999999999", "4294967297", "2.5", "1e6", "-0"]
    )
    count = len(re.findall(r"\d+(?:\.\d+)?", text))
    chosen = set(data.draw(st.lists(st.integers(0, max(count - 1, 0)), max_size=4)))
    it = iter(range(count))
    check_input(re.sub(r"\d+(?:\.\d+)?", lambda m: data.draw(extreme) if next(it) in chosen else m.group(), text))


# --------------------------------------------------- bytes through load() --
@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@st.composite
def byte_inputs(draw) -> bytes:
    raw = st.binary(max_size=400)
    if draw(st.booleans()):
        return draw(raw)
    data = draw(st.sampled_from(EXAMPLES_TEXT)).encode("utf-8")
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(raw.filter(bool)) + data[at + draw(st.integers(0, 2)) :]
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    return data


@fuzz(200)
@given(byte_inputs())
def test_random_bytes_through_load(fuzz_dir, data):
    path = fuzz_dir / "input.circ"
    path.write_bytes(data)
    try:
        _timed(cl.load, path)
    except cl.CircuitError as exc:
        assert_located(exc)
        assert all(d.span.path == str(path) for d in exc.diagnostics)
