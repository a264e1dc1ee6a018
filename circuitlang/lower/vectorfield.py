"""Vector-field circuits (`dynamics leaky`): dynamics that are not a gradient.

    tau ds/dt = −s + Σ_(a→s) ± W ρ(s_a) + b − β ∂C/∂s        (Scellier et al. 2018)

Directed connections (and one-to-one ones) feed the summed drive; there is no
energy, so feedback weights can differ from the forward ones. The same
phases, integrators, result codes and error locations as energy circuits
apply (`relax.Relaxer` asks for `force` instead of differentiating an
energy). The generalized EqProp update is

    ΔW ∝ (1/β) (s_post^β − s_post^0) ρ(s_pre^0)ᵀ,

which `learning` obtains as the parameter gradient of `update_potential`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from .energy import EnergyFunctions, weights_of

__all__ = ["VectorFieldFunctions"]

Array = Any


class VectorFieldFunctions(EnergyFunctions):
    """The leaky vector field of one circuit (shares costs, drives' shape and bounds)."""

    vector_field = True

    def drives(self, params, x):
        w = weights_of(self.edges, params)
        out: dict[str, Array] = {}
        for e in self.edges:
            if e.pre in x and e.post not in x:
                v = self._predict(e, w, self.act[e.pre](x[e.pre]))
                out[e.post] = out[e.post] + v if e.post in out else v
        for n in self.biased:
            b = params[f"{n}.bias"][None, :]
            out[n] = out[n] + b if n in out else b
        return out

    def drive(self, s, params, x, drives=None) -> dict[str, Array]:
        """Σ_in ± W ρ(pre) + b for each free population."""
        w = weights_of(self.edges, params)
        full = {**x, **s}
        out: dict[str, Array] = dict(drives) if drives is not None else {}
        if drives is None:
            for n in self.biased:
                if n in s:
                    out[n] = params[f"{n}.bias"][None, :] + out.get(n, 0.0)
        for e in self.edges:
            if e.post not in s or (drives is not None and e.pre in x):
                continue
            v = self._predict(e, w, self.act[e.pre](full[e.pre]))
            out[e.post] = out[e.post] + v if e.post in out else v
        return out

    def force(self, s, params, x, drives=None, beta=None, y=None) -> dict[str, Array]:
        """ds/dt for each free population."""
        d = self.drive(s, params, x, drives)
        f = {n: (d[n] - s[n] if n in d else -s[n]) / self.pops[n].tau for n in s}
        if beta is not None:
            g = jax.grad(lambda u: self.cost(u, y))(dict(s))
            f = {n: f[n] - beta * g[n] / self.pops[n].tau for n in s}
        return f

    def update_potential(self, params, delta: Mapping[str, Array], s0, x) -> Array:
        """A scalar whose θ-gradient is −Σ_edges δ_postᵀ W ρ(s_pre^0) − Σ δ·b: the
        generalized EqProp update (δ = s^β − s^0, held constant)."""
        delta = {n: jax.lax.stop_gradient(v) for n, v in delta.items()}
        full = {**x, **{n: jax.lax.stop_gradient(v) for n, v in s0.items()}}
        w = weights_of(self.edges, params)
        total = 0.0
        for e in self.edges:
            if e.post in delta:
                total = total - jnp.sum(delta[e.post] * self._predict(e, w, self.act[e.pre](full[e.pre])))
        for n in self.biased:
            if n in delta:
                total = total - jnp.sum(delta[n] * params[f"{n}.bias"][None, :])
        return total

    def energy(self, *args, **kwargs):  # pragma: no cover - guarded by `vector_field`
        raise TypeError("a vector-field circuit has no energy")
