"""Convolutional circuits end to end, against independent oracles (float64).

* the compiled relaxation against the NumPy reference simulator (its operator
  couplings use the operators' own NumPy versions, written without JAX);
* symmetric EqProp at small β against the true gradient (implicit
  differentiation), and that gradient against finite differences of the loss;
* every estimator on a conv + pool circuit; tied transposed convolutions in a
  vector field; `fixed` and `inhibitory` kernels;
* local rules on a kernel: a correlation (checked per synapse), the STDP rule
  telescoping to one-sided EqProp, and no batch × post × pre tensor.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import circuitlang as cl
from circuitlang import learning
from circuitlang.layout import internal
from circuitlang.ops.base import chain_apply, chain_numpy_vjp

from . import numpy_reference as ref

pytestmark = pytest.mark.usefixtures("x64")

CONV = """
fn rho(v) = sigmoid(4 * v - 2)
population x [2, 6, 6] input rho=identity
population h1 [3, 3, 3]
population h2 [4, 3, 3]
population y [5] output
h1 -- x : K1 conv(3, padding=1) pool(max, 2)
h2 -- h1 : K2 conv(3, padding=same)
y -- h2 : W3
bias h1, h2, y
energy hopfield
cost y squared
learn eqprop {
  phase free  { steps STEPS; dt 0.25 }
  phase nudge { steps STEPS; dt 0.25; beta 0.001 }
  estimator symmetric
  batch 3
}
"""


def circuit(steps=600, text=CONV, **over):
    return cl.compile(cl.loads(text.replace("STEPS", str(steps))), over)


def scaled_params(model, scale=2.5, seed=0):
    p = model.init(jax.random.key(seed), jnp.float64)
    return {k: v * scale if not k.endswith(".bias") else v + 0.2 for k, v in p.items()}


def data(model, n=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, model.fns.pops["x"].size))
    y = np.eye(5)[rng.integers(0, 5, n)]
    return x, y


def flat(d):
    return np.concatenate([np.ravel(np.asarray(d[k])) for k in sorted(d)])


def cosine(a, b):
    a, b = flat(a), flat(b)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def reference_net(model):
    """The circuit as the NumPy reference sees it: each coupling through its stages'
    NumPy forward map and NumPy VJP."""
    couplings = []
    for e in model.circuit.connections:
        st = e.stages

        def fwd(w, v, st=st):
            return chain_apply(st, w, v, xp="numpy")

        def vjp(w, v, ct, st=st):
            return chain_numpy_vjp(st, w, v, ct)

        couplings.append((e.post, e.pre, e.weight, fwd, vjp))
    pops = model.circuit.populations
    ACT = {"rho": "rho4", "identity": "identity"}
    ref.ACT.setdefault("rho4", (lambda v: ref._sigmoid(4 * v - 2),
                                lambda v: 4 * ref._sigmoid(4 * v - 2) * (1 - ref._sigmoid(4 * v - 2))))
    return ref.OpNet({n: internal(p.shape) for n, p in pops.items()}, ("x",),
                     {n: ACT[p.activation] for n, p in pops.items()}, couplings,
                     tuple(n for n, p in pops.items() if p.bias))


def relaxations(model, params, x, y, steps=60, beta=0.5):
    """(compiled, NumPy reference) free states, then nudged ones from there, by Euler steps."""
    xs = model.as_inputs(x)
    net = reference_net(model)
    p = {k: np.asarray(v) for k, v in params.items()}
    s0 = {n: np.zeros((len(x), *model.shape_of(n))) for n in model.free}
    xx = {"x": np.asarray(xs["x"])}
    want = ref.op_euler(net, p, xx, s0, 0.25, steps)
    got = model.relaxer.run(model.free_phase, params, xs, model.zeros(xs)).state
    want_b = ref.op_euler(net, p, xx, want, 0.25, steps, beta=beta, y=y, out="y")
    got_b = model.relaxer.run(model.nudge_phase, params, xs, {n: got[n] for n in model.free}, beta,
                              jnp.asarray(y)).state
    return (got, want), (got_b, want_b)


def finite_difference(model, params, x, y, eps=1e-5, seed=5):
    """(central difference of the loss along a random direction d, ⟨gradient, d⟩)."""
    true = model.estimate(params, x, y, method="gradient")
    rng = np.random.default_rng(seed)
    d = {k: rng.standard_normal(v.shape) for k, v in params.items()}
    lp = float(model.loss({k: params[k] + eps * d[k] for k in params}, x, y))
    lm = float(model.loss({k: params[k] - eps * d[k] for k in params}, x, y))
    return (lp - lm) / (2 * eps), sum(float(np.sum(np.asarray(true[k]) * d[k])) for k in params)


# ------------------------------------------------------------ exactness --
@pytest.mark.slow
def test_relaxation_matches_the_numpy_reference_simulator():
    model = circuit(steps=60)
    params = scaled_params(model)
    x, y = data(model)
    xs = model.as_inputs(x)
    (got, want), (got_b, want_b) = relaxations(model, params, x, y)
    for n in model.free:
        np.testing.assert_allclose(got[n], want[n], rtol=0, atol=1e-9)
        np.testing.assert_allclose(got_b[n], want_b[n], rtol=0, atol=1e-9)  # nudged, from the free state
    net = reference_net(model)
    p = {k: np.asarray(v) for k, v in params.items()}
    # the energy itself
    full = {**{"x": np.asarray(xs["x"])}, **want}
    E = model.fns.energy({n: jnp.asarray(want[n]) for n in model.free}, params, xs)
    assert abs(float(E) - float(np.sum(ref.op_energy(net, p, full)))) < 1e-9


@pytest.mark.slow
def test_prototypical_relaxation_and_symmetric_update_match_the_numpy_reference():
    text = CONV.replace("dt 0.25 }", "dt 1; integrator prototypical }").replace("dt 0.25;", "dt 1; integrator prototypical;")
    text = text.replace("beta 0.001", "beta 0.5")
    model = circuit(steps=25, text=text)
    params = scaled_params(model, 1.0)
    x, y = data(model)
    xs = model.as_inputs(x)
    net = reference_net(model)
    p = {k: np.asarray(v) for k, v in params.items()}
    r0 = {n: np.zeros((3, *model.shape_of(n))) for n in model.free}
    xx = {"x": np.asarray(xs["x"])}
    free = ref.op_prototypical(net, p, xx, r0, 25)
    got = model.relaxer.run(model.free_phase, params, xs, model.zeros(xs)).state
    for n in model.free:
        np.testing.assert_allclose(got[n], free[n], rtol=0, atol=1e-9)
    plus = ref.op_prototypical(net, p, xx, free, 25, 0.5, y, "y")
    minus = ref.op_prototypical(net, p, xx, free, 25, -0.5, y, "y")
    gp = ref.op_weight_gradient(net, p, {**xx, **plus})
    gm = ref.op_weight_gradient(net, p, {**xx, **minus})
    want = {k: (gp[k] - gm[k]) / (2 * 0.5 * 3) for k in gp}
    est = model.estimate(params, x, y, method="symmetric")
    for k in want:
        np.testing.assert_allclose(est[k], want[k], rtol=0, atol=1e-9)


FREE_MAX = (CONV.replace("population h1 [3, 3, 3]", "population h1 [3, 6, 6]")
            .replace("h1 -- x : K1 conv(3, padding=1) pool(max, 2)", "h1 -- x : K1 conv(3, padding=1)")
            .replace("h2 -- h1 : K2 conv(3, padding=same)", "h2 -- h1 : K2 conv(3, padding=same) pool(max, 2)"))


@pytest.mark.slow
@pytest.mark.parametrize("text", [CONV, FREE_MAX], ids=["pool on the input", "pool on a free layer"])
def test_symmetric_eqprop_matches_the_true_gradient_at_small_beta(text):
    model = circuit(text=text)
    params = scaled_params(model)
    x, y = data(model)
    g = model.estimate(params, x, y, method="symmetric", beta=1e-3)
    true = model.estimate(params, x, y, method="gradient")
    assert cosine(g, true) >= 0.9999
    for k in true:  # weight by weight, including the kernels behind the max-pooling
        assert cosine({k: g[k]}, {k: true[k]}) >= 0.9999, k


@pytest.mark.slow
def test_the_true_gradient_matches_finite_differences_of_the_loss():
    model = circuit(steps=3000)
    params = scaled_params(model)
    x, y = data(model)
    fd, directional = finite_difference(model, params, x, y)
    assert abs(fd - directional) <= 1e-6 * max(1.0, abs(fd)), (fd, directional)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["one_sided", "random_sign", "symmetric", "chl", "bptt", "holomorphic"])
def test_every_estimator_runs_on_a_conv_circuit(method):
    text = CONV.replace("pool(max, 2)", "pool(softmax, 2)") if method == "holomorphic" else CONV
    if method == "holomorphic":
        text = text.replace("estimator symmetric", "estimator holomorphic points=4")
    model = circuit(steps=1500, text=text)
    params = scaled_params(model)
    x, y = data(model)
    g = model.estimate(params, x, y, method=method)
    assert {k: v.shape for k, v in g.items()} == {k: v.shape for k, v in params.items()}
    assert all(np.all(np.isfinite(v)) for v in g.values())
    if method != "chl":  # CHL clamps the output instead of nudging it: a different update
        true = model.estimate(params, x, y, method="gradient")
        assert cosine(g, true) > 0.999, method


def test_holomorphic_refuses_max_pooling_with_a_located_error():
    text = CONV.replace("estimator symmetric", "estimator holomorphic points=4")
    with pytest.raises(cl.CircuitError, match="not analytic") as info:
        cl.loads(text.replace("STEPS", "5"))
    assert info.value.diagnostics[0].span.line == 7  # the pooled connection (the text starts with a newline)


# --------------------------------------------------------- vector fields --
TIED = """
population x [1, 5, 5] input
population h [3, 5, 5]
population g [2, 2, 2]
population y [4] output
x -> h : K1 conv(3, padding=1)
h -> g : K2 conv(3, padding=1) pool(POOL, 2)
g -> h : B2 = transpose(K2)
g -> y : W3
y -> g : B3 = transpose(W3)
bias h, g, y
dynamics leaky
cost y squared
learn eqprop { phase free { steps 2000; dt 0.1 }; phase nudge { steps 2000; dt 0.1; beta 0.001 }; estimator symmetric }
"""


@pytest.mark.slow
def test_tied_transposed_convolutions_make_the_vector_field_a_gradient():
    """With identity rates and feedback tied to the transposed forward operator, the leaky
    vector field is the gradient of an energy, so generalized EqProp (Scellier et al. 2018)
    gives the true gradient as β → 0."""
    model = cl.compile(cl.loads(TIED.replace("POOL", "avg")))
    params = model.init(jax.random.key(1), jnp.float64)
    params = {k: 0.5 * v for k, v in params.items()}
    rng = np.random.default_rng(0)
    x = rng.random((2, 25))
    y = np.eye(4)[[1, 3]]
    g = model.estimate(params, x, y)
    true = model.estimate(params, x, y, method="gradient")
    assert cosine(g, true) > 0.9999
    # the tie carries no array of its own and gets no update
    assert "B2" not in params and "B3" not in params


@pytest.mark.slow
def test_a_tied_transpose_through_max_pooling_is_the_vjp_at_the_current_state():
    """Max-pooling is not linear: `B2 = transpose(K2)` sends back the VJP of K2's chain,
    linearised at the state of the population the chain reads (h). (With identity rates
    this vector field can settle into a 2-cycle across a change of the pooled winner, so
    its update is not compared with the gradient here; an energy's gradient flow does
    settle, see `test_symmetric_eqprop_matches_the_true_gradient_at_small_beta`.)"""
    model = cl.compile(cl.loads(TIED.replace("POOL", "max")))
    params = model.init(jax.random.key(1), jnp.float64)
    rng = np.random.default_rng(2)
    rates = {"h": jnp.asarray(rng.random((2, 5, 5, 3))), "g": jnp.asarray(rng.random((2, 2, 2, 2)))}
    W = model.fns.wiring
    b2, k2 = model.circuit.weights["B2"], model.circuit.weights["K2"]
    sent = W.drive(b2, params, rates)
    _, vjp = jax.vjp(lambda h: W.drive(k2, params, {**rates, "h": h}), rates["h"])
    np.testing.assert_allclose(sent, vjp(rates["g"])[0], rtol=0, atol=1e-12)


@pytest.mark.slow
def test_fixed_and_inhibitory_kernels():
    text = CONV.replace("h1 -- x : K1 conv(3, padding=1) pool(max, 2)",
                        "h1 -- x : K1 conv(3, padding=1) pool(max, 2) fixed inhibitory")
    model = circuit(steps=200, text=text)
    params = scaled_params(model)
    x, y = data(model)
    g = model.estimate(params, x, y)
    assert np.all(np.asarray(g["K1"]) == 0) and np.any(np.asarray(g["K2"]) != 0)
    plain = circuit(steps=200)
    s_inh = model.relax(params, x)
    s_neg = plain.relax({**params, "K1": -params["K1"]}, x)  # max-pooling is not linear:
    assert not np.allclose(s_inh["h1"], s_neg["h1"])          # −P(K ⋆ v) ≠ P(−K ⋆ v)
    drive = model.fns.wiring.drive(model.circuit.weights["K1"], params, {"x": model.as_inputs(x)["x"]})
    direct = -chain_apply(model.circuit.weights["K1"].stages, params["K1"], model.as_inputs(x)["x"])
    np.testing.assert_allclose(drive, direct, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- rules --
RULES = """
fn rho(v) = sigmoid(4 * v - 2)
population x [2, 5, 5] input
population h [3, 5, 5] min=0 max=1
population y [4] output min=0 max=1
h -- x : K conv(3, padding=1)
y -- h : W
energy hopfield
cost y squared
learn rules {
  phase free  { steps 40; dt 0.2 }
  phase nudge { steps 40; dt 0.2; beta 0.5 }
  during nudge for K, W: dA/dt = d(rho(post.s))/dt * rho(pre.s)
}
"""


def test_a_rule_on_a_kernel_is_the_correlation_of_its_two_sides():
    """Per synapse: ΔK[i, j, c, o] = Σ_(batch, y, x) P[b, y, x, o] Q[b, y + i − p, x + j − p, c],
    the sum over every synapse that shares the kernel entry, computed here by loops."""
    model = cl.compile(cl.loads(RULES))
    params = model.init(jax.random.key(0), jnp.float64)
    e = model.circuit.weights["K"]
    rng = np.random.default_rng(0)
    P = rng.standard_normal((2, 5, 5, 3))
    Q = rng.standard_normal((2, 5, 5, 2))
    got = np.asarray(model.fns.wiring.weight_update(e, params, jnp.asarray(P), jnp.asarray(Q)))
    want = np.zeros((3, 3, 2, 3))
    Qp = np.pad(Q, ((0, 0), (1, 1), (1, 1), (0, 0)))
    for i in range(3):
        for j in range(3):
            for c in range(2):
                for o in range(3):
                    for b in range(2):
                        for yy in range(5):
                            for xx in range(5):
                                want[i, j, c, o] += P[b, yy, xx, o] * Qp[b, yy + i, xx + j, c]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)


@pytest.mark.slow
def test_stdp_rule_on_a_kernel_integrates_to_one_sided_eqprop():
    """d(ρ(post))/dt · ρ(pre) applied to both ends of the coupling telescopes to
    β × the one-sided EqProp update: exactly, for a convolution as for a matrix."""
    model = cl.compile(cl.loads(RULES))
    params = model.init(jax.random.key(0), jnp.float64)
    params = {k: 1.5 * v for k, v in params.items()}
    rng = np.random.default_rng(1)
    x = rng.random((2, 50))
    y = np.eye(4)[[0, 2]]
    rules = model.estimate(params, x, y, method="rules")
    eqprop = model.estimate(params, x, y, method="one_sided")
    for k in ("K", "W"):
        np.testing.assert_allclose(np.asarray(rules[k]), 0.5 * np.asarray(eqprop[k]), rtol=1e-10, atol=1e-12)


def test_kernel_rules_build_no_batch_by_post_by_pre_tensor():
    model = cl.compile(cl.loads(RULES))
    params = model.init(jax.random.key(0))
    B = 8
    x = jnp.zeros((B, 50))
    y = jnp.zeros((B, 4))
    jaxpr = jax.make_jaxpr(lambda p: learning.estimate(model, p, model.as_inputs(x), y, "rules"))(params)
    limit = B * 75 * 50  # batch × |post| × |pre| of K
    sizes = [int(np.prod(v.aval.shape)) for eqn in jaxpr.jaxpr.eqns for v in eqn.outvars if hasattr(v.aval, "shape")]
    assert max(sizes) < limit


# ---------------------------------------------------------- shapes in general --
@pytest.mark.slow
def test_shaped_one_to_one_and_per_neuron_biases():
    text = """
