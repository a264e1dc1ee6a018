"""Expressions → array values, by walking the syntax tree (never `eval`).

Evaluation happens while JAX traces, so it costs nothing per step at run
time. The same walker serves NumPy (the reference simulator) by passing
`xp=numpy`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .. import primitives as P
from .. import syntax as S
from ..errors import CircuitError, Diagnostic

__all__ = ["Evaluator"]

_BINARY: dict[str, Callable[[Any, Any, Any], Any]] = {
    "+": lambda xp, a, b: a + b,
    "-": lambda xp, a, b: a - b,
    "*": lambda xp, a, b: a * b,
    "/": lambda xp, a, b: xp.divide(a, b),  # never Python's ZeroDivisionError: inf or nan, as on arrays
    "^": lambda xp, a, b: a**b,
    "<": lambda xp, a, b: xp.where(a < b, 1.0, 0.0),
    "<=": lambda xp, a, b: xp.where(a <= b, 1.0, 0.0),
    ">": lambda xp, a, b: xp.where(a > b, 1.0, 0.0),
    ">=": lambda xp, a, b: xp.where(a >= b, 1.0, 0.0),
    "==": lambda xp, a, b: xp.where(a == b, 1.0, 0.0),
    "!=": lambda xp, a, b: xp.where(a != b, 1.0, 0.0),
}


class Evaluator:
    """Evaluates expressions of one circuit.

    Args:
        functions: the file's `fn` definitions (`graph.FunctionDef`).
        params: the file's params (floats, compile-time constants).
        xp: `jax.numpy` or `numpy`.
    """

    def __init__(self, functions: Mapping[str, Any], params: Mapping[str, float], xp: Any) -> None:
        self.functions = functions
        self.params = params
        self.xp = xp

    def function(self, name: str, primes: int = 0) -> Callable[[Any], Any]:
        """An element-wise function of one argument by name (a built-in or a `fn`)."""
        if primes:
            base = self.function(name, primes - 1)
            return lambda x: _elementwise_derivative(base, x)
        if name in self.functions:
            fn = self.functions[name]
            return lambda *args: self.eval(fn.body, dict(zip(fn.params, args)))
        builtin = P.FUNCTIONS[name]
        return lambda *args: builtin.impl(self.xp, *args)

    def eval(self, expr: S.Expr, env: Mapping[str, Any]) -> Any:
        """Value of `expr`; `env` maps names and `obj.attr` members to values."""
        xp = self.xp
        if isinstance(expr, S.Number):
            return expr.value
        if isinstance(expr, S.Var):
            if expr.name in env:
                return env[expr.name]
            if expr.name in self.params:
                return self.params[expr.name]
            raise _missing(expr.name, expr.span)
        if isinstance(expr, S.Member):
            key = f"{expr.obj.name}.{expr.attr.name}"
            if key in env:
                return env[key]
            raise _missing(key, expr.span)
        if isinstance(expr, S.Unary):
            v = self.eval(expr.operand, env)
            return -v if expr.op == "-" else v
        if isinstance(expr, S.Binary):
            a = self.eval(expr.left, env)
            b = self.eval(expr.right, env)
            if expr.op == "@":
                return _matvec(xp, a, b)
            return _BINARY[expr.op](xp, a, b)
        if isinstance(expr, S.Call):
            args = [self.eval(a, env) for a in expr.args]
            return self.function(expr.fn.name, expr.primes)(*args)
        raise CircuitError(
            Diagnostic("this expression cannot be evaluated here", expr.span)
        )


def _matvec(xp, a, b):
    """`W @ v` per example: `v` is batched (..., n), `W` is (m, n)."""
    if getattr(a, "ndim", 0) == 2 and getattr(b, "ndim", 0) >= 1:
        return b @ xp.swapaxes(a, -1, -2)
    return a @ b


def _elementwise_derivative(f, x):
    import jax

    x = jax.numpy.asarray(x)
    return jax.jvp(f, (x,), (jax.numpy.ones_like(x),))[1]


def _missing(name: str, span) -> CircuitError:
    return CircuitError(Diagnostic(f"`{name}` has no value in this context", span))
