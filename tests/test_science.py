"""Scientific checks of the compiled circuits, in float64.

Each test compares the compiler with something derived independently: the
NumPy reference simulator (`numpy_reference.py`, hand-derived forces), a plain
MLP differentiated by `jax.grad`, the EqProp theory (bias ∝ β, β², ...), or
the true gradient by implicit differentiation / BPTT. Circuits are small
random ones (sizes 3–10, batch 3–6) written out as .circ text; compiled models
are built once per module and their estimates cached, because compilation
dominates the runtime.
"""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import circuitlang as cl

from . import numpy_reference as ref


# ------------------------------------------------------------------ float64 --
pytestmark = pytest.mark.usefixtures("x64")  # every test here runs in float64


# ------------------------------------------------------------------ helpers --
def flat(tree, keys=None):
    keys = sorted(tree) if keys is None else keys
    return np.concatenate([np.asarray(tree[k], np.float64).ravel() for k in keys])


def cosine(a, b):
    va, vb = flat(a), flat(b, sorted(a))
    return float(va @ vb / np.linalg.norm(va) / np.linalg.norm(vb))


def rel_err(a, b):
    """|a − b| / |b| over the whole parameter vector."""
    va, vb = flat(a), flat(b, sorted(a))
    return float(np.linalg.norm(va - vb) / np.linalg.norm(vb))


def source(net, energy, learn, cost="squared", out="y", rho="sigmoid"):
    """The .circ text of a reference `Net` (the same circuit, written in the language)."""
    lines = [f"fn rho(v) = {rho}(v)"]
    for n, size in net.sizes.items():
        role = " input" if n in net.inputs else (" output" if n == out else "")
        act = "" if net.act[n] == rho else f" rho={net.act[n]}"
        lines.append(f"population {n} [{size}]{role}{act}")
    lines += [f"{a} -- {b} : {w}" for a, b, w in net.undirected]
    lines += [f"{a} -> {b} : {w}" + (" inhibitory" if sign < 0 else "") for a, b, w, sign in net.directed]
    if net.biased:
        lines.append("bias " + ", ".join(net.biased))
    lines += [f"energy {energy}", f"cost {out} {cost}", "learn eqprop {", *("  " + s for s in learn), "}"]
    return "\n".join(lines) + "\n"


def random_params(model, rng, scale, bias_scale=0.5):
    """Random weights N(0, scale²/fan_in) and biases N(0, bias_scale²), as (jax, numpy) dicts."""
    pnp = {}
    for k, shape in sorted(model.shapes.items()):
        shape = tuple(shape)
        if k.endswith(".bias"):
            pnp[k] = rng.normal(0.0, bias_scale, shape)
        else:
            pnp[k] = rng.normal(0.0, scale / np.sqrt(shape[1]), shape)
    return {k: jnp.asarray(v) for k, v in pnp.items()}, pnp


@dataclasses.dataclass
class Case:
    """One compiled random circuit with its data and a cache of estimates."""

    net: ref.Net
    text: str
    model: object
    params: dict
    pnp: dict
    x: np.ndarray
    y: np.ndarray
    energy: str
    cache: dict = dataclasses.field(default_factory=dict)

    def est(self, method, beta=None):
        key = (method, beta)
        if key not in self.cache:
            g = self.model.estimate(self.params, self.x, self.y, method=method, beta=beta)
            self.cache[key] = {k: np.asarray(v) for k, v in g.items()}
        return self.cache[key]

    @property
    def xd(self):
        return {self.net.inputs[0]: np.asarray(self.x)}


def sizes(rng, names, lo=3, hi=10):
    return {n: int(rng.integers(lo, hi + 1)) for n in names}


def make_case(net, energy, learn, rng, scale, cost="squared", rho="sigmoid", target="uniform"):
    text = source(net, energy, learn, cost=cost, rho=rho)
    model = cl.compile(cl.loads(text))
    params, pnp = random_params(model, rng, scale)
    B = int(rng.integers(3, 7))
    x = rng.uniform(-1.0, 1.0, (B, net.sizes[net.inputs[0]]))
    ny = net.sizes["y"]
    if target == "uniform":
        y = rng.uniform(0.0, 1.0, (B, ny))
    else:  # a probability vector per example (cross-entropy)
        z = np.exp(rng.normal(0, 1, (B, ny)))
        y = z / z.sum(-1, keepdims=True)
    return Case(net, text, model, params, pnp, jnp.asarray(x), jnp.asarray(y), energy)


