"""`pool(mode, k, stride=k)`: pooling over k×k windows, channel by channel.

    h1 -- x : K1 conv(5, padding=2) pool(max, 2)     # max over 2×2 windows
    a -> b pool(avg, 2)                              # a weightless stage on its own

`[C, H, W]` becomes `[C, H', W']` with H' = ⌊(H − k)/s⌋ + 1 (a remainder that
fits no window is dropped). Modes:

* ``max``: the largest value of each window. Its derivative at a tie is
  shared equally among the tied positions (the subgradient average, what
  JAX's `max` reduction does); pooling is computed from strided slices and a
  reduction, never XLA's select-and-scatter, so windows that overlap
  (`stride < k`) follow the same rule. Not analytic, so not for
  holomorphic EqProp with more than 2 points.
* ``avg``: the mean of each window (linear).
* ``softmax``: Σ_i v_i e^(v_i) / Σ_j e^(v_j) over the window, a smooth,
  analytic maximum (the softmax pooling Laborieux & Zenke 2022 use to make
  convolutional networks holomorphic).
"""

from __future__ import annotations

import math

import numpy as np

from ..layout import describe
from .base import Arg, OpKind, ShapeError

MODES = ("max", "avg", "softmax")


def _geometry(st, v):
    k = st.kw["window"]
    s = st.kw["stride"] or k
    rank = v.ndim - 2
    out = [(n - k) // s + 1 for n in v.shape[1:-1]]
    return k, s, rank, out


def _windows(xp, v, k, s, rank, out):
    """(B, *out, k^rank, C): the windows, from strided slices (no gather)."""
    if s == k:  # non-overlapping: a reshape
        b, c = v.shape[0], v.shape[-1]
        crop = v[(slice(None), *(slice(0, n * k) for n in out), slice(None))]
        shape = [b]
        for n in out:
            shape += [n, k]
        v6 = crop.reshape((*shape, c))
        order = [0, *(1 + 2 * i for i in range(rank)), *(2 + 2 * i for i in range(rank)), 1 + 2 * rank]
        return v6.transpose(order).reshape((b, *out, k**rank, c))
    cols = []
    for offset in np.ndindex(*(k,) * rank):
        sl = tuple(slice(o, o + s * (n - 1) + 1, s) for o, n in zip(offset, out))
        cols.append(v[(slice(None), *sl, slice(None))])
    return xp.stack(cols, axis=-2)


class Pool(OpKind):
    name = "pool"
    doc = "max, average or softmax pooling over k×k windows, per channel"
    paper = "Laborieux et al. 2021 (max), Laborieux & Zenke 2022 (softmax)"
    args = (
        Arg("mode", "choice", "the pooling: max, avg or softmax", None, choices=MODES),
        Arg("window", "int", "the window size k, for k×k windows", 2, minimum=1),
        Arg("stride", "int", "step between windows (default: the window size)", 0, minimum=1),
    )

    def is_linear(self, a) -> bool:
        return a["mode"] == "avg"

    def is_analytic(self, a) -> bool:
        return a["mode"] != "max"

    def out_shape(self, a, in_shape, post, last):
        k, s = a["window"], a["stride"] or a["window"]
        if len(in_shape) < 2:
            raise ShapeError(
                f"pooling needs a shaped input ([channels, height, width]), not {describe(in_shape)}",
                "pool the output of a convolution, or give the source population a shape",
            )
        if any(n < k for n in in_shape[1:]):
            raise ShapeError(f"the {k}×{k} pooling window is larger than its input {describe(in_shape)}",
                             "use a smaller window")
        return (in_shape[0], *((n - k) // s + 1 for n in in_shape[1:]))

    def flops(self, a, in_shape, out_shape):
        return math.prod(out_shape) * a["window"] ** (len(in_shape) - 1)

    def label(self, a):
        k = a["window"]
        text = f"{a['mode']}-pool {k}×{k}"
        if a["stride"] and a["stride"] != k:
            text += f" stride {a['stride']}"
        return text

    # ------------------------------------------------------------------ JAX --
    def apply(self, st, w, v):
        import jax
        import jax.numpy as jnp

        k, s, rank, out = _geometry(st, v)
        win = _windows(jnp, v, k, s, rank, out)
        mode = st.kw["mode"]
        if mode == "max":
            return jnp.max(win, axis=-2)
        if mode == "avg":
            return jnp.mean(win, axis=-2)
        return jnp.sum(win * jax.nn.softmax(win, axis=-2), axis=-2)

    # ---------------------------------------------------------------- NumPy --
    def numpy(self, st, w, v):
        k, s, rank, out = _geometry(st, v)
        win = _windows(np, v, k, s, rank, out)
        mode = st.kw["mode"]
        if mode == "max":
            return win.max(-2)
        if mode == "avg":
            return win.mean(-2)
        e = np.exp(win - win.max(-2, keepdims=True))
        return (win * e).sum(-2) / e.sum(-2)

    def numpy_vjp(self, st, w, v, ct):
        k, s, rank, out = _geometry(st, v)
        win = _windows(np, v, k, s, rank, out)
        mode = st.kw["mode"]
        if mode == "max":
            mask = win == win.max(-2, keepdims=True)
            dwin = mask / mask.sum(-2, keepdims=True) * ct[..., None, :]
        elif mode == "avg":
            dwin = np.broadcast_to(ct[..., None, :] / k**rank, win.shape)
        else:
            e = np.exp(win - win.max(-2, keepdims=True))
            p = e / e.sum(-2, keepdims=True)
            y = (win * p).sum(-2, keepdims=True)
            dwin = p * (1.0 + win - y) * ct[..., None, :]
        dv = np.zeros_like(v, dtype=float)
        for i, offset in enumerate(np.ndindex(*(k,) * rank)):
            sl = tuple(slice(o, o + s * (n - 1) + 1, s) for o, n in zip(offset, out))
            dv[(slice(None), *sl, slice(None))] += dwin[..., i, :]
        return dv, None
