"""Checks of noise: `noise=` on populations, `white()` in equations, and the phases it runs in.

* `population h [N] noise=SIGMA`: a finite, non-negative constant (params allowed), never on
  an input (checked with the other options, `populations.py`).
* `white()` in a cell type: only in an equation's right-hand side, and only added, with a
  constant coefficient: `+ c * white()`, `- white() / c` (c from numbers and params). Then
  `tau * dX/dt = f + c white()` is the SDE dX = f/tau dt + (c/tau) dW, and its amplitude
  sigma = sqrt(sum c_k^2) / |tau| (independent `white()`s add in variance) is `OdeSpec.noise`;
  such an equation's `tau` is a constant too. Noise inside a function, a power, a denominator,
  a named value or a state-dependent coefficient (multiplicative noise, whose Ito and
  Stratonovich readings differ) is a located error.
* a phase's `noise SCALE` multiplies every amplitude (0: no noise in it); a noisy phase is
  stepped in time, so it is not `forward`, not `integrator async`, and not `prospective`.
  `PhaseSpec.sigma`, the phase's largest amplitude, is set here (`relax.tolerance` reads it).
"""

from __future__ import annotations

import dataclasses
import math

from .. import primitives as P
from .. import syntax as S
from ..expr import EvalError, evaluate
from ..graph import LearningSpec, PhaseSpec, noise_amplitudes
from .base import BuilderBase, fmt_num

WHITE = next(f.name for f in P.FUNCTIONS.values() if f.noise)
ADDED = "white noise enters an equation only as an added term, `+ c * white()` with a constant c"


def _is_white(node) -> bool:
    return isinstance(node, S.Call) and node.fn.name == WHITE and not node.primes


def _has_white(expr: S.Expr) -> bool:
    return any(_is_white(n) for n in S.walk(expr))


