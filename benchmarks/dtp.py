"""Target propagation: DTP and L-DRL circuits from the CLI against backprop on the same network.

    taskset -c 0 python benchmarks/dtp.py                          # digits, the files' 30 epochs
    taskset -c 0 python benchmarks/dtp.py --data fashion-mnist --epochs 10   # about 20 min on one core
    taskset -c 0 python benchmarks/dtp.py --data fashion-mnist     # the full 30 epochs (hours on one core)

Each circuit runs as `circuitc train examples/NAME.circ --data DATA [--epochs N]`
(Fashion-MNIST: `--set n_in=784 --set n_h=500`, the 784-500-500-10 network),
pinned to one core with XLA single-threaded. The backprop baseline is written
here in JAX + optax and runs in the same process conditions: the same layers
(tanh hidden, linear output, no biases, Glorot-uniform weights), the same loss
(1/2 |y - onehot|^2, mean over the batch), Adam with lr 0.003, batch 32, the
same epochs. After training, the cosine between each circuit's forward update
(its local rules) and backprop's gradient is measured on 512 test examples at
the trained weights. s/epoch: the median over epochs 2.. (the first compiles).
Writes benchmarks/results/dtp.json (merged by data set) and prints a markdown table.
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

ONE_CORE = {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
os.environ.update(ONE_CORE)  # before jax is imported

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "dtp.json"
CIRCUITS = ("dtp", "ldrl")
SIZES = {"digits": (64, 128), "fashion-mnist": (784, 500)}
LR, BATCH = 0.003, 32


def _sets(data: str) -> list[str]:
    n_in, n_h = SIZES[data]
    return [] if data == "digits" else ["--set", f"n_in={n_in}", "--set", f"n_h={n_h}"]


def run_circuit(name: str, data: str, epochs: int | None, seed: int, reuse: bool = False) -> dict:
    out = HERE / "results" / "runs" / f"{name}-{data}-s{seed}"
    cmd = ["circuitc", "train", f"examples/{name}.circ", "--data", data, "--out", str(out.relative_to(ROOT)), "--no-progress", "--force",
           "--seed", str(seed), *_sets(data)] + (["--epochs", str(epochs)] if epochs else [])
    done = out / "metrics.json"
    want = epochs or _file_epochs(name)
    if reuse and done.exists() and len(json.loads(done.read_text())) == want:
        print("reusing", out.relative_to(ROOT), flush=True)
    else:
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, cwd=ROOT, check=True, env={**os.environ, **ONE_CORE})
    hist = json.loads((out / "metrics.json").read_text())
    acc = [h["test_accuracy"] for h in hist]
    row = {"method": name, "command": " ".join(cmd), "epochs": len(hist),
           "best_test": max(acc), "best_epoch": 1 + acc.index(max(acc)), "final_test": acc[-1],
           "s_per_epoch": statistics.median(h["seconds"] for h in hist[1:]) if len(hist) > 1 else hist[0]["seconds"],
           "curve": acc}
    row["alignment"] = alignment(name, data, out / "params.npz")
    return row


def _file_epochs(name: str) -> int:
    """The `epochs` the circuit file trains for (what `circuitc train` runs without `--epochs`)."""
    import circuitlang as cl

    return cl.load(ROOT / "examples" / f"{name}.circ").spec.learning.epochs


def _forward(p, x):
    import jax.numpy as jnp

    return jnp.tanh(jnp.tanh(x @ p["W1"].T) @ p["W2"].T) @ p["W3"].T


def alignment(name: str, data: str, params_path: Path) -> dict:
    """cos(the circuit's update, backprop's gradient) per forward weight, at the trained weights."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import circuitlang as cl
    from circuitlang.training import load_params

    n_in, n_h = SIZES[data]
    model = cl.compile(cl.load(ROOT / "examples" / f"{name}.circ"), overrides={"n_in": n_in, "n_h": n_h})
    params = load_params(params_path, model)
    d = cl.load_data(data)
    x, y = jnp.asarray(d.x_test[:512]), jnp.asarray(d.targets(d.y_test[:512]).astype("float32"))
    g = model.estimate(params, x, y, key=jax.random.key(0))
    bp = jax.grad(lambda p: 0.5 * jnp.sum((_forward(p, x) - y) ** 2))({k: params[k] for k in ("W1", "W2", "W3")})

    def cos(a, b):
        a, b = np.ravel(np.asarray(a, np.float64)), np.ravel(np.asarray(b, np.float64))
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    return {k: cos(g[k], bp[k]) for k in bp}


