"""`conv(k, stride=1, padding=0)`: a convolution, the weight shared across positions.

    h1 -- x : K1 conv(5, padding=2) pool(max, 2)    # Laborieux et al. 2021's layer
    x -> h : K conv(3, stride=2, padding=same)

The pre population is `[C_in, H, W]` (or `[C_in, L]`, `[C_in, D, H, W]`); the
convolution produces `[C_out, H', W']` with H' = ⌊(H + 2p − k)/s⌋ + 1 and
C_out the channels of what the chain delivers to (the post population, through
any pooling after it). The kernel is `(k, k, C_in, C_out)` (compiled layout,
channels last); its fan-in is k·k·C_in and its fan-out k·k·C_out.

`padding=same` pads (k − 1)/2 on each side (odd k), so that with stride 1 the
output has the input's size. Like every deep-learning "convolution" it is a
cross-correlation: out[y, x, o] = Σ_(i, j, c) K[i, j, c, o] in[s·y + i − p, s·x + j − p, c].
In an energy its term is ⟨ρ(post), P(K ⋆ ρ(pre))⟩ (Laborieux et al. 2021); a
local rule `post-side × pre-side` on K is the correlation of the two factors
summed over positions and the batch — the sum over every synapse that shares
the kernel entry — computed as one VJP of the convolution.
"""

from __future__ import annotations

import math

import numpy as np

from ..layout import describe
from .base import Arg, OpKind, ShapeError

_SPATIAL = {1: "W", 2: "HW", 3: "DHW"}


def _dims(rank: int) -> tuple[str, str, str]:
    sp = _SPATIAL[rank]
    return ("N" + sp + "C", sp + "IO", "N" + sp + "C")


def _pad(a) -> int:
    p = a["padding"]
    return (a["kernel"] - 1) // 2 if p == "same" else int(p)


def _conv(a, spatial):
    """The convolution as a JAX function of (v, w) whose reverse-mode derivative with
    respect to v is `lax.conv_transpose(..., transpose_kernel=True)`: JAX's own
    transposed convolution, the adjoint the automatic rule computes too (they agree
    bit for bit, `tests/test_ops.py`). The automatic rule hands XLA the kernel as
    (k, k, C_out, C_in), which XLA:CPU convolves about 4× slower than the
    (k, k, C_in, C_out) layout `conv_transpose` produces (measured here: 102 vs 26 ms
    for 20 steps of a 5×5, 32→64-channel, 14×14 layer at batch 64). The kernel's
    cotangent is JAX's automatic one. (A `custom_vjp` has no forward-mode
    derivative: the lowering differentiates in reverse mode only.)
    """
    import jax
    from jax import lax

    k, s, p = a["kernel"], a["stride"], _pad(a)
    rank = len(spatial)
    dims = _dims(rank)
    back = [(k - 1 - p, k - 1 - p + (n + 2 * p - k) % s) for n in spatial]

    def forward(v, w):
        return lax.conv_general_dilated(v, w, (s,) * rank, [(p, p)] * rank, dimension_numbers=dims)

    @jax.custom_vjp
    def conv(v, w):
        return forward(v, w)

    def fwd(v, w):
        return forward(v, w), (v, w)

    def bwd(res, ct):
        v, w = res
        dv = lax.conv_transpose(ct, w, (s,) * rank, back, dimension_numbers=dims, transpose_kernel=True)
        _, kernel_vjp = jax.vjp(lambda kernel: forward(v, kernel), w)
        return dv, kernel_vjp(ct)[0]

    conv.defvjp(fwd, bwd)
    return conv


