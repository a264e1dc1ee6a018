"""What the README shows works as shown.

* every circuit in a ```text block (a block that declares a population) checks;
* every ```python block runs (each on its own);
* every `circuitc` command of a ```bash block, or written inline without
  placeholders (FILE, DIR, NAME, ...), runs and exits 0 — `train` for one epoch
  into a scratch directory, `render` into a scratch file;
* every `python benchmarks/...` command names a script that exists and
  answers `--help` (the benchmarks themselves take minutes to hours: they are
  run by hand, their results are in benchmarks/results/);
* `pip install` lines are what `.ci/run` and `tests/test_wheel.py` run.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

import circuitlang as cl

from .conftest import ROOT

pytestmark = pytest.mark.slow

README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, re.S)
PLACEHOLDER = re.compile(r"\b[A-Z][A-Z_]{1,}\b")


def _commands() -> list[str]:
    found = []
    for lang, body in BLOCKS:
        if lang != "bash":
            continue
        for line in body.splitlines():
            line = line.split("#", 1)[0].strip()
            for part in (p.strip() for p in line.split("&&")):
                if part.startswith(("circuitc ", "python benchmarks/")):
                    found.append(part)
    for span in re.findall(r"`([^`]*)`", README):
        span = " ".join(span.split())  # an inline command may wrap across lines
        if span.startswith(("circuitc ", "python benchmarks/")):
            found.append(span)
    seen, out = set(), []
    for c in found:
        if c not in seen and not PLACEHOLDER.search(c.replace("--set", "")) and "..." not in c:
            seen.add(c)
            out.append(c)
    return out


COMMANDS = _commands()


def test_the_readme_has_what_the_tests_read():
    assert any(c.startswith("circuitc train") for c in COMMANDS)
    assert any(c.startswith("python benchmarks/conv_speed.py") for c in COMMANDS)
    assert sum(lang == "python" for lang, _ in BLOCKS) >= 2


@pytest.mark.parametrize("text", [b for lang, b in BLOCKS if lang == "text" and "population " in b and "$ " not in b])
def test_circuits_in_the_readme_check(text):
    cl.loads(text, "README.md")


def test_the_language_snippet_is_a_file_that_trains(tmp_path):
    """The snippet of "The language, by example" is `tests/circuits/language_by_example.circ`,
    with a name of its own (so its default run directory is not the quick start's), and
    trains on digits to at least 95% as written."""
    snippet = next(b for lang, b in BLOCKS if lang == "text" and "circuit LanguageByExample" in b)
    path = ROOT / "tests" / "circuits" / "language_by_example.circ"
    assert snippet == path.read_text(encoding="utf-8")
    quick = cl.load(ROOT / "examples" / "eqprop_hopfield.circ")
    assert cl.loads(snippet).spec.name != quick.spec.name
    r = subprocess.run([sys.executable, "-m", "circuitlang", "train", str(path), "--data", "digits", "--out",
                        str(tmp_path / "run"), "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    import json

    best = max(row["test_accuracy"] for row in json.loads((tmp_path / "run" / "metrics.json").read_text()))
    assert best >= 0.95, best


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_commands_run(command, tmp_path):
    args = shlex.split(command)
    env = {**os.environ, "CIRCUITLANG_CACHE": str(tmp_path / "cache")}
    if args[0] == "python":
        script = ROOT / args[1]
        assert script.is_file(), f"{args[1]} does not exist"
        out = subprocess.run([sys.executable, str(script), "--help"], cwd=ROOT, capture_output=True, text=True,
                             env=env, timeout=120)
        assert out.returncode == 0, out.stderr
        return
    args = [sys.executable, "-m", "circuitlang", *args[1:]]
    if "train" in args:
        args = [a for a in args if a != "--resume"] + ["--epochs", "1", "--out", str(tmp_path / "run"), "--no-progress"]
    if "-o" in args:
        i = args.index("-o")
        args[i + 1] = str(tmp_path / os.path.basename(args[i + 1]))
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, f"{command}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"


@pytest.mark.parametrize("code", [b for lang, b in BLOCKS if lang == "python"])
def test_the_python_examples_run(code, tmp_path):
    env = {**os.environ, "CIRCUITLANG_CACHE": str(tmp_path / "cache"), "MPLBACKEND": "Agg"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
