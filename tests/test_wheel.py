"""The built wheel carries the grammar and works outside the repository."""

from __future__ import annotations

import site
import subprocess
import sys
import sysconfig
import venv
import zipfile

import pytest

from pathlib import Path

from .conftest import ROOT


@pytest.mark.slow
def test_wheel_installs_and_checks(tmp_path):
    pytest.importorskip("hatchling", reason="building the wheel needs hatchling (in the `test` extra)")
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(ROOT)],
        check=True, capture_output=True, text=True, timeout=600,
    )
    (wheel,) = dist.glob("circuitlang-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "circuitlang/grammar/circuit.lark" in names
    assert "circuitlang/py.typed" in names
    # a fresh venv; dependencies come from the interpreter running the tests (no downloads), the
    # package from the wheel. `system_site_packages` would see the *base* interpreter's packages,
    # not those of a virtual environment the tests run in, so the running interpreter's own
    # site directories are listed in a .pth file instead (appended after the venv's own).
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    inner = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           check=True, capture_output=True, text=True).stdout.strip()
    ours = dict.fromkeys([*site.getsitepackages(), site.getusersitepackages(), sysconfig.get_paths()["purelib"],
                          sysconfig.get_paths()["platlib"]])
    (Path(inner) / "outer_site.pth").write_text("\n".join(d for d in ours if Path(d).is_dir()) + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, text=True, timeout=600)
    work = tmp_path / "elsewhere"
    work.mkdir()
    example = (ROOT / "examples" / "eqprop_hopfield.circ").read_text()
    (work / "net.circ").write_text(example)
    where = subprocess.run(
        [str(py), "-c", "import circuitlang, circuitlang.parse as p; print(circuitlang.__file__); print(p.grammar_path())"],
        cwd=work, check=True, capture_output=True, text=True,
    ).stdout.split()
    assert all(str(env_dir) in w for w in where), where  # the wheel's copy, with its own grammar
    r = subprocess.run([str(env_dir / "bin" / "circuitc"), "check", "net.circ"], cwd=work, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "net.circ: ok" in r.stdout
