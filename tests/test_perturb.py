"""Perturbations (`perturb` statements, `lower/perturb.py`) against hand-computed oracles,
and `circuitc experiment` end to end."""

from __future__ import annotations

import csv

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import circuitlang as cl
from circuitlang.cli import main
from circuitlang.lower.perturb import mask_of

from .conftest import ROOT

# a linear leaky population h: tau dh/dt = -h + W1 x (+ I); its fixed point is W1 x (+ I)
LINEAR = """
neuron cell {
  compartment dendrite
  ds/dt = -s + dendrite
}
population x [3] input rho=identity
population h [8] rho=identity
population c : cell [8] rho=sigmoid
population y [2] output rho=identity
x -> h : W1
h -> y : W2
x -> c.dendrite : W3
cost y squared
learn rules {
  phase free  { steps 400; dt 0.1 }
  phase nudge { steps 40;  dt 0.1; beta 1 }
  during nudge: dW2/dt = (post.target - post.s) * pre.rate
}
perturb add_h : h add 0.5 during free
perturb add_half : h add 0.5 during free fraction=0.5 seed=7
perturb quiet : h silence during free
perturb hold : h clamp 0.3 during free[100:400]
perturb louder : h gain 2 during free
perturb dend : c.dendrite add -0.25 during free
perturb dend_clamp : c.dendrite clamp 2 during free
perturb late : h add 1 during free[390:400]
"""


@pytest.fixture(scope="module")
def linear():
    circ = cl.loads(LINEAR, "linear.circ")
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 3)), jnp.float32)
    model = cl.compile(circ)
    params = model.init(jax.random.key(1))
    base = model.relax_result(params, x, layout="written").state

    def perturbed(*names):
        m = cl.compile(circ, {f"perturb.{n}": "on" for n in names})
        return m, m.relax_result(params, x, layout="written").state

    return circ, x, params, base, perturbed


def test_off_by_default(linear):
    circ, x, params, base, _ = linear
    assert not cl.compile(circ).fns.perturb  # nothing compiled in
    assert {p.name for p in circ.spec.perturbations} >= {"add_h", "quiet"}
    assert not any(p.enabled for p in circ.spec.perturbations)


def test_add_shifts_the_fixed_point_by_current_over_leak(linear):
    _, _, params, base, perturbed = linear
    _, st = perturbed("add_h")
    np.testing.assert_allclose(st["h"] - base["h"], 0.5, atol=1e-5)  # leak 1: shift = I / 1
    # y reads h linearly: its shift is W2 @ (0.5, ..., 0.5)
    np.testing.assert_allclose(st["y"] - base["y"], np.broadcast_to(0.5 * np.asarray(params["W2"]).sum(1), (5, 2)),
                               atol=1e-4)


def test_fraction_mask_is_seeded_and_reproducible(linear):
    circ, _, _, base, perturbed = linear
    m, st = perturbed("add_half")
    spec = next(p for p in circ.spec.perturbations if p.name == "add_half")
    mask = mask_of(spec, circ.populations["h"])[0]
    assert mask.sum() == 4  # round(0.5 * 8)
    np.testing.assert_array_equal(mask, mask_of(spec, circ.populations["h"])[0])
    np.testing.assert_array_equal(mask, np.isin(np.arange(8), np.random.default_rng(7).permutation(8)[:4]))
    shift = np.asarray(st["h"] - base["h"])
    np.testing.assert_allclose(shift[:, mask], 0.5, atol=1e-5)
    np.testing.assert_allclose(shift[:, ~mask], 0.0, atol=1e-6)
    other = mask_of(dataclass_replace(spec, seed=8), circ.populations["h"])[0]
    assert not np.array_equal(mask, other)


def dataclass_replace(obj, **kw):
    import dataclasses

    return dataclasses.replace(obj, **kw)


def test_silence_holds_at_rest_and_transmits_nothing(linear):
    _, _, params, base, perturbed = linear
    _, st = perturbed("quiet")
    np.testing.assert_array_equal(np.asarray(st["h"]), 0.0)
    # y's only input is h: with h silent it relaxes to 0 (its bias-free leak)
    np.testing.assert_allclose(st["y"], 0.0, atol=1e-6)


