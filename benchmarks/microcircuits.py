"""Dendritic microcircuits: train both examples from the CLI, report accuracy and s/epoch.

    python benchmarks/microcircuits.py                    # both examples on digits, their default epochs
    python benchmarks/microcircuits.py --fashion 5        # also the conductance-based model, 5 epochs of Fashion-MNIST
    python benchmarks/microcircuits.py --cpu 1 --seeds 0,1,2

Each run is `circuitc train FILE --data SPEC --seed S --out benchmarks/results/runs/NAME-sS`
pinned to one core (`taskset -c CPU`, XLA single-threaded). After training, the
script also measures, on the test split, the self-predicting state (mean
|apical| of the hidden pyramids at the end of the predict phase, relative to
its value at initialisation) and the cosine between the W1 update of the rules
and the true gradient. Writes benchmarks/results/microcircuits.json and prints
a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# name: (file, data, --set overrides, hidden population with the apical compartment)
RUNS = {
    "mirror": ("examples/mirror_interneurons.circ", "digits", [], "s1"),
    "dendritic": ("examples/dendritic_microcircuit.circ", "digits", [], "p1"),
}
FASHION = ("examples/dendritic_microcircuit.circ", "fashion-mnist",
           ["n_in=784", "w1_init=0.6", "eta_PP1=0.2"], "p1")


def _analyse(path: str, data_spec: str, sets: list[str], run: Path, seed: int, population: str) -> dict:
    """Self-predicting state and W1 alignment of the trained parameters, on the test split."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import circuitlang as cl
    from circuitlang.training import load_params

    overrides = dict(s.split("=", 1) for s in sets)
    model = cl.compile(cl.load(ROOT / path), overrides=overrides)
    data = cl.load_data(data_spec)
    n = min(len(data.x_test), 1000)
    x, y = jnp.asarray(data.x_test[:n]), jnp.asarray(data.targets(data.y_test[:n]))
    xs = model.as_inputs(x)

    def apical(p):
        s = model._free(p, xs).state
        _, seen = model.fns.force({k: s[k] for k in model.state_keys}, p, xs, observe=True)
        return float(jnp.mean(jnp.abs(seen[population]["apical"])))

    def cos(a, b):
        a, b = np.ravel(np.asarray(a, np.float64)), np.ravel(np.asarray(b, np.float64))
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    p0 = model.init(jax.random.fold_in(jax.random.key(seed), 10**6))  # what `train --seed` starts from
    p = load_params(run / "params.npz", model)
    g = model.estimate(p, x, y, method="rules")
    grad = model.estimate(p, x, y, method="gradient")
    a0, a1 = apical(p0), apical(p)
    return {"apical_init": a0, "apical_trained": a1, "apical_ratio": a1 / a0,
            "cos_W1": cos(g["W1"], grad["W1"]), "cos_W2": cos(g["W2"], grad["W2"])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="comma-separated subset of: " + ", ".join(RUNS))
    ap.add_argument("--epochs", type=int, help="default: each file's `epochs`")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    ap.add_argument("--fashion", type=int, nargs="?", const=5, default=0, metavar="EPOCHS",
                    help="also train the conductance-based model on Fashion-MNIST (default 5 epochs)")
    ap.add_argument("--cpu", default="0", help="the core to pin every run to (default 0)")
    args = ap.parse_args(argv)
    os.sched_setaffinity(0, {int(args.cpu)})
    os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false"
    env = {**os.environ}
    runs = {k: v for k, v in RUNS.items() if not args.only or k in args.only.split(",")}
    plan = [(name, *spec, args.epochs) for name, spec in runs.items()]
    if args.fashion:
        plan.append(("dendritic-fashion", *FASHION, args.fashion))
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for name, path, data, sets, population, epochs in plan:
        for seed in seeds:
            out = (HERE / "results" / "runs" / f"{name}-s{seed}").relative_to(ROOT)
            cmd = ["taskset", "-c", args.cpu, sys.executable, "-m", "circuitlang", "train", path, "--data", data,
                   "--seed", str(seed), "--out", str(out), "--no-progress"]
            if epochs:
                cmd += ["--epochs", str(epochs)]
            for s in sets:
                cmd += ["--set", s]
            subprocess.run(cmd, cwd=ROOT, env=env, check=True)
            hist = json.loads((ROOT / out / "metrics.json").read_text())
            accs = [h["test_accuracy"] for h in hist]
            row = {
                "run": name, "file": path, "data": data, "seed": seed, "epochs": len(hist),
                "best": max(accs), "final": accs[-1],
                "epoch_95": next((h["epoch"] for h in hist if h["test_accuracy"] >= 0.95), None),
                "s_per_epoch": statistics.median(h["seconds"] for h in hist[1:]) if len(hist) > 1 else hist[0]["seconds"],
                "command": "circuitc train " + " ".join(cmd[cmd.index("train") + 1:]),
            }
            row.update(_analyse(path, data, sets, ROOT / out, seed, population))
            rows.append(row)
            print(f"{name} seed {seed}: final {row['final']:.4f} (best {row['best']:.4f}), "
                  f"{row['s_per_epoch']:.2f} s/epoch, |apical| {100 * row['apical_ratio']:.1f}% of initial, "
                  f"cos(W1 update, gradient) {row['cos_W1']:.2f}", flush=True)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "microcircuits.json").write_text(json.dumps(rows, indent=2))
    print("\n| run | data | seed | epochs | final test acc | best | first epoch ≥ 95% | s/epoch (1 core) "
          "| mean abs apical / initial | cos(ΔW1, ∇W1) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['run']} | {r['data']} | {r['seed']} | {r['epochs']} | {r['final']:.4f} | {r['best']:.4f} "
              f"| {r['epoch_95']} | {r['s_per_epoch']:.2f} | {100 * r['apical_ratio']:.1f}% | {r['cos_W1']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
