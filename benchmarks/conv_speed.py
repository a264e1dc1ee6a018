"""Convolutional EqProp: the compiled circuit's update step against the hand-written reference.

`../shared/bench/conv_ref.py step` times one symmetric EqProp update of
Laborieux et al. 2021's P_CNN (T1 free steps, T2 steps at +β and at −β, and
the parameter gradient) on one batch. This script writes the same
architecture as a `.circ` file (same activation, steps, β, batch, data),
times `estimate` on the same batch the same way (best of `--repeats` after
a warm-up), and alternates the two, pinned to one core with XLA
single-threaded, `--rounds` times. Report the ratio measured side by side:
the second core of these machines is stolen in bursts.

    python benchmarks/conv_speed.py                         # the three nets of the issue, batch 64 (digits 32)
    python benchmarks/conv_speed.py --nets digits --rounds 1

Writes benchmarks/results/conv_speed.json and prints a markdown table.
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
REF = (HERE.parent.parent / "shared" / "bench" / "conv_ref.py").resolve()
ONE_CORE = {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}

# name: (conv_ref arguments, preset values the circuit needs)
NETS = {
    "digits": (["--data", "digits"], dict(data="digits", hw=8, channels=[16, 32], kernel=3, pad=1, T1=30, T2=10,
                                          beta=0.5, batch=32)),
    "fashion": (["--data", "fashion"], dict(data="fashion-mnist", hw=28, channels=[32, 64], kernel=5, pad=2,
                                            T1=40, T2=12, beta=0.5, batch=64)),
    "fashion-16-32": (["--data", "fashion", "--channels", "16", "32", "--kernel", "3", "--pad", "1"],
                      dict(data="fashion-mnist", hw=28, channels=[16, 32], kernel=3, pad=1, T1=40, T2=12,
                           beta=0.5, batch=64)),
}

OURS = r"""
import json, sys, time
import jax, jax.numpy as jnp
import circuitlang as cl
from circuitlang import learning
from circuitlang.data import load
text, data, batch, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
model = cl.compile(cl.loads(text))
params = model.init(jax.random.key(0))
d = load(data)
x = model.as_inputs(jnp.asarray(d.x_train[:batch]))
y = jnp.asarray(d.targets(d.y_train[:batch]))
step = jax.jit(lambda p, x, y, k: learning.estimate(model, p, x, y, model.method, None, k))
key = jax.random.key(0)
jax.block_until_ready(step(params, x, y, key))
times = []
for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(step(params, x, y, key))
    times.append(time.perf_counter() - t0)
print("RESULT " + json.dumps({"s_per_update": min(times)}))
"""


def circuit(p: dict) -> str:
    """conv_ref's P_CNN as a `.circ` file: rates, s <- rho(dPhi/ds), max-pooling after
    every convolution, a dense readout, symmetric nudging."""
    sizes = [p["hw"]]
    for _ in p["channels"]:
        sizes.append((sizes[-1] + 2 * p["pad"] - p["kernel"] + 1) // 2)
    lines = ["fn rho(v) = sigmoid(4 * (v - 0.5))", f"population x [1, {p['hw']}, {p['hw']}] input rho=identity"]
    names = ["x"]
    for i, c in enumerate(p["channels"]):
        lines.append(f"population h{i + 1} [{c}, {sizes[i + 1]}, {sizes[i + 1]}]")
        names.append(f"h{i + 1}")
    lines.append("population y [10] output")
    for i in range(len(p["channels"])):
        lines.append(f"{names[i + 1]} -- {names[i]} : K{i} conv({p['kernel']}, padding={p['pad']}) pool(max, 2)")
    lines += [f"y -- {names[-1]} : W", "bias " + ", ".join(names[1:] + ["y"]), "energy hopfield", "cost y squared",
              "learn eqprop {",
              f"  phase free  {{ steps {p['T1']}; dt 1; integrator prototypical }}",
              f"  phase nudge {{ steps {p['T2']}; dt 1; integrator prototypical; beta {p['beta']} }}",
              "  estimator symmetric", f"  batch {p['batch']}", "}"]
    return "\n".join(lines) + "\n"


def _run(cmd):
    full = {**os.environ, **ONE_CORE}
    out = subprocess.run(["taskset", "-c", "0", *cmd], capture_output=True, text=True, env=full)
    if out.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return out.stdout


def reference(args: list[str], batch: int, repeats: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ref.json"
        _run([sys.executable, str(REF), "step", *args, "--batches", str(batch), "--threads", "1",
              "--repeats", str(repeats), "--json", str(path)])
        return json.loads(path.read_text())["results"][0]["s_per_update"]


def ours(p: dict, repeats: int) -> float:
    out = _run([sys.executable, "-c", OURS, circuit(p), p["data"], str(p["batch"]), str(repeats)])
    line = next(l for l in out.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])["s_per_update"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=str(HERE / "results" / "conv_speed.json"))
    a = ap.parse_args()
    results = {}
    for name in a.nets:
        args, p = NETS[name]
        refs, mine = [], []
        for _ in range(a.rounds):  # alternate: both see the same machine
            refs.append(reference(args, p["batch"], a.repeats))
            mine.append(ours(p, a.repeats))
        ratios = [m / r for m, r in zip(mine, refs)]
        results[name] = {"batch": p["batch"], "steps": p["T1"] + 2 * p["T2"], "reference_s": refs,
                         "circuitlang_s": mine, "ratios": ratios, "ratio_median": statistics.median(ratios),
                         "circuit": circuit(p)}
        print(f"{name}: reference {min(refs) * 1e3:.1f} ms, circuitlang {min(mine) * 1e3:.1f} ms per update, "
              f"ratio {statistics.median(ratios):.3f} (rounds: {', '.join(f'{r:.3f}' for r in ratios)})", flush=True)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps({"command": " ".join(sys.argv), "results": results}, indent=1))
    print("\n| net | batch | steps | reference ms/update | circuitlang ms/update | circuitlang / reference |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['batch']} | {r['steps']} | {min(r['reference_s']) * 1e3:.0f} | "
              f"{min(r['circuitlang_s']) * 1e3:.0f} | **{r['ratio_median']:.2f}** |")


if __name__ == "__main__":
    main()