def test_clamp_holds_the_value_in_its_window(linear):
    _, _, params, base, perturbed = linear
    _, st = perturbed("hold")
    np.testing.assert_allclose(st["h"], 0.3, atol=1e-6)
    np.testing.assert_allclose(st["y"], 0.3 * np.asarray(params["W2"]).sum(1)[None].repeat(5, 0), atol=1e-4)


def test_gain_scales_what_the_population_transmits(linear):
    _, _, params, base, perturbed = linear
    _, st = perturbed("louder")
    np.testing.assert_allclose(st["h"], base["h"], atol=1e-6)  # its own state is untouched
    np.testing.assert_allclose(st["y"], 2 * np.asarray(base["y"]), atol=1e-4)


def test_compartment_add_and_clamp(linear):
    _, _, params, base, perturbed = linear
    _, st = perturbed("dend")
    np.testing.assert_allclose(st["c"] - base["c"], -0.25, atol=1e-5)
    _, st = perturbed("dend_clamp")
    np.testing.assert_allclose(st["c"], 2.0, atol=1e-5)


def test_a_window_acts_only_in_its_steps(linear):
    circ, x, params, base, perturbed = linear
    m, st = perturbed("late")
    # 10 steps of dt 0.1 with I = 1 on a leak-1 unit: the shift is 1 - 0.9^10 (Euler), exactly
    np.testing.assert_allclose(st["h"] - base["h"], 1 - 0.9**10, atol=1e-5)


def test_the_rules_read_the_perturbed_rates():
    circ = cl.loads(LINEAR.replace("during free[100:400]", "during nudge").replace("during free[390:400]",
                    "during nudge").replace("during free", "during nudge"), "linear.circ")
    x = jnp.ones((2, 3), jnp.float32)
    y = jnp.ones((2, 2), jnp.float32)
    params = cl.compile(circ).init(jax.random.key(1))
    g = cl.compile(circ, {"perturb.quiet": "on"}).estimate(params, x, y)
    assert float(jnp.abs(g["W2"]).max()) == 0.0  # pre.rate of a silenced h is 0 in every nudge step
    assert float(jnp.abs(cl.compile(circ).estimate(params, x, y)["W2"]).max()) > 0


def test_enabled_in_the_file_and_by_override():
    text = LINEAR.replace("perturb add_h : h add 0.5 during free", "perturb add_h : h add 0.5 during free enabled")
    circ = cl.loads(text, "linear.circ")
    assert [p.name for p in cl.compile(circ).fns.perturb.specs] == ["add_h"]
    assert not cl.compile(circ, {"perturb.add_h": "off"}).fns.perturb
    m = cl.compile(circ, {"perturb.add_h.size": 2})
    assert m.fns.perturb.specs[0].value == 2.0
    with pytest.raises(cl.CircuitError, match="no perturbation `add`"):
        cl.compile(circ, {"perturb.add": "on"})
    with pytest.raises(cl.CircuitError, match="fraction"):
        cl.compile(circ, {"perturb.add_h.fraction": 2})


def test_energy_circuits_refuse_perturbations():
    text = """population x [2] input
population y [2] output
y -- x : W
energy hopfield
cost y squared
learn eqprop { phase free { steps 5 }; phase nudge { steps 5; beta 0.5 } }
perturb p : y add 1 during nudge
"""
    with pytest.raises(cl.CircuitSemanticError, match="force of a vector field") as err:
        cl.loads(text, "e.circ")
    assert err.value.span.line == 7


@pytest.mark.slow
def test_experiment_cli_pairs_control_and_perturbed(tmp_path, capsys):
    path = tmp_path / "small.circ"
    path.write_text(SMALL)
    out = tmp_path / "exp"
    assert main(["experiment", str(path), "--samples", "4", "--perturb", "stim", "--out", str(out)]) == 0
    with (out / "experiment.csv").open() as f:
        control, stim = list(csv.DictReader(f))
    assert (control["condition"], stim["condition"]) == ("control", "stim")
    assert control["cost free"] == stim["cost free"]  # the same samples and free phase
    assert float(stim["|s1.apical| nudge"]) > float(control["|s1.apical| nudge"])
    assert "experiment.csv" in capsys.readouterr().out


