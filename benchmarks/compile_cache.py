"""Time to the first epoch, with JAX's persistent compilation cache cold and warm.

For each circuit, `circuitc train FILE --epochs 1` runs three times in fresh processes:
with the cache off (`--no-compile-cache`), into an empty cache (cold: compiles and
stores), and again (warm: loads the compiled programs). The table gives the wall time
of the whole command and the first epoch's own seconds (`metrics.json`, which include
compiling the epoch), pinned to one core.

    python benchmarks/compile_cache.py          # writes benchmarks/results/compile_cache.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CIRCUITS = ["examples/eqprop_hopfield.circ", "examples/deep_eqprop.circ", "examples/conv_eqprop.circ"]


def _run(path: str, cache: Path, out: Path, extra: list[str], core: int = 0) -> tuple[float, float]:
    env = {**os.environ, "CIRCUITLANG_CACHE": str(cache), "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"}
    cmd = ["taskset", "-c", str(core), sys.executable, "-m", "circuitlang", "train", path, "--epochs", "1",
           "--out", str(out), "--force", "--no-progress", *extra]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - start
    first = json.loads((out / "metrics.json").read_text())[0]["seconds"]
    return wall, first


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--circuits", nargs="*", default=CIRCUITS, metavar="FILE")
    ap.add_argument("--core", type=int, default=0, help="the CPU core to pin to (default 0)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "compile_cache.json")
    args = ap.parse_args(argv)
    rows = {}
    print("| circuit | no cache: wall / first epoch (s) | cold | warm |")
    print("|---|---|---|---|")
    for path in args.circuits:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            off = _run(path, tmp / "cache", tmp / "run", ["--no-compile-cache"], args.core)
            cold = _run(path, tmp / "cache", tmp / "run", [], args.core)
            warm = _run(path, tmp / "cache", tmp / "run", [], args.core)
        rows[path] = {"off": off, "cold": cold, "warm": warm}
        cells = " | ".join(f"{w:.2f} / {f:.2f}" for w, f in (off, cold, warm))
        print(f"| `{path}` | {cells} |", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": "python benchmarks/compile_cache.py",
                                    "seconds (wall, first epoch)": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
