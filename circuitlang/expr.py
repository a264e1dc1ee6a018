"""Expressions: name checking and constant evaluation.

A `.circ` file is data. Constant expressions (params, sizes, settings) are
evaluated here by walking the syntax tree with float64 NumPy arithmetic —
never `eval` — and every result must be finite.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Mapping

import numpy as np

from . import primitives as P
from . import syntax as S
from .errors import Diagnostic, did_you_mean

__all__ = ["Scope", "check_expr", "EvalError", "evaluate"]


@dataclasses.dataclass
class Scope:
    """What an expression in some context may refer to.

    `names` maps each plain name to what it is ("param", "state", ...);
    `members(obj)` returns the attributes `obj.attr` may use (None when `obj`
    is not something with members); `objects` lists the names that do, for
    suggestions; `functions` maps user functions to their arity; `what` names
    the context for messages ("a param", "a rule"); `hint` says what may be used.
    """

    what: str
    names: Mapping[str, str]
    functions: Mapping[str, int]
    members: Callable[[str], tuple[str, ...] | None] = lambda obj: None
    time_derivative: bool = False
    matrices: bool = False  # `@` and `transpose` (energy terms)
    hint: str | None = None
    objects: tuple[str, ...] = ()  # the names that have members (populations, `pre`, `post`)
    noise: bool = False  # `white()` (a cell type's equations; `check/noise.py` says where in them)


def check_expr(expr: S.Expr, scope: Scope, out: list[Diagnostic]) -> None:
    """Append a diagnostic for every unknown name, bad call or misplaced form."""
    for node in S.walk(expr):
        if isinstance(node, S.Var):
            if node.name not in scope.names:
                kind = scope.members(node.name)
                if kind is not None:
                    example = kind[0] if kind else "s"
                    out.append(
                        Diagnostic(
                            f"`{node.name}` is a population; say which of its values you mean",
                            node.span,
                            f"write e.g. `{node.name}.{example}`",
                        )
                    )
                    continue
                pool = list(scope.names) + list(scope.functions) + list(P.FUNCTIONS)
                out.append(
                    Diagnostic(
                        f"unknown name `{node.name}` in {scope.what}{did_you_mean(node.name, pool)}",
                        node.span,
                        scope.hint,
                    )
                )
        elif isinstance(node, S.Member):
            allowed = scope.members(node.obj.name)
            if allowed is None:
                if node.obj.name in scope.names:
                    msg = f"`{node.obj.name}` has no members: only populations do (like `h.s`)"
                    hint = scope.hint
                else:
                    pool = [n for n in scope.objects if scope.members(n) is not None]
                    msg = f"unknown population `{node.obj.name}` in {scope.what}{did_you_mean(node.obj.name, pool)}"
                    hint = ("populations here: " + ", ".join(f"`{n}`" for n in pool)) if pool else scope.hint
                out.append(Diagnostic(msg, node.obj.span, hint))
            elif node.attr.name not in allowed:
                out.append(
                    Diagnostic(
                        f"`{node.obj.name}` has no value `{node.attr.name}`{did_you_mean(node.attr.name, allowed)}",
                        node.attr.span,
                        f"it has: {', '.join(allowed)}",
                    )
                )
        elif isinstance(node, S.Call):
            _check_call(node, scope, out)
        elif isinstance(node, S.TimeDerivative) and not scope.time_derivative:
            out.append(
                Diagnostic(
                    f"`d(...)/dt` is only meaningful in a learning rule, not in {scope.what}",
                    node.span,
                )
            )
        elif isinstance(node, S.Binary) and node.op == "@" and not scope.matrices:
            out.append(
                Diagnostic(
                    f"`@` (matrix product) is only meaningful in an energy term, not in {scope.what}",
                    node.span,
                    "rules and equations are written per neuron or per synapse",
                )
            )


def _check_call(node: S.Call, scope: Scope, out: list[Diagnostic]) -> None:
    name = node.fn.name
    n = len(node.args)
    if name in scope.functions:
        arity, elementwise = (scope.functions[name],), True  # user functions are element-wise
    elif name in P.FUNCTIONS:
        fn = P.FUNCTIONS[name]
        arity, elementwise = fn.arity, fn.elementwise
        if fn.noise and not scope.noise:
            out.append(
                Diagnostic(
                    f"`{name}()` is white noise: it is only meaningful added to a cell type's equation, "
                    f"not in {scope.what}",
                    node.fn.span,
                    "write `tau * ds/dt = -s + sigma * white()` in a `neuron`, or give a population "
                    "`noise=SIGMA`",
                )
            )
            return
        if (fn.reduction or name == "transpose") and not scope.matrices:
            out.append(
                Diagnostic(f"`{name}` is only meaningful in an energy term, not in {scope.what}", node.fn.span)
            )
            return
    else:
        usable = sorted(
            f for f, spec in P.FUNCTIONS.items()
            if (scope.matrices or not (spec.reduction or f == "transpose")) and (scope.noise or not spec.noise)
        )
        pool = list(scope.functions) + usable
        out.append(
            Diagnostic(
                f"unknown function `{name}`{did_you_mean(name, pool)}",
                node.fn.span,
                "define it with `fn " + name + "(x) = ...`, or use a built-in: " + ", ".join(usable),
            )
        )
        return
    if n not in arity:
        hint = None
        if name not in scope.functions:
            doc = P.FUNCTIONS[name].doc  # e.g. "clip(x, lo, hi): x limited to [lo, hi]"
            sig, _, meaning = doc.partition("): ")
            hint = f"`{sig})`: {meaning}" if meaning and sig.startswith(name + "(") else f"`{name}`: {doc}"
        out.append(Diagnostic(_arity_message(name, arity, n), node.span, hint))
    if node.primes and not (elementwise and arity == (1,)):
        takes = f"takes {' or '.join(str(a) for a in arity)} arguments" if elementwise else "is not element-wise"
        out.append(
            Diagnostic(
                f"`{name}{chr(39) * node.primes}`: only functions of one argument have a derivative, and `{name}` {takes}",
                node.fn.span,
                f"define a function of one argument, e.g. `fn g(x) = {name}(x, ...)`, and write `g'(x)`"
                if elementwise else None,
            )
        )


def _arity_message(name: str, arity: tuple[int, ...], given: int) -> str:
    want = " or ".join(str(a) for a in arity)
    plural = "" if arity == (1,) else "s"
    return f"`{name}` takes {want} argument{plural}, but {given} {'is' if given == 1 else 'are'} given"


# why a built-in gives a non-finite value, for the hint under the message
_DOMAIN_HINTS = {
    "exp": "`exp(x)` overflows a float for x above about 709",
    "log": "`log(x)` needs x > 0",
    "sqrt": "`sqrt(x)` needs x >= 0",
}


class EvalError(Exception):
    def __init__(self, diagnostic: Diagnostic) -> None:
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


def evaluate(expr: S.Expr, env: Mapping[str, float], functions: Mapping[str, "object"], what: str) -> float:
    """Evaluate a constant expression with float64 NumPy arithmetic.

    `env` gives the value of each name; `functions` maps user function names
    to `graph.FunctionDef`s (inlined). Raises `EvalError` (located) on unknown
    names, bad calls and non-finite results.
    """
    with np.errstate(all="ignore"):
        value = _eval(expr, env, functions, what, 0, {})
    if not np.isfinite(value):
        raise EvalError(Diagnostic(f"{what} evaluates to {value}, which is not a finite number", expr.span))
    return float(value)


def _eval(expr, env, functions, what, depth, memo):
    """`memo` caches user-function calls by (name, arguments): a chain of
    functions that each call the previous one twice stays linear."""
    if depth > 64:
        raise EvalError(Diagnostic("functions call each other more than 64 deep", expr.span))
    if isinstance(expr, S.Number):
        return np.float64(expr.value)
    if isinstance(expr, S.Var):
        if expr.name in env:
            return np.float64(env[expr.name])
        raise EvalError(
            Diagnostic(
                f"unknown name `{expr.name}` in {what}{did_you_mean(expr.name, env)}",
                expr.span,
                "only params and numbers can be used here",
            )
        )
    if isinstance(expr, S.Unary):
        v = _eval(expr.operand, env, functions, what, depth, memo)
        return -v if expr.op == "-" else v
    if isinstance(expr, S.Binary):
        a = _eval(expr.left, env, functions, what, depth, memo)
        b = _eval(expr.right, env, functions, what, depth, memo)
        op = expr.op
        if op in ("/",) and b == 0:
            divisor = f"`{expr.right.name}` is 0" if isinstance(expr.right, S.Var) else "the divisor is 0"
            raise EvalError(Diagnostic(f"division by zero in {what}: {divisor}", expr.right.span))
        table = {
            "+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide, "^": np.power,
            "<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal,
            "==": np.equal, "!=": np.not_equal,
        }
        if op not in table:
            raise EvalError(Diagnostic(f"`{op}` is not allowed in {what}", expr.span))
        out = np.float64(table[op](a, b))
        if not np.isfinite(out):
            raise EvalError(Diagnostic(f"this part of {what} is {out}, not a finite number", expr.span))
        return out
    if isinstance(expr, S.Call):
        args = [_eval(a, env, functions, what, depth, memo) for a in expr.args]
        name = expr.fn.name
        if expr.primes:
            raise EvalError(Diagnostic(f"derivatives like `{name}'` are not constants", expr.span))
        if name in functions:
            fn = functions[name]
            if len(args) != len(fn.params):
                raise EvalError(Diagnostic(_arity_message(name, (len(fn.params),), len(args)), expr.span))
            key = (name, tuple(float(a) for a in args))
            if key not in memo:
                local = collections.ChainMap(dict(zip(fn.params, args)), env)  # no copy of every param
                memo[key] = _eval(fn.body, local, functions, what, depth + 1, memo)
            return memo[key]
        if name in P.FUNCTIONS and P.FUNCTIONS[name].elementwise:
            fn = P.FUNCTIONS[name]
            if len(args) not in fn.arity:
                raise EvalError(Diagnostic(_arity_message(name, fn.arity, len(args)), expr.span))
            out = np.float64(fn.impl(np, *args))
            if not np.isfinite(out):
                shown = ", ".join(f"{a:g}" for a in args)
                raise EvalError(
                    Diagnostic(
                        f"`{name}({shown})` is {out}, so {what} is not a finite number",
                        expr.span,
                        _DOMAIN_HINTS.get(name),
                    )
                )
            return out
        if name in P.FUNCTIONS and P.FUNCTIONS[name].noise:
            raise EvalError(
                Diagnostic(
                    f"`{name}()` is white noise, not a constant: it cannot be used in {what}",
                    expr.fn.span,
                    "noise is written `noise=SIGMA` on a population, or `+ sigma * white()` in a cell type's equation",
                )
            )
        if name in P.FUNCTIONS:
            raise EvalError(
                Diagnostic(
                    f"`{name}` works on a population's values; it cannot be used in {what}",
                    expr.fn.span,
                    "a constant is computed from numbers and params with element-wise functions like `exp` or `sqrt`",
                )
            )
        raise EvalError(
            Diagnostic(
                f"unknown function `{name}` in {what}{did_you_mean(name, list(functions) + list(P.FUNCTIONS))}",
                expr.fn.span,
                f"define it with `fn {name}(x) = ...`",
            )
        )
    raise EvalError(Diagnostic(f"this cannot be used in {what}: it is not a constant", expr.span))
