"""The command line, run as users run it: in a subprocess."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from .conftest import EXAMPLES, ROOT


def circuitc(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "circuitlang", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_check_all_examples_ok():
    r = circuitc("check", *[str(p.relative_to(ROOT)) for p in EXAMPLES])
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    out = r.stdout
    assert out.count(": ok") == len(EXAMPLES)
    # the summary names populations with sizes, connections, parameter count and method
    assert "h [256]" in out and "h -- x : W1  256×64" in out
    assert "parameters: 19,210" in out
    assert "learn eqprop, estimator symmetric" in out


def test_check_error_exit_1_located(tmp_path):
    bad = tmp_path / "bad.circ"
    bad.write_text("population x [64] input\npopulation h [256]\nh -- x : W1\nenergy hopfield\ncost hh squared\n")
    r = circuitc("check", str(bad))
    assert r.returncode == 1
    assert f"{bad}:5:6: error: unknown population `hh`; did you mean `h`?" in r.stderr
    assert "    5 | cost hh squared" in r.stderr and "^^" in r.stderr
    assert "Traceback" not in r.stderr


def test_check_reports_every_file(tmp_path):
    bad = tmp_path / "bad.circ"
    bad.write_text("population x [0] input\n")
    r = circuitc("check", str(bad), str(EXAMPLES[0].relative_to(ROOT)))
    assert r.returncode == 1 and "positive whole number" in r.stderr and ": ok" in r.stdout


def test_missing_file_and_directory(tmp_path):
    r = circuitc("check", str(tmp_path / "nope.circ"))
    assert r.returncode == 1 and "no such file" in r.stderr and "Traceback" not in r.stderr
    r = circuitc("check", str(tmp_path))
    assert r.returncode == 1 and "directory" in r.stderr


@pytest.mark.parametrize(
    "args",
    [(), ("frobnicate",), ("check",), ("render", "x.circ"), ("check", "--bogus", "x.circ")],
)
def test_bad_usage_exit_2(args):
    r = circuitc(*args)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr


def test_help_and_version():
    assert circuitc("--help").returncode == 0
    r = circuitc("--version")
    assert r.returncode == 0 and "circuitlang" in r.stdout


def test_debug_shows_traceback(tmp_path):
    bad = tmp_path / "bad.circ"
    bad.write_text("population x [3.5] input\n")
    r = circuitc("--debug", "check", str(bad))
    assert r.returncode != 0 and "Traceback" in r.stderr


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz's `dot` is not installed (apt-get install graphviz)")
def test_render_svg(tmp_path):
    out = tmp_path / "mirror.svg"
    r = circuitc("render", "examples/mirror_interneurons.circ", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "<svg" in out.read_text()


def test_render_dot_needs_no_graphviz(tmp_path):
    out = tmp_path / "hop.dot"
    r = circuitc("render", "examples/eqprop_hopfield.circ", "-o", str(out))
    assert r.returncode == 0 and out.read_text().startswith("digraph")


def test_render_error_in_file(tmp_path):
    bad = tmp_path / "bad.circ"
    bad.write_text("x -> y : W\n")
    r = circuitc("render", str(bad), "-o", str(tmp_path / "o.svg"))
    assert r.returncode == 1 and "unknown population `x`" in r.stderr


def test_console_script_installed():
    exe = shutil.which("circuitc")
    if exe is None:
        pytest.skip("the `circuitc` script is not on PATH (package not installed with pip)")
    r = subprocess.run([exe, "check", "-q", "examples/eqprop_hopfield.circ"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == ""


def test_every_option_says_what_it_does():
    """`--samples`, `--betas`, `--seed`, `--params` had no help text (issue #12)."""
    import argparse

    from circuitlang.cli import _build_parser

    parser = _build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{verb} {'/'.join(a.option_strings) or a.dest}" for verb, p in sub.choices.items()
               for a in p._actions if not isinstance(a, argparse._HelpAction) and not a.help]
    assert not missing, missing


def test_debug_goes_before_or_after_the_verb(tmp_path):
    bad = tmp_path / "bad.circ"
    bad.write_text("population x [4] input\n")
    for args in (["--debug", "verify", str(bad)], ["verify", str(bad), "--debug"]):
        r = subprocess.run([sys.executable, "-m", "circuitlang", *args], capture_output=True, text=True)
        assert r.returncode != 2, r.stderr  # not "unrecognized arguments"
        assert "Traceback" in r.stderr
    r = subprocess.run([sys.executable, "-m", "circuitlang", "verify", str(bad)], capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr
