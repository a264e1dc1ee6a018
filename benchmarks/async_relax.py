"""Steps and time to relax a three-hidden-layer circuit: `async` against Euler and prototypical.

The circuit is 64-128-128-128-10 (ρ = clip(v, 0, 1), every free state in
[0, 1], biases), on the first `--batch` rows of the digits training set, with
random Glorot weights scaled by each `--scales` factor (scale 1 is the
initialisation `circuitc train` starts from: layers so strongly coupled that
E is not convex; at scale 0.5 it nearly is). No training: the weights are random.

For each integrator it counts the steps from s = 0 until the residual

    r(s) = max over the batch and the units of |P(s − ∂E/∂s) − s|

(projected-gradient stationarity with a unit step: zero exactly at a fixed
point; here P(s − ∂E/∂s) is each layer's drive-based minimum, so r is the same
number for every integrator) falls below `--tol` (1e-4), in the free phase
and in a nudged phase (β = `--beta` from the free fixed point, target: the
one-hot label; r then includes β ∂C/∂s). Euler runs at every step size of
`--dts` and the smallest count is reported with its dt (larger dts diverge or
oscillate); prototypical at dt 1 (its standard form: with this ρ it is Euler
at dt 1); async at dt 1.

Wall time per step: a jitted phase of `--time-steps` steps, best of `--repeats`,
the integrators alternated, on one thread of one core: the script pins itself
to CPU `--cpu` (as `taskset -c 0` does) and sets
XLA_FLAGS=--xla_cpu_multi_thread_eigen=false before importing JAX.

    python benchmarks/async_relax.py            # writes benchmarks/results/async_relax.json
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

CIRCUIT = """
fn rho(v) = clip(v, 0, 1)
population x  [64] input rho=identity
population h1 [128] min=0 max=1
population h2 [128] min=0 max=1
population h3 [128] min=0 max=1
population y  [10] output min=0 max=1
h1 -- x  : W1
h2 -- h1 : W2
h3 -- h2 : W3
y  -- h3 : W4
bias h1, h2, h3, y
energy hopfield
cost y squared
learn eqprop {
  phase free  { steps 10 }
  phase nudge { steps 10; beta 0.5 }
}
"""


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--batch", type=int, default=256, help="digits rows relaxed at once (default 256)")
    ap.add_argument("--scales", default="0.5,1", help="factors on the Glorot weights, comma-separated (default 0.5,1)")
    ap.add_argument("--tol", type=float, default=1e-4, help="residual to reach (default 1e-4)")
    ap.add_argument("--beta", type=float, default=0.2, help="nudge of the nudged phase (default 0.2)")
    ap.add_argument("--max-steps", type=int, default=5000, help="give up after this many steps (default 5000)")
    ap.add_argument("--dts", default="0.2,0.4,0.6,0.8,1,1.2,1.4",
                    help="Euler step sizes tried (default 0.2 to 1.4)")
    ap.add_argument("--time-steps", type=int, default=200, help="steps of the timed phase (default 200)")
    ap.add_argument("--repeats", type=int, default=7, help="timed runs per integrator, best taken (default 7)")
    ap.add_argument("--cpu", type=int, default=0, help="pin to this CPU; -1: do not pin (default 0)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=str(HERE / "results" / "async_relax.json"))
    a = ap.parse_args(argv)

    if a.cpu >= 0:
        os.sched_setaffinity(0, {a.cpu})
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
    import jax
    import jax.numpy as jnp
    import numpy as np

    import circuitlang as cl
    from circuitlang.data import load

    data = load("digits")
    x = jnp.asarray(data.x_train[: a.batch])
    y = jnp.asarray(data.targets(data.y_train[: a.batch]))
    dts = [float(v) for v in a.dts.split(",")]

    def model(phase: str):
        text = CIRCUIT.replace("phase free  { steps 10 }", f"phase free  {{ {phase} }}")
        text = text.replace("phase nudge { steps 10; beta 0.5 }", f"phase nudge {{ {phase}; beta {a.beta} }}")
        return cl.compile(cl.loads(text))

    base = model("steps 1")
    fns = base.fns
    xs = base.as_inputs(x)

    def residual(params, free, beta):
        """r(s): the largest unit step of projected gradient descent on E (+ βC)."""
        def total(f):
            E = fns.energy(f, params, xs)
            return E + beta * fns.cost(f, y) if beta is not None else E
        g = jax.grad(total)(free)
        moved = fns.project({n: free[n] - g[n] for n in free})
        return jnp.max(jnp.stack([jnp.max(jnp.abs(moved[n] - free[n])) for n in free]))

    def steps_to_tol(m, params, beta, s0):
        """Steps until r(s) < tol (None: not within max_steps), and the last residual."""
        phase = m.nudge_phase if beta is not None else m.free_phase

        def run(p, s):
            step = m.relaxer._step(phase, p, xs, m.fns.drives(p, xs), beta, y)

            def cond(c):
                return (c[0] < a.max_steps) & (c[2] >= a.tol)

            def body(c):
                i, s, _ = c
                s = step(i, s)
                return i + 1, s, residual(p, s, beta)

            i, _, r = jax.lax.while_loop(cond, body, (jnp.asarray(0), dict(s), residual(p, s, beta)))
            return i, r

        i, r = jax.jit(run)(params, s0)
        return (int(i) if float(r) < a.tol else None), float(r)

    integrators = {"async": "integrator async", "prototypical": "integrator prototypical"}
    integrators.update({f"euler dt={dt:g}": f"dt {dt:g}" for dt in dts})
    out: dict = {
        "circuit": "64-128-128-128-10, rho = clip(v, 0, 1), states in [0, 1], biases (digits rows)",
        "weights": "random: Glorot uniform (the file's initialisation), times each scale; not trained",
        "residual": "max over batch and units of |P(s - dE/ds [- beta dC/ds]) - s|",
        "tol": a.tol, "batch": a.batch, "beta": a.beta, "max_steps": a.max_steps,
        "dtype": str(jnp.zeros(()).dtype), "jax": jax.__version__, "cpu": platform.processor() or platform.machine(),
        "pinned_cpu": a.cpu, "xla_flags": os.environ["XLA_FLAGS"], "scales": {},
    }
    models = {name: model(f"steps {a.max_steps}; {setting}") for name, setting in integrators.items()}
    params0 = base.init(jax.random.key(a.seed))
    for scale in [float(v) for v in a.scales.split(",")]:
        params = {k: v * scale if not k.endswith(".bias") else v for k, v in params0.items()}
        # the nudged phase starts from the free fixed point (async, run to convergence)
        free = jax.jit(lambda p: models["async"].relaxer.run(models["async"].free_phase, p, xs, base.zeros(xs)).state)(params)
        s_free = {n: free[n] for n in base.free}
        row: dict = {}
        for name, m in models.items():
            f_steps, f_res = steps_to_tol(m, params, None, base.zeros(xs))
            n_steps, n_res = steps_to_tol(m, params, a.beta, s_free)
            row[name] = {"free_steps": f_steps, "free_final_residual": f_res,
                         "nudged_steps": n_steps, "nudged_final_residual": n_res}
            print(f"scale {scale:g} {name:>16}: free {f_steps} steps, nudged {n_steps} steps", flush=True)
        euler = {k: v for k, v in row.items() if k.startswith("euler")}
        for phase in ("free", "nudged"):
            ok = [(v[f"{phase}_steps"], k) for k, v in euler.items() if v[f"{phase}_steps"] is not None]
            best = min(ok) if ok else (None, None)
            row[f"euler best ({phase})"] = {"steps": best[0], "at": best[1]}
        out["scales"][f"{scale:g}"] = row
        print(f"scale {scale:g}: euler best free {row['euler best (free)']}, nudged {row['euler best (nudged)']}")

    # wall time per step, one thread, integrators alternated
    timed = {"async": "integrator async", "prototypical": "integrator prototypical", "euler": "dt 1"}
    fns_t = {}
    for name, setting in timed.items():
        m = model(f"steps {a.time_steps}; {setting}")
        fns_t[name] = jax.jit(lambda p, s, m=m: m.relaxer.run(m.free_phase, p, xs, s).state)
        jax.block_until_ready(fns_t[name](params0, base.zeros(xs)))
    best = {name: float("inf") for name in timed}
    for _ in range(a.repeats):
        for name, f in fns_t.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f(params0, base.zeros(xs)))
            best[name] = min(best[name], time.perf_counter() - t0)
    out["ms_per_step"] = {name: 1e3 * t / a.time_steps for name, t in best.items()}
    out["time_steps"] = a.time_steps
    print("ms/step (batch %d, one thread):" % a.batch, {k: round(v, 4) for k, v in out["ms_per_step"].items()})
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(out, indent=2) + "\n")
    print("wrote", a.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
