"""Connection operators (circuitlang/ops/): each kind against independent oracles.

* the NumPy versions (`numpy`, `numpy_vjp`, written without JAX) against
  finite differences of themselves;
* the JAX versions against the NumPy ones, forward and reverse;
* the convolution's adjoint (JAX's `conv_transpose`) against JAX's automatic
  transpose of the same convolution;
* max-pooling's derivative at ties: shared equally.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from circuitlang.graph import Stage
from circuitlang.ops import OPS

pytestmark = pytest.mark.usefixtures("x64")

CONVS = [  # (H, W, kernel, stride, padding)
    (6, 6, 3, 1, 1), (7, 5, 3, 2, 1), (8, 8, 4, 2, 1), (5, 5, 3, 1, 0), (6, 6, 3, 1, "same"), (4, 4, 2, 1, 2),
]
POOLS = [  # (H, W, mode, window, stride)
    (6, 6, "max", 2, 0), (7, 7, "max", 2, 0), (6, 6, "avg", 2, 0), (6, 6, "softmax", 2, 0),
    (7, 7, "max", 3, 2), (6, 6, "avg", 3, 1), (5, 5, "softmax", 2, 1),
]


def _conv_stage(h, w, k, s, p, c_in=2, c_out=3):
    op = OPS["conv"]
    a = {"kernel": k, "stride": s, "padding": p}
    out = op.out_shape(a, (c_in, h, w), (c_out, 1, 1), True)
    return Stage("conv", tuple(a.items()), (c_in, h, w), out), op


def _pool_stage(h, w, mode, k, s, c=2):
    op = OPS["pool"]
    a = {"mode": mode, "window": k, "stride": s}
    out = op.out_shape(a, (c, h, w), (c, 1, 1), True)
    return Stage("pool", tuple(a.items()), (c, h, w), out), op


def _compiled(shape):
    return (*shape[1:], shape[0])


def _fd_check(f, vjp_out, args, ct, which, eps=1e-6, tol=1e-7):
    """Central differences of ⟨ct, f(*args)⟩ along a random direction of args[which]."""
    rng = np.random.default_rng(1)
    d = rng.standard_normal(args[which].shape)
    plus = list(args)
    minus = list(args)
    plus[which] = args[which] + eps * d
    minus[which] = args[which] - eps * d
    fd = (np.sum(ct * f(*plus)) - np.sum(ct * f(*minus))) / (2 * eps)
    assert abs(fd - np.sum(vjp_out * d)) <= tol * max(1.0, abs(fd)), (fd, np.sum(vjp_out * d))


@pytest.mark.parametrize("h,w,k,s,p", CONVS)
def test_numpy_convolution_vjp_matches_finite_differences(h, w, k, s, p):
    st, op = _conv_stage(h, w, k, s, p)
    rng = np.random.default_rng(0)
    v = rng.standard_normal((2, *_compiled(st.in_shape)))
    K = rng.standard_normal(op.weight_shape(st.kw, st.in_shape, st.out_shape))
    ct = rng.standard_normal((2, *_compiled(st.out_shape)))
    dv, dK = op.numpy_vjp(st, K, v, ct)
    _fd_check(lambda v, K: op.numpy(st, K, v), dv, (v, K), ct, 0)
    _fd_check(lambda v, K: op.numpy(st, K, v), dK, (v, K), ct, 1)


@pytest.mark.parametrize("h,w,mode,k,s", POOLS)
def test_numpy_pooling_vjp_matches_finite_differences(h, w, mode, k, s):
    st, op = _pool_stage(h, w, mode, k, s)
    rng = np.random.default_rng(0)
    v = rng.standard_normal((2, *_compiled(st.in_shape)))  # continuous values: no ties
    ct = rng.standard_normal((2, *_compiled(st.out_shape)))
    dv, _ = op.numpy_vjp(st, None, v, ct)
    _fd_check(lambda v: op.numpy(st, None, v), dv, (v,), ct, 0)


@pytest.mark.parametrize("h,w,k,s,p", CONVS)
def test_jax_convolution_matches_numpy_forward_and_reverse(h, w, k, s, p):
    st, op = _conv_stage(h, w, k, s, p)
    rng = np.random.default_rng(2)
    v = rng.standard_normal((3, *_compiled(st.in_shape)))
    K = rng.standard_normal(op.weight_shape(st.kw, st.in_shape, st.out_shape))
    ct = rng.standard_normal((3, *_compiled(st.out_shape)))
    out, vjp = jax.vjp(lambda v, K: op.apply(st, K, v), jnp.asarray(v), jnp.asarray(K))
    np.testing.assert_allclose(out, op.numpy(st, K, v), rtol=0, atol=1e-12)
    dv, dK = vjp(jnp.asarray(ct))
    ndv, ndK = op.numpy_vjp(st, K, v, ct)
    np.testing.assert_allclose(dv, ndv, rtol=0, atol=1e-12)
    np.testing.assert_allclose(dK, ndK, rtol=0, atol=1e-11)


@pytest.mark.slow
@pytest.mark.parametrize("h,w,k,s,p", CONVS)
def test_convolution_adjoint_is_jaxs_own_transpose(h, w, k, s, p):
    """The operator's VJP (through `lax.conv_transpose`) equals JAX's automatic transpose
    of the plain convolution: the same linear map, with the kernel in XLA:CPU's fast layout."""
    st, op = _conv_stage(h, w, k, s, p)
    rng = np.random.default_rng(3)
    v = jnp.asarray(rng.standard_normal((2, *_compiled(st.in_shape))))
    K = jnp.asarray(rng.standard_normal(op.weight_shape(st.kw, st.in_shape, st.out_shape)))
    pad = (k - 1) // 2 if p == "same" else p

    def plain(v, K):
        return lax.conv_general_dilated(v, K, (s, s), [(pad, pad)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC"))

    ct = jnp.asarray(rng.standard_normal(plain(v, K).shape))
    auto = jax.vjp(plain, v, K)[1](ct)
    ours = jax.vjp(lambda v, K: op.apply(st, K, v), v, K)[1](ct)
    for a, b in zip(auto, ours):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    # and it composes: reverse over reverse (the implicit gradient), and complex values
    hess = jax.jacrev(jax.grad(lambda v: jnp.sum(jnp.tanh(op.apply(st, K, v)))))(v)
    ref = jax.jacrev(jax.grad(lambda v: jnp.sum(jnp.tanh(plain(v, K)))))(v)
    np.testing.assert_allclose(hess, ref, rtol=0, atol=1e-12)
    zc = v.astype(jnp.complex128) * (1 + 0.3j)
    g = jax.grad(lambda z: jnp.sum(jnp.tanh(op.apply(st, K.astype(zc.dtype), z))), holomorphic=True)(zc)
    gref = jax.grad(lambda z: jnp.sum(jnp.tanh(plain(z, K.astype(zc.dtype)))), holomorphic=True)(zc)
    np.testing.assert_allclose(g, gref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("h,w,mode,k,s", POOLS)
def test_jax_pooling_matches_numpy_forward_and_reverse(h, w, mode, k, s):
    st, op = _pool_stage(h, w, mode, k, s)
    rng = np.random.default_rng(4)
    v = rng.standard_normal((3, *_compiled(st.in_shape)))
    ct = rng.standard_normal((3, *_compiled(st.out_shape)))
    out, vjp = jax.vjp(lambda v: op.apply(st, None, v), jnp.asarray(v))
    np.testing.assert_allclose(out, op.numpy(st, None, v), rtol=0, atol=1e-12)
    np.testing.assert_allclose(vjp(jnp.asarray(ct))[0], op.numpy_vjp(st, None, v, ct)[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("stride", [0, 1])
def test_max_pooling_shares_its_derivative_equally_at_ties(stride):
    """At a tie the derivative is split equally among the tied positions (the average of
    the subgradients), whether the windows overlap or not, in JAX and in NumPy alike."""
    st, op = _pool_stage(2, 2, "max", 2, stride, c=1)
    v = np.array([[1.0, 1.0], [0.0, 1.0]]).reshape(1, 2, 2, 1)
    g = jax.grad(lambda v: jnp.sum(op.apply(st, None, v)))(jnp.asarray(v))
    np.testing.assert_allclose(np.ravel(g), [1 / 3, 1 / 3, 0, 1 / 3])
    np.testing.assert_allclose(np.ravel(op.numpy_vjp(st, None, v, np.ones((1, 1, 1, 1)))[0]), [1 / 3, 1 / 3, 0, 1 / 3])


def test_pooling_drops_what_fits_no_window_and_keeps_channels():
    st, op = _pool_stage(7, 5, "max", 2, 0, c=3)
    assert st.out_shape == (3, 3, 2)
    assert op.label(st.kw) == "max-pool 2×2"
    st, op = _pool_stage(7, 7, "avg", 3, 2, c=1)
    assert st.out_shape == (1, 3, 3) and op.label(st.kw) == "avg-pool 3×3 stride 2"


def test_operator_table_is_the_registry():
    """Every kind is one entry; what a file may write is derived from the table."""
    from circuitlang.ops import WRITTEN

    assert set(OPS) == {"dense", "one_to_one", "conv", "pool"}
    assert WRITTEN == ("conv", "pool")
    for name, op in OPS.items():
        assert op.name == name and op.doc
        assert callable(op.apply) and callable(op.numpy) and callable(op.numpy_vjp)
