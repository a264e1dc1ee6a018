"""Five seeds in one program against one seed: the wall time of `circuitc train --seeds 0-4`.

Each round runs, in fresh processes pinned to one core (XLA's own threads off), `circuitc
train FILE --data digits` with `--seed 0` and with `--seeds 0-4` (five members vmapped in
one compiled program), both compiling afresh (`--no-compile-cache`), and reports the ratio
of their wall times (the whole command: imports, data, compilation, every epoch, the files).

    python benchmarks/sweeps.py              # writes benchmarks/results/sweeps.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _run(args, extra: list[str], out: Path) -> float:
    env = {**os.environ, "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"}
    cmd = ["taskset", "-c", str(args.core), sys.executable, "-m", "circuitlang", "train", args.file,
           "--data", "digits", "--out", str(out), "--force", "--no-progress", "--no-compile-cache",
           "--health", "ignore", *extra]
    if args.epochs:
        cmd += ["--epochs", str(args.epochs)]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", default="examples/eqprop_hopfield.circ")
    ap.add_argument("--seeds", default="0-4", help="the sweep's seeds (default 0-4)")
    ap.add_argument("--epochs", type=int, help="default: the file's")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--core", type=int, default=0, help="the CPU core to pin to (default 0)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "sweeps.json")
    args = ap.parse_args(argv)
    rounds = []
    print("| round | one seed (s) | seeds " + args.seeds + " in one program (s) | ratio |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            one = _run(args, ["--seed", "0"], Path(tmp) / "one")
            many = _run(args, ["--seeds", args.seeds], Path(tmp) / "many")
            members = len(json.loads((Path(tmp) / "many" / "run.json").read_text())["members"])
            rounds.append({"one_seed": one, "sweep": many, "ratio": many / one})
            print(f"| {r + 1} | {one:.2f} | {many:.2f} | {many / one:.2f} |", flush=True)
    ratios = [x["ratio"] for x in rounds]
    print(f"median ratio {statistics.median(ratios):.2f} for {members} members "
          f"(separate processes would take ~{members}x)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": "python benchmarks/sweeps.py" + (f" --epochs {args.epochs}" if args.epochs else ""),
        "file": args.file, "data": "digits", "seeds": args.seeds, "members": members,
        "pinned": f"taskset -c {args.core}, XLA_FLAGS=--xla_cpu_multi_thread_eigen=false, --no-compile-cache",
        "rounds": rounds, "median_ratio": statistics.median(ratios)}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
