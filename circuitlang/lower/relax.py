"""Phases: relaxing a circuit's state, with result codes instead of exceptions.

A phase runs `steps` integration steps (or, with `tol`, stops as soon as its
residual is below `tol`), either

* ``euler``: s ← s − dt (∂E/∂s + β ∂C/∂s), the continuous-time gradient flow
  of Scellier & Bengio 2017; or
* ``prototypical``: s ← (1 − dt) s + dt ρ(−∂Φ/∂r) with the state read as a
  rate r, the discrete form of Ernoult et al. 2019 / Laborieux et al. 2021
  (dt = 1: s ← ρ(...)); or
* ``forward``: the exact fixed point of a feed-forward predictive circuit, in
  one pass in topological order (there E = 0).

Everything is traced once: a phase is one `lax.fori_loop` (or
`lax.while_loop` with `tol`), and the clamped populations' drives are
computed once per phase. Failures come back as a code (diffrax-style):
`OK`, `NOT_CONVERGED` (a phase with `tol` whose residual is still above it), or
`NONFINITE + i` for the i-th free population; `check()` turns a code into a
located `CircuitRuntimeError`.

**The residual** of a phase is the speed of its state at the end,
max |s_T − s_(T−1)| / dt over the free units of each example: the
(projected) −∂E/∂s − β∂C/∂s of an Euler step, ρ(−∂Φ/∂r) − r of a
prototypical one, ds/dt of a vector field. It does not depend on dt, it is
zero exactly at a fixed point of the phase's own dynamics, and it costs
nothing: it is read off the last step. A phase is *converged* when an
example's residual is below the phase's `tol`, or below `DEFAULT_TOL` for a
phase of fixed steps.

**With noise** (`lower/noise.py`) the state never settles, so the residual of
a noisy phase is the speed of its *drift*, the last step taken without the
noise increment: the same definition as without noise, and still zero at the
drift's fixed point, but a noisy state fluctuates around that point, and so
does its drift (for ds = −λs dt + σ dW, with standard deviation σ√(λ/2) per
unit). A noisy phase therefore counts as converged when its residual is below
its tolerance plus `NOISE_SIGMAS` (5) times the phase's largest σ
(`PhaseSpec.sigma`): at unit relaxation rate that is about seven standard
deviations of a unit's drift, beyond the largest of millions of units.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import networkx as nx
from jax import lax

from .. import primitives as P
from ..errors import CircuitRuntimeError, Diagnostic
from ..graph import PhaseSpec
from ..layers import colour_layers
from ..graph import noise_amplitudes
from .energy import EnergyFunctions
from .noise import NOISE_SIGMAS, add, increments

__all__ = ["OK", "NOT_CONVERGED", "NONFINITE", "DEFAULT_TOL", "Relaxation", "Relaxer", "tolerance", "converged"]


def _slope(f, v):
    """f'(v) element-wise."""
    return jax.jvp(f, (v,), (jnp.ones_like(v),))[1]

OK, NOT_CONVERGED, NONFINITE = 0, 1, 2
DEFAULT_TOL = 1e-2  # residual under which a phase without `tol` counts as converged

Array = Any


def tolerance(phase: PhaseSpec) -> float:
    """The residual under which `phase` counts as converged (with noise: plus `NOISE_SIGMAS` σ)."""
    return (phase.tol if phase.tol is not None else DEFAULT_TOL) + NOISE_SIGMAS * phase.sigma


def converged(residual: Array, phase: PhaseSpec) -> Array:
    """Per example: the residual is finite and below the phase's tolerance."""
    return (residual < tolerance(phase)) & jnp.isfinite(residual)


@dataclasses.dataclass(frozen=True)
class Relaxation:
    """The end of a phase: the state of every population, the steps taken (with `tol`:
    the step at which the residual met it), the result code and each example's
    residual (batch,) (see the module docstring; 0 for an exact phase)."""

    state: dict[str, Array]
    steps: Array
    code: Array
    residual: Array = None

    def converged(self, phase: PhaseSpec) -> Array:
        """Per example: the residual is finite and below the phase's tolerance."""
        return converged(self.residual, phase)


jax.tree_util.register_dataclass(Relaxation, data_fields=["state", "steps", "code", "residual"], meta_fields=[])


def _speed(new, old, dt) -> Array:
    """max |new − old| / dt over the units of each example: (batch,)."""
    # one reduction over every population's units (XLA fuses the differences into it)
    moved = jnp.concatenate([jnp.abs(new[n] - old[n]).reshape(new[n].shape[0], -1) for n in new], axis=-1)
    return jnp.real(jnp.max(moved, axis=-1)) / dt


