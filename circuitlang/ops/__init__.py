"""Connection operators: one module per kind, one line each in `OPS`.

    OPS["conv"].out_shape(args, in_shape, post, last)   # check time (no JAX)
    OPS["conv"].apply(stage, kernel, batch)              # lowering (JAX)

See `base.py` for what a kind defines. To add one, write its module and add
its line here; the checker, the lowering, the rules, the diagram, the summary
and the reference simulator read it from this table.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from .base import Arg, OpKind, ShapeError
from .conv import Conv
from .dense import Dense
from .one_to_one import OneToOne
from .pool import Pool

__all__ = ["OPS", "WRITTEN", "Arg", "OpKind", "ShapeError"]

OPS: Mapping[str, OpKind] = MappingProxyType({op.name: op for op in (Dense(), OneToOne(), Conv(), Pool())})

# the kinds a file may write as `name(...)` after a connection
WRITTEN: tuple[str, ...] = tuple(name for name, op in OPS.items() if op.written)