class NoiseMixin(BuilderBase):
    """Noise in cell equations and phases."""

    # ----------------------------------------------------------- equations --
    def ode_noise(self, o: S.Ode, cell: str) -> float:
        """The amplitude sigma of the white noise of equation `o` of cell type `cell` (0 if none);
        reports every misplaced `white()`."""
        coefs: list[float] = []
        before = len(self.errors)
        self._white_terms(o.rhs, 1.0, coefs)
        if o.tau is not None and _has_white(o.tau):
            self._misplaced(o.tau, f"the time constant of `d{o.state.name}/dt`")
            return 0.0
        if not coefs or len(self.errors) > before:
            return 0.0
        tau = 1.0
        if o.tau is not None:
            tau = self._constant(o.tau, f"the time constant of `d{o.state.name}/dt`, an equation with `white()`,",
                                 "write `tau * ds/dt = ...` with `param tau = ...`")
            if tau is None:
                return 0.0
            if tau == 0:
                self.error(f"the time constant of `d{o.state.name}/dt` is 0", o.tau.span)
                return 0.0
        return math.sqrt(sum(c * c for c in coefs)) / abs(tau)

    def no_white(self, expr: S.Expr, where: str) -> None:
        """`white()` is not allowed in `expr` (a named value of a cell)."""
        if _has_white(expr):
            self._misplaced(expr, where)

    def _misplaced(self, expr: S.Expr, where: str) -> None:
        for n in S.walk(expr):
            if _is_white(n):
                self.error(f"`{WHITE}()` cannot be used in {where}: {ADDED}", n.span,
                           "add `sigma * white()` to the equation itself, e.g. `tau * ds/dt = -s + sigma * white()`")

    def _white_terms(self, expr: S.Expr, coef: float, out: list[float]) -> None:
        """Append the coefficient of every `white()` of `expr` (scaled by `coef`); report a
        `white()` that is not an added term with a constant coefficient."""
        if not _has_white(expr):
            return
        if _is_white(expr):
            if not expr.args:  # with arguments: the arity error is reported already
                out.append(coef)
            return
        if isinstance(expr, S.Unary):
            self._white_terms(expr.operand, -coef if expr.op == "-" else coef, out)
            return
        if isinstance(expr, S.Binary) and expr.op in ("+", "-"):
            self._white_terms(expr.left, coef, out)
            self._white_terms(expr.right, -coef if expr.op == "-" else coef, out)
            return
        if isinstance(expr, S.Binary) and expr.op == "*":
            left, right = _has_white(expr.left), _has_white(expr.right)
            if left and right:
                self.error(f"a product of two `{WHITE}()`s is not white noise: {ADDED}", expr.span)
                return
            noisy, factor = (expr.left, expr.right) if left else (expr.right, expr.left)
            c = self._coefficient(factor)
            if c is not None:
                self._white_terms(noisy, coef * c, out)
            return
        if isinstance(expr, S.Binary) and expr.op == "/" and not _has_white(expr.right):
            c = self._coefficient(expr.right)
            if c == 0:
                self.error(f"this divides `{WHITE}()` by 0", expr.right.span)
            elif c is not None:
                self._white_terms(expr.left, coef / c, out)
            return
        if isinstance(expr, S.Call):
            where = f"the argument of `{expr.fn.name}`"
        elif isinstance(expr, S.Binary) and expr.op == "/":
            where = "a denominator"
        elif isinstance(expr, S.Binary) and expr.op in ("^", "**"):
            where = "a power"
        else:
            where = "a comparison"
        self._misplaced(expr, where)

    def _coefficient(self, expr: S.Expr) -> float | None:
        return self._constant(
            expr, f"the amplitude of `{WHITE}()`",
            "write `+ sigma * white()` with `param sigma = ...`: state-dependent (multiplicative) noise is "
            "not supported",
        )

    def _constant(self, expr: S.Expr, what: str, hint: str) -> float | None:
        """The value of `expr` if it is made of numbers and params; a located error otherwise."""
        names = {n.name for n in S.walk(expr) if isinstance(n, S.Var)}
        if names & self.broken:
            return None  # it uses a param whose error is reported already
        names -= set(self.params)
        members = [n for n in S.walk(expr) if isinstance(n, S.Member)]
        if names or members:
            first = sorted(names)[0] if names else f"{members[0].obj.name}.{members[0].attr.name}"
            self.error(f"{what} must be a constant (numbers and params), but it reads `{first}`", expr.span, hint)
            return None
        try:
            return evaluate(expr, self.params, self.functions, what)
        except EvalError as exc:
            self.errors.append(exc.diagnostic)
            return None

    # -------------------------------------------------------------- phases --
    def phase_noise(self, spec: LearningSpec) -> tuple[PhaseSpec, ...]:
        """The phases with their `sigma`; reports noisy phases that take no time steps."""
        amps = noise_amplitudes(self.pops, self.neurons)
        if not amps:
            return spec.phases
        top = max(amps, key=lambda k: amps[k])
        who = f"`{top}` (sigma {fmt_num(amps[top])})"
        out = []
        for ph in spec.phases:
            sigma = ph.noise * amps[top]
            if sigma > 0:
                if ph.forward:
                    self.error(f"phase `{ph.name}` is `forward` (one exact pass), but {who} is noisy: noise needs "
                               "time steps", ph.span, "write `noise 0` in this phase, or use `steps N`")
                elif ph.integrator in P.INTEGRATORS and "noise" not in P.INTEGRATORS[ph.integrator].provides:
                    self.error(f"the `{ph.integrator}` integrator of phase `{ph.name}` has no time step for the "
                               f"noise of {who} to scale with", ph.span,
                               "use `integrator euler` or `prototypical`, or write `noise 0` in this phase")
                elif spec.prospective:
                    self.error(f"`prospective` computes the states of phase `{ph.name}` exactly in one pass, so the "
                               f"noise of {who} would be ignored", ph.span,
                               "remove `prospective`, or write `noise 0` in this phase")
            out.append(dataclasses.replace(ph, sigma=sigma))
        return tuple(out)
