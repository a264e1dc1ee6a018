"""`circuitc simulate`: run the phases on a few samples and keep every step.

Writes ``traces.npz`` (``PHASE/POP``: steps × samples × neurons — × the
population's shape as written, (C, H, W), for a shaped one — and
``PHASE/energy``: steps × samples) and ``traces.png`` (the recorded states
and the energy over time, one column per phase), and reports per phase and
population the residual (`lower/relax.py`: max |s_T − s_(T−1)| / dt, the
speed of the state at the end of the phase, which does not depend on dt)
and whether the phase converged: every sample's residual below the phase's
`tol`, or below `relax.DEFAULT_TOL` for a phase of fixed steps.

A streaming phase (`present N` without `steps`: `learn rules` that learn all the
time) is simulated as it trains: one stream, each sample shown for N steps from
where the previous one left the state, never reset (``PHASE/POP``: (1 + samples
× N) × 1 × neurons, sample k shown from step k·N to (k+1)·N; the weights stay as given: simulate does not learn). Phases after
it start from rest.

Besides populations, ``--record`` takes a cell's other state variables
(``h.a``) and compartments (``s1.apical``: the summed drive into it at each
step, the nudge included). By default every free population is recorded,
with every compartment of the cell-type ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .errors import CircuitError
from .lower.relax import _speed, tolerance
from .model import Model
from .rundir import atomic_write as _atomic_write
from .rundir import make_dir
from .training import _npz_bytes

__all__ = ["simulate"]


def simulate(model: Model, params, x, y=None, record: list[str] | None = None, out: str | Path | None = None,
             key=None):
    """Run every phase in order (nudged phases start from the free phase's end); a noisy
    circuit with the noise of `key` (`lower/noise.py`; None: `jax.random.key(0)`), which the
    traces show. A noisy phase's residual is its drift's, as in training (`lower/relax.py`).

    Returns {phase: {"states": {...}, "energy": array, "residual": float (largest over
    the samples), "residuals": {population: float}, "tol": float, "converged": bool,
    "finite": bool, "nonfinite": [populations whose state became NaN or inf]}}.
    """
    comps = _compartments(model)
    record = record or [*model.free, *comps]
    for name in record:
        if name not in model.fns.pops and name not in model.state_keys and name not in comps:
            known = [*model.fns.pops, *model.state_keys[len(model.free):], *comps]
            raise CircuitError(f"--record: the circuit has no population, state or compartment `{name}` "
                               f"(it has {', '.join(dict.fromkeys(known))})")
    xs = model.as_inputs(x)
    free_end = None
    results: dict[str, Any] = {}
    wanted = [n for n in record if n in comps]

    compiled: dict[str, Any] = {}  # one pair of programs per phase, however many samples a stream shows

    def programs(phase):
        if phase.name not in compiled:
            compiled[phase.name] = (
                jax.jit(lambda p, x, s0, b, y, k: model.relaxer.trajectory(phase, p, x, s0, b, y, k)),
                jax.jit(lambda p, st, ts, x, b, y: jax.vmap(
                    lambda one, t: model.fns.force(one, p, x, None, b, y, t=t, phase=phase, observe=True)[1])(st, ts)))
        return compiled[phase.name]

    def run(phase, xs, start, beta, y, k=key):
        relax, observe = programs(phase)
        states, energy = relax(params, xs, start, beta, y, k)
        if wanted:
            steps = jnp.arange(len(energy)) * phase.dt  # state k is where step k starts, at t = k dt
            seen = observe(params, {k: states[k] for k in model.state_keys}, steps, xs, beta, y)
            states = {**states, **{n: seen[n.split(".")[0]][n.split(".", 1)[1]] for n in wanted}}
        return states, energy

    for phase in model.phases.values():
        beta = phase.beta if phase.beta else None
        if beta is not None and y is None:
            raise CircuitError(f"phase `{phase.name}` nudges the output: give data with targets (--data)")
        stream = model.streaming is not None and phase.name == model.streaming.name
        if stream:  # one stream: each sample for `present` steps, from where the last one left the state
            n = len(next(iter(xs.values())))
            start = model.zeros({k: v[:1] for k, v in xs.items()})
            parts = []
            for k in range(n):
                one = {key: v[k:k + 1] for key, v in xs.items()}
                states, energy = run(phase, one, start, beta, None if y is None else y[k:k + 1],
                                     None if key is None else jax.random.fold_in(key, k))
                start = {key: states[key][-1] for key in model.state_keys}
                cut = 0 if k == 0 else 1  # a trajectory starts with its initial state: the last one's end
                parts.append(({key: v[cut:] for key, v in states.items()}, energy[cut:]))
            states = {key: jnp.concatenate([st[key] for st, _ in parts]) for key in parts[0][0]}
            energy = jnp.concatenate([e for _, e in parts])
        else:
            start = model.zeros(xs) if free_end is None else free_end
            states, energy = run(phase, xs, start, beta, y)
        last = {n: states[n][-1] for n in model.state_keys}
        if free_end is None and not stream:
            free_end = last
        exact = phase.forward or model.relaxer.prospective or len(energy) < 2
        moved = {n: states[n][-1] for n in model.state_keys}
        if phase.sigma > 0 and not exact:  # the drift: the last step again, without its noise
            before = {n: states[n][-2] for n in model.state_keys}
            xl = xs if not stream else {key_: v[-1:] for key_, v in xs.items()}
            yl = y if not stream or y is None else y[-1:]
            moved = jax.jit(lambda p, x, s, b, y, ph=phase: model.relaxer.drift_step(ph, p, x, s, b, y, ph.steps - 1))(
                params, xl, before, beta, yl)
        residuals = {  # the relaxation's own residual (`relax._speed`), per population
            n: 0.0 if exact else float(jnp.max(_speed({n: moved[n]}, {n: states[n][-2]}, phase.dt)))
            for n in model.free
        }
        residual = max(residuals.values(), default=0.0)
        tol = tolerance(phase)
        nonfinite = [n for n in model.free if not np.isfinite(np.asarray(states[n])).all()]
        written = model.to_written({n: states[n] for n in record if n in states}, lead=2)
        clamped = model.to_written({n: xs[n] for n in record if n not in states})
        if stream:  # a clamped input changes with the sample: its trace, step by step
            clamped = {n: np.concatenate([np.asarray(v)[:1], np.repeat(np.asarray(v), phase.steps, axis=0)])[:, None]
                       for n, v in clamped.items()}
        results[phase.name] = {
            "states": {n: np.asarray(written[n]) if n in written else np.asarray(clamped[n]) for n in record},
            "energy": np.asarray(energy),
            "residual": residual,
            "residuals": residuals,
            "tol": tol,
            "converged": bool(residual < tol),
            "finite": not nonfinite,
            "nonfinite": nonfinite,
            "stream": phase.steps if stream else None,  # steps per sample, for a streaming phase
        }
    if out is not None:
        out_pop = model.spec.costs[0].population if model.spec.costs else None
        target = None if y is None or out_pop is None else (out_pop, np.asarray(y))
        _write(results, Path(out), energy=not getattr(model.fns, "vector_field", False), target=target)
    return results


def _compartments(model: Model) -> list[str]:
    """`pop.compartment` for every free population with a cell type."""
    if not hasattr(model.fns, "compartments"):
        return []
    return [f"{n}.{c}" for n in model.free if model.fns.pops[n].cell_type for c in model.fns.pops[n].compartments]


def _write(results, out: Path, energy: bool = True, target=None) -> None:
    """traces.npz (no `PHASE/energy` for a circuit without an energy) and traces.png: per
    phase (columns) and recorded population (rows), the first units of sample 0, labelled,
    with the output's targets dashed in the same colours; the energy of every sample."""
    make_dir(out)
    arrays = {}
    for phase, r in results.items():
        if energy:
            arrays[f"{phase}/energy"] = r["energy"]
        for n, v in r["states"].items():
            arrays[f"{phase}/{n}"] = v
    _atomic_write(out / "traces.npz", _npz_bytes(arrays))
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    shown = 8  # units per panel
    phases = list(results)
    pops = list(next(iter(results.values()))["states"])
    rows = len(pops) + int(energy)  # a vector field has no energy to plot
    fig, axes = plt.subplots(rows, len(phases), figsize=(4.2 * len(phases), 2.4 * rows),
                             squeeze=False, constrained_layout=True)
    for j, phase in enumerate(phases):
        r = results[phase]
        for i, n in enumerate(pops):
            ax = axes[i][j]
            v = r["states"][n]
            if v.ndim >= 3:  # steps × samples × units (× ...): sample 0, the first units
                flat = v.reshape(v.shape[0], v.shape[1], -1)
                whole = target is not None and n == target[0] and flat.shape[-1] <= 16  # an output: all
                k = flat.shape[-1] if whole else min(shown, flat.shape[-1])
                lines = ax.plot(flat[:, 0, :k], lw=1)
                for u, line in enumerate(lines):
                    line.set_label(f"unit {u}")
                per = r.get("stream")
                if target is not None and n == target[0]:
                    for u, line in enumerate(lines):
                        if per:  # each sample's target over its own presentation
                            for smp in range(flat.shape[0] // per):
                                ax.hlines(float(target[1][smp].reshape(-1)[u]), smp * per, (smp + 1) * per - 1,
                                          linestyles="--", lw=0.8, color=line.get_color(),
                                          label="target" if u == 0 and smp == 0 else None)
                        else:
                            ax.axhline(float(target[1][0].reshape(-1)[u]), ls="--", lw=0.8, color=line.get_color(),
                                       label="target" if u == 0 else None)
                if per:
                    for b in range(per, flat.shape[0], per):
                        ax.axvline(b, color="0.6", lw=0.6, ls=":")
                more = f", units 0-{k - 1} of {flat.shape[-1]}" if flat.shape[-1] > k else ""
                if per:
                    ax.set_title(f"{phase}: {n}{f' ({more[2:]})' if more else ''}\n"
                                 f"{flat.shape[0] // per} samples in turn, {per} steps each, never reset", fontsize=9)
                else:
                    ax.set_title(f"{phase}: {n} (sample 0{more})", fontsize=9)
            else:
                ax.set_title(f"{phase}: {n}", fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            ax.set_ylabel(n.split(".", 1)[1] if "." in n else "state", fontsize=8)
            if j == len(phases) - 1 and ax.get_lines():
                ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
        if not energy:
            continue
        ax = axes[-1][j]
        e = np.asarray(r["energy"])
        for smp in range(e.shape[1] if e.ndim == 2 else 1):
            ax.plot(e[:, smp] if e.ndim == 2 else e, lw=1, label="the stream" if r.get("stream") else f"sample {smp}")
        ax.set_title(f"{phase}: energy", fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel("E", fontsize=8)
        if j == len(phases) - 1:
            ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    _atomic_write(out / "traces.png", buf.getvalue())
