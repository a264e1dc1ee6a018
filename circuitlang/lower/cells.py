"""Cell-type circuits: populations whose neurons follow their own ODEs.

    neuron pyramidal {
      compartment basal
      compartment apical
      tau * ds/dt = -s + basal + apical
    }

A **compartment** is an input site: its value is the summed drive of the
connections into it, ``Σ ± W ρ(pre)`` (one-to-one ones ``gain · w ⊙ ρ(pre)``).
The cell's equations read compartments, its own state variables, `let`
values defined above them, params and `t`; each ``tau * dX/dt = rhs`` gives
``dX/dt = rhs / tau``. Populations without a cell type in the same circuit
are leaky: ``tau ds/dt = −s + Σ_in W ρ(pre) + b``.

* The **main state** of a population is its `s` (or the cell's first state
  variable): its rate ρ(s) is what connections carry, and the cost reads it.
  Other state variables live in the state dict as ``"pop.var"``.
* A **bias** adds to the cell's first compartment (the soma of a leaky one).
* The **nudge** ``−β ∂C/∂s`` of an output enters its `apical` compartment
  when the cell has one (so rules see it as ``post.apical``), otherwise it is
  added to ``tau ds/dt`` of the main state.

The class shares costs, bounds, drives and the generalized EqProp update
with `VectorFieldFunctions` (these circuits have no energy either).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from ..primitives import NUDGE_COMPARTMENT
from .vectorfield import VectorFieldFunctions

__all__ = ["CellFunctions", "NUDGE_COMPARTMENT"]

Array = Any


class CellFunctions(VectorFieldFunctions):
    """The ODEs of a circuit with cell types, as pure JAX functions."""

    vector_field = True

    def __init__(self, spec, pops, edges, ev) -> None:
        super().__init__(spec, pops, edges, ev)
        self.types = dict(spec.neuron_types)
        self.main: dict[str, str] = {}
        keys: list[str] = []
        for n in self.free:
            pop = self.pops[n]
            main = "s" if "s" in pop.state else pop.state[0]
            self.main[n] = main
            keys.append(n)
            keys.extend(f"{n}.{v}" for v in pop.state if v != main)
        self.state_keys = tuple(keys)

    # ---------------------------------------------------------------- sizes --
    def size_of(self, key: str) -> int:
        return self.pops[key.split(".")[0]].size

    def first_compartment(self, n: str) -> str:
        return self.pops[n].compartments[0]

    # --------------------------------------------------------------- drives --
    def _group(self, e):
        return (e.post, e.compartment)

    def _bias_group(self, n):
        return (n, self.first_compartment(n))

    def drives(self, params, x):
        """Loop-invariant compartment inputs from clamped populations: {(post, comp): value}."""
        r = {n: self.act[n](v) for n, v in x.items()}
        free = set(self.pops) - set(x)
        return self.wiring.into(params, r, free, skip=lambda e: not self.wiring.reads(e) <= set(x),
                                biases=False, group=self._group)

    def compartments(self, s, params, x, drives=None, phase=None, step=0) -> dict[tuple[str, str], Array]:
        """The summed drive of every (population, compartment) that receives one, biases included
        (the rates they read perturbed in `phase` at `step`)."""
        W = self.wiring
        rates = self._rates({n: s[n] for n in self.free if n in s}, x, phase, step)
        to = {n for n in self.free if n in s}
        if drives is None:
            return W.into(params, rates, to, group=self._group, bias_group=self._bias_group)
        out = W.into(params, rates, to, skip=lambda e: W.reads(e) <= set(x), group=self._group,
                     bias_group=self._bias_group)
        for k, v in drives.items():
            out[k] = out[k] + v if k in out else v
        return out

    # ---------------------------------------------------------------- force --
    def force(self, s, params, x, drives=None, beta=None, y=None, *, t=0.0, phase=None, observe: bool = False):
        """d(state)/dt for every state key (in `s`'s order), at time `t` of `phase` (a
        `PhaseSpec`: where enabled perturbations act, `lower/perturb.py`); with `observe`,
        also {population: {compartment: value}} as the equations saw them."""
        pt = self.perturb if phase is not None else None
        step = pt.step_of(t, phase) if pt else 0
        comps = self.compartments(s, params, x, drives, phase, step)
        extra: dict[str, Array] = {}
        if beta is not None:
            mains = {n: s[n] for n in self.free}
            g = jax.grad(lambda u: self.cost(u, y))(mains)
            for c in self.costs:
                n = c.population
                current = -beta * g[n]
                if self.pops[n].cell_type and NUDGE_COMPARTMENT in self.pops[n].compartments:
                    key = (n, NUDGE_COMPARTMENT)
                    comps[key] = comps[key] + current if key in comps else current
                else:
                    extra[n] = current
        if pt:  # after the nudge: `silence` on an apical dendrite silences the nudge too
            comps = pt.compartments(comps, s, phase, step)
            for n, i in pt.currents(s, phase, step).items():
                extra[n] = extra[n] + i if n in extra else i
        f: dict[str, Array] = {}
        seen: dict[str, dict[str, Array]] = {}
        for n in self.free:
            pop = self.pops[n]
            zero = jnp.zeros_like(s[n])
            own = {c: comps.get((n, c), zero) for c in pop.compartments}
            seen[n] = own
            if pop.cell_type is None:
                rhs = own[pop.compartments[0]] - s[n]
                if n in extra:
                    rhs = rhs + extra[n]
                f[n] = rhs / pop.tau
                continue
            nt = self.types[pop.cell_type]
            env: dict[str, Array] = dict(own)
            for var in pop.state:
                env[var] = s[n] if var == self.main[n] else s[f"{n}.{var}"]
            env["t"] = t
            for name, expr in nt.lets:
                env[name] = self.ev.eval(expr, env)
            for ode in nt.odes:
                rhs = self.ev.eval(ode.rhs, env)
                key = n if ode.state == self.main[n] else f"{n}.{ode.state}"
                if key == n and n in extra:
                    rhs = rhs + extra[n]
                tau = self.ev.eval(ode.tau, env) if ode.tau is not None else 1.0
                f[key] = jnp.broadcast_to(rhs / tau, s[key].shape).astype(s[key].dtype)
        ordered = {k: f[k] for k in s}
        if pt:
            ordered = pt.hold(ordered, s, phase, step)
        return (ordered, seen) if observe else ordered

    def update_potential(self, params, delta: Mapping[str, Array], s0, x) -> Array:
        return super().update_potential(params, {n: delta[n] for n in self.free if n in delta}, s0, x)
