"""What residuals and training health cost: seconds per epoch with them against without them.

Trains the same circuit, alternately, each run pinned to one core with XLA
single-threaded, and reports the median seconds per epoch (the first epoch,
which compiles, is dropped) and their ratio:

* by default, this checkout against itself with the health figures stripped
  (`health.batch_health` and `health.update_ratios` return nothing, so XLA
  drops every residual and its reductions from the compiled epoch): what they
  cost now, everything else equal;
* with `--baseline REV`, against a git revision (checked out into a temporary
  worktree), e.g. 188fa40, the last commit before every phase returned a
  residual and `train` recorded its health (this also counts whatever else
  changed since).

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
import json, os, sys, warnings
warnings.simplefilter("ignore")
import circuitlang as cl
if os.environ.get("STRIP_HEALTH"):  # the epoch without residuals and health figures
    from circuitlang import health
    health.batch_health = lambda info: {}
    health.update_ratios = lambda model, before, after, batches: {}
from circuitlang.data import load
from circuitlang.training import train
model = cl.compile(cl.load(sys.argv[1]))
result = train(model, load(sys.argv[2]), int(sys.argv[3]), progress=False)
print(json.dumps([row["seconds"] for row in result.history]))
"""


def epoch_seconds(tree: Path, circuit: str, data: str, epochs: int, core: str, strip: bool = False) -> list[float]:
    """Seconds of every epoch after the first, with the package of `tree` (`strip`: without health)."""
    env = {**os.environ, **ONE_CORE, "PYTHONPATH": str(tree)}
    env.pop("STRIP_HEALTH", None)
    if strip:
        env["STRIP_HEALTH"] = "1"
    done = subprocess.run(["taskset", "-c", core, sys.executable, "-c", RUN, circuit, data, str(epochs)],
                          cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed in {tree}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])[1:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", default=None,
                    help="a git revision to compare with (default: this checkout with the health figures stripped)")
    ap.add_argument("--circuits", nargs="+", default=["benchmarks/circuits/fashion_proto.circ",
                                                      "benchmarks/circuits/fashion_sb17.circ"])
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--epochs", type=int, default=3, help="per run, the first (compiling) one dropped")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--core", default="0", help="the CPU core to pin every run to")
    a = ap.parse_args()
    results = []
    label = a.baseline or "this checkout, health stripped"
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        if a.baseline:
            subprocess.run(["git", "worktree", "add", "--detach", str(base), a.baseline], cwd=ROOT, check=True,
                           capture_output=True)
        try:
            for circuit in a.circuits:
                runs: dict[str, list[float]] = {"baseline": [], "now": []}
                ratios = []
                for r in range(a.rounds):
                    for name in ("baseline", "now"):
                        tree = base if (name == "baseline" and a.baseline) else ROOT
                        strip = name == "baseline" and not a.baseline
                        secs = epoch_seconds(tree, circuit, a.data, a.epochs, a.core, strip)
                        runs[name] += secs
                        print(f"{circuit} round {r} {name}: {', '.join(f'{s:.3f}' for s in secs)} s", flush=True)
                    n = len(runs["now"]) // (r + 1)
                    ratios.append(statistics.median(runs["now"][-n:]) / statistics.median(runs["baseline"][-n:]))
                    print(f"{circuit} round {r}: now / baseline = {ratios[-1]:.3f}", flush=True)
                med = {k: statistics.median(v) for k, v in runs.items()}
                results.append({"circuit": circuit, "data": a.data, "baseline": label, "epochs": runs,
                                "median_s_per_epoch": med, "ratio_now_over_baseline": med["now"] / med["baseline"],
                                "ratio_per_round": ratios})
                print(f"{circuit}: now / baseline = {med['now'] / med['baseline']:.3f} "
                      f"({med['now']:.3f} vs {med['baseline']:.3f} s/epoch; rounds "
                      f"{' / '.join(f'{x:.3f}' for x in ratios)})", flush=True)
        finally:
            if a.baseline:
                subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, capture_output=True)
    out = HERE / "results" / "health_overhead.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/health_overhead.py" + (f" --baseline {a.baseline}" if a.baseline else "")
    out.write_text(json.dumps({"command": command, "results": results}, indent=1))


if __name__ == "__main__":
    main()
