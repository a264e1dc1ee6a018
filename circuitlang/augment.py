"""Random data augmentation of image batches, jittable, for the training epoch.

    crop    pad each image with `pad` zeros on every side, then cut out an H x W
            window at a random offset, uniform in 0..2*pad along each axis
            (the standard CIFAR augmentation: He et al. 2016, "Deep Residual
            Learning for Image Recognition", CVPR, section 4.2)
    flip    mirror each image left-right (along W) with probability 1/2

`augment` takes a batch in the back end's channels-last layout ``(B, H, W, C)``;
a `circuitlang.data.Dataset` row is flat in written order ``(C, H, W)``, and
`circuitlang.layout.from_flat` converts it. Every sample draws
its own offsets and coin, and each operation draws from its own key,
``jax.random.fold_in(key, AUGMENTATIONS.index(op))``, so turning `flip` on does
not change the crops a key gives.

Nothing in the package imports this module at import time: importing
`circuitlang` does not import JAX.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from .errors import CircuitError, Diagnostic, did_you_mean

__all__ = ["AUGMENTATIONS", "augment", "parse_augment"]

AUGMENTATIONS: tuple[str, ...] = ("crop", "flip")
_USAGE = f"augmentations: {', '.join(AUGMENTATIONS)}, comma-separated (e.g. `crop,flip`)"


def parse_augment(text: str) -> tuple[str, ...]:
    """``"crop,flip"`` as ``("crop", "flip")``, in the order written; ``""`` is ``()``.

    Names are case-insensitive and may be padded with spaces.

    Raises:
        CircuitError: a name is unknown (with the closest known one) or given twice.
    """
    names: list[str] = []
    for item in text.split(","):
        name = item.strip().lower()
        if not name:
            if text.strip():
                raise CircuitError(Diagnostic(f"empty augmentation name in `{text}`", hint=_USAGE))
            continue
        if name not in AUGMENTATIONS:
            near = did_you_mean(name, AUGMENTATIONS)
            raise CircuitError(Diagnostic(f"unknown augmentation `{item.strip()}`{near}", hint=_USAGE))
        if name in names:
            raise CircuitError(Diagnostic(f"augmentation `{name}` is given twice in `{text}`",
                                          hint=f"name each once; {_USAGE}"))
        names.append(name)
    return tuple(names)


def augment(key: jax.Array, x: jax.Array, ops: Sequence[str], pad: int = 4) -> jax.Array:
    """A randomly augmented copy of the image batch `x`.

    Args:
        key: a PRNG key (``jax.random.key`` or ``PRNGKey``); the same key gives the
            same result.
        x: images ``(B, H, W, C)``, channels last, any dtype.
        ops: names from `AUGMENTATIONS`, applied in order, each at most once; they
            are static (under `jax.jit`, pass them as a static argument or close
            over them).
        pad: the zero padding on each side for ``crop``; static, non-negative.

    Returns:
        An array of the shape and dtype of `x`.

    Raises:
        CircuitError: an unknown or repeated op, a bad `pad`, or `x` not 4-D (raised
            while tracing, since all of these are static).
    """
    ops = tuple(ops)
    for op in ops:
        if op not in AUGMENTATIONS:
            raise CircuitError(Diagnostic(f"unknown augmentation `{op}`{did_you_mean(str(op), AUGMENTATIONS)}",
                                          hint=_USAGE))
    if len(set(ops)) != len(ops):
        raise CircuitError(Diagnostic(f"augmentations {ops} name one twice", hint=f"name each once; {_USAGE}"))
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise CircuitError(Diagnostic(f"crop padding `{pad}` must be a non-negative integer"))
    x = jnp.asarray(x)
    if x.ndim != 4:
        raise CircuitError(Diagnostic(f"augment takes images (B, H, W, C), channels last; got shape {x.shape}",
                                      hint="convert flat rows with `channels_last(x, dataset.shape)`"))
    for op in ops:
        op_key = jax.random.fold_in(key, AUGMENTATIONS.index(op))
        x = _crop(op_key, x, pad) if op == "crop" else _flip(op_key, x)
    return x


def _crop(key: jax.Array, x: jax.Array, pad: int) -> jax.Array:
    """Each sample's own H x W window of its zero-padded image, offsets uniform in 0..2*pad."""
    if pad == 0:
        return x
    b, h, w, c = x.shape
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = jax.random.randint(key, (b, 2), 0, 2 * pad + 1)

    def window(image: jax.Array, at: jax.Array) -> jax.Array:
        return lax.dynamic_slice(image, (at[0], at[1], 0), (h, w, c))

    return jax.vmap(window)(padded, offsets)


def _flip(key: jax.Array, x: jax.Array) -> jax.Array:
    """Each sample mirrored along W with probability 1/2, independently."""
    chosen = jax.random.bernoulli(key, 0.5, (x.shape[0],))
    return jnp.where(chosen[:, None, None, None], x[:, :, ::-1, :], x)
