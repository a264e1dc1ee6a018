"""Noise in the dynamics: Euler–Maruyama increments, keyed so that runs reproduce.

A noisy state (a population's `noise=`, a `white()` term of its cell's equation:
`graph.noise_amplitudes`) with amplitude σ, in a phase whose `noise` scale is c, follows
the SDE ds = f(s) dt + cσ dW. A step of size dt adds the Wiener increment before the
projection onto the state bounds:

    s ← P(s + dt f(s) + cσ √dt ξ),     ξ ~ N(0, 1) per unit          (Euler–Maruyama)

(the prototypical step: s ← P((1 − dt) s + dt ρ(−∂Φ/∂r) + cσ √dt ξ)). The √dt makes the
variance after a time T independent of dt: for ds = −s/τ dt + σ dW the stationary variance
is σ²τ/2 (Euler–Maruyama: σ²τ/(2 − dt/τ), which tends to it as dt/τ → 0).

**Keys.** ξ of state `k`, example `j` (its position in the batch), step `i` of phase `p` is

    normal(fold_in(fold_in(fold_in(fold_in(key, tag(p)), j), i), tag(k)))

with `tag` a CRC-32 of the name, so the same key gives the same numbers however the batch
is sharded, an example's noise does not depend on the other examples of its batch, two
phases see independent noise, and relaxations of one phase share it (`symmetric`'s
β and −β phases: the noise cancels from their difference to first order). `train` passes
each batch the key it derives from (seed, epoch, batch), so `--resume` stays bit-for-bit;
`key=None` means `jax.random.key(0)`.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from ..graph import PhaseSpec

__all__ = ["tag", "increments", "NOISE_SIGMAS"]

Array = Any
NOISE_SIGMAS = 5.0  # a noisy phase converges when its drift is below tol + NOISE_SIGMAS × its largest σ


def tag(name: str) -> int:
    """A stable 31-bit number for a name (phase or state key), for `jax.random.fold_in`."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def increments(amplitudes: Mapping[str, float], phase: PhaseSpec, key: Array | None,
               s0: Mapping[str, Array]) -> Callable[[Array], dict[str, Array]] | None:
    """`noise(i)` → {state key: cσ √dt ξ} for step `i` of `phase` (None when the phase has no noise).

    The per-example keys are derived once per phase; a step folds in its number."""
    sigma = {k: phase.noise * a for k, a in amplitudes.items() if k in s0 and phase.noise * a > 0}
    if not sigma:
        return None
    key = jax.random.key(0) if key is None else key
    first = next(iter(s0.values()))
    base = jax.random.fold_in(key, tag(phase.name))
    examples = jax.vmap(lambda j: jax.random.fold_in(base, j))(jnp.arange(first.shape[0]))
    root_dt = math.sqrt(phase.dt)

    def noise(i):
        at = jax.vmap(lambda k: jax.random.fold_in(k, i))(examples)
        out = {}
        for name, sig in sigma.items():
            v = s0[name]
            dtype = jnp.real(v).dtype
            xi = jax.vmap(lambda k, t=tag(name), shape=v.shape[1:], dt=dtype: jax.random.normal(
                jax.random.fold_in(k, t), shape, dt))(at)
            out[name] = (sig * root_dt) * xi
        return out

    return noise


def add(new: Mapping[str, Array], inc: Mapping[str, Array] | None) -> dict[str, Array]:
    """`new` with the noise increments added to the states that have one."""
    if not inc:
        return dict(new)
    return {n: v + inc[n].astype(v.dtype) if n in inc else v for n, v in new.items()}
