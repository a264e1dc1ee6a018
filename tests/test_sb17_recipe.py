"""`benchmarks/circuits/fashion_sb17_deep.circ` against Scellier's own code.

The oracle is a NumPy transcription of `model.py` in
github.com/bscellier/Towards-a-Biologically-Plausible-Backprop (Theano, 2017),
written from that code and importing nothing from `circuitlang`: its energy
E = Σ ½ρ(s)² − Σ ρ(s)·b − Σ ρ(pre) W ρ(post), its cost Σ (y − t)² (no ½),
F = E + β C, states updated as clip(s − ε ∂F/∂s, 0, 1) (Theano's clip has
gradient 1 on the closed interval, so ρ' = 1 at the bounds), the nudged phase
starting from the free one, and the update W ← W − α ∂/∂W (E(s^β) − E(s^0)) / β
with the batch mean, `alphas[k]` going with `weights[k]` and `biases[k + 1]`.
His deepest network (`net3` in train_model.py): 500 free and 8 nudged steps of
ε = 0.5, β = 1, α = 0.128, 0.032, 0.008, 0.002.

The file, with its own β and rates and a positive sign, must make his step:
this is what caught the file's β = 1, half his nudging force (his cost has no ½).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

import circuitlang as cl
from circuitlang import learning

from .conftest import ROOT

pytestmark = pytest.mark.usefixtures("x64")

FILE = ROOT / "benchmarks" / "circuits" / "fashion_sb17_deep.circ"
ALPHAS = (0.128, 0.032, 0.008, 0.002)  # train_model.py, net3
BETA, EPS, NUDGE_STEPS = 1.0, 0.5, 8
FREE_STEPS = 30  # fewer than his 500: the test compares trajectories, not fixed points


def _scellier_phase(x, layers, weights, biases, steps, beta, target):
    """`__build_free_phase` / `__build_weakly_clamped_phase`'s scan, by hand:
    −∂F/∂s_k = W_{k−1}ᵀ-side drive + W_k-side drive + b_k − s_k (ρ = ρ' = 1 on [0, 1])."""
    s = [v.copy() for v in layers]
    for _ in range(steps):
        full = [x] + s
        new = []
        for k in range(1, len(full)):
            drive = full[k - 1] @ weights[k - 1] + biases[k] - full[k]
            if k + 1 < len(full):
                drive = drive + full[k + 1] @ weights[k].T
            if k == len(full) - 1:
                drive = drive - beta * 2.0 * (full[k] - target)  # ∂(β Σ (y − t)²)/∂y
            new.append(np.clip(full[k] + EPS * drive, 0.0, 1.0))
        s = new
    return s


def _scellier_update(x, free, nudged, beta):
    """ΔW_k = α_k/β · mean(ρ(pre^β)ᵀρ(post^β) − ρ(pre^0)ᵀρ(post^0)); Δb_{k+1} likewise."""
    fa, na = [x] + free, [x] + nudged
    n = x.shape[0]
    dW = [a / beta * (na[k].T @ na[k + 1] - fa[k].T @ fa[k + 1]) / n for k, a in enumerate(ALPHAS)]
    db = [a / beta * (na[k + 1] - fa[k + 1]).mean(0) for k, a in enumerate(ALPHAS)]
    return dW, db


def test_the_deep_file_makes_scellier_and_bengios_update():
    model = cl.compile(cl.load(FILE), overrides={"phase.free.steps": FREE_STEPS})
    params = model.init(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    batch = 4
    x = rng.uniform(0, 1, (batch, 784))
    labels = rng.integers(0, 10, batch)
    target = np.eye(10)[labels]
    s0 = {n: rng.uniform(0, 1, (batch, 500 if n != "y" else 10)) for n in ("h1", "h2", "h3", "y")}
    # his layout: weights[k] is (n_pre, n_post), the transpose of ours
    weights = [np.asarray(params[w]).T for w in ("W1", "W2", "W3", "W4")]
    biases = [None] + [np.asarray(params[f"{n}.bias"]) for n in ("h1", "h2", "h3", "y")]
    # a state that learns: his particles after a first free phase, then ours from the same
    layers = [s0[n] for n in ("h1", "h2", "h3", "y")]
    free = _scellier_phase(x, layers, weights, biases, FREE_STEPS, 0.0, target)
    nudged = _scellier_phase(x, free, weights, biases, NUDGE_STEPS, BETA, target)
    dW, db = _scellier_update(x, free, nudged, BETA)

    xs = model.as_inputs(x)
    g = learning.estimate(model, params, xs, target, "one_sided", None, jax.random.PRNGKey(1),
                          {n: s0[n] for n in ("h1", "h2", "h3", "y")})
    lr = model.learning.optimizer.lr_per_param
    for k, w in enumerate(("W1", "W2", "W3", "W4")):
        ours = -lr[w] * np.asarray(g[w]).T
        np.testing.assert_allclose(ours, dW[k], rtol=1e-6, atol=1e-9 * np.abs(dW[k]).max(), err_msg=w)
    for k, n in enumerate(("h1", "h2", "h3", "y")):
        ours = -lr[f"{n}.bias"] * np.asarray(g[f"{n}.bias"])
        np.testing.assert_allclose(ours, db[k], rtol=1e-6, atol=1e-9 * np.abs(db[k]).max(), err_msg=n)
