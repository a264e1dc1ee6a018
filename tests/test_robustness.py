"""Hostile and huge inputs: each one loads or raises a located `CircuitError`,
in bounded time, and `python -m circuitlang check` exits 0 or 1 on it, never
with a traceback.

The large inputs are sized by `CIRCUITLANG_BIG_LINES` (default 200 000 lines).
A quadratic step would make them take minutes; the bounds below are loose
enough for a slow, shared CI machine, and the huge-file test also compares two
sizes, so that a quadratic step fails even on a fast machine. `check` is
given 200 000 lines only behind a syntax error (it stops at the parse): it is
still quadratic in the number of params.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

import circuitlang as cl
from circuitlang.parse import MAX_EXPR_DEPTH, MAX_NESTING, parse

from .test_fuzz import assert_located

BIG = int(os.environ.get("CIRCUITLANG_BIG_LINES", "200000"))
BOUND = 120.0  # seconds for a file of BIG lines (about 30 s of CPU on a slow machine)
SMALL_BOUND = 10.0  # seconds for anything of normal size

# a whole circuit, with a line to spoil at a known place
HOPFIELD = """\
# Equilibrium Propagation on a continuous Hopfield network
circuit EqPropHopfield "two-phase EqProp, symmetric weights"

fn rho(x) = clip(x, 0, 1)          # hard sigmoid

population x [64] input
population h [256]
population y [10] output

h -- x : W1  init=glorot
y -- h : W2  init=glorot
bias h, y

energy hopfield
cost y squared

