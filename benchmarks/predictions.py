"""The talk's four predictions, end to end: train both microcircuits, then run the experiments.

    python benchmarks/predictions.py             # trains (seed 0, the files' epochs), runs both experiments
    python benchmarks/predictions.py --runs DIR  # reuse DIR/mirror and DIR/dendritic if they hold trained runs

For each of `examples/mirror_interneurons.circ` and `examples/dendritic_microcircuit.circ`:
`circuitc train FILE --data digits --seed 0`, then `circuitc experiment FILE --params
RUN/params.npz --data digits --samples 128 --perturb QUIET --sweep STIM.size=0.25,0.5,1,2
--target data,prediction`, pinned to one core. Copies each experiment.csv to
benchmarks/results/experiment_NAME.csv and experiment.png to docs/experiment_NAME.png, and
prints, per prediction, the figures the README's table reports.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# name: (file, stimulating perturbation, quieting perturbation, hidden pyramids)
CIRCUITS = {
    "mirror": ("examples/mirror_interneurons.circ", "stim_mirror", "quiet_mirror", "s1"),
    "dendritic": ("examples/dendritic_microcircuit.circ", "stim_inter", "quiet_inter", "p1"),
}
SIZES = "0.25,0.5,1,2"
ONE_CORE = {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false", "OMP_NUM_THREADS": "1"}


def _circuitc(args: list[str], core: int) -> None:
    cmd = ["taskset", "-c", str(core), sys.executable, "-m", "circuitlang", *args]
    subprocess.run(cmd, cwd=ROOT, env={**os.environ, **ONE_CORE}, check=True)


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {r["condition"]: r for r in csv.DictReader(f)}


def report(name: str, rows: dict[str, dict[str, str]], stim: str, quiet: str, hidden: str) -> list[str]:
    """The figures of each prediction, read off one experiment.csv."""
    ctrl, calm = rows["control [data]"], rows["control [no surprise]"]
    apical = f"|{hidden}.apical| nudge"
    out = [f"{name} (a): |apical| in the nudge without surprise {float(calm[apical]):.4f} vs "
           f"{float(ctrl[apical]):.4f} with: {float(calm[apical]) / float(ctrl[apical]):.0%}"]
    sweep = [r for label, r in rows.items() if label.startswith(f"{stim} size=") and label.endswith("[data]")]
    ltp = [float(r["W1 LTP"]) for r in sweep]
    out.append(f"{name} (b): W1 LTP control {float(ctrl['W1 LTP']):.3g} -> " + ", ".join(f"{v:.3g}" for v in ltp)
               + f" for {stim}.size {SIZES}; mean dW1 " + ", ".join(f"{float(r['W1 mean']):.2g}" for r in sweep))
    q = rows[f"{quiet} [data]"]
    out.append(f"{name} (c): W1 LTP control {float(ctrl['W1 LTP']):.3g} -> {float(q['W1 LTP']):.3g} with {quiet} "
               f"(LTD {float(ctrl['W1 LTD']):.3g} -> {float(q['W1 LTD']):.3g})")
    out.append(f"{name} (d): cost along the nudge {float(ctrl['cost nudge start']):.4f} -> "
               f"{float(ctrl['cost nudge end']):.4f}; next trial {float(ctrl['cost next trial']):.5f} vs "
               f"{float(ctrl['cost free']):.5f} ({float(ctrl['cost next trial']) / float(ctrl['cost free']) - 1:+.1%})")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, help="trained runs to reuse (DIR/mirror, DIR/dendritic); default: train")
    ap.add_argument("--core", type=int, default=0, help="the CPU core to pin to (default 0)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        runs = args.runs or Path(tmp)
        lines = []
        for name, (path, stim, quiet, hidden) in CIRCUITS.items():
            run = runs / name
            if not (run / "params.npz").exists():
                _circuitc(["train", path, "--data", "digits", "--seed", "0", "--out", str(run), "--no-progress"],
                          args.core)
            out = Path(tmp) / f"experiment-{name}"
            _circuitc(["experiment", path, "--params", str(run / "params.npz"), "--data", "digits",
                       "--samples", "128", "--perturb", quiet, "--sweep", f"{stim}.size={SIZES}",
                       "--target", "data,prediction", "--out", str(out)], args.core)
            shutil.copy(out / "experiment.csv", HERE / "results" / f"experiment_{name}.csv")
            shutil.copy(out / "experiment.png", ROOT / "docs" / f"experiment_{name}.png")
            lines += report(name, _rows(out / "experiment.csv"), stim, quiet, hidden)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