class Relaxer:
    """Runs phases of one energy circuit."""

    def __init__(self, fns: EnergyFunctions, graph: nx.MultiDiGraph, source=None, prospective: bool = False) -> None:
        self.fns = fns
        self.prospective = prospective
        self.graph = graph
        self.source = source  # for error excerpts
        spec = graph.graph["circuit"]
        self.amplitudes = noise_amplitudes(fns.pops, spec.neuron_types)  # {state key: σ} (`lower/noise.py`)
        order_graph = nx.DiGraph()
        order_graph.add_nodes_from(fns.pops)
        order_graph.add_edges_from((e.pre, e.post) for e in fns.edges if e.kind != "undirected")
        try:
            self.order = tuple(nx.topological_sort(order_graph))
        except nx.NetworkXUnfeasible:
            self.order = tuple(fns.pops)

    # ------------------------------------------------------------------ run --
    def run(self, phase: PhaseSpec, params, x: Mapping[str, Array], s0: Mapping[str, Array],
            beta: Array | float | None = None, y: Any = None, key: Array | None = None, *,
            boxed: bool = True) -> Relaxation:
        """Relax the free populations `s0` with the clamped `x`; `beta=None`: no nudge; `key`:
        the noise's (`lower/noise.py`; None: `jax.random.key(0)`), unused without noise.

        `boxed=False` applies ρ at every step even where the states are their rates
        (`_boxed`): the same states, bit for bit, but differentiated through the steps
        (`bptt`) the plain step's second derivative of a clipped ρ at a bound is ½ (the
        min/max inside clip's derivative rule), the shortcut's 1, and `bptt` keeps its
        numbers."""
        fns = self.fns
        if phase.forward:
            s = self.forward(params, x, s0)
            return self._finish(s, x, jnp.asarray(0), jnp.asarray(OK))
        if self.prospective:  # the slow state follows ŭ; the circuit's output is ŭ itself
            u = self.prospective_state(params, x, s0, beta, y)
            return self._finish(u, x, jnp.asarray(phase.steps), jnp.asarray(OK))
        if not s0:  # nothing is free (CHL's clamped phase of a circuit with only an output)
            return self._finish({}, x, jnp.asarray(0), jnp.asarray(OK))
        drives = fns.drives(params, x)
        noise = increments(self.amplitudes, phase, key, s0)
        step = first = self._step(phase, params, x, drives, beta, y, noise=noise)
        boxed = self._boxed(phase, s0) if boxed else frozenset()
        if boxed:  # after the first step every state is projected into its bounds
            step = self._step(phase, params, x, drives, beta, y, boxed, noise=noise)
        # the residual is the drift's speed: with noise, the step taken without its increment
        drift_first = first if noise is None else self._step(phase, params, x, drives, beta, y)
        drift = step if noise is None else (self._step(phase, params, x, drives, beta, y, boxed) if boxed
                                            else drift_first)
        if phase.tol is None:  # fixed steps; the residual is read off the last one
            s, start = dict(s0), 0
            if boxed and phase.steps > 1:
                s, start = first(0, s), 1
            s = lax.fori_loop(start, phase.steps - 1, step, s)
            plain_last = not start and boxed  # one step in all: the plain first step
            new = (first if plain_last else step)(phase.steps - 1, s)
            moved = new if noise is None else (drift_first if plain_last else drift)(phase.steps - 1, s)
            residual = _speed(moved, s, phase.dt)  # judged by whoever reads it (`Relaxation.converged`)
            return self._finish(new, x, jnp.asarray(phase.steps), jnp.asarray(OK), residual)
        tol = tolerance(phase)

        def cond(c):
            i, _, r = c
            return (i < phase.steps) & ~(jnp.max(r) < tol)

        def body(c):
            i, s, _ = c
            new = step(i, s)
            return i + 1, new, _speed(new if noise is None else drift(i, s), s, phase.dt)

        batch = next(iter(s0.values())).shape[0]
        start = (jnp.asarray(0), dict(s0), jnp.full((batch,), jnp.inf, jnp.real(next(iter(s0.values()))).dtype))
        if boxed:  # the first step, from states that may lie outside their bounds
            s1 = first(0, dict(s0))
            moved = s1 if noise is None else drift_first(0, dict(s0))
            start = (jnp.asarray(1), s1, _speed(moved, s0, phase.dt).astype(start[2].dtype))
        i, s, residual = lax.while_loop(cond, body, start)
        return self._finish(s, x, i, _judge(residual, tol), residual)

    def drift_step(self, phase: PhaseSpec, params, x, s, beta=None, y=None, i=0):
        """The state after one step of `phase` from `s` without noise (its residual's numerator)."""
        return self._step(phase, params, x, self.fns.drives(params, x), beta, y)(i, s)

    def trajectory(self, phase: PhaseSpec, params, x, s0, beta=None, y=None, key=None):
        """Every step of a phase: ({population: (steps + 1, batch, size)}, energy (steps + 1, batch));
        a noisy phase with the noise of `key` (as `run`)."""
        fns = self.fns
        if getattr(fns, "vector_field", False):  # no energy: record zeros
            def per_example(s1, x1):
                return jnp.zeros(next(iter(x1.values())).shape[:1])
        else:
            per_example = jax.vmap(
                lambda s1, x1: fns.energy({k: v[None] for k, v in s1.items()}, params, {k: v[None] for k, v in x1.items()}),
            )
        if phase.forward:
            end = self.forward(params, x, s0)
            states = [dict(s0), end]
            return (
                {n: jnp.stack([st[n] for st in states]) for n in s0},
                jnp.stack([per_example(st, x) for st in states]),
            )
        if self.prospective:
            u = self.prospective_state(params, x, s0, beta, y)

            def step(i, s):
                return self.follow(phase, s, u)
        else:
            drives = fns.drives(params, x)
            step = self._step(phase, params, x, drives, beta, y, increments(self.amplitudes, phase, key, s0))

        def body(s, i):
            new = step(i, s)
            return new, (new, per_example(new, x))

        _, (traj, energy) = lax.scan(body, dict(s0), jnp.arange(phase.steps))
        first = {n: s0[n][None] for n in s0}
        return (
            {n: jnp.concatenate([first[n], traj[n]]) for n in s0},
            jnp.concatenate([per_example(s0, x)[None], energy]),
        )

    def _finish(self, s, x, steps, code, residual=None) -> Relaxation:
        # numbered in declaration order (`fns.free`); the first non-finite one wins
        for i, n in reversed(list(enumerate(self.fns.free))):
            if n in s:
                code = jnp.where(jnp.all(jnp.isfinite(s[n])), code, NONFINITE + i)
        if residual is None:  # an exact phase (forward, prospective) or nothing free
            first = next(iter({**x, **s}.values()), None)
            batch = first.shape[:1] if first is not None else (1,)
            residual = jnp.zeros(batch, jnp.real(first).dtype if first is not None else jnp.zeros(()).dtype)
        return Relaxation({**x, **s}, steps, code, residual)

    def _step(self, phase: PhaseSpec, params, x, drives, beta, y, boxed=frozenset(), noise=None):
        """One step `(i, s) -> s'` of `phase`'s integrator (`primitives.INTEGRATORS`); `boxed`:
        populations whose states the step may read as their rates (see `_boxed`); `noise(i)`
        gives a noisy step's increments (integrators that provide `noise` take it)."""
        make = P.INTEGRATORS[phase.integrator].load()
        kw = {}
        if boxed:
            kw["boxed"] = boxed
        if noise is not None:
            kw["noise"] = noise
        return make(self.fns, phase, params, x, drives, beta, y, **kw)

    def _boxed(self, phase: PhaseSpec, s0) -> frozenset:
        """The free populations of `s0` whose ρ is the identity within their bounds
        (`EnergyFunctions.boxed`), where `phase`'s integrator projects every step's states
        into the bounds (`provides: boxed_rates`): from the second step on their states are
        their rates, bit for bit, and the step skips ρ and ρ' for them."""
        if "boxed_rates" not in P.INTEGRATORS[phase.integrator].provides or getattr(self.fns, "vector_field", False):
            return frozenset()
        return frozenset(n for n in getattr(self.fns, "boxed", ()) if n in s0)

    def prospective_state(self, params, x, s_like, beta=None, y=None, with_forward: bool = False):
        """The prospective state ŭ = s + τ ds/dt of latent equilibrium (Haider et al. 2021).

        In latent equilibrium neurons transmit ρ(ŭ), and ŭ = μ + e does not depend on the
        slow membrane state s: the predictions μ are the feed-forward values and the
        errors e are instantaneous. We compute both directly: μ in one topological pass;
        then, in reverse topological order, e_n = ρ'(μ_n) ⊙ Σ_(n→k) W_kᵀ e_k. On an output the
        nudged value u solves u = μ_n + e_n − β ∂C/∂u(u) exactly: the cost's registry entry
        names the solver (`COSTS[kind].nudged`; for `squared`, u − μ = −β/(1+β)(μ − target)
        when nothing reads the output). These are the predictive-coding errors under the
        fixed-prediction assumption, i.e. backprop's deltas scaled by β/(1+β) for the squared
        cost (Whittington & Bogacz 2017). With `with_forward`, returns (ŭ, μ).
        """
        fns = self.fns
        mu = self.forward(params, x, s_like)
        if beta is None:
            return (mu, mu) if with_forward else mu
        W = fns.wiring
        rates = {n: fns.act[n](v) for n, v in {**x, **mu}.items()}
        nudged = {c.population: P.COSTS[c.kind].load("nudged") for c in fns.costs}
        err: dict[str, Array] = {}
        for n in reversed(self.order):
            if n in x or n not in mu:
                continue
            back = None
            for e in fns.edges:
                if e.pre != n or e.post not in err:
                    continue
                v = W.back(e, params, rates, err[e.post])
                back = v if back is None else back + v
            e_n = jnp.zeros_like(mu[n]) if back is None else _slope(fns.act[n], mu[n]) * back
            if n in nudged:
                target = y[n] if isinstance(y, Mapping) else y
                e_n = nudged[n](mu[n] + e_n, target, beta) - mu[n]
            err[n] = e_n
        u = fns.project({n: mu[n] + err[n] if n in err else mu[n] for n in mu})
        return (u, mu) if with_forward else u

    def follow(self, phase: PhaseSpec, s, u):
        """One Euler step of τ ds/dt = ŭ − s: the membrane state low-pass filters ŭ."""
        return {n: s[n] + phase.dt * (u[n] - s[n]) / self.fns.pops[n].tau for n in s}

    def forward(self, params, x, s0):
        """The one-pass fixed point of a feed-forward predictive circuit."""
        fns = self.fns
        W = fns.wiring
        values = dict(x)
        rates = {n: fns.act[n](v) for n, v in x.items()}
        for n in self.order:
            if n in x:
                continue
            mu = jnp.zeros_like(s0[n])
            for e in fns.edges:
                if e.post == n and e.kind != "undirected":
                    mu = mu + W.drive(e, params, rates)
            if n in fns.biased:
                mu = mu + W.bias(n, params)
            values[n] = mu
            rates[n] = fns.act[n](mu)
        return {n: values[n] for n in s0}

    # --------------------------------------------------------------- errors --
    def check(self, result: Relaxation, phase: PhaseSpec) -> None:
        """Raise a located `CircuitRuntimeError` for a failed relaxation (outside jit): a
        non-finite state, or a phase with `tol` that did not meet it. (A phase of fixed
        steps above `DEFAULT_TOL` is reported, not raised: see `training` and `verify`.)"""
        code = int(result.code)
        free = self.fns.free
        if code == OK or (code == NOT_CONVERGED and phase.tol is None):
            return
        if code == NOT_CONVERGED:
            worst = float(jnp.max(result.residual))
            raise CircuitRuntimeError(
                Diagnostic(
                    f"phase `{phase.name}` did not converge within {phase.steps} steps "
                    f"(residual {worst:.3g}, tol {phase.tol:g})",
                    phase.span,
                    "raise `steps`, lower `dt`, or loosen `tol`",
                ),
                self.source,
            )
        name = free[code - NONFINITE]
        pop = self.fns.pops[name]
        raise CircuitRuntimeError(
            Diagnostic(
                f"the state of population `{name}` became non-finite (NaN or inf) in phase `{phase.name}`",
                pop.span,
                "the weights grew too large: lower the learning rates" if phase.forward else
                f"the dynamics diverged: lower `dt` (now {phase.dt:g}) or the learning rates, or check the initial weights",
            ),
            self.source,
        )


