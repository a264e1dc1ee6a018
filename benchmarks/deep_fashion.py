"""Scellier & Bengio 2017's 784-500-500-500-10 on Fashion-MNIST: test accuracy per epoch and s/epoch.

    python benchmarks/deep_fashion.py --epochs 1 --train-size 2000   # a measured slice (one core)
    python benchmarks/deep_fashion.py --epochs 60                      # the full run (an accelerator)
    python benchmarks/deep_fashion.py --from-run DIR                   # the epochs a CLI run has finished
    python benchmarks/deep_fashion.py --from-run DIR --from-run DIR2   # several runs, one figure

`--from-run` reads a run made with `circuitc train benchmarks/circuits/fashion_sb17_deep.circ
--data fashion-mnist --out DIR` (which checkpoints every epoch and continues with `--resume`,
so a run of many hours can be done in pieces), and also draws docs/deep_fashion.png: one
curve per run, labelled with its nudging β (the file's β was 1 until it became 2).

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
    ap.add_argument("--from-run", type=Path, action="append", metavar="DIR",
                    help="read a `circuitc train` run's metrics instead (repeat for several runs)")
    args = ap.parse_args(argv)
    if args.from_run:
        return _from_run(args)

    import jax

    import circuitlang as cl
    from circuitlang.data import load
    from circuitlang.training import train

    overrides = dict(kv.split("=", 1) for kv in args.set)
    circuit = CIRCUIT
    model = cl.compile(cl.load(circuit), overrides=overrides)
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
        "circuit": _rel(circuit),
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


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(HERE.parent))
    except ValueError:
        return str(path)


def _read_run(run: Path) -> dict:
    """One CLI run's curve and settings (the epochs it has finished)."""
    history = json.loads((run / "metrics.json").read_text())
    manifest = json.loads((run / "run.json").read_text())
    if Path(manifest.get("file", "")).name != CIRCUIT.name:
        sys.exit(f"{run} is a run of {manifest.get('file')}, not of {CIRCUIT.name}")
    circuit = CIRCUIT
    phases = {ph["name"]: ph for ph in manifest.get("settings", {}).get("phases", [])}
    curve = [{k: v for k, v in row.items() if not k.startswith(("saturated.", "update_ratio."))} for row in history]
    timed = curve[1:] or curve
    return {
        "circuit": _rel(circuit),
        "command": f"circuitc train {_rel(circuit)} --data fashion-mnist --out DIR",
        "data": manifest.get("data", "fashion-mnist"),
        "epochs": len(curve),
        "epochs_planned": manifest.get("epochs"),
        "seed": manifest.get("seed"),
        "nudge_beta": phases.get("nudge", {}).get("beta"),
        "file_sha256": manifest.get("file_sha256"),
        "s_per_epoch": statistics.median(r["seconds"] for r in timed),
        "best_test_accuracy": max(r["test_accuracy"] for r in curve),
        "curve": curve,
        "versions": manifest.get("versions"),
        "note": "the epochs the run had finished when this was written; s_per_epoch: median over the "
                "epochs after the first, on the machine and cores the run used",
    }


def _from_run(args) -> int:
    runs = [_read_run(run) for run in args.from_run]
    out = runs[0] if len(runs) == 1 else {"runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, default=float))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4), constrained_layout=True)
    for run, colour in zip(runs, ("C0", "C1", "C2", "C3")):
        curve = run["curve"]
        epochs = [r["epoch"] for r in curve]
        beta = run["nudge_beta"]  # ours, with C = 1/2 |y - t|^2: Scellier's beta is half of it
        name = f"β = {beta:g} (Scellier's {beta / 2:g})" if beta is not None else Path(run["circuit"]).stem
        ax.plot(epochs, [100 * r["test_accuracy"] for r in curve], "o-", color=colour, label=f"{name}: test")
        if all("train_accuracy" in r for r in curve):
            ax.plot(epochs, [100 * r["train_accuracy"] for r in curve], "s--", color=colour, alpha=0.6,
                    label=f"{name}: train (during the epoch)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("784-500-500-500-10 (Scellier & Bengio 2017), Fashion-MNIST", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center right")
    png = HERE.parent / "docs" / "deep_fashion.png"
    fig.savefig(png, dpi=110)
    for run in runs:
        print(f"{run['circuit']} (beta {run['nudge_beta']}): {run['epochs']} epoch(s), best test accuracy {run['best_test_accuracy']:.4f}, "
              f"{run['s_per_epoch']:.0f} s/epoch")
    print(f"wrote {args.out} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