LONG = ["phase free { steps 2000; dt 0.2 }", "phase nudge { steps 2000; dt 0.2; beta 0.01 }"]


@pytest.fixture(scope="module")
def layered(x64):
    """Hopfield, sigmoid, x — h1 — h2 — y with a skip coupling y — h1."""
    rng = np.random.default_rng(1)
    net = ref.Net(
        sizes=sizes(rng, ["x", "h1", "h2", "y"]), inputs=("x",),
        act={"x": "sigmoid", "h1": "sigmoid", "h2": "sigmoid", "y": "sigmoid"},
        undirected=[("h1", "x", "W1"), ("h2", "h1", "W2"), ("y", "h2", "W3"), ("y", "h1", "K")],
        biased=("h1", "h2", "y"),
    )
    return make_case(net, "hopfield", LONG + ["estimator holomorphic points=4"], rng, scale=2.0)


@pytest.fixture(scope="module")
def lateral(x64):
    """Hopfield, tanh, x — h — y with a lateral coupling h — h and a skip y — x."""
    rng = np.random.default_rng(2)
    net = ref.Net(
        sizes=sizes(rng, ["x", "h", "y"]), inputs=("x",),
        act={"x": "tanh", "h": "tanh", "y": "tanh"},
        undirected=[("h", "x", "W1"), ("h", "h", "L"), ("y", "h", "W2"), ("y", "x", "K")],
        biased=("h", "y"),
    )
    return make_case(net, "hopfield", LONG + ["estimator holomorphic points=2"], rng, scale=0.6, rho="tanh")


def predictive_net(rng):
    """x → h1 → h2 → y, an inhibitory skip x ⊣ h2, biases; tanh hidden, identity output."""
    return ref.Net(
        sizes=sizes(rng, ["x", "h1", "h2", "y"]), inputs=("x",),
        act={"x": "tanh", "h1": "tanh", "h2": "tanh", "y": "identity"},
        directed=[("x", "h1", "W1", 1), ("h1", "h2", "W2", 1), ("x", "h2", "S", -1), ("h2", "y", "W3", 1)],
        biased=("h1", "h2", "y"),
    )


PRED = ["phase free { forward }", "phase nudge { steps 3000; dt 0.1; beta 1e-5 }", "estimator one_sided"]


@pytest.fixture(scope="module")
def predictive(x64):
    rng = np.random.default_rng(3)
    return make_case(predictive_net(rng), "predictive", PRED, rng, scale=1.0, rho="tanh")


@pytest.fixture(scope="module")
def predictive_ce(x64):
    rng = np.random.default_rng(4)
    return make_case(predictive_net(rng), "predictive", PRED, rng, scale=1.0, rho="tanh",
                     cost="cross_entropy", target="probabilities")


def trajectory(case, phase, s0, beta=0.0):
    """The compiled Euler trajectory of `phase`: ({pop: (steps+1, B, n)}, energies (steps+1, B))."""
    key = ("trajectory", phase)
    if key not in case.cache:  # jitted once per case and phase; β and the start are arguments
        m = case.model
        case.cache[key] = jax.jit(lambda p, x, s0, b, y: m.relaxer.trajectory(phase, p, x, s0, b, y))
    traj, E = case.cache[key](case.params, case.xd, s0, beta, case.y)
    return {k: np.asarray(v) for k, v in traj.items()}, np.asarray(E)


def random_state(case, rng, scale=1.0):
    B = case.x.shape[0]
    return {n: rng.normal(0.0, scale, (B, case.net.sizes[n])) for n in case.net.free}


# ======================================================================= 1 --
@pytest.mark.parametrize("name", ["layered", "lateral"])
def test_symmetric_matches_true_gradient_at_small_beta(name, request):
    case = request.getfixturevalue(name)
    # the free phase has converged: the hand-derived force vanishes at the relaxed state
    zeros = {n: np.zeros((case.x.shape[0], s)) for n, s in case.net.sizes.items() if n in case.net.free}
    state = {k: np.asarray(v) for k, v in case.model.relax(case.params, case.x, zeros).items()}
    force = ref.hopfield_force(case.net, case.pnp, state)
    residual = max(np.abs(f).max() for f in force.values())
    print(f"{name}: max |dE/ds| at the free state = {residual:.2e}")
    assert residual < 1e-10
    sym = case.est("symmetric", 1e-3)
    for reference in ("gradient", "bptt"):
        c = cosine(sym, case.est(reference))
        print(f"{name}: cos(symmetric β=1e-3, {reference}) = {c:.12f}")
        assert c >= 0.9999


