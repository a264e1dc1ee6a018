"""Where circuitlang keeps what it can rebuild: the parser's tables and JAX's compiled programs.

`$CIRCUITLANG_CACHE` names the directory; `CIRCUITLANG_CACHE=off` turns every cache off;
otherwise `$XDG_CACHE_HOME/circuitlang` or `~/.cache/circuitlang`. Nothing in it is
needed: a missing, unwritable or damaged cache only costs time.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir(*parts: str) -> Path | None:
    """`<cache>/<parts...>`, or None when caching is off."""
    where = os.environ.get("CIRCUITLANG_CACHE")
    if where == "off":
        return None
    if not where:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        where = os.path.join(base, "circuitlang")
    return Path(where).joinpath(*parts)