def _judge(residual, tol) -> Array:
    return jnp.where(jnp.max(residual) < tol, OK, NOT_CONVERGED)


# ------------------------------------------------------------------ integrators --
def euler_step(fns, phase: PhaseSpec, params, x, drives, beta, y, boxed=frozenset(), noise=None):
    """`INTEGRATORS["euler"]`: s ← P(s − dt (∂E/∂s + β ∂C/∂s)) on an energy, or
    s ← P(s + dt ds/dt) on a vector field (P: the projection onto the state bounds); with
    `noise`, the increment σ√dt ξ of each noisy state is added before P (Euler–Maruyama).
    `boxed` (energy only): populations whose states lie within their bounds, where ρ is the
    identity, so that their rates are their states (complex states are never projected:
    there ρ is applied)."""
    dt = phase.dt
    noise = noise or (lambda i: None)
    if getattr(fns, "vector_field", False):
        def force(s, i):  # cell ODEs may read `t`, the time in the phase; perturbations the phase
            return fns.force(s, params, x, drives, beta, y, t=i * dt, phase=phase)

        return lambda i, s: fns.project(add({n: v + dt * f for (n, v), f in zip(s.items(), force(s, i).values())},
                                            noise(i)))

    def total(s, boxed):
        E = fns.energy(s, params, x, drives, boxed=boxed)
        return E + beta * fns.cost(s, y) if beta is not None else E

    def step(i, s):
        holo = any(jnp.iscomplexobj(v) for v in s.values())
        g = jax.grad(lambda s: total(s, () if holo else boxed), holomorphic=holo)(s)
        return fns.project(add({n: s[n] - dt * g[n] for n in s}, noise(i)))

    return step