population x [2, 3, 3] input
population h [2, 3, 3]
population y [3] output
x => h : g gain=0.5
h -> y : W
bias h per=neuron
bias y
dynamics leaky
cost y squared
learn eqprop { phase free { steps 400; dt 0.1 }; phase nudge { steps 400; dt 0.1; beta 0.001 }; estimator symmetric }
"""
    model = cl.compile(cl.loads(text))
    assert model.shapes == {"g": (3, 3, 2), "W": (3, 18), "h.bias": (3, 3, 2), "y.bias": (3,)}
    params = model.init(jax.random.key(0), jnp.float64)
    params = {k: v + 0.3 for k, v in params.items()}
    rng = np.random.default_rng(0)
    x = rng.random((2, 18))
    s = model.relax(params, x)
    assert s["h"].shape == (2, 2, 3, 3)  # returned as written: (batch, C, H, W)
    # the fixed point: h = 0.5 g ⊙ x + b_h, in the written layout
    xs = x.reshape(2, 2, 3, 3)
    g = np.asarray(params["g"]).transpose(2, 0, 1)
    b = np.asarray(params["h.bias"]).transpose(2, 0, 1)
    np.testing.assert_allclose(s["h"], 0.5 * g * xs + b, atol=1e-9)
    y = np.eye(3)[[0, 1]]
    g, true = model.estimate(params, x, y), model.estimate(params, x, y, method="gradient")
    # nothing feeds back into h, so only W and y's bias learn, and they follow the gradient
    assert cosine({k: g[k] for k in ("W", "y.bias")}, {k: true[k] for k in ("W", "y.bias")}) > 0.9999


def test_dense_between_shaped_and_flat_populations_flattens_channels_last():
    circ = cl.loads("""