# ======================================================================= 2 --
BETAS = [1e-1, 3e-2, 1e-2, 3e-3]


def slope(betas, biases):
    return float(np.polyfit(np.log(betas), np.log(biases), 1)[0])


@pytest.mark.slow
def test_estimator_bias_scaling(layered):
    g = layered.est("gradient")
    bias = {m: np.array([rel_err(layered.est(m, b), g) for b in BETAS]) for m in ("one_sided", "symmetric", "holomorphic")}
    for m, v in bias.items():
        print(m, v, "slope", slope(BETAS, v))
    assert abs(slope(BETAS, bias["one_sided"]) - 1.0) <= 0.25
    assert abs(slope(BETAS, bias["symmetric"]) - 2.0) <= 0.25
    # holomorphic (N = 4 points on a circle) cancels the β² term too: smaller and shrinking faster
    assert np.all(bias["holomorphic"] < 0.1 * bias["symmetric"])
    assert slope(BETAS, bias["holomorphic"]) > slope(BETAS, bias["symmetric"]) + 1.0


def test_holomorphic_two_points_is_symmetric(lateral):
    for beta in (1e-1, 1e-2):
        holo, sym = lateral.est("holomorphic", beta), lateral.est("symmetric", beta)
        diff = max(np.abs(holo[k] - sym[k]).max() for k in sym)
        print("holomorphic points=2 vs symmetric", beta, diff)
        assert diff <= 1e-10


# ======================================================================= 3 --
@pytest.mark.parametrize("name", ["layered", "lateral"])
def test_implicit_gradient_equals_bptt(name, request):
    case = request.getfixturevalue(name)
    e = rel_err(case.est("gradient"), case.est("bptt"))
    print(name, "gradient vs bptt rel err", e)
    assert e <= 1e-6


# ======================================================================= 4 --
def mlp_loss(p, x, y, cost):
    """The feed-forward net the predictive circuit encodes, written out by hand."""
    h1 = jnp.tanh(x) @ p["W1"].T + p["h1.bias"][None, :]
    h2 = jnp.tanh(h1) @ p["W2"].T - jnp.tanh(x) @ p["S"].T + p["h2.bias"][None, :]
    out = jnp.tanh(h2) @ p["W3"].T + p["y.bias"][None, :]
    if cost == "squared":
        per = 0.5 * jnp.sum((out - y) ** 2, -1)
    else:
        per = -jnp.sum(y * jax.nn.log_softmax(out, -1), -1)
    return jnp.mean(per)


@pytest.mark.parametrize("name,cost", [("predictive", "squared"), ("predictive_ce", "cross_entropy")])
def test_predictive_coding_forward_phase_and_backprop(name, cost, request):
    case = request.getfixturevalue(name)
    m = case.model
    state = m.relax(case.params, case.x)
    free = {n: state[n] for n in m.free}
    E = float(jax.jit(m.fns.energy)(free, case.params, {"x": case.x}))
    print(name, "E at the forward fixed point", E)
    assert abs(E) <= 1e-12
    ff = ref.feedforward(case.net, case.pnp, case.xd)
    for n in case.net.free:
        np.testing.assert_allclose(np.asarray(state[n]), ff[n], rtol=0, atol=1e-12)
    bp = jax.jit(jax.grad(mlp_loss), static_argnums=3)(case.params, case.x, case.y, cost)
    bp = {k: np.asarray(v) for k, v in bp.items()}
    g = case.est("one_sided", 1e-5)
    e = rel_err(g, bp)
    print(name, "one_sided β=1e-5 vs backprop rel err", e, "cos", cosine(g, bp))
    assert e <= 1e-4
    # and the β → 0 limit is approached linearly: a 100× larger β is visibly biased
    e3 = rel_err(case.est("one_sided", 1e-3), bp)
    print(name, "one_sided β=1e-3 vs backprop rel err", e3)
    assert e3 > 10 * e


# ================================================================== 5 & 6 --
def small_dt_phase(case):
    """The circuit's Euler phase with a small step, for 200 steps (no `tol`)."""
    return dataclasses.replace(case.model.nudge_phase, steps=200, dt=0.05, tol=None)


@pytest.mark.parametrize("name", ["layered", "lateral", "predictive"])
def test_energy_never_increases_along_free_dynamics(name, request):
    case = request.getfixturevalue(name)
    s0 = random_state(case, np.random.default_rng(5))
    _, E = trajectory(case, small_dt_phase(case), s0, 0.0)
    inc = np.diff(E, axis=0)
    print(name, "E from", E[0], "to", E[-1], "max increase", inc.max())
    assert np.all(inc <= 1e-12)
    assert np.all(E[0] - E[-1] > 1e-2)  # the dynamics really moved