@pytest.mark.slow
def test_experiment_cli_end_to_end(tmp_path, capsys):
    path = tmp_path / "small.circ"
    path.write_text(SMALL)
    out = tmp_path / "exp"
    code = main(["experiment", str(path), "--data", "digits", "--samples", "8", "--perturb", "quiet",
                 "--sweep", "stim.size=0.5,1", "--target", "data,prediction", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    with (out / "experiment.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["condition"] for r in rows][:4] == ["control [data]", "quiet [data]", "stim size=0.5 [data]",
                                                   "stim size=1 [data]"]
    assert len(rows) == 8 and (out / "experiment.png").stat().st_size > 0
    by = {r["condition"]: r for r in rows}
    # a current into the apical dendrite raises its mean |value| in the nudge, more for a larger one
    a = [float(by[f"{c} [data]"]["|s1.apical| nudge"]) for c in ("control", "stim size=0.5", "stim size=1")]
    assert a[0] < a[1] < a[2]
    # the predict phase is the same in every condition (the perturbations act in the nudge only)
    assert len({by[c]["|s1.apical| predict"] for c in by if c.endswith("[data]")}) == 1
    # no surprise: the target is the free prediction, so the free cost is 0
    assert float(by["control [no surprise]"]["cost free"]) == pytest.approx(0.0, abs=1e-10)
    for r in rows:
        ltp, ltd = float(r["W1 LTP"]), float(r["W1 LTD"])
        assert ltp >= 0 >= ltd and 0 <= float(r["W1 potentiated"]) <= 1
    with (out / "nudge_cost.csv").open() as f:
        steps = list(csv.DictReader(f))
    assert {s["phase"] for s in steps} == {"predict", "nudge"}
    # the update is read out per condition: the same samples' next-trial cost is recorded
    assert all("cost next trial" in r for r in rows)


def test_experiment_cli_refuses_unknown_names(tmp_path, capsys):
    path = tmp_path / "small.circ"
    path.write_text(SMALL)
    code = main(["experiment", str(path), "--perturb", "quite", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and "no perturbation `quite`; did you mean `quiet`?" in err
    code = main(["experiment", str(path), "--sweep", "stim.size=1,x", "--out", str(tmp_path / "o")])
    assert code == 1 and "`x` is not a number" in capsys.readouterr().err
    code = main(["experiment", str(path), "--sweep", "stim.size=-1,2", "--set", "perturb.stim.fraction=3",
                 "--out", str(tmp_path / "o")])
    assert code == 1 and "fraction" in capsys.readouterr().err


SMALL = """
param tau = 1.0
fn rho(x) = sigmoid(x)
neuron pyramidal {
  compartment basal, apical
  tau * ds/dt = -s + basal + apical
}
population x [64] input rho=identity
population s1 : pyramidal [12]
population s2 : pyramidal [10] output rho=identity
x -> s1.basal : W1 init=uniform(0.3)
s1 -> s2.basal : W2
s2 -> s1.apical : B2 = transpose(W2)
cost s2 squared
learn rules {
  phase predict { steps 8; dt 0.2 }
  phase nudge { steps 8; dt 0.2; beta 1 }
  during nudge: dW1/dt = 0.1 * post.apical * rho'(post.s) * pre.rate
  during nudge: dW2/dt = 0.01 * post.apical * pre.rate
}
perturb stim : s1.apical add 0.5 during nudge
perturb quiet : s1 silence during nudge[2:6] fraction=0.5 seed=1
"""


# ------------------------------------------------------ the talk's predictions --
def _trained_experiment(name: str, quiet: str, stim: str):
    """`examples/NAME.circ` trained as the README's (its own epochs, seed 0), then the
    README's conditions on 64 test digits: rows by condition, and the trained params."""
    from circuitlang import experiment as E
    from circuitlang.data import load as load_data

    circ = cl.load(ROOT / "examples" / f"{name}.circ")
    data = load_data("digits")
    params = cl.train(cl.compile(circ, {"learn.health": "ignore"}), data, seed=0, progress=False).params
    x = jnp.asarray(data.x_test[:64])
    y = jnp.asarray(data.targets(data.y_test[:64]).astype("float32"))
    conds = E.conditions(circ, [quiet], f"{stim}.size=0.25,0.5,1,2", ["data", "prediction"])
    rows, _ = E.run(circ, params, x, y, conds)
    return {r["condition"]: r for r in rows}, params


@pytest.fixture(scope="module")
def mirror_experiment():
    return _trained_experiment("mirror_interneurons", "quiet_mirror", "stim_mirror")


@pytest.mark.slow
def test_prediction_a_no_surprise_leaves_the_cancellation_residual(mirror_experiment):
    rows, _ = mirror_experiment
    ratio = rows["control [no surprise]"]["|s1.apical| nudge"] / rows["control [data]"]["|s1.apical| nudge"]
    # less apical drive without a surprise, but not <= 5%: the residual of imperfect cancellation
    # is of the order of a trained circuit's errors (README: 61% on 128 samples)
    assert 0.05 < ratio < 1


@pytest.mark.slow
def test_prediction_b_stimulating_the_mirror_raises_ltp_and_ltd(mirror_experiment):
    rows, params = mirror_experiment
    ltp = [rows["control [data]"]["W1 LTP"]] + [rows[f"stim_mirror size={s} [data]"]["W1 LTP"]
                                                for s in ("0.25", "0.5", "1", "2")]
    ltd = [rows["control [data]"]["W1 LTD"]] + [rows[f"stim_mirror size={s} [data]"]["W1 LTD"]
                                                for s in ("0.25", "0.5", "1", "2")]
    # the opposite of the prediction, monotone in the stimulus, with LTD growing in step: the
    # learned V1b ~ W2^T has entries of both signs (row sums < 0 on average, so the apical drive
    # rises on average under a uniform current into the linear interneurons)
    assert all(a < b for a, b in zip(ltp, ltp[1:])) and all(a > b for a, b in zip(ltd, ltd[1:]))
    assert float(np.asarray(params["V1b"]).sum(1).mean()) < 0


@pytest.mark.slow
def test_prediction_c_quieting_the_mirror_gives_more_ltp(mirror_experiment):
    rows, _ = mirror_experiment
    assert rows["quiet_mirror [data]"]["W1 LTP"] > rows["control [data]"]["W1 LTP"]


@pytest.mark.slow
def test_prediction_d_the_nudge_and_the_next_trial_lower_the_cost(mirror_experiment):
    rows, _ = mirror_experiment
    r = rows["control [data]"]
    assert r["cost nudge end"] < r["cost nudge start"]
    assert r["cost next trial"] < r["cost free"]


@pytest.fixture(scope="module")
def dendritic_experiment():
    return _trained_experiment("dendritic_microcircuit", "quiet_inter", "stim_inter")[0]


@pytest.mark.slow
def test_dendritic_predictions_as_the_readme_reports(dendritic_experiment):
    rows = dendritic_experiment
    ctrl = rows["control [data]"]
    stim = [rows[f"stim_inter size={s} [data]"] for s in ("0.25", "0.5", "1", "2")]
    # (a) fails: without a surprise the apical drive falls, but not to 5% (README: 57%)
    assert 0.05 < rows["control [no surprise]"]["|p1.apical| nudge"] / ctrl["|p1.apical| nudge"] < 1
    # (b) the LTP total grows with the stimulus (against the prediction) while the net W1
    # update falls monotonically and turns to depression (as the prediction has it)
    ltp = [ctrl["W1 LTP"]] + [r["W1 LTP"] for r in stim]
    net = [ctrl["W1 mean"]] + [r["W1 mean"] for r in stim]
    assert all(a < b for a, b in zip(ltp, ltp[1:]))
    assert all(a > b for a, b in zip(net, net[1:])) and net[-1] < 0
    # (c) quieting the interneurons gives more LTP; (d) the nudge and the next trial lower the cost
    assert rows["quiet_inter [data]"]["W1 LTP"] > ctrl["W1 LTP"]
    assert ctrl["cost nudge end"] < ctrl["cost nudge start"] and ctrl["cost next trial"] < ctrl["cost free"]
