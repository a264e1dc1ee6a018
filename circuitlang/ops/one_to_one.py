"""`one_to_one` (`=>`): neuron i of the pre population drives neuron i of the post one.

    s1 => i1.soma gain=0.8       # fixed: i1 receives 0.8 ρ(s1)
    a => b : g                   # a learned gain per neuron, g ⊙ ρ(a)

Both ends have the same shape. The optional weight is one number per neuron,
in the compiled layout of the population (for a vector population: (|a|,)).
The connection's `gain` multiplies the drive, not the weight, so a local rule
on `g` is the per-synapse product it says (Σ over the batch of P ⊙ Q).
"""

from __future__ import annotations

import math

from ..layout import describe, internal
from .base import OpKind, ShapeError


class OneToOne(OpKind):
    name = "one_to_one"
    doc = "neuron i to neuron i (equal shapes); an optional weight per neuron"
    weighted = True  # when the connection names a weight; `a => b` alone has none
    arrows = ("=>",)
    written = False

    def out_shape(self, a, in_shape, post, last):
        if tuple(in_shape) != tuple(post):
            if len(in_shape) == len(post) == 1:
                message = (f"a one-to-one connection needs equal sizes, but {{source}} has {in_shape[0]} "
                           f"neurons and {{target}} {post[0]}")
            else:
                message = (f"a one-to-one connection needs equal shapes, but {{source}} is {describe(in_shape)} "
                           f"and {{target}} {describe(post)}")
            raise ShapeError(message, "use `->` with a weight for a full connection")
        return tuple(post)

    def weight_shape(self, a, in_shape, out_shape):
        return internal(out_shape)

    def flops(self, a, in_shape, out_shape):
        return 2 * math.prod(out_shape)

    def label(self, a):
        return "1:1"

    def apply(self, st, w, v):
        return v if w is None else v * w[None]

    def numpy(self, st, w, v):
        return v if w is None else v * w[None]

    def numpy_vjp(self, st, w, v, ct):
        if w is None:
            return ct, None
        return ct * w[None], (ct * v).sum(0)
