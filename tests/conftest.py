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


def pytest_configure(config):
    """Strict JAX in tests: implicit rank promotion is an error (warnings are errors too, see pyproject)."""
    import jax

    jax.config.update("jax_numpy_rank_promotion", "raise")
