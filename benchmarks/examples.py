"""Train every example from the command line and collect the README's results table.

    python benchmarks/examples.py                    # all examples (about 15 min on one core)
    python benchmarks/examples.py stdp_eqprop        # some of them

Each example runs as ``taskset -c 0 circuitc train examples/NAME.circ --data DATA``
with the file's own epochs, one thread, seed 0. Writes
``benchmarks/results/examples.json`` (best and final test metrics, mean
seconds per epoch without the first, compiled epoch) and, for the continuous
learning example, ``docs/continuous_learning.png``: its test MSE per epoch,
with the untrained circuit's MSE as epoch 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "examples.json"

# name -> (data, metric): classification on digits, regression on the teacher
EXAMPLES = {
    "eqprop_hopfield": ("digits", "accuracy"),
    "predictive_coding": ("digits", "accuracy"),
    "vector_field": ("digits", "accuracy"),
    "feedback_alignment": ("digits", "accuracy"),
    "stdp_eqprop": ("digits", "accuracy"),
    "mirror_interneurons": ("digits", "accuracy"),
    "dendritic_microcircuit": ("digits", "accuracy"),
    "continuous_learning": ("synthetic", "mse"),
    "dtp": ("digits", "accuracy"),
    "ldrl": ("digits", "accuracy"),
}


def _cmd(name: str, data: str, out: Path) -> list[str]:
    cmd = ["circuitc", "train", f"examples/{name}.circ", "--data", data, "--out", str(out), "--no-progress"]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
    return cmd


def run(name: str) -> dict:
    data, metric = EXAMPLES[name]
    out = Path(tempfile.mkdtemp(prefix=f"cl-{name}-"))
    env = dict(os.environ, XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    t0 = time.perf_counter()
    proc = subprocess.run(_cmd(name, data, out), cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"example": name, "error": proc.stderr.strip()[-2000:]}
    history = json.loads((out / "metrics.json").read_text())
    history = history["history"] if isinstance(history, dict) else history
    secs = [r["seconds"] for r in history[1:]] or [history[0]["seconds"]]
    row = {
        "example": name,
        "data": data,
        "command": " ".join(_cmd(name, data, Path("runs/" + name))),
        "epochs": len(history),
        "seconds_per_epoch": sum(secs) / len(secs),
        "wall_seconds": wall,
    }
    if metric == "accuracy":
        acc = [r["test_accuracy"] for r in history]
        row.update(best_test_accuracy=max(acc), final_test_accuracy=acc[-1],
                   best_epoch=acc.index(max(acc)) + 1, curve=acc)
    else:  # the cost is ½ Σ_k (y_k − t_k)² per example: MSE = 2 · cost / outputs
        n_out = _outputs(name)
        mse = [2 * r["test_loss"] / n_out for r in history]
        row.update(final_test_mse=mse[-1], best_test_mse=min(mse), curve=mse, initial_test_mse=_initial_mse(name, data))
    return row


def _outputs(name: str) -> int:
    import circuitlang as cl

    circ = cl.load(ROOT / "examples" / f"{name}.circ")
    return circ.populations[circ.spec.costs[0].population].size


def _initial_mse(name: str, data: str) -> float:
    """Test MSE of the untrained circuit (seed 0, as `train` initializes it)."""
    import jax

    import circuitlang as cl
    from circuitlang.data import load
    from circuitlang.training import evaluate

    model = cl.compile(cl.load(ROOT / "examples" / f"{name}.circ"))
    params = model.init(jax.random.fold_in(jax.random.key(0), 10**6))
    d = load(data)
    return 2 * evaluate(model, params, d)["loss"] / _outputs(name)


def plot_continuous(row: dict) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    mse = [row["initial_test_mse"], *row["curve"]]
    fig, ax = plt.subplots(figsize=(5, 3.2), constrained_layout=True)
    ax.plot(range(len(mse)), mse, "o-", ms=4, label="circuitlang (streaming, prospective)")
    ax.axhline(0.02, color="grey", ls="--", lw=1, label="target 0.02")
    ax.set(xlabel="epoch", ylabel="test MSE", yscale="log",
           title="Continuous learning: MLP 392-512-512-10, synthetic teacher")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8)
    fig.savefig(ROOT / "docs" / "continuous_learning.png", dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help=f"examples to run (default: all of {', '.join(EXAMPLES)})")
    args = ap.parse_args(argv)
    names = args.names or list(EXAMPLES)
    for n in names:
        if n not in EXAMPLES:
            ap.error(f"unknown example {n!r}")
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for n in names:
        if not (ROOT / "examples" / f"{n}.circ").exists():
            print(f"{n}: no such example, skipped", file=sys.stderr)
            continue
        row = run(n)
        old[n] = row
        if "error" in row:
            print(f"{n}: FAILED\n{row['error']}", file=sys.stderr)
            continue
        if n == "continuous_learning":
            plot_continuous(row)
            print(f"{n}: test MSE {row['initial_test_mse']:.4f} -> {row['final_test_mse']:.4f}, "
                  f"{row['seconds_per_epoch']:.2f} s/epoch")
        else:
            print(f"{n}: best {row['best_test_accuracy']:.2%} (epoch {row['best_epoch']}), "
                  f"final {row['final_test_accuracy']:.2%}, {row['seconds_per_epoch']:.2f} s/epoch")
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(old, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