def run_backprop(data: str, epochs: int, seed: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import circuitlang as cl

    d = cl.load_data(data)
    X, Xt = jnp.asarray(d.x_train), jnp.asarray(d.x_test)
    Y = jnp.asarray(d.targets(d.y_train).astype("float32"))
    lt = np.asarray(d.y_test)
    n_in, n_h = SIZES[data]
    shapes = {"W1": (n_h, n_in), "W2": (n_h, n_h), "W3": (10, n_h)}
    keys = jax.random.split(jax.random.key(seed), 3)
    p = {k: jax.random.uniform(kk, s, minval=-1, maxval=1) * np.sqrt(6 / sum(s)) for (k, s), kk in zip(shapes.items(), keys)}
    opt = optax.adam(LR)
    st = opt.init(p)
    n = len(X) // BATCH * BATCH

    def loss(p, x, y):
        return 0.5 * jnp.mean(jnp.sum((_forward(p, x) - y) ** 2, -1))

    @jax.jit
    def epoch(p, st, key):
        idx = jax.random.permutation(key, len(X))[:n].reshape(-1, BATCH)

        def one(c, i):
            p, st = c
            u, st = opt.update(jax.grad(loss)(p, X[i], Y[i]), st, p)
            return (optax.apply_updates(p, u), st), None

        return jax.lax.scan(one, (p, st), idx)[0]

    acc, secs = [], []
    for e in range(epochs):
        t = time.perf_counter()
        p, st = epoch(p, st, jax.random.fold_in(jax.random.key(seed), e))
        jax.block_until_ready(p)
        secs.append(time.perf_counter() - t)
        acc.append(float(np.mean(np.argmax(np.asarray(_forward(p, Xt)), -1) == lt)))
        print(f"backprop {data} epoch {e + 1}: test {acc[-1]:.4f} ({secs[-1]:.2f} s)", flush=True)
    return {"method": "backprop", "command": "python benchmarks/dtp.py (JAX + optax, in-process)", "epochs": epochs,
            "best_test": max(acc), "best_epoch": 1 + acc.index(max(acc)), "final_test": acc[-1],
            "s_per_epoch": statistics.median(secs[1:]) if epochs > 1 else secs[0], "curve": acc}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="digits", choices=sorted(SIZES))
    ap.add_argument("--epochs", type=int, default=None, help="default: the files' own (30)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", default=[*CIRCUITS, "backprop"])
    ap.add_argument("--reuse", action="store_true",
                    help="keep a circuit's finished run of the same epochs in benchmarks/results/runs/ instead of retraining")
    args = ap.parse_args(argv)
    rows = []
    if "backprop" in args.only:
        rows.append(run_backprop(args.data, args.epochs or _file_epochs(CIRCUITS[0]), args.seed))
    for name in CIRCUITS:
        if name in args.only:
            rows.append(run_circuit(name, args.data, args.epochs, args.seed, args.reuse))
    for r in rows:
        r["seed"] = args.seed  # rows kept from an earlier run keep theirs
    allres = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    n_in, n_h = SIZES[args.data]
    kept = [r for r in allres.get(args.data, {}).get("rows", []) if r["method"] not in {r2["method"] for r2 in rows}]
    allres[args.data] = {"network": f"{n_in}-{n_h}-{n_h}-10",
                         "machine": "one core (taskset), XLA single-threaded", "rows": kept + rows}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(allres, indent=2) + "\n")
    print(f"| method | {args.data} {n_in}-{n_h}-{n_h}-10 | best test | final | s/epoch | cos W1 / W2 with backprop |")
    print("|---|---|---:|---:|---:|---|")
    for r in rows:
        al = r.get("alignment")
        cosine = f"{al['W1']:.3f} / {al['W2']:.3f}" if al else "1 / 1"
        print(f"| {r['method']} | {r['epochs']} epochs | {100 * r['best_test']:.2f}% (epoch {r['best_epoch']}) | "
              f"{100 * r['final_test']:.2f}% | {r['s_per_epoch']:.3g} | {cosine} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
