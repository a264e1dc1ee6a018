"""Source text and positions: `Span` and the excerpt-with-carets renderer.

Every syntax node and graph payload carries a `Span`, from parsing to run
time, so any error can point at the `.circ` line it comes from.
"""

from __future__ import annotations

import dataclasses

__all__ = ["Span", "Source", "decode"]


@dataclasses.dataclass(frozen=True, order=True)
class Span:
    """A region of a source file; lines and columns count from 1.

    `end_col` is exclusive. A span that covers a whole file or a command-line
    setting has `line == 0`.
    """

    path: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        if self.line <= 0:
            return self.path
        return f"{self.path}:{self.line}:{self.col}"

    @classmethod
    def whole(cls, path: str) -> "Span":
        return cls(path, 0, 0, 0, 0)

    def to(self, other: "Span") -> "Span":
        """The span from the start of `self` to the end of `other`."""
        return Span(self.path, self.line, self.col, other.end_line, other.end_col)


class Source:
    """The text of one `.circ` file, with line lookup for excerpts."""

    def __init__(self, text: str, path: str = "<string>") -> None:
        self.text = text
        self.path = path
        self._lines: list[str] | None = None

    @property
    def lines(self) -> list[str]:
        if self._lines is None:
            self._lines = self.text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        return self._lines

    def line(self, number: int) -> str:
        if 1 <= number <= len(self.lines):
            return self.lines[number - 1]
        return ""

    def excerpt(self, span: Span) -> str:
        """The line of `span` with carets under it, in the style of rustc.

        Tabs are shown as four spaces and the carets follow them; control
        characters are shown as `?` so the excerpt is always printable.
        """
        if span.line <= 0 or span.line > len(self.lines):
            return ""
        raw = self.line(span.line)
        shown, col_map = _printable(raw)
        start = col_map[min(max(span.col - 1, 0), len(raw))]
        if span.end_line == span.line and span.end_col > span.col:
            stop = col_map[min(span.end_col - 1, len(raw))]
        else:
            stop = max(start + 1, len(shown.rstrip()))
        stop = max(stop, start + 1)
        if len(shown) > _WIDTH:  # window very long lines around the caret
            left = max(0, min(start - 20, len(shown) - _WIDTH))
            shown = ("..." if left else "") + shown[left : left + _WIDTH] + ("..." if left + _WIDTH < len(shown) else "")
            shift = left - (3 if left else 0)
            start, stop = start - shift, min(stop - shift, start - shift + _WIDTH)
        gutter = f"{span.line:>5} | "
        pad = " " * (len(gutter) - 2) + "| "
        return f"{gutter}{shown}\n{pad}{' ' * start}{'^' * (stop - start)}"


_WIDTH = 100


def _printable(raw: str) -> tuple[str, list[int]]:
    """Expand tabs and hide control characters; map raw columns to shown ones."""
    out: list[str] = []
    col_map: list[int] = []
    width = 0
    for ch in raw:
        col_map.append(width)
        if ch == "\t":
            out.append("    ")
            width += 4
        elif ch < " " or ch == "\x7f":
            out.append("?")
            width += 1
        else:
            out.append(ch)
            width += 1
    col_map.append(width)
    return "".join(out), col_map


def decode(data: bytes, path: str) -> str:
    """Decode a file's bytes as UTF-8 (a BOM is dropped).

    Raises:
        CircuitSyntaxError: the bytes are not UTF-8 text, or hold NUL bytes;
            the error points at the first bad byte.
    """
    from .errors import CircuitSyntaxError, Diagnostic

    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
        bad = text.find("\x00")
        if bad < 0:
            return text
        reason = "a NUL byte"
        offset_bytes = len(text[:bad].encode("utf-8"))
    except UnicodeDecodeError as exc:
        reason = f"the byte 0x{data[exc.start]:02x}, which is not UTF-8"
        offset_bytes = exc.start
    # all before the bad byte is text: count lines as `Source.lines` does, columns in characters
    head = data[:offset_bytes].decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    line = head.count("\n") + 1
    col = len(head) - (head.rfind("\n") + 1) + 1
    shown = Source(data.decode("utf-8", errors="replace").replace("\x00", "?"), path)
    span = Span(path, line, col, line, col + 1)
    raise CircuitSyntaxError(
        [
            Diagnostic(
                f"this file is not a text file: it holds {reason}",
                span,
                hint="a .circ file is UTF-8 text; check that you passed the right file",
            )
        ],
        shown,
    )
