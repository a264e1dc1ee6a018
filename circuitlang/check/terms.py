"""Shapes inside custom energy terms, checked before anything is traced.

In a `term`, a population's value (`h.s`, `pre.s`, `self.s`) is a vector per
example, (batch, N) with shaped populations flattened; a dense weight is its
matrix (post, pre); any other weight (a convolution, ...) is its operator,
usable only as `W @ v`; params and numbers are scalars. Operations combine
equal shapes or a shape with a scalar; `W @ v` maps a (batch, pre) value to
(batch, post); `sum`/`mean` reduce the last axis; `transpose` flips a matrix.
Whatever shape the term ends with is summed over. `term_problem` returns the
first place where this does not hold, so `check` refuses what the lowering
would fail to trace.
"""

from __future__ import annotations

from collections.abc import Mapping

from .. import primitives as P
from .. import syntax as S
from ..errors import Diagnostic

__all__ = ["term_problem", "Shape"]

BATCH = "batch"


class Shape(tuple):
    """A symbolic shape; `Shape(("op", m, n))` is an operator from n to m values."""

    @property
    def is_op(self) -> bool:
        return len(self) == 3 and self[0] == "op"


def _show(shape: tuple) -> str:
    if not shape:
        return "a scalar"
    if shape[0] == "op":
        return f"an operator from {shape[2]} to {shape[1]} values (use it as `W @ v`)"
    return "(" + ", ".join(str(d) for d in shape) + ")"


class _Bad(Exception):
    def __init__(self, message: str, span, hint: str | None = None) -> None:
        self.diagnostic = Diagnostic(message, span, hint)


def term_problem(expr: S.Expr, env: Mapping[str, tuple], functions: Mapping[str, object]) -> Diagnostic | None:
    """The first shape error of the term `expr`, or None; `env` maps names and
    `obj.attr` members to shapes, `functions` the file's `fn`s (element-wise)."""
    try:
        _shape(expr, env, functions)
    except _Bad as bad:
        return bad.diagnostic
    return None


def _shape(expr: S.Expr, env, functions) -> tuple:
    if isinstance(expr, S.Number):
        return ()
    if isinstance(expr, S.Var):
        return env.get(expr.name, ())
    if isinstance(expr, S.Member):
        return env.get(f"{expr.obj.name}.{expr.attr.name}", ())
    if isinstance(expr, S.Unary):
        return _value(_shape(expr.operand, env, functions), expr.operand)
    if isinstance(expr, S.Binary):
        a, b = _shape(expr.left, env, functions), _shape(expr.right, env, functions)
        if expr.op == "@":
            return _matmul(a, b, expr)
        return _broadcast(_value(a, expr.left), _value(b, expr.right), expr)
    if isinstance(expr, S.Call):
        args = [_shape(x, env, functions) for x in expr.args]
        name = expr.fn.name
        fn = P.FUNCTIONS.get(name) if name not in functions else None
        if name == "transpose":
            (a,) = args
            if len(a) != 2 or BATCH in a:
                raise _Bad(f"`transpose` flips a weight matrix, not {_show(a)}", expr.span,
                           "only dense weights are matrices; an operator is used as `W @ v`")
            return (a[1], a[0])
        if fn is not None and fn.reduction:
            (a,) = args
            a = _value(a, expr.args[0])
            if not a:
                raise _Bad(f"`{name}` reduces over neurons, but its argument is a scalar", expr.span)
            return a[:-1]
        out: tuple = ()
        for x, arg in zip(args, expr.args):
            out = _broadcast(out, _value(x, arg), expr)
        return out
    return ()


def _value(shape: tuple, expr: S.Expr) -> tuple:
    if isinstance(shape, Shape) and shape.is_op:
        raise _Bad(f"this weight is {_show(shape)}, not an array", expr.span,
                   "a weight that is not a dense matrix can only be applied: `W @ rho(pre.s)`")
    return shape


def _broadcast(a: tuple, b: tuple, expr: S.Expr) -> tuple:
    if not a:
        return b
    if not b or a == b:
        return a
    raise _Bad(f"`{expr.op if isinstance(expr, S.Binary) else expr.fn.name}` combines {_show(a)} with "
               f"{_show(b)}", expr.span,
               "values per example are (batch, N) with N the population's neurons; weights are (post, pre)")


def _matmul(a: tuple, b: tuple, expr: S.Binary) -> tuple:
    if isinstance(a, Shape) and a.is_op:
        m, n = a[1], a[2]
    elif len(a) == 2 and BATCH not in a:
        m, n = a
    else:
        raise _Bad(f"`@` applies a weight to a population's values; its left side is {_show(a)}", expr.span,
                   "write `W @ rho(pre.s)`")
    if len(b) != 2 or b[0] != BATCH:
        raise _Bad(f"`@` applies a weight to a population's values (batch, N); its right side is {_show(b)}",
                   expr.span, "write `W @ rho(pre.s)`")
    if b[1] != n:
        raise _Bad(f"`@` applies a weight that takes {n} values to {b[1]} values", expr.span,
                   "apply a weight to the values of its pre population")
    return (BATCH, m)
