"""Sweeps in one program (`sweeps.py`, `circuitc train --seeds/--sweep`): a member computes
what a lone run with its seed and `--set` computes, keys that change the program are
refused, a sweep resumes as a group, writes its summary and shards its members.

Member k of `--seeds` is bit for bit the lone run with `--seed k` (parameters and the
metrics it learns from); the health figures that average over a batch (`*_residual_mean`,
`update_ratio.*`) may differ in the last bits, since vmap changes the order of XLA's
reductions. A swept setting is a traced value where the lone run has a constant that XLA
folds, so a swept member matches its lone run to ~1e-6 (float32 rounding), not bit for bit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import circuitlang as cl
from circuitlang import sweeps
from circuitlang.cli import main
from circuitlang.data import load as load_data
from circuitlang.errors import CircuitError
from circuitlang.training import train

from .conftest import ROOT

TINY = ROOT / "tests" / "circuits" / "tiny_hopfield.circ"
EXACT = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "epoch")

PARAM = TINY.read_text().replace("fn rho(x) = sigmoid(4 * x - 2)", "param gain = 4\nfn rho(x) = sigmoid(gain * x - 2)")


@pytest.fixture(scope="module")
def data():
    return load_data("digits")


@pytest.fixture(scope="module", autouse=True)
def no_x64():
    with jax.enable_x64(False):
        yield


def close(a, b, atol=2e-6):
    return set(a) == set(b) and all(np.allclose(np.asarray(a[k]), np.asarray(b[k]), rtol=1e-5, atol=atol) for k in a)


# ------------------------------------------------------------------ quick --
def test_parse_seeds_and_members():
    assert sweeps.parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert sweeps.parse_seeds("1-2,7") == [1, 2, 7]
    for bad in ("4-1", "a", "1,1", "-3"):
        with pytest.raises(ValueError):
            sweeps.parse_seeds(bad)
    assert sweeps.parse_sweep("phase.nudge.beta=0.1,0.5") == ("phase.nudge.beta", ["0.1", "0.5"])
    with pytest.raises(ValueError):
        sweeps.parse_sweep("phase.nudge.beta")
    names = [m.name for m in sweeps.members([0, 1], [("gain", ["3", "4"])])]
    assert names == ["gain=3,seed-0", "gain=3,seed-1", "gain=4,seed-0", "gain=4,seed-1"]
    assert [m.name for m in sweeps.members([0, 2], [])] == ["seed-0", "seed-2"]
    assert [m.name for m in sweeps.members([0], [("optimizer.lr", ["0.1"])])] == ["optimizer.lr=0.1"]


@pytest.mark.parametrize("key,why", [
    ("learn.batch", "shape of every batch"), ("phase.free.steps", "length of the relaxation loop"),
    ("optimizer.schedule", "another program"), ("learn.estimator", "not a number"),
])
def test_shape_keys_are_refused(key, why, capsys, tmp_path):
    rc = main(["train", str(TINY), "--sweep", f"{key}=1,2", "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and f"--sweep {key}" in err and why in err


def test_seed_and_seeds_conflict(capsys, tmp_path):
    assert main(["train", str(TINY), "--seed", "1", "--seeds", "0-1", "--out", str(tmp_path)]) == 2
    assert "not both" in capsys.readouterr().err


# ------------------------------------------------------------------- slow --
@pytest.fixture(scope="module")
def seeds2(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("seeds") / "run"
    group = sweeps.members([0, 1], [])
    return out, sweeps.train_sweep(cl.load(TINY), {"learn.health": "ignore"}, data, group, 2, out=out,
                                   progress=False, data_spec="digits")


@pytest.mark.slow
def test_member_is_the_lone_run(seeds2, data):
    _, results = seeds2
    lone = train(cl.compile(cl.load(TINY), {"learn.health": "ignore"}), data, 2, seed=1, progress=False)
    member = results[1]
    assert all(np.array_equal(np.asarray(lone.params[k]), np.asarray(member.params[k])) for k in lone.params)
    for a, b in zip(lone.history, member.history):
        assert {k: a[k] for k in EXACT} == {k: b[k] for k in EXACT}
        assert set(a) == set(b)
        assert all(np.isclose(a[k], b[k], rtol=1e-5, atol=1e-6) for k in a if "seconds" not in k)


@pytest.mark.slow
def test_files_and_summary(seeds2):
    out, results = seeds2
    for name in ("seed-0", "seed-1"):
        for f in ("params.npz", "checkpoint.npz", "metrics.csv", "metrics.json", "run.json", "curves.png"):
            assert (out / name / f).is_file()
        assert json.loads((out / name / "run.json").read_text())["seed"] == int(name[-1])
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["groups"]["all"]
    assert summary["members"] == ["seed-0", "seed-1"] and len(rows) == 2
    losses = [r.history[1]["test_loss"] for r in results]
    assert rows[1]["members"] == 2
    assert np.isclose(rows[1]["test_loss_mean"], np.mean(losses)) and np.isclose(rows[1]["test_loss_std"], np.std(losses))
    assert (out / "summary.csv").read_text().startswith("group,epoch,members,")
    assert (out / "summary.png").stat().st_size > 1000


@pytest.mark.slow
def test_resume_as_a_group(seeds2, data, tmp_path):
    _, whole = seeds2
    out = tmp_path / "r"
    group = sweeps.members([0, 1], [])
    circ = cl.load(TINY)
    sweeps.train_sweep(circ, {"learn.health": "ignore"}, data, group, 1, out=out, progress=False, data_spec="digits")
    with pytest.raises(CircuitError, match="already holds a run"):
        sweeps.train_sweep(circ, {"learn.health": "ignore"}, data, group, 2, out=out, progress=False, data_spec="digits")
    with pytest.raises(CircuitError, match="other members"):
        sweeps.train_sweep(circ, {"learn.health": "ignore"}, data, sweeps.members([0, 2], []), 2, out=out,
                           resume=True, progress=False, data_spec="digits")
    again = sweeps.train_sweep(circ, {"learn.health": "ignore"}, data, group, 2, out=out, resume=True,
                               progress=False, data_spec="digits")
    for a, b in zip(whole, again):
        assert all(np.array_equal(np.asarray(a.params[k]), np.asarray(b.params[k])) for k in a.params)
        assert [r["test_loss"] for r in a.history] == [r["test_loss"] for r in b.history]


@pytest.mark.slow
def test_sweep_matches_lone_runs_with_set(data, tmp_path):
    path = tmp_path / "tiny_param.circ"
    path.write_text(PARAM)
    circ = cl.load(path)
    group = sweeps.members([0], [("phase.nudge.beta", ["0.3", "0.5"]), ("gain", ["3", "4"]), ("optimizer.lr", ["0.5"])])
    results = sweeps.train_sweep(circ, {"learn.health": "ignore"}, data, group, 1, progress=False)
    for k in (0, 3):  # beta 0.3 gain 3, and beta 0.5 gain 4
        settings = {"learn.health": "ignore", **dict(group[k].settings)}
        lone = train(cl.compile(circ, settings), data, 1, seed=0, progress=False)
        assert close(lone.params, results[k].params)
        assert np.isclose(lone.history[0]["test_loss"], results[k].history[0]["test_loss"], rtol=1e-5)
    assert not close(results[0].params, results[3].params, atol=1e-4)  # the values did reach the members


@pytest.mark.slow
def test_param_that_changes_the_program_is_refused(data, tmp_path):
    sized = tmp_path / "sized.circ"
    sized.write_text(TINY.read_text().replace("population h [16]", "param nh = 16\npopulation h [nh]"))
    with pytest.raises(CircuitError, match="--sweep nh: its values give circuits of different shapes"):
        sweeps.train_sweep(cl.load(sized), {}, data, sweeps.members([0], [("nh", ["16", "20"])]), 1, progress=False)
    folded = tmp_path / "folded.circ"  # the checker folds the param into the phase's dt
    folded.write_text(TINY.read_text().replace("fn rho", "param t = 0.5\nfn rho")
                      .replace("phase free  { steps 8; dt 0.5 }", "phase free  { steps 8; dt t }"))
    with pytest.raises(CircuitError, match="--sweep t: its values change more than a number"):
        sweeps.train_sweep(cl.load(folded), {}, data, sweeps.members([0], [("t", ["0.4", "0.5"])]), 1, progress=False)


SHARDED = r"""
import json, sys
import numpy as np
import circuitlang as cl
from circuitlang import sweeps
from circuitlang.data import load
tiny, out = sys.argv[1:3]
data = load("digits")
group = sweeps.members([0, 1, 2, 3], [])
res = sweeps.train_sweep(cl.load(tiny), {"learn.health": "ignore"}, data, group, 1, devices=4, progress=False)
np.savez(out + "/p.npz", **{f"{k}/{n}": np.asarray(v) for k, r in enumerate(res) for n, v in r.params.items()})
try:
    sweeps.train_sweep(cl.load(tiny), {}, data, sweeps.members([0, 1, 2], []), 1, devices=4, progress=False)
    err = ""
except Exception as exc:
    err = str(exc)
json.dump({"err": err}, open(out + "/r.json", "w"))
"""


@pytest.mark.slow
def test_members_shard_over_four_devices(data, tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()}
    proc = subprocess.run([sys.executable, "-c", SHARDED, str(TINY), str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "do not split evenly over 4 devices" in json.loads((tmp_path / "r.json").read_text())["err"]
    group = sweeps.members([0, 1, 2, 3], [])
    one = sweeps.train_sweep(cl.load(TINY), {"learn.health": "ignore"}, data, group, 1, progress=False)
    with np.load(tmp_path / "p.npz") as f:
        for k, r in enumerate(one):
            # one member per device: XLA compiles other shapes, so the last bits may differ
            assert close(r.params, {n: f[f"{k}/{n}"] for n in r.params})
