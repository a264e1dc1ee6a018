"""Golden diagnostics: every bad input in `tests/diagnostics/` and what
`circuitc check` prints for it.

Each case is a pair `NN_short_name.circ` / `NN_short_name.expected`. The first
line of the `.circ` says which error it expects:

    # expect syntax error: <what is wrong>       (CircuitSyntaxError)
    # expect semantic error: <what is wrong>     (CircuitSemanticError)

The `.expected` file holds exactly what `circuitc check tests/diagnostics/NN_short_name.circ`
writes to stderr, run from the repository root (paths in it are relative).

To regenerate the golden files after an intended change of wording, run

    CIRCUITLANG_REGEN=1 python -m pytest -q tests/test_diagnostics.py

and read the diff (`git diff tests/diagnostics`) as a user would before
committing it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import circuitlang as cl

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "diagnostics"
CASES = sorted(p.stem for p in CORPUS.glob("*.circ"))
REGEN = os.environ.get("CIRCUITLANG_REGEN") == "1"
CLASSES = {"syntax": cl.CircuitSyntaxError, "semantic": cl.CircuitSemanticError}


def _rel(case: str) -> str:
    return f"tests/diagnostics/{case}.circ"


def _expected_class(case: str) -> type[cl.CircuitError]:
    first = (CORPUS / f"{case}.circ").read_text(encoding="utf-8").splitlines()[0]
    prefix = "# expect "
    assert first.startswith(prefix), f"{case}.circ must start with `# expect syntax|semantic error: ...`"
    kind = first[len(prefix):].split()[0]
    assert kind in CLASSES, f"{case}.circ: unknown expectation {kind!r}"
    return CLASSES[kind]


def _load_error(case: str, monkeypatch: pytest.MonkeyPatch) -> cl.CircuitError:
    monkeypatch.chdir(ROOT)  # so the rendered paths are the relative ones
    with pytest.raises(cl.CircuitError) as info:
        cl.load(_rel(case))
    return info.value


def _golden(case: str) -> str:
    path = CORPUS / f"{case}.expected"
    if not path.exists():
        pytest.fail(f"{path.name} is missing; create it with CIRCUITLANG_REGEN=1")
    return path.read_text(encoding="utf-8")


def test_corpus_is_large_enough():
    assert len(CASES) >= 35
    numbers = [c.split("_", 1)[0] for c in CASES]
    assert len(set(numbers)) == len(numbers), "case numbers must be unique"
    stray = {p.stem for p in CORPUS.glob("*.expected")} - set(CASES)
    assert not stray, f"golden files without an input: {sorted(stray)}"


@pytest.mark.parametrize("case", CASES)
def test_rendered_error_matches_golden(case, monkeypatch):
    err = _load_error(case, monkeypatch)
    rendered = str(err) + "\n"  # the CLI prints it with a trailing newline
    path = CORPUS / f"{case}.expected"
    if REGEN:
        path.write_text(rendered, encoding="utf-8")
        return
    assert rendered == _golden(case)


@pytest.mark.parametrize("case", CASES)
def test_error_class_and_locations(case, monkeypatch):
    err = _load_error(case, monkeypatch)
    assert type(err) is _expected_class(case)
    assert err.diagnostics
    for d in err.diagnostics:
        assert d.span is not None, d.message
        assert d.span.line >= 1, d.message
        assert d.span.path == _rel(case)
        lines = d.render(err.source).split("\n")
        assert any(set(line.split("|", 1)[-1].strip()) == {"^"} for line in lines[1:]), (
            f"no caret line under: {d.message}"
        )
        assert "Traceback" not in d.message, d.message
    keys = [d.sort_key() for d in err.diagnostics]
    assert keys == sorted(keys), "diagnostics must be sorted by position"


@pytest.fixture(scope="module")
def cli_run() -> subprocess.CompletedProcess:
    """One `python -m circuitlang check` over the whole corpus.

    Starting Python once per case would take minutes; one run over every file
    prints each file's errors in order, so each case can still be checked on
    its own slice of stderr.
    """
    return subprocess.run(
        [sys.executable, "-m", "circuitlang", "check", *(_rel(c) for c in CASES)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_exits_1_without_traceback(cli_run):
    assert cli_run.returncode == 1, cli_run.stderr
    assert "Traceback" not in cli_run.stderr
    assert "internal error" not in cli_run.stderr
    assert cli_run.stdout == "", "a case in the corpus passed the check"


@pytest.mark.skipif(REGEN, reason="regenerating golden files")
@pytest.mark.parametrize("case", [CASES[0], CASES[-1]])
def test_cli_on_one_file(case):
    """`python -m circuitlang check FILE` on a single file, exactly as a user runs it."""
    run = subprocess.run(
        [sys.executable, "-m", "circuitlang", "check", _rel(case)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 1
    assert run.stdout == ""
    assert run.stderr == _golden(case)


@pytest.mark.skipif(REGEN, reason="regenerating golden files")
def test_cli_prints_exactly_the_goldens(cli_run):
    expected = "".join(_golden(c) for c in CASES)
    assert cli_run.stderr == expected


@pytest.mark.skipif(REGEN, reason="regenerating golden files")
@pytest.mark.parametrize("case", CASES)
def test_cli_prints_golden(case, cli_run):
    goldens = [_golden(c) for c in CASES]
    i = CASES.index(case)
    start = sum(len(g) for g in goldens[:i])
    assert cli_run.stderr[start : start + len(goldens[i])] == goldens[i]