class Conv(OpKind):
    name = "conv"
    doc = "convolution (cross-correlation) with a k×k kernel shared across positions"
    paper = "Laborieux et al. 2021 (conv EqProp)"
    weighted = True
    args = (
        Arg("kernel", "int", "the kernel size k, for k×k kernels", None, minimum=1),
        Arg("stride", "int", "step between positions", 1, minimum=1),
        Arg("padding", "int_or_choice", "zeros added on each side, or `same`", 0, minimum=0, choices=("same",)),
    )

    def out_shape(self, a, in_shape, post, last):
        k, s, p = a["kernel"], a["stride"], _pad(a)
        if len(in_shape) not in (2, 3, 4):
            raise ShapeError(
                f"a convolution needs a shaped source ([channels, height, width]), not {describe(in_shape)}",
                "give the source population a shape like `[1, 28, 28]`",
            )
        if len(post) != len(in_shape):
            raise ShapeError(
                f"a convolution maps {describe(in_shape)} to a population of the same rank, "
                f"but the target is {describe(post)}",
                f"give the target a shape [channels, {', '.join('…' for _ in in_shape[1:])}]",
            )
        if a["padding"] == "same" and k % 2 == 0:
            raise ShapeError(f"`padding=same` needs an odd kernel size, not {k}", "write the padding as a number")
        spatial = []
        for n in in_shape[1:]:
            if n + 2 * p < k:
                raise ShapeError(
                    f"the {k}×{k} kernel is larger than the padded input ({n} + 2·{p})",
                    "use a smaller kernel or more padding",
                )
            spatial.append((n + 2 * p - k) // s + 1)
        return (post[0], *spatial)

    def weight_shape(self, a, in_shape, out_shape):
        return (*(a["kernel"],) * (len(in_shape) - 1), in_shape[0], out_shape[0])

    def fans(self, a, in_shape, out_shape):
        area = a["kernel"] ** (len(in_shape) - 1)
        return (area * in_shape[0], area * out_shape[0])

    def flops(self, a, in_shape, out_shape):
        return 2 * math.prod(out_shape) * a["kernel"] ** (len(in_shape) - 1) * in_shape[0]

    def label(self, a):
        k = a["kernel"]
        parts = [f"conv {k}×{k}"]
        if a["stride"] != 1:
            parts.append(f"stride {a['stride']}")
        if a["padding"] not in (0, "0"):
            parts.append(f"pad {a['padding']}")
        return " ".join(parts)

    # ------------------------------------------------------------------ JAX --
    def apply(self, st, w, v):
        return _conv(st.kw, v.shape[1:-1])(v, w)

    # ---------------------------------------------------------------- NumPy --
    def _patches(self, a, v):
        """(B, *out_spatial, k^r·C_in) patches of the zero-padded input, kernel-index major."""
        k, s, p = a["kernel"], a["stride"], _pad(a)
        rank = v.ndim - 2
        padded = np.pad(v, [(0, 0)] + [(p, p)] * rank + [(0, 0)])
        out = [(n + 2 * p - k) // s + 1 for n in v.shape[1:-1]]
        cols = []
        for offset in np.ndindex(*(k,) * rank):
            sl = tuple(slice(o, o + s * (n - 1) + 1, s) for o, n in zip(offset, out))
            cols.append(padded[(slice(None), *sl, slice(None))])
        return np.stack(cols, axis=-2).reshape(v.shape[0], *out, -1), out

    def numpy(self, st, w, v):
        cols, _ = self._patches(st.kw, v)
        return cols @ w.reshape(-1, w.shape[-1])

    def numpy_vjp(self, st, w, v, ct):
        a = st.kw
        k, s, p = a["kernel"], a["stride"], _pad(a)
        rank = v.ndim - 2
        cols, out = self._patches(a, v)
        c_in = v.shape[-1]
        dw = (cols.reshape(-1, cols.shape[-1]).T @ ct.reshape(-1, ct.shape[-1])).reshape(w.shape)
        dcols = (ct @ w.reshape(-1, w.shape[-1]).T).reshape(v.shape[0], *out, k**rank, c_in)
        padded = np.zeros((v.shape[0], *(n + 2 * p for n in v.shape[1:-1]), c_in))
        for i, offset in enumerate(np.ndindex(*(k,) * rank)):
            sl = tuple(slice(o, o + s * (n - 1) + 1, s) for o, n in zip(offset, out))
            padded[(slice(None), *sl, slice(None))] += dcols[..., i, :]
        inner = tuple(slice(p, p + n) for n in v.shape[1:-1])
        return padded[(slice(None), *inner, slice(None))], dw
