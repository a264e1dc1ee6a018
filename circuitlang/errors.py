"""One error hierarchy for every stage, with located, rendered diagnostics.

    CircuitError
    ├── CircuitSyntaxError    the text does not fit the grammar
    ├── CircuitSemanticError  it parses, but names, shapes or settings are wrong
    └── CircuitRuntimeError   a compiled circuit failed while running (NaN, ...)

Each error holds one or more `Diagnostic`s, sorted by position, and renders
them as ``path:line:col: error: message``, the source line with carets, and a
hint that says how to fix it.
"""

from __future__ import annotations

import bisect
import dataclasses
import difflib
from collections.abc import Iterable, Sequence

from .source import Source, Span

__all__ = [
    "CircuitError",
    "CircuitRuntimeError",
    "CircuitSemanticError",
    "CircuitSyntaxError",
    "Diagnostic",
    "did_you_mean",
]


@dataclasses.dataclass(frozen=True)
class Diagnostic:
    """One located message. `hint` says what would be valid."""

    message: str
    span: Span | None = None
    hint: str | None = None
    severity: str = "error"

    def sort_key(self) -> tuple:
        if self.span is None:
            return ("", 0, 0, self.message)
        return (self.span.path, self.span.line, self.span.col, self.message)

    def render(self, source: Source | None = None) -> str:
        where = f"{self.span}: " if self.span is not None else ""
        parts = [f"{where}{self.severity}: {self.message}"]
        if source is not None and self.span is not None and self.span.path == source.path:
            excerpt = source.excerpt(self.span)
            if excerpt:
                parts.append(excerpt)
        if self.hint:
            parts.append(f"      = hint: {self.hint}")
        return "\n".join(parts)


class CircuitError(Exception):
    """Base class of every error circuitlang raises about a circuit."""

    kind = "error"

    def __init__(self, diagnostics: Diagnostic | Sequence[Diagnostic] | str, source: Source | None = None):
        if isinstance(diagnostics, str):
            diagnostics = [Diagnostic(diagnostics)]
        elif isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics: tuple[Diagnostic, ...] = tuple(sorted(diagnostics, key=Diagnostic.sort_key))
        self.source = source
        super().__init__(self.render())

    @property
    def span(self) -> Span | None:
        """The position of the first diagnostic."""
        return self.diagnostics[0].span if self.diagnostics else None

    @property
    def message(self) -> str:
        return self.diagnostics[0].message if self.diagnostics else ""

    def render(self, limit: int = 50) -> str:
        shown = [d.render(self.source) for d in self.diagnostics[:limit]]
        rest = len(self.diagnostics) - limit
        if rest > 0:
            shown.append(f"... and {rest} more error{'s' if rest > 1 else ''}")
        return "\n\n".join(shown)

    def __str__(self) -> str:
        return self.render()


class HealthWarning(UserWarning):
    """A training epoch whose numbers may not be worth much (see `circuitlang.health`).

    Defined here, not in `health`, so that the CLI can route it without importing JAX."""


class CircuitSyntaxError(CircuitError):
    """The text of a `.circ` file does not fit the grammar."""


class CircuitSemanticError(CircuitError):
    """The file parses, but refers to missing things or has bad values."""


class CircuitRuntimeError(CircuitError):
    """A compiled circuit failed while it ran (for example a non-finite state)."""


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """`"; did you mean `h1`?"` when a close candidate exists, else `""`."""
    pool = sorted(set(candidates))
    near = pool
    if len(pool) > _NEAR:  # a huge file: compare with the names that sort next to `name`
        at = bisect.bisect_left(pool, name)
        start = min(max(0, at - _NEAR // 2), len(pool) - _NEAR)
        near = pool[start : start + _NEAR]
    # short names (`h2`, `W3`) differ by one character in half their length
    match = difflib.get_close_matches(name, near, n=1, cutoff=0.5 if len(name) <= 3 else 0.6)
    if not match:
        lowered = name.lower()
        match = [c for c in pool if c.lower() == lowered][:1]
    return f"; did you mean `{match[0]}`?" if match else ""


# how many names `did_you_mean` compares at most: difflib takes a few
# microseconds a name, and a huge generated file can have thousands of errors
_NEAR = 500
