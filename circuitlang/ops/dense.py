"""`dense`: every neuron of the pre population to every neuron of the post one.

    x -> h : W1                  # W1 has shape (|h|, |x|); the drive into h is W1 ρ(x)
    h -- x : W1                  # in an energy: −ρ(h)ᵀ W1 ρ(x)

It is the stage a weighted connection gets when no other weighted stage is
written, and it comes last in its chain (`h -> y : W pool(max, 2)` pools
`h`, then maps it densely). A shaped end is **flattened** in the compiled
order (height, width, channels), so a dense weight is always (|post|, |pre|).
"""

from __future__ import annotations

import math

from ..layout import internal
from .base import OpKind, ShapeError


class Dense(OpKind):
    name = "dense"
    doc = "a full weight matrix (|post|, |pre|); shaped ends are flattened"
    weighted = True
    written = False

    def out_shape(self, a, in_shape, post, last):
        if not last:
            raise ShapeError("a dense map comes last in its connection: its output is the target population",
                             "write pooling before the weight's dense map, or use `conv(...)`")
        return tuple(post)

    def weight_shape(self, a, in_shape, out_shape):
        return (math.prod(out_shape), math.prod(in_shape))

    def fans(self, a, in_shape, out_shape):
        return (math.prod(in_shape), math.prod(out_shape))

    def flops(self, a, in_shape, out_shape):
        return 2 * math.prod(in_shape) * math.prod(out_shape)

    def label(self, a):
        return "dense"

    def apply(self, st, w, v):
        b = v.shape[0]
        out = (v.reshape(b, -1) if v.ndim != 2 else v) @ w.T
        return out if len(st.out_shape) == 1 else out.reshape((b, *internal(st.out_shape)))

    def numpy(self, st, w, v):
        b = v.shape[0]
        return (v.reshape(b, -1) @ w.T).reshape((b, *internal(st.out_shape)))

    def numpy_vjp(self, st, w, v, ct):
        b = v.shape[0]
        ct = ct.reshape(b, -1)
        return (ct @ w).reshape(v.shape), ct.T @ v.reshape(b, -1)