learn eqprop {
  phase free  { steps 20; dt 0.5 }
  phase nudge { steps 4;  dt 0.5; beta 0.5 }
  estimator symmetric
  optimizer sgd { lr W1=0.1, W2=0.05, h.bias=0.1, y.bias=0.05 }
  batch 32
}
"""
H_LINE = 7  # `population h [256]`


@pytest.fixture(scope="module", autouse=True)
def _warm_parser():
    cl.loads("param a = 1")  # build the lark parser once, outside the timed calls


def timed(fn, *args, bound: float = SMALL_BOUND):
    """`fn(*args)` → (result or the CircuitError it raised, seconds)."""
    start = time.perf_counter()
    try:
        result = fn(*args)
    except cl.CircuitError as exc:
        result = exc
    took = time.perf_counter() - start
    print(f"{getattr(fn, '__name__', fn)}: {took:.2f} s")  # shown with `pytest -s`; the report quotes them
    assert took < bound, f"took {took:.1f} s (bound {bound} s)"
    return result, took


def located_error(result, cls=cl.CircuitError, line: int | None = None) -> cl.CircuitError:
    assert isinstance(result, cls), f"expected a {cls.__name__}, got {result!r}"
    assert_located(result)
    if line is not None:
        assert result.span.line == line, result.render()
    return result


# -------------------------------------------------------------- encodings --
def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def test_binary_garbage(tmp_path):
    data = random.Random(0).randbytes(4096)
    err = located_error(timed(cl.load, write(tmp_path, "garbage.circ", data))[0], cl.CircuitSyntaxError)
    assert "not a text file" in err.message


def test_invalid_utf8_in_the_middle_of_a_line(tmp_path):
    data = HOPFIELD.encode().replace(b"population h [256]", b"population h\xff\xfe [256]")
    err = located_error(timed(cl.load, write(tmp_path, "bad.circ", data))[0], cl.CircuitSyntaxError)
    assert (err.span.line, err.span.col) == (H_LINE, len("population h") + 1)
    assert "0xff" in err.message


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
def test_bad_byte_position_counts_characters_and_lines(tmp_path, newline):
    # `é` is two bytes, the column counts it once; a lone CR ends a line as in `Source.lines`
    data = f"# é{newline}population hé\xff [4]{newline}".encode("latin-1").replace(b"\xe9", "é".encode())
    err = located_error(timed(cl.load, write(tmp_path, "col.circ", data))[0], cl.CircuitSyntaxError, 2)
    assert err.span.col == len("population hé") + 1
    source, carets = err.render().splitlines()[1:3]
    assert source.endswith("population hé\ufffd [4]") and carets.index("^") == source.index("\ufffd")


def test_nul_byte(tmp_path):
    text = HOPFIELD.replace("population h [256]", "population h\x00 [256]")
    err = located_error(timed(cl.load, write(tmp_path, "nul.circ", text))[0], cl.CircuitSyntaxError, H_LINE)
    assert "NUL" in err.message
    located_error(timed(cl.loads, text)[0], cl.CircuitSyntaxError, H_LINE)  # text with a NUL, not from a file


def test_byte_order_mark(tmp_path):
    assert isinstance(timed(cl.load, write(tmp_path, "bom.circ", "\ufeff" + HOPFIELD))[0], cl.Circuit)
    assert isinstance(timed(cl.loads, "\ufeff" + HOPFIELD)[0], cl.Circuit)  # read without utf-8-sig
    assert isinstance(timed(cl.load, write(tmp_path, "only.circ", "\ufeff"))[0], cl.Circuit)
    err = located_error(timed(cl.loads, "\ufeffpopulation h [4]\npopulation h [4]\n")[0], line=2)
    assert err.span.col == len("population ") + 1


@pytest.mark.parametrize("newline", ["\r\n", "\r"], ids=["crlf", "cr"])
def test_other_line_endings(tmp_path, newline):
    circ = timed(cl.load, write(tmp_path, "eol.circ", HOPFIELD.replace("\n", newline)))[0]
    assert isinstance(circ, cl.Circuit)
    assert list(circ.populations) == list(cl.loads(HOPFIELD).populations)
    # an error is on the right line and column, and its excerpt has no stray \r
    text = "population h [4]\n\nh -> q : W\n".replace("\n", newline)
    err = located_error(timed(cl.loads, text)[0], cl.CircuitSemanticError, 3)
    assert err.span.col == len("h -> ") + 1
    assert "\r" not in err.render()


def test_tabs():
    text = "population\th\t[4]\n\tpopulation\th\t[4]\n"
    err = located_error(timed(cl.loads, text)[0], cl.CircuitSemanticError, 2)
    assert err.span.col == len("\tpopulation\t") + 1
    excerpt = err.render().splitlines()
    assert "\t" not in "\n".join(excerpt)
    source, carets = excerpt[1], excerpt[2]
    assert source.index("h") == carets.index("^")  # the caret sits under `h` once tabs are expanded
    assert isinstance(timed(cl.loads, HOPFIELD.replace("  ", "\t"))[0], cl.Circuit)


def test_missing_final_newline():
    assert isinstance(timed(cl.loads, HOPFIELD.rstrip("\n"))[0], cl.Circuit)
    err = located_error(timed(cl.loads, "population h [4]\nparam a = (1 +")[0], cl.CircuitSyntaxError, 2)
    assert err.span.col == len("param a = (1 +") + 1


def test_empty_and_comment_only_files(tmp_path):
    for text in ["", "\n", "   \n\t\n", "# a comment\n# another", "\n\n# trailing\n\n"]:
        circ = timed(cl.loads, text)[0]
        assert isinstance(circ, cl.Circuit) and not circ.populations
    assert isinstance(timed(cl.load, write(tmp_path, "empty.circ", b""))[0], cl.Circuit)


# ---------------------------------------------------------- deep and long --
def test_5000_nested_parentheses():
    text = "param a = " + "(" * 5000 + "1" + ")" * 5000 + "\n"
    err = located_error(timed(cl.loads, text)[0], cl.CircuitSyntaxError, 1)
    assert f"nested more than {MAX_NESTING}" in err.message
    unclosed = "param a = " + "(" * 5000 + "\n"
    located_error(timed(cl.loads, unclosed)[0], cl.CircuitSyntaxError, 1)
    # just inside the limit is fine
    ok = f"param a = {'(' * MAX_NESTING}1{')' * MAX_NESTING}\n"
    assert isinstance(timed(cl.loads, ok)[0], cl.Circuit)


@pytest.mark.parametrize("op", ["+", "*", "^", "-"])
def test_5000_terms_on_one_line(op):
    terms = ["-" * 5000 + "1"] if op == "-" else [op.join(["1"] * 5000)]
    err = located_error(timed(cl.loads, f"param a = {terms[0]}\n")[0], cl.CircuitSyntaxError, 1)
    assert f"nested more than {MAX_EXPR_DEPTH} operators" in err.message
    # as many operators as the limit allows load (two more are added around them)
    k = MAX_EXPR_DEPTH - 2
    deep = op.join(["1"] * (k + 1)) if op != "-" else "-" * k + "1"
    assert isinstance(timed(cl.loads, f"param a = ({deep}) * 0 + 1\npopulation h [1 + 0 * ({deep})]\n")[0], cl.Circuit)


def test_a_one_megabyte_line():
    located_error(timed(cl.loads, "param a = " + "x" * 1_000_000 + "\n")[0], cl.CircuitSemanticError, 1)
    located_error(timed(cl.loads, "param a = " + "9" * 1_000_000 + "\n")[0], cl.CircuitSyntaxError, 1)
    assert isinstance(timed(cl.loads, 'circuit A "' + "x" * 1_000_000 + '"\n')[0], cl.Circuit)


# ------------------------------------------------------------- huge files --
def params(n: int) -> str:
    return "".join(f"param p{i} = {i}\n" for i in range(n))


def populations(n: int) -> str:
    pops = "".join(f"population h{i} [4]\n" for i in range(n // 2))
    return pops + "".join(f"h{i} -> h{i + 1} : W{i} init=glorot\n" for i in range(n // 2 - 1)) + "dynamics leaky\n"


@pytest.mark.slow
def test_huge_file_of_valid_statements_parses_in_linear_time():
    """`BIG` lines parse within the bound, and take about ten times as long
    as a tenth of them (CPU time, so other processes do not count)."""
    cpu = []
    for n in (BIG // 10, BIG):
        start = time.process_time()
        program, took = timed(parse, params(n), bound=BOUND)
        cpu.append(time.process_time() - start)
        assert len(program.statements) == n
    assert cpu[1] < 25 * cpu[0] + 1.0, f"{BIG // 10} lines: {cpu[0]:.2f} s, {BIG} lines: {cpu[1]:.2f} s of CPU"


@pytest.mark.slow
def test_huge_file_with_an_error_at_the_end():
    text = params(BIG) + "param last = (1 +\n"
    err = located_error(timed(cl.loads, text, bound=BOUND)[0], cl.CircuitSyntaxError)
    assert err.span.line == BIG + 1
    assert f"{BIG + 1} | param last = (1 +" in err.render()


@pytest.mark.slow
def test_many_populations_and_connections_load():
    n = max(BIG // 10, 100)  # 20 000 lines: half populations, half connections
    circ, took = timed(cl.loads, populations(n), bound=BOUND)
    assert len(circ.populations) == n // 2 and len(circ.connections) == n // 2 - 1


# ---------------------------------------------------------------- the CLI --
CLI_CASES = {
    # name: (file contents, expected exit code)
    "garbage": (random.Random(1).randbytes(2048), 1),
    "bad_utf8": (HOPFIELD.encode().replace(b"population h", b"population h\xc3\x28"), 1),
    "nul": (HOPFIELD.replace("population h", "population h\x00"), 1),
    "bom": ("\ufeff" + HOPFIELD, 0),
    "crlf": (HOPFIELD.replace("\n", "\r\n"), 0),
    "cr": (HOPFIELD.replace("\n", "\r"), 0),
    "tabs": (HOPFIELD.replace("  ", "\t"), 0),
    "no_final_newline": (HOPFIELD.rstrip("\n"), 0),
    "empty": ("", 0),
    "comments": ("# nothing\n# here\n", 0),
    "nested_parens": ("param a = " + "(" * 5000 + "1" + ")" * 5000 + "\n", 1),
    "long_sum": ("param a = " + " + ".join(["1"] * 5000) + "\n", 1),
    # a tenth of the size of the in-process tests: the CLI adds nothing per line
    "long_with_error": (lambda: params(BIG // 10) + "param last = (1 +\n", 1),
    "many_populations": (lambda: populations(max(BIG // 10, 100)), 0),
}


@pytest.mark.slow
def test_cli_exit_codes(tmp_path):
    procs = {}
    for name, (data, code) in CLI_CASES.items():
        path = write(tmp_path, f"{name}.circ", data() if callable(data) else data)
        procs[name] = (
            subprocess.Popen(
                [sys.executable, "-m", "circuitlang", "check", "-q", str(path)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
            ),
            code,
        )
    missing = subprocess.run(
        [sys.executable, "-m", "circuitlang", "check", str(tmp_path / "missing.circ"), str(tmp_path)],
        capture_output=True, cwd=tmp_path, timeout=BOUND,
    )
    assert missing.returncode == 1 and b"Traceback" not in missing.stderr, missing.stderr.decode()
    for name, (proc, code) in procs.items():
        out, err = proc.communicate(timeout=2 * BOUND)
        err = err.decode("utf-8", "replace")
        assert proc.returncode == code, f"{name}: exit {proc.returncode}\n{err}"
        assert "Traceback" not in err and "internal error" not in err, f"{name}:\n{err}"
        if code == 1:
            assert f"{name}.circ:" in err and "error:" in err and "^" in err, f"{name}:\n{err}"


def test_constant_function_chains_stay_linear():
    # f_k calls f_(k-1) twice: without memoised calls, evaluating f22 takes 4 million calls
    text = "fn f0(x) = x\n" + "".join(f"fn f{i}(x) = f{i-1}(x) + f{i-1}(x)\n" for i in range(1, 23))
    text += "param q = f22(1)\n"
    start = time.process_time()
    circ = cl.loads(text)
    assert circ.spec.params["q"] == 2.0**22
    assert time.process_time() - start < 5.0


def test_many_params_load_in_linear_time():
    def cost(n):
        text = "".join(f"param p{i} = {i} + 1\n" for i in range(n))
        start = time.process_time()
        cl.loads(text)
        return time.process_time() - start

    small, large = cost(5000), cost(20000)
    assert large < 8 * small + 1.0, (small, large)  # 4x the lines; quadratic would be 16x
