"""Initialisers (`init=` of a connection, `bias ... init=`): one function per entry of
`primitives.INITS`, each `(key, shape, dtype, fans, *args) -> array`.

`fans` = (fan_in, fan_out) come from the connection's operator (`ops/`): for a
dense weight (|pre|, |post|), for a k×k convolution (k²·C_in, k²·C_out) — so
`glorot` and `he` scale a kernel as Glorot & Bengio 2010 and He et al. 2015 do.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from .. import primitives as P

__all__ = ["initialize", "glorot", "he", "zeros", "normal", "uniform", "constant"]


def initialize(init, key, shape, dtype, fans=(1, 1)):
    """The array `init` (an `InitSpec`) gives; its scheme was checked against `INITS`."""
    return P.INITS[init.scheme].impl_fn()(key, shape, dtype, fans, *init.args)


def glorot(key, shape, dtype, fans):
    a = math.sqrt(6.0 / (fans[0] + fans[1]))
    return jax.random.uniform(key, shape, dtype, -a, a)


def he(key, shape, dtype, fans):
    return jax.random.normal(key, shape, dtype) * math.sqrt(2.0 / fans[0])


def zeros(key, shape, dtype, fans):
    return jnp.zeros(shape, dtype)


def normal(key, shape, dtype, fans, std):
    return jax.random.normal(key, shape, dtype) * std


def uniform(key, shape, dtype, fans, a):
    return jax.random.uniform(key, shape, dtype, -a, a)


def constant(key, shape, dtype, fans, c):
    return jnp.full(shape, c, dtype)
