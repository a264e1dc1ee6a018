"""Shared fixtures: paths to the repository's examples."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.circ"))


def regen() -> bool:
    """`CIRCUITLANG_REGEN=1 pytest` rewrites golden files instead of comparing."""
    return os.environ.get("CIRCUITLANG_REGEN") == "1"


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture(scope="module")
def x64():
    """float64 for a whole test module (`pytestmark = pytest.mark.usefixtures("x64")`);
    the global setting is restored afterwards."""
    import jax

    ctx = None
    if callable(getattr(jax, "enable_x64", None)):
        ctx = jax.enable_x64(True)
    elif hasattr(jax, "experimental") and callable(getattr(jax.experimental, "enable_x64", None)):
        ctx = jax.experimental.enable_x64()
    if ctx is not None:
        with ctx:
            yield
        return
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", old)


def pytest_configure(config):
    """Strict JAX in tests: implicit rank promotion is an error (warnings are errors too, see
    pyproject). The tests' caches (parser tables, XLA's compiled programs, the digits split)
    live in a directory of their own, removed at the end, never in the user's."""
    import tempfile

    os.environ["CIRCUITLANG_CACHE"] = tempfile.mkdtemp(prefix="circuitlang-tests-cache-")
    import jax

    jax.config.update("jax_numpy_rank_promotion", "raise")


def pytest_addoption(parser):
    parser.addoption("--all", action="store_true", dest="run_all",
                     help="also run the tests marked slow (what CI runs: `python -m pytest -q --all`)")


def pytest_collection_modifyitems(config, items):
    """`python -m pytest` runs the quick suite (a few minutes on two cores); `--all`, any
    `-m` or `-k` expression, or a test named by its node id decides otherwise. Slow tests are deselected, never skipped: the
    summary counts them, and CI runs them all."""
    if config.getoption("run_all") or config.getoption("markexpr") or config.getoption("keyword"):
        return
    if any("::" in arg for arg in config.args):  # a test named on the command line runs, slow or not
        return
    slow = [item for item in items if item.get_closest_marker("slow") is not None]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if item.get_closest_marker("slow") is None]


def pytest_unconfigure(config):
    import shutil

    where = os.environ.get("CIRCUITLANG_CACHE", "")
    if "circuitlang-tests-cache-" in where:
        shutil.rmtree(where, ignore_errors=True)
