"""Vector-field circuits (`dynamics leaky`): dynamics that are not a gradient.

    tau ds/dt = −s + Σ_(a→s) ± P(W ⋆ ρ(s_a)) + b − β ∂C/∂s        (Scellier et al. 2018)

Directed connections (and one-to-one ones) feed the summed drive, through
their operators (`ops/`, read by `Wiring`); there is no energy, so feedback
weights can differ from the forward ones. The same phases, integrators,
result codes and error locations as energy circuits apply (`relax.Relaxer`
asks for `force` instead of differentiating an energy). The generalized
EqProp update is

    ΔW ∝ (1/β) ⟨s_post^β − s_post^0, ∂/∂W P(W ⋆ ρ(s_pre^0))⟩,

which `learning` obtains as the parameter gradient of `update_potential`
(for a dense weight: (s_post^β − s_post^0) ρ(s_pre^0)ᵀ).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from .energy import EnergyFunctions

__all__ = ["VectorFieldFunctions"]

Array = Any


class VectorFieldFunctions(EnergyFunctions):
    """The leaky vector field of one circuit (shares costs, drives' shape and bounds)."""

    vector_field = True

    def _rates(self, s, x, phase=None, step=0):
        """What each population transmits, ρ(s), perturbed in `phase` at `step` (`lower/perturb.py`)."""
        full = {**x, **s}
        r = {n: self.act[n](v) for n, v in full.items() if n in self.pops}
        return self.perturb.rates(r, phase, step) if self.perturb else r

    def drives(self, params, x):
        """The loop-invariant part of every free population's drive: the connections
        that read only clamped populations, and the biases."""
        r = {n: self.act[n](v) for n, v in x.items()}
        free = set(self.pops) - set(x)
        return self.wiring.into(params, r, free, skip=lambda e: not self.wiring.reads(e) <= set(x))

    def drive(self, s, params, x, drives=None, phase=None, step=0) -> dict[str, Array]:
        """Σ_in ± P(W ⋆ ρ(pre)) + b for each free population."""
        W = self.wiring
        r = self._rates(s, x, phase, step)
        if drives is None:
            return W.into(params, r, set(s))
        out = W.into(params, r, set(s), skip=lambda e: W.reads(e) <= set(x), biases=False)
        for n, v in drives.items():
            out[n] = out[n] + v if n in out else v
        return out

    def force(self, s, params, x, drives=None, beta=None, y=None, *, t=0.0, phase=None) -> dict[str, Array]:
        """ds/dt for each free population, at time `t` of `phase` (a `PhaseSpec`: where
        enabled perturbations act; `lower/perturb.py`)."""
        pt = self.perturb if phase is not None else None
        step = pt.step_of(t, phase) if pt else 0
        d = self.drive(s, params, x, drives, phase, step)
        if pt:  # the soma's drive is a leaky population's one compartment
            soma = pt.compartments({(n, self.pops[n].compartments[0]): v for n, v in d.items()}, s, phase, step)
            d = {n: v for (n, _), v in soma.items()}
            for n, i in pt.currents(s, phase, step).items():
                d[n] = d[n] + i if n in d else i
        f = {n: (d[n] - s[n] if n in d else -s[n]) / self.pops[n].tau for n in s}
        if beta is not None:
            g = jax.grad(lambda u: self.cost(u, y))(dict(s))
            f = {n: f[n] - beta * g[n] / self.pops[n].tau for n in s}
        return pt.hold(f, s, phase, step) if pt else f

    def update_potential(self, params, delta: Mapping[str, Array], s0, x) -> Array:
        """A scalar whose θ-gradient is −Σ_edges ⟨δ_post, drive⟩ − Σ ⟨δ, b⟩ at s^0: the
        generalized EqProp update (δ = s^β − s^0, held constant)."""
        delta = {n: jax.lax.stop_gradient(v) for n, v in delta.items()}
        r = self._rates({n: jax.lax.stop_gradient(v) for n, v in s0.items()}, x)
        W = self.wiring
        total = 0.0
        for post, v in W.into(params, r, set(delta)).items():
            total = total - jnp.sum(delta[post] * v)
        return total

    def energy(self, *args, **kwargs):  # pragma: no cover - guarded by `vector_field`
        raise TypeError("a vector-field circuit has no energy")
