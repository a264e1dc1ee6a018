"""Expressions → array values, by walking the syntax tree (never `eval`).

Evaluation happens while JAX traces, so it costs nothing per step at run
time. The same walker serves NumPy (the reference simulator) by passing
`xp=numpy`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from .. import primitives as P
from .. import syntax as S
from ..errors import CircuitError, Diagnostic

__all__ = ["Evaluator", "identity_interval"]

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


# ------------------------------------------------------------- identity intervals --
WHOLE_LINE = (-math.inf, math.inf)


def identity_interval(name: str, functions: Mapping[str, Any], params: Mapping[str, float],
                      _depth: int = 0) -> tuple[float, float] | None:
    """The closed interval on which the element-wise function `name` is exactly the identity
    in JAX, value and derivative (ρ(v) = v bit for bit, ρ'(v) = 1), read off its definition;
    None when its definition is not one of: the built-in `identity` (the whole line),
    `hard_sigmoid` ([0, 1]), a `fn` of one argument whose body is its argument, `clip(·, lo,
    hi)` with constant bounds (the built-in clip's derivative is 1 on the closed interval), or
    a call of one such function on another (their intervals meet). The relaxation uses it to
    read a bounded population's states as its rates (`EnergyFunctions.boxed`)."""
    if _depth > 64:  # a deeper chain of wrappers is not worth reading (and recursion was checked)
        return None
    if name in functions:
        fn = functions[name]
        if len(fn.params) != 1:
            return None
        return _identity_of(fn.body, fn.params[0], functions, params, _depth + 1)
    return {"identity": WHOLE_LINE, "hard_sigmoid": (0.0, 1.0)}.get(name)


def _identity_of(expr, var: str, functions, params, depth: int) -> tuple[float, float] | None:
    if isinstance(expr, S.Var):
        return WHOLE_LINE if expr.name == var else None
    if not isinstance(expr, S.Call) or expr.primes:
        return None
    name = expr.fn.name
    if name == "clip" and name not in functions and len(expr.args) == 3:
        lo, hi = (_constant(a, var, params) for a in expr.args[1:])
        inner = _identity_of(expr.args[0], var, functions, params, depth)
        return None if lo is None or hi is None or inner is None else _meet(inner, (lo, hi))
    if len(expr.args) != 1:
        return None
    inner = _identity_of(expr.args[0], var, functions, params, depth)
    outer = identity_interval(name, functions, params, depth)
    return None if inner is None or outer is None else _meet(inner, outer)


def _constant(expr, var: str, params) -> float | None:
    if isinstance(expr, S.Number):
        return float(expr.value)
    if isinstance(expr, S.Var) and expr.name != var and expr.name in params:
        return float(params[expr.name])
    if isinstance(expr, S.Unary) and expr.op == "-":
        v = _constant(expr.operand, var, params)
        return None if v is None else -v
    return None


def _meet(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float] | None:
    lo, hi = max(a[0], b[0]), min(a[1], b[1])
    return (lo, hi) if lo <= hi else None
