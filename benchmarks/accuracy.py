"""Accuracy targets: train circuits from the CLI and report test accuracy and s/epoch.

    python benchmarks/accuracy.py                 # digits example + both Fashion-MNIST recipes, 30 epochs
    python benchmarks/accuracy.py --only digits   # the quick one (~1 min)

Each run is `circuitc train FILE --data SPEC --epochs 30 --out benchmarks/results/runs/NAME`
pinned to one core (XLA single-threaded). Writes benchmarks/results/accuracy.json
and prints a markdown table: best and final test accuracy, the epoch at which
the target was first reached, and the median s/epoch (compilation excluded).
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
RUNS = {
    "digits": ("examples/eqprop_hopfield.circ", "digits", 0.97),
    "fashion-proto": ("benchmarks/circuits/fashion_proto.circ", "fashion-mnist", 0.88),
    "fashion-sb17": ("benchmarks/circuits/fashion_sb17.circ", "fashion-mnist", 0.88),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="comma-separated subset of: " + ", ".join(RUNS))
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    names = args.only.split(",") if args.only else list(RUNS)
    env = {**os.environ, "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"}
    rows = []
    for name in names:
        path, data, target = RUNS[name]
        out = (HERE / "results" / "runs" / name).relative_to(ROOT)
        cmd = ["taskset", "-c", "0", sys.executable, "-m", "circuitlang", "train", path, "--data", data,
               "--epochs", str(args.epochs), "--seed", str(args.seed), "--out", str(out), "--no-progress"]
        subprocess.run(cmd, cwd=ROOT, env=env, check=True)
        hist = json.loads((ROOT / out / "metrics.json").read_text())
        accs = [h["test_accuracy"] for h in hist]
        reached = next((h["epoch"] for h in hist if h["test_accuracy"] >= target), None)
        rows.append({
            "run": name, "file": path, "data": data, "epochs": len(hist), "target": target,
            "best": max(accs), "final": accs[-1], "reached_at_epoch": reached,
            "s_per_epoch": statistics.median(h["seconds"] for h in hist[1:]) if len(hist) > 1 else hist[0]["seconds"],
            "command": "circuitc train " + " ".join(cmd[cmd.index("train") + 1:]),
        })
        print(f"{name}: best {max(accs):.4f}, final {accs[-1]:.4f}, target {target} reached at epoch {reached}",
              flush=True)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "accuracy.json").write_text(json.dumps(rows, indent=2))
    print("\n| run | data | best test acc | final | target reached at epoch | s/epoch (1 core) |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['run']} | {r['data']} | {r['best']:.4f} | {r['final']:.4f} | {r['reached_at_epoch']} | {r['s_per_epoch']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
