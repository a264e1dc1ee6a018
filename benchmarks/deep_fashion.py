"""Scellier & Bengio 2017's 784-500-500-500-10 on Fashion-MNIST: test accuracy per epoch and s/epoch.

    python benchmarks/deep_fashion.py --epochs 1 --train-size 2000   # a measured slice (one core)
    python benchmarks/deep_fashion.py --epochs 60                      # the full run (an accelerator)
    python benchmarks/deep_fashion.py --from-run DIR                   # the epochs a CLI run has finished

`--from-run` reads a run made with `circuitc train benchmarks/circuits/fashion_sb17_deep.circ
--data fashion-mnist --out DIR` (which checkpoints every epoch and continues with `--resume`,
so a run of many hours can be done in pieces) and also draws docs/deep_fashion.png.

Trains `benchmarks/circuits/fashion_sb17_deep.circ` through `circuitlang.train` (the
same code as `circuitc train`) and writes benchmarks/results/deep_fashion.json: the
settings, the curve of whatever epochs ran (test accuracy, loss, convergence,
seconds) and the median s/epoch, scaled to the full 60,000-image training set when
`--train-size` trains on a slice.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CIRCUIT = HERE / "circuits" / "fashion_sb17_deep.circ"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--train-size", type=int, default=None, help="train on the first N images only")
    ap.add_argument("--test-size", type=int, default=None, help="evaluate on the first N test images only")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="as `circuitc train --set`")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "deep_fashion.json")
    ap.add_argument("--from-run", type=Path, metavar="DIR", help="read a `circuitc train` run's metrics instead")
    args = ap.parse_args(argv)
    if args.from_run:
        return _from_run(args)

    import jax
    import circuitlang as cl
    from circuitlang.data import load
    from circuitlang.training import train

    overrides = dict(kv.split("=", 1) for kv in args.set)
    model = cl.compile(cl.load(CIRCUIT), overrides=overrides)
    data = load(args.data)
    full = len(data.y_train)
    if args.train_size:
        data = dataclasses.replace(data, x_train=data.x_train[: args.train_size], y_train=data.y_train[: args.train_size])
    if args.test_size:
        data = dataclasses.replace(data, x_test=data.x_test[: args.test_size], y_test=data.y_test[: args.test_size])
    result = train(model, data, epochs=args.epochs, seed=args.seed, progress=True)
    curve = [{k: v for k, v in row.items() if not k.startswith(("saturated.", "update_ratio."))}
             for row in result.history]
    timed = result.history[1:] or result.history  # the first epoch's seconds include compilation
    secs = statistics.median(r["seconds"] for r in timed)
    out = {
        "circuit": str(CIRCUIT.relative_to(HERE.parent)),
        "data": args.data,
        "train_size": len(data.y_train),
        "test_size": len(data.y_test),
        "epochs": len(curve),
        "seed": args.seed,
        "overrides": overrides,
        "s_per_epoch": secs,
        "s_per_full_epoch_estimate": secs * full / len(data.y_train),
        "curve": curve,
        "machine": {"platform": platform.platform(), "jax": jax.__version__, "devices": str(jax.devices())},
        "note": "s_per_epoch: median over the epochs after the first (whose seconds include "
                "compilation), or the first alone when only one ran",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, default=float))
    last = curve[-1]
    print(f"{len(curve)} epoch(s) on {len(data.y_train)} images: test accuracy {last['test_accuracy']:.4f}, "
          f"{secs:.1f} s/epoch (~{out['s_per_full_epoch_estimate']:.0f} s per 60k epoch); wrote {args.out}")
    return 0


def _from_run(args) -> int:
    history = json.loads((args.from_run / "metrics.json").read_text())
    manifest = json.loads((args.from_run / "run.json").read_text())
    if Path(manifest.get("file", "")).name != CIRCUIT.name:
        sys.exit(f"{args.from_run} is a run of {manifest.get('file')}, not of {CIRCUIT.name}")
    curve = [{k: v for k, v in row.items() if not k.startswith(("saturated.", "update_ratio."))} for row in history]
    timed = curve[1:] or curve
    secs = statistics.median(r["seconds"] for r in timed)
    out = {
        "circuit": str(CIRCUIT.relative_to(HERE.parent)),
        "command": f"circuitc train {CIRCUIT.relative_to(HERE.parent)} --data fashion-mnist --out DIR",
        "data": manifest.get("data", "fashion-mnist"),
        "epochs": len(curve),
        "epochs_planned": manifest.get("epochs"),
        "seed": manifest.get("seed"),
        "s_per_epoch": secs,
        "best_test_accuracy": max(r["test_accuracy"] for r in curve),
        "curve": curve,
        "versions": manifest.get("versions"),
        "note": "the epochs the run had finished when this was written; s_per_epoch: median over the "
                "epochs after the first, on the machine and cores the run used",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, default=float))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4), constrained_layout=True)
    epochs = [r["epoch"] for r in curve]
    ax.plot(epochs, [100 * r["test_accuracy"] for r in curve], "o-", label="test")
    if all("train_accuracy" in r for r in curve):
        ax.plot(epochs, [100 * r["train_accuracy"] for r in curve], "s--", label="train (during the epoch)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Scellier & Bengio 2017, 784-500-500-500-10, Fashion-MNIST", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    png = HERE.parent / "docs" / "deep_fashion.png"
    fig.savefig(png, dpi=110)
    print(f"{len(curve)} epoch(s): best test accuracy {out['best_test_accuracy']:.4f}, {secs:.0f} s/epoch; "
          f"wrote {args.out} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
