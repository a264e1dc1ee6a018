"""Where an epoch of the continuous (Scellier & Bengio 2017) form goes, at one thread.

    python benchmarks/speed_breakdown.py            # Fashion-MNIST, 3 epochs per setting
    python benchmarks/speed_breakdown.py --epochs 2

`benchmarks/speed.py` compares `benchmarks/circuits/fashion_sb17.circ` with the
hand-written reference; this script splits circuitlang's epoch into parts, each
measured in its own subprocess pinned to one core with XLA single-threaded:

* **floor**: the input weight's two 20×784×500 products per batch (the hoisted
  drive x·W1ᵀ and the update Δᵀx) and the weight update, nothing else, as one
  jitted `lax.scan` over the epoch's batches: the arithmetic of one SGD update
  per batch, as the reference does it;
* **blocked floor**: the same arithmetic in blocks of 4 batches, as `train` runs it
  (`circuitlang/blocking.py`): one drive product for the block's 80 inputs, a
  Gram matrix for the drives' corrections, one update product and one pass over W1;
* **per-batch updates**: the epoch with `train(..., block=False)`;
* **per step**: the epoch at 20 + 4, 2 + 2 and 40 + 4 relaxation steps; the slope
  gives the cost of one step per epoch, the intercept the epoch with no steps;
* **rest**: the intercept minus the blocked floor (per batch: everything that is
  neither the input weight's arithmetic nor a step: the other weights' updates,
  the persistent states, the estimator's bookkeeping, residuals, health).

Writes benchmarks/results/speed_breakdown.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CIRCUIT = HERE / "circuits" / "fashion_sb17.circ"
ONE_CORE = {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}

OURS = r"""
import json, sys
import circuitlang as cl
from circuitlang.data import load
from circuitlang.training import train
path, data, epochs, free, nudge, block = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
d = load(data)
model = cl.compile(cl.load(path), {"phase.free.steps": free, "phase.nudge.steps": nudge})
r = train(model, d, epochs=epochs, progress=False, block=block == "1")
print("RESULT " + json.dumps([h["seconds"] for h in r.history[1:]]))
"""

FLOOR = r"""
import json, sys, time
import jax, jax.numpy as jnp
from jax import lax
from circuitlang.data import load
data, epochs, batch, hidden = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])  # argv[5]: plain / blocked
d = load(data)
X = jnp.asarray(d.x_train, jnp.float32)
n, n_in = X.shape
nb = n // batch

def epoch(W, X):
    def body(W, i):
        x = lax.dynamic_slice(X, (i * batch, 0), (batch, n_in))
        h = jnp.clip(x @ W.T, 0.0, 1.0)              # the hoisted drive of the input weight
        return W + 1e-3 * ((h * 1e-2).T @ x), None    # its update: one product and one pass
    W, _ = lax.scan(body, W, jnp.arange(nb))
    return W

def blocked(W, X):  # the same updates, 4 batches at a time (circuitlang/blocking.py)
    b = 4
    def body(W, i):
        xs = lax.dynamic_slice(X, (i * batch * b, 0), (batch * b, n_in))
        D, G, ds = xs @ W.T, xs @ xs.T, []
        for j in range(b):
            d = D[j * batch:(j + 1) * batch]
            for m in range(j):
                d = d + 1e-3 * (G[j * batch:(j + 1) * batch, m * batch:(m + 1) * batch] @ ds[m])
            ds.append(jnp.clip(d, 0.0, 1.0) * 1e-2)
        return W + 1e-3 * (jnp.concatenate(ds).T @ xs), None
    W, _ = lax.scan(body, W, jnp.arange(nb // b))
    return W

if sys.argv[5] == "blocked":
    epoch = blocked

f = jax.jit(epoch, donate_argnums=0)
W = jax.random.normal(jax.random.key(0), (hidden, n_in)) * 0.05
W = f(W, X).block_until_ready()                        # compile
times = []
for _ in range(epochs):
    t = time.perf_counter()
    W = f(W, X).block_until_ready()
    times.append(time.perf_counter() - t)
print("RESULT " + json.dumps(times))
"""


def _run(code: str, *args: str) -> list[float]:
    env = {**os.environ, **ONE_CORE}
    p = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", code, *args],
                       capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"failed:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs per setting (after one to compile)")
    ap.add_argument("--json", default=str(HERE / "results" / "speed_breakdown.json"))
    args = ap.parse_args(argv)

    settings = [(20, 4), (2, 2), (40, 4)]
    epochs = {}
    for free, nudge in settings:
        epochs[f"{free}+{nudge}"] = _run(OURS, str(CIRCUIT), args.data, str(args.epochs + 1), str(free), str(nudge), "1")
        print(f"circuitlang, {free} + {nudge} steps: {[round(t, 3) for t in epochs[f'{free}+{nudge}']]} s/epoch", flush=True)
    unblocked = _run(OURS, str(CIRCUIT), args.data, str(args.epochs + 1), "20", "4", "0")
    print(f"circuitlang, 20 + 4 steps, one update per batch: {[round(t, 3) for t in unblocked]} s/epoch", flush=True)
    floor = _run(FLOOR, args.data, str(args.epochs), "20", "500", "plain")
    print(f"floor (input weight's products and update only): {[round(t, 3) for t in floor]} s/epoch", flush=True)
    floor_b = _run(FLOOR, args.data, str(args.epochs), "20", "500", "blocked")
    print(f"the same in blocks of 4: {[round(t, 3) for t in floor_b]} s/epoch", flush=True)

    med = {k: statistics.median(v) for k, v in epochs.items()}
    steps = {k: sum(map(int, k.split("+"))) for k in med}
    # least squares through the three settings: epoch = intercept + slope * steps
    xs, ys = list(steps.values()), [med[k] for k in steps]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    intercept = my - slope * mx
    fl, flb = statistics.median(floor), statistics.median(floor_b)
    full = med["20+4"]
    parts = {
        "epoch_20+4_s": full,
        "epoch_20+4_per_batch_updates_s": statistics.median(unblocked),
        "floor_s": fl,
        "blocked_floor_s": flb,
        "steps_s": slope * 24,
        "per_step_per_epoch_s": slope,
        "rest_s": intercept - flb,
    }
    result = {"data": args.data, "epochs_per_setting": args.epochs, "epochs": epochs, "per_batch_updates": unblocked,
              "floor_epochs": floor, "blocked_floor_epochs": floor_b, "parts": parts}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print("\n| part | s/epoch | share |")
    print("|---|---:|---:|")
    for name, key in [("input weight's products and update, per batch (floor)", "floor_s"),
                      ("the same in blocks of 4 (blocked floor)", "blocked_floor_s"),
                      ("24 relaxation steps", "steps_s"), ("everything else", "rest_s"),
                      ("epoch (20 + 4 steps), one update per batch", "epoch_20+4_per_batch_updates_s"),
                      ("epoch (20 + 4 steps), blocks of 4", "epoch_20+4_s")]:
        print(f"| {name} | {parts[key]:.3f} | {parts[key] / full:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
