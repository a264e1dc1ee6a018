"""Wall time of `circuitc check` on every example, as a user starts it from a shell.

Each example is checked `--repeats` times in a fresh process (interpreter start included),
round by round;
the table gives the median and the worst, next to the interpreter's own start (`python -c
pass`) and `import circuitlang`. The first run that meets a new grammar builds the parser's
tables (0.3 s) and keeps them in the cache directory; `--cold` measures with that cache off.

    python benchmarks/startup.py                 # writes benchmarks/results/startup.json
    python benchmarks/startup.py --repeats 3 --cold
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _wall(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7, help="fresh processes per example (default 7)")
    ap.add_argument("--cold", action="store_true", help="parser cache off (CIRCUITLANG_CACHE=off)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "startup.json")
    args = ap.parse_args(argv)
    env = dict(os.environ)
    if args.cold:
        env["CIRCUITLANG_CACHE"] = "off"
    py = sys.executable
    commands = {"python -c pass": [py, "-c", "pass"], "import circuitlang": [py, "-c", "import circuitlang"]}
    for path in sorted((ROOT / "examples").glob("*.circ")):
        commands[f"check {path.name}"] = [py, "-m", "circuitlang", "check", "-q", str(path)]
    # warm the cache (and the compiled bytecode) once, outside the timings
    subprocess.run(commands["check eqprop_hopfield.circ"], env=env, check=True)
    rows: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.repeats):  # round by round, so a burst of load on the machine hits all alike
        for name, command in commands.items():
            rows[name].append(_wall(command, env))
    print(f"| command | median s | worst s |  ({args.repeats} fresh processes each{', parser cache off' if args.cold else ''})")
    print("|---|---|---|")
    for name, times in rows.items():
        print(f"| `{name}` | {statistics.median(times):.3f} | {max(times):.3f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cold": args.cold, "repeats": args.repeats, "cpus": os.cpu_count(),
                                    "seconds": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