def prototypical_step(fns, phase: PhaseSpec, params, x, drives, beta, y, noise=None):
    """`INTEGRATORS["prototypical"]`: the state read as a rate r, r ← P((1 − dt) r + dt ρ(−∂Φ/∂r))
    with Φ the energy without its ½|s|² (Ernoult et al. 2019; dt = 1: r ← ρ(−∂Φ/∂r)); with
    `noise`, + σ√dt ξ before P."""
    dt = phase.dt
    noise = noise or (lambda i: None)

    def total(s):
        E = fns.energy(s, params, x, drives, leak=False, rates_are_states=True)
        return E + beta * fns.cost(s, y) if beta is not None else E

    def step(i, s):
        holo = any(jnp.iscomplexobj(v) for v in s.values())
        g = jax.grad(total, holomorphic=holo)(s)
        target = {n: fns.act[n](-g[n]) for n in s}
        if dt != 1.0:
            target = {n: s[n] + dt * (target[n] - s[n]) for n in s}
        return fns.project(add(target, noise(i)))

    return step


def async_step(fns, phase: PhaseSpec, params, x, drives, beta, y):
    """`INTEGRATORS["async"]`: block-coordinate minimisation, one colour class at a time
    (the asynchronous minimiser of Scellier et al. 2023, NeurIPS, "Energy-based learning
    algorithms for analog computing: a comparative study").

    States are rates r, as in the prototypical step, and Φ is the energy without its ½|r|².
    The free populations split into two colour classes with no coupling inside a class
    (`layers.colour_layers`; `check` refuses circuits that are not layered), so Φ is
    affine in each layer given the other class, and the layer's minimum is closed form:

        r_n ← P(ρ(d_n)),   d_n = −∂Φ/∂r_n  (the summed drives and bias into n).

    A step updates every even layer, then every odd one from the new even states
    (Gauss–Seidel by colour). On a population with a cost nudged by β, a cost with unit
    Hessian (`COSTS` entries providing `closed_form`, e.g. `squared`: ∇C(r) = r − t) gives
    the minimum of ½|r|² − ⟨r, d⟩ + βC(r) on the box [min, max]:

        r_n ← P((d_n − β ∇C_n(0)) / (1 + β))

    (`check` makes sure ρ is the identity on that box, so P ∘ ρ = P there; 1 + β > 0).
    With dt < 1 the step is damped, r ← (1 − dt) r + dt r*; dt = 1 is the plain minimiser; dt > 1
    over-relaxes (projected SOR: measured nowhere, may not converge).
    """
    dt = phase.dt
    (even, odd), _ = colour_layers(fns.free, fns.edges)
    nudged = {c.population for c in fns.costs} if beta is not None else set()

    def phi(s):
        return fns.energy(s, params, x, drives, leak=False, rates_are_states=True)

    def step(i, s):
        holo = any(jnp.iscomplexobj(v) for v in s.values())
        if nudged & set(s):
            zeros = {n: jnp.zeros_like(v) for n, v in s.items()}
            g0 = jax.grad(lambda r: fns.cost(r, y), holomorphic=holo)(zeros)  # ∇C(0): −target for `squared`
        s = dict(s)
        for group in (even, odd):
            names = [n for n in group if n in s]
            if not names:
                continue
            g = jax.grad(lambda sub: phi({**s, **sub}), holomorphic=holo)({n: s[n] for n in names})
            for n in names:
                u = -g[n]
                if n in nudged:
                    u = (u - beta * g0[n]) / (1.0 + beta)
                best = fns.act[n](u)
                s[n] = best if dt == 1.0 else s[n] + dt * (best - s[n])
            s.update(fns.project({n: s[n] for n in names}))
        return s

    return step
