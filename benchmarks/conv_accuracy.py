"""Accuracy of the convolutional circuits: digits as 1×8×8, Fashion-MNIST as 1×28×28.

* `examples/conv_eqprop.circ` on digits, the file's 30 epochs (target ≥ 97.5%);
* `benchmarks/circuits/fashion_conv.circ` on Fashion-MNIST (target ≥ 90%):
  about 5 minutes per epoch on one core of this machine, so the full 30
  epochs take about 2.5 hours; `--fashion-epochs` runs fewer, and
  `--fashion-run DIR` reads the metrics of a run made with
  `circuitc train benchmarks/circuits/fashion_conv.circ --data fashion-mnist --out DIR`
  instead of training again.

Each run is `circuitc train` with the file's settings, seed 0, one core
(`taskset -c 0`, XLA single-threaded).

    python benchmarks/conv_accuracy.py                       # both (hours)
    python benchmarks/conv_accuracy.py --only digits         # half a minute
    python benchmarks/conv_accuracy.py --fashion-run runs/FashionConv

Writes benchmarks/results/conv_accuracy.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ONE_CORE = {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false", "OMP_NUM_THREADS": "1"}
RUNS = {
    "digits": ("examples/conv_eqprop.circ", "digits", None),
    "fashion-mnist": ("benchmarks/circuits/fashion_conv.circ", "fashion-mnist", None),
}


def train(path: str, data: str, epochs: int | None, out: Path) -> list[dict]:
    cmd = ["taskset", "-c", "0", sys.executable, "-m", "circuitlang", "train", path, "--data", data,
           "--out", str(out), "--no-progress"]
    if epochs is not None:
        cmd += ["--epochs", str(epochs)]
    done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **ONE_CORE}, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return json.loads((out / "metrics.json").read_text())


def summary(path: str, data: str, history: list[dict], command: str) -> dict:
    acc = [r["test_accuracy"] for r in history]
    best = max(acc)
    seconds = [r["seconds"] for r in history[1:]] or [history[0]["seconds"]]
    return {"file": path, "data": data, "command": command, "epochs": len(history),
            "best_test_accuracy": best, "best_epoch": acc.index(best) + 1, "final_test_accuracy": acc[-1],
            "s_per_epoch": sorted(seconds)[len(seconds) // 2], "test_accuracy": acc}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=list(RUNS))
    ap.add_argument("--fashion-epochs", type=int)
    ap.add_argument("--fashion-run", help="read this run directory's metrics.json instead of training")
    a = ap.parse_args()
    results_path = HERE / "results" / "conv_accuracy.json"
    results = json.loads(results_path.read_text())["results"] if results_path.exists() else {}
    for name, (path, data, _) in RUNS.items():
        if a.only and name != a.only:
            continue
        if name == "fashion-mnist" and a.fashion_run:
            history = json.loads((Path(a.fashion_run) / "metrics.json").read_text())
            command = f"circuitc train {path} --data {data} --out {a.fashion_run}"
        else:
            epochs = a.fashion_epochs if name == "fashion-mnist" else None
            with tempfile.TemporaryDirectory() as tmp:
                history = train(path, data, epochs, Path(tmp))
            command = f"circuitc train {path} --data {data}" + (f" --epochs {epochs}" if epochs else "")
        results[name] = summary(path, data, history, command)
        r = results[name]
        print(f"{name}: best {r['best_test_accuracy']:.4f} (epoch {r['best_epoch']}), final "
              f"{r['final_test_accuracy']:.4f} after {r['epochs']} epochs, {r['s_per_epoch']:.2f} s/epoch", flush=True)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps({"command": "python benchmarks/conv_accuracy.py", "results": results},
                                       indent=1))


if __name__ == "__main__":
    main()
