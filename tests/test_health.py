"""Convergence you can see: every phase's residual, training health, and a verify you can trust.

* the residual of a phase is the speed of its state at the end, checked
  against the hand-derived force of the NumPy reference simulator; it does not
  depend on dt, and `tol` stops a phase on it;
* `estimate(..., info=True)` says which relaxations converged, so a
  truncated free phase no longer yields an estimate without a word;
* `train` records residuals, convergence, saturation and update sizes every
  epoch, and warns (or stops) naming the phase or population and its line;
* `simulate` judges convergence by the residual (dt 0.02 no longer passes a
  state 3e-2 from its fixed point) and a divergence is an error, in the
  phase where it happened;
* `verify` sorts its β, marks the file's β, unconverged rows and vanishing
  references, names its second figure once, refuses NaN and always plots.
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import circuitlang as cl
from circuitlang import health
from circuitlang import verify as V
from circuitlang.data import load
from circuitlang.lower.relax import DEFAULT_TOL
from circuitlang.training import train

from . import numpy_reference as ref
from .conftest import ROOT

HOP = """\
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
  phase free  { steps STEPS; dt DT }
  phase nudge { steps 10; dt 0.1; beta 0.1 }
}
"""

NET = ref.Net(sizes={"x": 3, "h": 5, "y": 2}, inputs=("x",), act=dict.fromkeys("xhy", "sigmoid"),
              undirected=[("h", "x", "W1"), ("y", "h", "W2")], biased=("h", "y"))


def _model(steps, dt, text=HOP):
    return cl.compile(cl.loads(text.replace("STEPS", str(steps)).replace("DT", str(dt))))


def _params(m, seed=3, scale=2.0):
    rng = np.random.default_rng(seed)
    p = {k: rng.normal(0, scale / np.sqrt(max(v[-1] if len(v) > 1 else 1, 1)), v) for k, v in m.shapes.items()}
    return {k: jnp.asarray(v) for k, v in p.items()}, p


# ------------------------------------------------------------- residuals --
@pytest.mark.usefixtures("x64")
def test_residual_is_the_force_at_the_last_step():
    """residual = max |∂E/∂s| at the state one step before the end (Euler, no bounds): the
    hand-derived force of the reference simulator, per example."""
    m, m_before = _model(12, 0.3), _model(11, 0.3)
    p, pnp = _params(m)
    x = np.random.default_rng(0).uniform(-1, 1, (4, 3))
    res = m.relax_result(p, jnp.asarray(x))
    before = m_before.relax_result(p, jnp.asarray(x)).state
    state = {**{"x": x}, **{k: np.asarray(before[k]) for k in ("h", "y")}}
    force = ref.hopfield_force(NET, pnp, state)
    want = np.max(np.concatenate([np.abs(force[n]) for n in ("h", "y")], axis=1), axis=1)
    np.testing.assert_allclose(np.asarray(res.residual), want, rtol=1e-10)
    assert res.residual.shape == (4,)


@pytest.mark.usefixtures("x64")
def test_residual_does_not_depend_on_dt():
    """The same physical time (T = 3) at dt 0.005 and dt 0.05: the residuals agree to the
    Euler error, while max |Δs| of the last step (the old criterion) differs tenfold."""
    fine, coarse = _model(600, 0.005), _model(60, 0.05)
    p, _ = _params(fine)
    x = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (5, 3)))
    rf, rc = fine.relax_result(p, x), coarse.relax_result(p, x)
    np.testing.assert_allclose(np.asarray(rf.residual), np.asarray(rc.residual), rtol=0.1)
    assert float(jnp.max(rf.residual)) > 1e-3  # not trivially zero: T = 3 is mid-relaxation
    step = {dt: float(jnp.max(r.residual)) * dt for dt, r in ((0.005, rf), (0.05, rc))}
    assert step[0.05] > 8 * step[0.005]


@pytest.mark.usefixtures("x64")
def test_tol_stops_on_the_residual_and_reports_the_step():
    m = _model(20000, 0.2).circuit
    text = HOP.replace("STEPS", "20000").replace("DT", "0.2").replace("dt 0.2 }", "dt 0.2; tol 1e-6 }")
    m = cl.compile(cl.loads(text))
    p, pnp = _params(m)
    x = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, (3, 3)))
    res = m.relax_result(p, x)
    assert 0 < int(res.steps) < 20000 and bool(jnp.all(res.residual < 1e-6))
    assert bool(jnp.all(res.converged(m.free_phase)))
    # one step earlier it was not yet below tol: the loop stopped at the first step that met it
    early = cl.compile(cl.loads(text.replace("steps 20000", f"steps {int(res.steps) - 1}").replace("; tol 1e-6", "")))
    assert float(jnp.max(early.relax_result(p, x).residual)) >= 1e-6


@pytest.mark.usefixtures("x64")
def test_estimate_says_when_its_phases_did_not_converge():
    """A free phase of 30 steps: the one-sided estimate is far from the gradient, and
    `info` says the free phase did not converge; with enough steps it converged."""
    short, long_ = _model(3, 0.1), _model(3000, 0.1)
    p, _ = _params(short)
    rng = np.random.default_rng(4)
    x, y = jnp.asarray(rng.uniform(-1, 1, (4, 3))), jnp.asarray(rng.uniform(0, 1, (4, 2)))
    g, info = short.estimate(p, x, y, info=True)
    assert set(info) == {"free", "nudge"}
    bad = short.unconverged(info)
    assert "free" in bad and bad["free"][0] == 1.0 and bad["free"][1] > DEFAULT_TOL
    g2, info2 = long_.estimate(p, x, y, method="gradient", info=True)
    assert "free" not in long_.unconverged(info2)
    for method, labels in {"symmetric": {"free", "nudge+", "nudge-"}, "bptt": {"free"},
                           "holomorphic": {"free", "nudge@0", "nudge@1", "nudge@2", "nudge@3"}}.items():
        _, inf = short.estimate(p, x, y, method=method, info=True)
        assert set(inf) == labels, method
        assert all(r.residual.shape == (4,) for r in inf.values())


def test_exact_phases_have_zero_residual():
    m = cl.compile(cl.load(ROOT / "examples" / "predictive_coding.circ"))
    p = m.init(jax.random.key(0))
    x = jnp.asarray(load("digits").x_test[:3])
    _, r = m.relax(p, x, info=True)
    assert m.free_phase.forward and np.all(np.asarray(r.residual) == 0) and int(r.code) == 0


# ------------------------------------------------------------ training --
TRAIN = """\
fn rho(v) = clip(v, 0, 1)
population x [64] input
population h [32] min=0 max=1
population y [10] output min=0 max=1
h -- x : W1 init=glorot
y -- h : W2 init=glorot
bias h, y
energy hopfield
cost y squared
learn eqprop {
  phase free  { steps FREE; dt 0.5 }
  phase nudge { steps 4; dt 0.5; beta 0.5 }
  estimator symmetric
  optimizer sgd { lr 0.05 }
  batch 64
  HEALTH
}
"""


@pytest.fixture(scope="module")
def digits():
    return load("digits")


def _train(free, digits, health_line="", epochs=1, **kw):
    m = cl.compile(cl.loads(TRAIN.replace("FREE", str(free)).replace("HEALTH", health_line), path="net.circ"))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        result = train(m, digits, epochs, progress=False, **kw)
    return m, result, [w for w in seen if issubclass(w.category, health.HealthWarning)]


def test_metrics_carry_residuals_convergence_saturation_and_update_sizes(digits):
    m, result, _ = _train(40, digits)
    row = result.history[0]
    for key in ("free_residual_mean", "free_residual_max", "nudged_residual_mean", "nudged_residual_max",
                "converged", "converged.free", "converged.nudge+", "converged.nudge-",
                "saturated.h", "saturated.y", "update_ratio.W1", "update_ratio.W2", "update_ratio.h.bias"):
        assert key in row and np.isfinite(row[key]), key
    assert 0 <= row["converged"] <= min(row["converged.free"], row["converged.nudge+"]) <= 1
    assert row["free_residual_mean"] <= row["free_residual_max"]
    assert 0 <= row["saturated.h"] <= 1 and 0 < row["update_ratio.W1"] < 1


def test_unconverged_training_warns_once_naming_the_phase_and_its_line(digits):
    m, result, seen = _train(2, digits, epochs=2)
    assert result.history[0]["converged.free"] < health.CONVERGED_AT_LEAST
    free = [str(w.message) for w in seen if "free phase did not converge" in str(w.message)]
    assert len(free) == 1, [str(w.message) for w in seen]  # once, not once per epoch
    line = next(i for i, t in enumerate(TRAIN.splitlines(), 1) if "phase free" in t)
    assert re.match(rf"net\.circ:{line}:\d+: warning: epoch 1: the free phase did not converge for \d+% ", free[0])
    assert "raise `steps` (now 2)" in free[0]


def test_health_error_stops_and_ignore_is_silent(digits):
    with pytest.raises(cl.CircuitError, match="free phase did not converge"):
        _train(2, digits, "health error")
    _, result, seen = _train(2, digits, "health ignore")
    assert not seen and len(result.history) == 1


def test_converged_training_does_not_warn_about_the_free_phase(digits):
    _, result, seen = _train(200, digits)
    assert result.history[0]["converged.free"] >= health.CONVERGED_AT_LEAST
    assert not [w for w in seen if "free phase" in str(w.message)]


def test_a_saturated_population_and_a_collapse_are_named():
    m = cl.compile(cl.loads(TRAIN.replace("FREE", "10").replace("HEALTH", ""), path="net.circ"))
    row = {"epoch": 3, "saturated.h": 1.0, "saturated.y": 1.0, "converged.free": 1.0}
    found = health.problems(m, row, np.array([0, 0, 0, 360, 0, 0, 0, 0, 0, 0]))
    text = [health.render(m, p) for p in found]
    assert any("population `h` is fully saturated" in t and "net.circ:3:" in t for t in text), text
    assert not any("population `y`" in t for t in text)  # an output gets its error from the cost
    assert any("collapsed onto one class: 100% of the test examples are predicted as class 3" in t
               and "net.circ:4:" in t for t in text), text
    assert not health.problems(m, {"saturated.h": 0.5}, np.full(10, 36))


def test_saturation_counts_units_at_bounds_and_flat_slopes(digits):
    m = cl.compile(cl.loads(TRAIN.replace("FREE", "30").replace("HEALTH", "")))
    p = m.init(jax.random.key(0))
    big = {**p, "W1": 100.0 * p["W1"]}  # drives far outside [0, 1]: nearly every h unit at a bound
    x = m.as_inputs(jnp.asarray(digits.x_test[:50]))
    for params, lo, hi in ((p, 0.0, 0.9), (big, 0.95, 1.0)):
        free = m._free(params, x).state
        frac = float(health.saturation(m, params, x, free)["h"]) / (50 * 32)
        h = np.asarray(free["h"])
        assert frac == pytest.approx(np.mean((h <= 0) | (h >= 1)))
        assert lo <= frac <= hi


# ------------------------------------------------------------ simulate --
def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "circuitlang", *args], cwd=cwd, capture_output=True, text=True)


@pytest.mark.slow
def test_simulate_judges_by_the_residual_not_the_last_change(tmp_path):
    """At dt 0.005 the state moves little per step however far it is from its fixed point:
    stopped where its residual is between the tolerance and twice it, the last step moved
    it by less than 1e-4 (what the old criterion called converged), but the residual says
    it has not converged."""
    text = HOP.replace("DT", "0.005")
    m = cl.compile(cl.loads(text.replace("STEPS", "4000")))
    data = load("synthetic:in=3,out=2,n=20,test=4")
    x = m.as_inputs(jnp.asarray(data.x_test[:4], jnp.float32))  # as the command line computes,
    p = m.init(jax.random.key(0), jnp.float32)                   # even under another test's x64
    traj, _ = m.relaxer.trajectory(m.free_phase, p, x, m.zeros(x))
    speed = np.max([np.abs(np.diff(np.asarray(traj[n]), axis=0)).max(axis=(1, 2)) for n in ("h", "y")], axis=0) / 0.005
    steps = int(np.argmax(speed < 2 * DEFAULT_TOL)) + 1  # the first step whose residual is below 2 tol
    assert DEFAULT_TOL <= speed[steps - 1] < 2 * DEFAULT_TOL
    path = tmp_path / "net.circ"
    path.write_text(text.replace("STEPS", str(steps)))
    r = _cli("simulate", str(path), "--data", "synthetic:in=3,out=2,n=20,test=4", "--out", str(tmp_path / "sim"))
    assert r.returncode == 0, r.stderr
    free = re.search(r"^phase free: (NOT converged|converged): residual ([0-9.e+-]+)", r.stdout, re.M)
    assert free and free.group(1) == "NOT converged", r.stdout
    traces = np.load(tmp_path / "sim" / "traces.npz")
    last_change = max(np.abs(traces[f"free/{n}"][-1] - traces[f"free/{n}"][-2]).max() for n in ("h", "y"))
    assert last_change < 1e-4 and DEFAULT_TOL <= float(free.group(2))


@pytest.mark.slow
def test_simulate_divergence_is_an_error_in_the_phase_that_diverged(tmp_path):
    """The nudge (dt 50, β 1e30) makes the states non-finite; the free phase was fine."""
    r = _cli("simulate", "tests/circuits/tiny_hopfield.circ", "--out", str(tmp_path / "sim"),
             "--set", "phase.nudge.dt=50", "--set", "phase.nudge.beta=1e30")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert re.search(r"^phase free: (NOT )?converged", r.stdout, re.M)
    assert re.search(r"^phase nudge: DIVERGED", r.stdout, re.M)
    assert "became non-finite (NaN or inf) in phase `nudge`" in r.stderr
    assert "tiny_hopfield.circ:20:" in r.stderr


# -------------------------------------------------------------- verify --
@pytest.mark.usefixtures("x64")
def test_verify_sorts_marks_and_names_its_figures(tmp_path):
    m = _model(2, 0.5)  # a truncated free phase: every row is marked
    p, _ = _params(m)
    rng = np.random.default_rng(5)
    x, y = jnp.asarray(rng.uniform(-1, 1, (4, 3))), jnp.asarray(rng.uniform(0, 1, (4, 2)))
    lines = []
    rows = V.verify(m, p, x, y, betas=(0.01, 1.0, 0.001), report=lines.append)
    betas = list(dict.fromkeys(r["beta"] for r in rows))
    assert betas == [1.0, 0.1, 0.01, 0.001]  # sorted, the file's β 0.1 added
    assert all(r["file_beta"] == (r["beta"] == 0.1) for r in rows)
    assert not any(r["converged"] for r in rows)
    assert "free phase (the reference's fixed point)" in lines[1] and "NOT converged" in lines[1]
    table = V.format_table(rows, "one_sided")
    assert re.search(r"^\s+0\.1 .*\*  \(the file's β\)$", table, re.M) and "* computed from a phase" in table
    V.plot(rows, tmp_path / "v.png", "one_sided")
    assert (tmp_path / "v.png").stat().st_size > 1000


@pytest.mark.usefixtures("x64")
def test_verify_marks_a_vanishing_reference_and_refuses_nan(tmp_path):
    m = _model(2000, 0.5)
    p, _ = _params(m)
    x = jnp.asarray(np.random.default_rng(6).uniform(-1, 1, (3, 3)))
    free = m.relax(p, x)
    y = free["y"]  # targets = the circuit's own output: the true gradient is zero
    rows = V.verify(m, p, x, y, betas=(0.1,))
    assert all(r["tiny_reference"] and np.isnan(r["rel_error"]) for r in rows)
    assert "∇≈0" in V.format_table(rows, "one_sided")
    V.plot(rows, tmp_path / "v.png", "one_sided")  # nothing finite to draw: still a figure
    bad = {**p, "W2": p["W2"] * np.nan}
    with pytest.raises(cl.CircuitError, match="not finite"):
        V.verify(m, bad, x, jnp.ones((3, 2)), betas=(0.1,))


@pytest.mark.slow
def test_verify_cli_on_rules_calls_its_figure_size_ratio_everywhere(tmp_path):
    r = _cli("verify", "examples/stdp_eqprop.circ", "--betas", "0.5,0.1", "--samples", "4", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "size_ratio |g|/|∇|" in r.stdout and "rel_error" not in r.stdout
    with open(tmp_path / "verify.csv") as f:
        head = next(csv.reader(f))
    assert "size_ratio" in head and "rel_error" not in head and "converged" in head
    assert "residuals (" in r.stdout


@pytest.mark.slow
def test_verify_cli_nan_exits_1(tmp_path):
    r = _cli("verify", "tests/circuits/tiny_hopfield.circ", "--betas", "1e300", "--samples", "2",
             "--set", "phase.nudge.dt=1e3")
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "not finite" in r.stderr


@pytest.mark.slow
def test_simulate_writes_no_energy_for_a_vector_field(tmp_path):
    """A circuit without an energy has no `PHASE/energy` trace (it used to be all zeros)."""
    from circuitlang.simulate import simulate

    m = cl.compile(cl.load(ROOT / "examples" / "vector_field.circ"))
    d = load("digits")
    x, y = jnp.asarray(d.x_test[:2], jnp.float32), jnp.asarray(d.targets(d.y_test[:2]), jnp.float32)
    simulate(m, m.init(jax.random.key(0), jnp.float32), x, y, out=tmp_path)  # float32 under another test's x64
    names = np.load(tmp_path / "traces.npz").files
    assert names and not [n for n in names if n.endswith("/energy")]
    assert (tmp_path / "traces.png").stat().st_size > 10000