population x [2, 2, 3] input
population y [4] output
x -> y : W
dynamics leaky
cost y squared
learn eqprop { phase free { steps 600; dt 0.1 }; phase nudge { steps 5; dt 0.1; beta 0.1 } }
""")
    model = cl.compile(circ)
    assert model.shapes["W"] == (4, 12)
    params = model.init(jax.random.key(0), jnp.float64)
    x = np.arange(24.0).reshape(2, 12) / 24  # flat rows in the written order (C, H, W)
    s = model.relax(params, x)
    compiled = x.reshape(2, 2, 2, 3).transpose(0, 2, 3, 1).reshape(2, 12)  # (H, W, C) order
    np.testing.assert_allclose(s["y"], compiled @ np.asarray(params["W"]).T, atol=1e-6)


CELLS = """
neuron pyr { compartment basal, apical; ds/dt = -s + basal + apical }
population x [1, 6, 6] input
population h : pyr [2, 6, 6]
population g [2, 6, 6]
population y [3] output
x -> h.basal : K conv(3, padding=1)
h -> g : K2 conv(3, padding=1)
g -> h.apical : K3 conv(3, padding=1) fixed init=normal(0.1)
h -> y : W
cost y squared
learn rules {
  phase free  { steps 30; dt 0.2 }
  phase nudge { steps 30; dt 0.2; beta 0.5 }
  during nudge for K: dA/dt = post.apical * pre.rate
  during nudge: dW/dt = (post.target - post.s) * pre.rate
}
"""


@pytest.mark.slow
def test_convolutions_into_cell_compartments_with_local_rules():
    """A kernel feeding a compartment of shaped cells, a fixed feedback kernel into the
    apical one, and a rule on the kernel reading the apical compartment."""
    model = cl.compile(cl.loads(CELLS))
    assert model.lowering == "cells"
    params = model.init(jax.random.key(0), jnp.float64)
    rng = np.random.default_rng(0)
    x = rng.random((2, 36))
    y = np.eye(3)[[0, 2]]
    g = model.estimate(params, x, y)
    assert set(g) == {"K", "K2", "K3", "W"}
    assert np.any(np.asarray(g["K"]) != 0) and np.all(np.asarray(g["K3"]) == 0)
    assert np.all(np.asarray(g["K2"]) == 0)  # no rule for K2
    # the apical compartment sees the fixed feedback kernel applied to g's rates
    s = model.relax_result(params, x).state
    seen = model.fns.force({k: s[k] for k in model.state_keys}, params, model.as_inputs(x), observe=True)[1]
    want = chain_apply(model.circuit.weights["K3"].stages, params["K3"], s["g"])
    np.testing.assert_allclose(seen["h"]["apical"], want, atol=1e-12)


def test_a_kernel_shared_by_two_connections():
    """`= K` evaluates one kernel on two connections whose ends have the same shapes."""
    text = """
population x [1, 5, 5] input
population a [2, 5, 5]
population b [1, 5, 5]
population c [2, 5, 5]
population y [2] output
x -> a : K conv(3, padding=1)
b -> c : K2 = K
a -> y : W
dynamics leaky
cost y squared
"""
    model = cl.compile(cl.loads(text))
    assert "K2" not in model.shapes and model.circuit.weights["K2"].stages == model.circuit.weights["K"].stages
    with pytest.raises(cl.CircuitError, match="shape mismatch"):
        cl.loads(text.replace("population b [1, 5, 5]", "population b [2, 5, 5]"))
