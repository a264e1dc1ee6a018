"""What residuals and training health cost: seconds per epoch now against a revision without them.

Trains the same circuit with this checkout and with `--baseline` (a git
revision, checked out into a temporary worktree), alternately, each pinned to
one core with XLA single-threaded, and reports the median seconds per epoch
(the first epoch, which compiles, is dropped) and their ratio. The default
baseline, 188fa40, is the last commit before every phase returned a residual
and `train` recorded its health.

    python benchmarks/health_overhead.py                                  # both Fashion-MNIST forms
    python benchmarks/health_overhead.py --circuits benchmarks/circuits/fashion_sb17.circ --rounds 3

Writes benchmarks/results/health_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ONE_CORE = {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false", "OMP_NUM_THREADS": "1"}
RUN = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
import circuitlang as cl
from circuitlang.data import load
from circuitlang.training import train
model = cl.compile(cl.load(sys.argv[1]))
result = train(model, load(sys.argv[2]), int(sys.argv[3]), progress=False)
print(json.dumps([row["seconds"] for row in result.history]))
"""


def epoch_seconds(tree: Path, circuit: str, data: str, epochs: int, core: str) -> list[float]:
    """Seconds of every epoch after the first, with the package of `tree`."""
    done = subprocess.run(["taskset", "-c", core, sys.executable, "-c", RUN, circuit, data, str(epochs)],
                          cwd=tree, env={**os.environ, **ONE_CORE, "PYTHONPATH": str(tree)},
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed in {tree}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])[1:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", default="188fa40", help="git revision without residuals and health")
    ap.add_argument("--circuits", nargs="+", default=["benchmarks/circuits/fashion_proto.circ",
                                                      "benchmarks/circuits/fashion_sb17.circ"])
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--epochs", type=int, default=3, help="per run, the first (compiling) one dropped")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--core", default="0", help="the CPU core to pin every run to")
    a = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), a.baseline], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            for circuit in a.circuits:
                runs: dict[str, list[float]] = {"baseline": [], "now": []}
                for r in range(a.rounds):
                    for name, tree in (("baseline", base), ("now", ROOT)):
                        secs = epoch_seconds(tree, circuit, a.data, a.epochs, a.core)
                        runs[name] += secs
                        print(f"{circuit} round {r} {name}: {', '.join(f'{s:.3f}' for s in secs)} s", flush=True)
                med = {k: statistics.median(v) for k, v in runs.items()}
                results.append({"circuit": circuit, "data": a.data, "baseline": a.baseline, "epochs": runs,
                                "median_s_per_epoch": med, "ratio_now_over_baseline": med["now"] / med["baseline"]})
                print(f"{circuit}: now / baseline = {med['now'] / med['baseline']:.3f} "
                      f"({med['now']:.3f} vs {med['baseline']:.3f} s/epoch)", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, capture_output=True)
    out = HERE / "results" / "health_overhead.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": "python benchmarks/health_overhead.py", "results": results}, indent=1))


if __name__ == "__main__":
    main()