@pytest.mark.parametrize("name", ["layered", "lateral", "predictive"])
@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_numpy_reference_agrees_with_compiled_dynamics(name, beta, request):
    case = request.getfixturevalue(name)
    s0 = random_state(case, np.random.default_rng(6))
    ph = small_dt_phase(case)
    traj, E = trajectory(case, ph, s0, beta)
    cost = "cross_entropy" if "cross_entropy" in case.text else "squared"
    want = ref.euler(case.net, case.pnp, case.xd, s0, ph.dt, ph.steps, case.energy, beta=beta,
                     y=np.asarray(case.y), out="y", cost=cost, record=True)
    err = max(np.abs(traj[n][t] - want[t][n]).max() for t in range(ph.steps + 1) for n in case.net.free)
    print(name, beta, "max state difference along the trajectory", err)
    assert err <= 1e-10
    energies = np.stack([ref.ENERGIES[case.energy](case.net, case.pnp, {**case.xd, **st}) for st in want])
    assert np.abs(energies - E).max() <= 1e-10


def test_numpy_reference_agrees_with_relax(layered):
    """`Model.relax` from a random start, N Euler steps: the same state as NumPy's."""
    case = layered
    s0 = random_state(case, np.random.default_rng(7))
    got = case.model.relax(case.params, case.x, s0)
    ph = case.model.free_phase
    want = ref.euler(case.net, case.pnp, case.xd, s0, ph.dt, ph.steps, "hopfield")
    err = max(np.abs(np.asarray(got[n]) - want[n]).max() for n in case.net.free)
    print("relax vs numpy after", ph.steps, "steps:", err)
    assert err <= 1e-10


# ======================================================================= 7 --
@pytest.fixture(scope="module")
def chl_case(x64):
    """Hopfield x — h — y with a clamped phase: the β → ∞ limit of nudging a squared cost."""
    rng = np.random.default_rng(8)
    net = ref.Net(
        sizes=sizes(rng, ["x", "h", "y"]), inputs=("x",),
        act={"x": "sigmoid", "h": "sigmoid", "y": "sigmoid"},
        undirected=[("h", "x", "W1"), ("y", "h", "W2")],
        biased=("h", "y"),
    )
    learn = ["phase free { steps 2000; dt 0.2 }", "phase clamped { steps 4000; dt 0.02; clamp output }",
             "estimator chl"]
    return make_case(net, "hopfield", learn, rng, scale=2.0)


def test_chl_is_the_infinite_nudge_limit(chl_case):
    case = chl_case
    g = case.est("chl")
    assert set(g) == set(case.params)
    for k, v in g.items():
        assert v.shape == case.params[k].shape and np.all(np.isfinite(v))
    assert np.linalg.norm(flat(g)) > 1e-3
    # one_sided runs the same (second) phase nudged instead of clamped; its direction tends to CHL's
    cos = {b: cosine(case.est("one_sided", b), g) for b in (1.0, 10.0, 40.0)}
    print("cos(one_sided(β), chl)", cos)
    assert cos[40.0] > 0.9
    assert cos[40.0] > cos[1.0]


# ======================================================================= 8 --
DIVERGE = """\
fn rho(v) = sigmoid(v)
population x [3] input
population y [3] output
population h [4] rho=identity
h -- x : W1
h -- h : L
y -- x : W2
energy hopfield
cost y squared
learn eqprop {
  phase free { steps 1000; dt 0.5 }
  phase nudge { steps 10; dt 0.5; beta 0.1 }
}
"""


@pytest.fixture(scope="module")
def diverging(x64):
    """The free phase of DIVERGE with a huge lateral weight on h: h runs off to inf/NaN, y stays finite."""
    m = cl.compile(cl.loads(DIVERGE))
    p = {"W1": jnp.ones((4, 3)), "L": 50.0 * jnp.eye(4), "W2": jnp.ones((3, 3))}
    x = jnp.ones((2, 3))
    with pytest.raises(cl.CircuitRuntimeError) as info:
        m.relax_result(p, x)
    return m, p, x, info.value


def _line_of(text, prefix):
    return next(i for i, t in enumerate(text.splitlines(), 1) if t.strip().startswith(prefix))


