"""Perturbations: what an experiment does to a population during a phase.

    perturb stim  : g1 add 0.5 during nudge
    perturb quiet : g1.dendrite silence during nudge[5:20] fraction=0.5 seed=3

A perturbation enters the one place the back end computes a vector field's or
a cell's force (`VectorFieldFunctions.force`, `CellFunctions.force`): each
kind of `primitives.PERTURBATIONS` is one `Effect` below, saying what it does

* to a **compartment**'s value c (the summed drive of its connections, bias
  and nudge; a population without a cell type has one, `soma`, its drive):
  `add` c + v, `gain` v·c, `silence` 0, `clamp` v;
* to a **population**: `add` puts a current v into its main ODE
  (τ ds/dt = rhs + v, where the nudge of an output enters too), `gain`
  scales the rate it transmits (v·ρ(s)), `silence` holds it at rest and
  silent (s → 0, rate 0), `clamp` holds s at v (rate ρ(v)). A held cell's
  force is (v − s)/dt: the first Euler step of the window puts it on v, the
  next ones leave it there; what it transmits is the held value's rate from
  the window's first step on.

Only the cells of a seeded mask are touched (`fraction` of them, at least one,
drawn with NumPy's `default_rng(seed)`, the same on every machine), and only in
the steps of the windows: step i is the Euler step from s_i to s_(i+1), at time
t = i·dt of its phase. The rules read what the cells transmit (`pre.rate`)
and the compartments' perturbed values. Perturbations are compiled in only
when enabled (`enabled` in the file, `--set perturb.NAME=on`, or selected by
`circuitc experiment`); a model without any pays nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from .. import primitives as P
from ..graph import PerturbSpec, PhaseSpec, PopulationNode
from ..layout import to_internal

__all__ = ["Effect", "Perturber", "mask_of", "ADD", "GAIN", "SILENCE", "CLAMP"]

Array = Any


@dataclasses.dataclass(frozen=True)
class Effect:
    """One kind of perturbation: `compartment(c, v)` the new value of a compartment;
    `current(v)` a population's extra current (or None); `rate(r, v, act)` the rate it
    transmits; `hold(v)` the state it is held at (or None)."""

    compartment: Callable[[Array, float], Array]
    current: Callable[[float], float | None] = lambda v: None
    rate: Callable[[Array, float, Callable], Array] = lambda r, v, act: r
    hold: Callable[[float], float | None] = lambda v: None


ADD = Effect(compartment=lambda c, v: c + v, current=lambda v: v)
GAIN = Effect(compartment=lambda c, v: c * v, rate=lambda r, v, act: r * v)
SILENCE = Effect(compartment=lambda c, v: jnp.zeros_like(c), rate=lambda r, v, act: jnp.zeros_like(r),
                 hold=lambda v: 0.0)
CLAMP = Effect(compartment=lambda c, v: jnp.full_like(c, v),
               rate=lambda r, v, act: jnp.broadcast_to(act(jnp.asarray(v, r.dtype)), r.shape).astype(r.dtype),
               hold=lambda v: v)


def mask_of(spec: PerturbSpec, pop: PopulationNode) -> np.ndarray:
    """The perturbed cells, (1, *compiled shape) of bools: round(fraction·N) of them (at least
    one), drawn by `numpy.random.default_rng(seed)`; all of them for fraction 1."""
    n = pop.size
    k = n if spec.fraction >= 1 else max(1, int(round(spec.fraction * n)))
    flat = np.zeros(n, bool)
    flat[np.random.default_rng(spec.seed).permutation(n)[:k]] = True
    return np.asarray(to_internal(flat.reshape((1, *pop.shape)), pop.shape))


class Perturber:
    """The enabled perturbations of one circuit, applied by phase and step."""

    def __init__(self, specs: tuple[PerturbSpec, ...], pops: Mapping[str, PopulationNode],
                 act: Mapping[str, Callable]) -> None:
        self.specs = tuple(p for p in specs if p.enabled)
        self.pops = pops
        self.act = act
        self.effects = {p.name: P.PERTURBATIONS[p.kind].load() for p in self.specs}
        self.masks = {p.name: mask_of(p, pops[p.population]) for p in self.specs}

    def __bool__(self) -> bool:
        return bool(self.specs)

    def _on(self, spec: PerturbSpec, phase: PhaseSpec | None, step) -> Array | None:
        """Where `spec` acts at this step: a bool array broadcasting against the population's
        states, or None when it does not act in this phase at all."""
        if phase is None:
            return None
        windows = [(a, b) for name, a, b in spec.windows if name == phase.name]
        if not windows:
            return None
        mask = jnp.asarray(self.masks[spec.name])
        if any(a == 0 and b is None for a, b in windows):
            return mask
        inside = None
        for a, b in windows:
            w = step >= a if b is None else (step >= a) & (step < b)
            inside = w if inside is None else inside | w
        return mask & inside

    def _acting(self, phase, step, on_population: bool):
        for spec in self.specs:
            if (spec.compartment is None) != on_population:
                continue
            on = self._on(spec, phase, step)
            if on is not None:
                yield spec, self.effects[spec.name], on

    @staticmethod
    def step_of(t, phase: PhaseSpec | None):
        """The index of the Euler step taken at time `t` of `phase`."""
        return jnp.round(jnp.asarray(t) / phase.dt) if phase is not None else 0

    # -------------------------------------------------------------- effects --
    def compartments(self, comps: dict, like: Mapping[str, Array], phase, step) -> dict:
        """{(population, compartment): value} with the compartment perturbations applied
        (a compartment no connection drives starts from 0)."""
        out = dict(comps)
        for spec, eff, on in self._acting(phase, step, on_population=False):
            key = (spec.population, spec.compartment)
            c = out[key] if key in out else jnp.zeros_like(like[spec.population])
            out[key] = jnp.where(on, eff.compartment(c, spec.value), c)
        return out

    def rates(self, r: Mapping[str, Array], phase, step) -> dict:
        """What each population transmits, with `gain`, `silence` and `clamp` applied."""
        out = dict(r)
        for spec, eff, on in self._acting(phase, step, on_population=True):
            n = spec.population
            if n in out:
                out[n] = jnp.where(on, eff.rate(out[n], spec.value, self.act[n]), out[n])
        return out

    def currents(self, like: Mapping[str, Array], phase, step) -> dict:
        """{population: extra current into its main ODE's right-hand side}."""
        out: dict = {}
        for spec, eff, on in self._acting(phase, step, on_population=True):
            v = eff.current(spec.value)
            if v is None or spec.population not in like:
                continue
            i = jnp.where(on, jnp.asarray(v, like[spec.population].dtype), 0.0)
            out[spec.population] = out[spec.population] + i if spec.population in out else i
        return out

    def hold(self, force: dict, s: Mapping[str, Array], phase, step) -> dict:
        """The force with held cells (`silence`, `clamp`) sent to their value: (v − s)/dt."""
        out = dict(force)
        for spec, eff, on in self._acting(phase, step, on_population=True):
            v = eff.hold(spec.value)
            n = spec.population
            if v is None or n not in out:
                continue
            out[n] = jnp.where(on, (v - s[n]) / phase.dt, out[n]).astype(out[n].dtype)
        return out