def test_divergence_is_a_located_runtime_error(diverging):
    m, p, x, err = diverging
    print(err)
    names = re.findall(r"population `(\w+)`", err.message)
    assert len(names) == 1 and names[0] in m.free
    assert "non-finite" in err.message and "free" in err.message
    # the span points at the `population` line of the population the message names
    assert err.span is not None and err.span.line == _line_of(DIVERGE, f"population {names[0]} ")
    # the same circuit with a small lateral weight relaxes fine
    ok = m.relax_result({**p, "L": 0.1 * jnp.eye(4)}, x)
    assert int(ok.code) == 0


def test_divergence_names_the_population_that_diverged(diverging):
    m, p, x, err = diverging
    net = ref.Net(sizes={"x": 3, "y": 3, "h": 4}, inputs=("x",), act={"x": "sigmoid", "y": "sigmoid", "h": "identity"},
                  undirected=[("h", "x", "W1"), ("h", "h", "L"), ("y", "x", "W2")])
    zeros = {"y": np.zeros((2, 3)), "h": np.zeros((2, 4))}
    with np.errstate(all="ignore"):
        state = ref.euler(net, {k: np.asarray(v) for k, v in p.items()}, {"x": np.asarray(x)}, zeros, 0.5, 1000, "hopfield")
    assert not np.all(np.isfinite(state["h"])) and np.all(np.isfinite(state["y"]))
    assert re.findall(r"population `(\w+)`", err.message) == ["h"]
    assert err.span.line == _line_of(DIVERGE, "population h ")
    assert "population h [4]" in str(err)  # the excerpt of the source line is shown


TOL = """\
fn rho(v) = sigmoid(v)
population x [3] input
population h [5]
population y [2] output
h -- x : W1
y -- h : W2
bias h, y
energy hopfield
cost y squared
learn eqprop {
  phase free { steps 5; dt 0.1; tol 1e-12 }
  phase nudge { steps 10; dt 0.1; beta 0.1 }
  phase long { steps 20000; dt 0.2; tol 1e-9 }
}
"""


def test_tolerance_result_codes(x64):
    m = cl.compile(cl.loads(TOL))
    rng = np.random.default_rng(9)
    net = ref.Net(sizes={"x": 3, "h": 5, "y": 2}, inputs=("x",), act=dict.fromkeys("xhy", "sigmoid"),
                  undirected=[("h", "x", "W1"), ("y", "h", "W2")], biased=("h", "y"))
    p, pnp = random_params(m, rng, scale=2.0)
    x = rng.uniform(-1, 1, (4, 3))
    with pytest.raises(cl.CircuitRuntimeError) as info:
        m.relax_result(p, jnp.asarray(x))
    err = info.value
    print(err)
    assert "converge" in err.message and "free" in err.message
    assert err.span is not None and err.span.line == _line_of(TOL, "phase free")
    res = m.relax_result(p, jnp.asarray(x), phase="long")
    steps = int(res.steps)
    state = {k: np.asarray(v) for k, v in res.state.items()}
    force = max(np.abs(f).max() for f in ref.hopfield_force(net, pnp, state).values())
    print("tol 1e-9 reached after", steps, "of 20000 steps; residual force", force)
    assert int(res.code) == 0 and 0 < steps < 20000
    assert force < 1e-7


# ======================================================================= 9 --
@pytest.fixture(scope="module")
def proto(layered):
    learn = ["phase free { steps 1500; dt 0.5; integrator prototypical }",
             "phase nudge { steps 1500; dt 0.5; beta 0.001; integrator prototypical }",
             "estimator symmetric"]
    text = source(layered.net, "hopfield", learn)
    model = cl.compile(cl.loads(text))
    return dataclasses.replace(layered, text=text, model=model, cache={})


def test_prototypical_fixed_point_and_gradient(proto):
    case = proto
    zeros = {n: np.zeros((case.x.shape[0], s)) for n, s in case.net.sizes.items() if n in case.net.free}
    r = {n: np.asarray(v) for n, v in case.model.relax(case.params, case.x, zeros).items() if n in case.net.free}
    res = ref.rate_residual(case.net, case.pnp, case.xd, r)
    want = ref.prototypical(case.net, case.pnp, case.xd, zeros, 0.5, 1500)
    diff = max(np.abs(r[n] - want[n]).max() for n in r)
    print("prototypical: |r - rho(W r + b)| =", res, " vs numpy iteration", diff)
    assert res < 1e-10
    assert diff < 1e-10
    c = cosine(case.est("symmetric", 1e-3), case.est("gradient"))
    print("prototypical: cos(symmetric β=1e-3, gradient) =", c)
    assert c >= 0.999
