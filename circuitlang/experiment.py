"""Experiments: paired control and perturbed runs of one circuit on the same samples.

    circuitc experiment examples/mirror_interneurons.circ --params runs/M/params.npz --data digits \\
        --perturb quiet_mirror --sweep stim_mirror.size=0.25,0.5,1,2 --target data,prediction --out DIR

Every condition runs the same circuit, parameters, samples and seed; only the
perturbations switched on (`perturb` statements, `lower/perturb.py`) and the
target differ. The control condition has none. A condition's readouts
(`measure`), one CSV row:

* **cost**: the mean cost at the end of the first (free) phase, and along
  the first nudged phase: at its start and end (the whole curve goes to
  `nudge_cost.csv` and the figure);
* **next trial**: the same samples' free-phase cost after the update below
  is applied once through the file's optimizer (from a fresh optimizer
  state; the trial repeats under the same condition), and its change;
* **compartments**: the mean |value| of every compartment of every cell
  population in every phase, over the phase's steps, the samples and the
  cells (`|s1.apical| nudge`);
* **update** of every learned parameter: what the file's rules or estimator
  would change it by, Δθ = −estimate (the rules' integrated change, or the
  descent direction before the learning rate), averaged over the samples, and
  of its entries: the mean, the fraction potentiated (Δ > 0), the LTP (the
  sum of the positive entries) and the LTD (the sum of the negative ones:
  a signed total, ≤ 0).

The target is the data's (`data`) or the control circuit's own free-phase
prediction (`prediction`: no surprise, the nudge has nothing to correct).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .errors import CircuitError, Diagnostic, did_you_mean

__all__ = ["Condition", "TARGETS", "conditions", "run", "measure", "plot", "format_table"]

TARGETS = ("data", "prediction")
SWEEP_KEYS = ("size", "fraction")


@dataclasses.dataclass(frozen=True)
class Condition:
    """One arm of an experiment: the perturbations switched on, the swept setting's value
    (None: the file's), the target, and the `--set` overrides that make it."""

    label: str
    perturbations: tuple[str, ...]
    size: float | None
    target: str
    overrides: tuple[tuple[str, str], ...]


def _unknown(name: str, circ, what: str) -> CircuitError:
    names = [p.name for p in circ.spec.perturbations]
    return CircuitError(Diagnostic(
        f"{circ.source.path}: {what}: the file has no perturbation `{name}`{did_you_mean(name, names)}", None,
        "its perturbations: " + ", ".join(names) if names else
        "declare one, e.g. `perturb stim : h add 0.5 during nudge`"), circ.source)


def conditions(circ, perturb: Sequence[str] = (), sweep: str | None = None,
               targets: Sequence[str] = ("data",)) -> list[Condition]:
    """The control, then each `--perturb NAME` (or `A+B`: both at once), then each value of
    `--sweep NAME.size=v1,v2,...` (or `.fraction`), each under every target in `targets`."""
    names = {p.name for p in circ.spec.perturbations}
    arms: list[tuple[str, tuple[str, ...], float | None, tuple[tuple[str, str], ...]]] = [("control", (), None, ())]
    for item in perturb:
        group = tuple(n.strip() for n in item.split("+"))
        for n in group:
            if n not in names:
                raise _unknown(n, circ, f"--perturb {item}")
        arms.append(("+".join(group), group, None, tuple((f"perturb.{n}", "on") for n in group)))
    if sweep:
        key, _, values = sweep.partition("=")
        name, _, setting = key.strip().rpartition(".")
        if not name or setting not in SWEEP_KEYS or not values.strip():
            raise CircuitError(f"--sweep {sweep}: write NAME.size=V1,V2,... or NAME.fraction=V1,V2,...")
        if name not in names:
            raise _unknown(name, circ, f"--sweep {sweep}")
        for text in values.split(","):
            try:
                v = float(text)
            except ValueError:
                raise CircuitError(f"--sweep {sweep}: `{text.strip()}` is not a number") from None
            if not math.isfinite(v):
                raise CircuitError(f"--sweep {sweep}: `{text.strip()}` is not a finite number")
            arms.append((f"{name} {setting}={v:g}", (name,), v,
                         ((f"perturb.{name}", "on"), (f"perturb.{name}.{setting}", repr(v)))))
    out = []
    for target in targets:
        if target not in TARGETS:
            raise CircuitError(f"--target {target}: say data or prediction")
        for label, group, size, overrides in arms:
            shown = label if len(targets) == 1 else f"{label} [{'no surprise' if target == 'prediction' else target}]"
            out.append(Condition(shown, group, size, target, overrides))
    return out


# ------------------------------------------------------------------ readouts --
def _phases(model):
    phases = []
    for ph in model.learning.phases:
        if ph.steps is None and ph.present is not None:
            ph = dataclasses.replace(ph, steps=ph.present)
        phases.append(ph)
    return phases


def _cost_fn(model, y):
    batch_cost = model.fns.cost

    def per_step(state):
        return batch_cost({n: state[n] for n in model.free}, y)

    return per_step


def measure(model, params, x, y, method: str | None = None, key=None) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """One condition's readouts on the batch `x`, `y` (see the module docstring): (row, curves);
    `curves[PHASE]` is the mean cost at every state of that phase (steps + 1 values)."""
    if model.learning is None:
        raise CircuitError(Diagnostic(f"{model.circuit.source.path}: an experiment runs the phases of a `learn` "
                                      "block, and this circuit has none", None), model.circuit.source)
    key = jax.random.key(0) if key is None else key
    xs = model.as_inputs(x)
    batch = next(iter(xs.values())).shape[0]
    fns = model.fns
    cells = hasattr(fns, "compartments")
    row: dict[str, float] = {}
    curves: dict[str, np.ndarray] = {}
    cost_of = _cost_fn(model, y)
    s = model.zeros(xs)
    nudged_seen = False
    for i, ph in enumerate(_phases(model)):
        beta = ph.beta if ph.beta != 0 else None

        def traj(p, xs, s0, y, ph=ph, beta=beta):
            states, _ = model.relaxer.trajectory(ph, p, xs, s0, beta, y)
            costs = jax.vmap(lambda st: cost_of(st))({n: states[n] for n in model.free}) / batch
            seen = {}
            if cells:
                ts = jnp.arange(ph.steps) * ph.dt  # state k is where step k starts
                first = {k: v[:-1] for k, v in states.items() if k in model.state_keys}
                seen = jax.vmap(lambda one, t: fns.force(one, p, xs, None, beta, y, t=t, phase=ph,
                                                         observe=True)[1])(first, ts)
                seen = {n: {c: jnp.mean(jnp.abs(v)) for c, v in d.items()} for n, d in seen.items()}
            return {k: states[k][-1] for k in model.state_keys}, costs, seen

        end, costs, seen = jax.jit(traj)(params, xs, s, y)
        s = end
        curves[ph.name] = np.asarray(costs)
        if i == 0:
            row["cost free"] = float(costs[-1])
        if beta is not None and not nudged_seen:
            nudged_seen = True
            row["cost nudge start"] = float(costs[0])
            row["cost nudge end"] = float(costs[-1])
        for n, d in seen.items():
            for c, v in d.items():
                row[f"|{n}.{c}| {ph.name}"] = float(v)
    g = model.estimate(params, x, y, method=method, key=key)
    update = {k: -v for k, v in g.items() if model.trainable[k]}
    for k, d in update.items():
        d = np.asarray(d, dtype=np.float64)
        row[f"{k} mean"] = float(d.mean())
        row[f"{k} potentiated"] = float((d > 0).mean())
        row[f"{k} LTP"] = float(d[d > 0].sum())
        row[f"{k} LTD"] = float(d[d < 0].sum())
    row.update(_next_trial(model, params, g, x, y))
    return row, curves


def _next_trial(model, params, g, x, y) -> dict[str, float]:
    """The free-phase cost of the same samples before and after one update through the file's
    optimizer (fresh state), and the change."""
    from .optim import default_rate, make_optimizer

    learn = model.learning
    opt = make_optimizer(learn.optimizer, model.trainable, 1, default_rate(learn))
    change, _ = opt.update(g, opt.init(params), params)
    after = {k: params[k] + change[k] for k in params}
    first = float(model.loss(params, x, y))
    nxt = float(model.loss(after, x, y))
    return {"cost next trial": nxt, "cost next trial change": nxt - first}


def prediction(model, params, x) -> Any:
    """The control circuit's own free-phase output, as a target (no surprise): the cost
    population's state in the written layout, a dict for several costs."""
    state = model.relax(params, x)
    outs = [c.population for c in model.spec.costs]
    if len(outs) == 1:
        return jnp.asarray(state[outs[0]]).reshape(len(x), -1)
    return {n: state[n] for n in outs}


def run(circ, params, x, y, conds: Sequence[Condition], settings: Mapping[str, str] | None = None,
        method: str | None = None, seed: int = 0, report: Callable[[str], None] | None = None):
    """Every condition on the same samples, params and seed: (rows, curves by label)."""
    import circuitlang as cl

    settings = dict(settings or {})
    control = cl.compile(circ, settings)
    predicted = prediction(control, params, x) if any(c.target == "prediction" for c in conds) else None
    rows, curves = [], {}
    for c in conds:
        model = control if not c.overrides else cl.compile(circ, {**settings, **dict(c.overrides)})
        target = y if c.target == "data" else predicted
        row, curve = measure(model, params, x, target, method, jax.random.key(seed))
        bad = [k for k, v in row.items() if not math.isfinite(v)]
        if bad:
            raise CircuitError(Diagnostic(
                f"condition `{c.label}`: {', '.join(bad[:3])} came out non-finite: the perturbation drove "
                "the circuit to diverge", None, "lower its size or the phase's `dt`"), circ.source)
        rows.append({"condition": c.label, "perturbations": "+".join(c.perturbations) or "none",
                     "size": "" if c.size is None else c.size, "target": c.target, **row})
        curves[c.label] = curve
        if report:
            report(f"  {c.label}: cost {row['cost free']:.4g} -> next trial {row['cost next trial']:.4g}")
    return rows, curves


# ------------------------------------------------------------------- views --
def format_table(rows: Sequence[Mapping[str, Any]], weights: Sequence[str] | None = None) -> str:
    """The conditions against the main readouts, one line each."""
    if not rows:
        return ""
    keys = [k for k in rows[0] if k.endswith(" LTP") or k.endswith(" LTD")]
    if weights:
        keys = [k for k in keys if k.rsplit(" ", 1)[0] in weights]
    comps = [k for k in rows[0] if k.startswith("|") and "apical" in k]
    cols = ["cost free", "cost nudge start", "cost nudge end", "cost next trial", *comps, *keys]
    cols = [c for c in cols if c in rows[0]]
    width = max(len(r["condition"]) for r in rows)
    head = f"{'condition':<{width}}  " + "  ".join(f"{c:>14}" for c in cols)
    lines = [head]
    for r in rows:
        lines.append(f"{r['condition']:<{width}}  " + "  ".join(f"{r[c]:>14.5g}" for c in cols))
    return "\n".join(lines)


def plot(rows: Sequence[Mapping[str, Any]], curves: Mapping[str, Mapping[str, np.ndarray]], path: str | Path,
         title: str = "", nudge_phase: str | None = None) -> None:
    """One figure: per learned weight, its LTP (up) and LTD (down) per condition; the mean
    |compartment| per phase; the cost along the nudged phase; the free cost before and after
    the update."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["condition"] for r in rows]
    weights = [k[: -len(" LTP")] for k in rows[0] if k.endswith(" LTP")]
    ncols = max(len(weights), 3)
    fig, axes = plt.subplots(2, ncols, figsize=(3.1 * ncols, 7.4), squeeze=False)
    xs = np.arange(len(rows))
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, max(len(rows), 2)))
    for ax, w in zip(axes[0], weights):
        ltp = [r[f"{w} LTP"] for r in rows]
        ltd = [r[f"{w} LTD"] for r in rows]
        ax.bar(xs, ltp, color="#0f766e", label="LTP (Σ Δ>0)")
        ax.bar(xs, ltd, color="#dc2626", label="LTD (Σ Δ<0)")
        ax.axhline(0, color="black", lw=0.6)
        ax.set_title(f"update of {w}", fontsize=10)
        _ticks(ax, labels)
    axes[0][0].legend(fontsize=7)
    for ax in axes[0][len(weights):]:
        ax.axis("off")
    comp_keys = [k for k in rows[0] if k.startswith("|")]
    if any("apical" in k for k in comp_keys):  # the dendrite the theories are about; the CSV has them all
        comp_keys = [k for k in comp_keys if "apical" in k]
    ax = axes[1][0]
    if comp_keys:
        wbar = 0.8 / len(comp_keys)
        for j, k in enumerate(comp_keys):
            ax.bar(xs + (j - (len(comp_keys) - 1) / 2) * wbar, [r[k] for r in rows], wbar, label=k)
        ax.set_title("mean |" + ("apical" if "apical" in comp_keys[0] else "compartment") + "| per phase",
                     fontsize=10)
        ax.legend(fontsize=6, ncol=2)
        _ticks(ax, labels)
    else:
        ax.axis("off")
    ax = axes[1][1]
    for c, label in zip(colours, labels):
        curve = curves[label].get(nudge_phase) if nudge_phase else None
        if curve is not None:
            ax.plot(np.arange(len(curve)), curve, color=c, label=label)
    ax.set_title(f"cost along the nudged phase ({nudge_phase})" if nudge_phase else "no nudged phase", fontsize=10)
    ax.set_xlabel("step")
    ax.set_yscale("log")
    ax.legend(fontsize=6)
    ax = axes[1][2]
    ax.bar(xs - 0.2, [r["cost free"] for r in rows], 0.4, color="#9ca3af", label="this trial")
    ax.bar(xs + 0.2, [r["cost next trial"] for r in rows], 0.4, color="#2563eb", label="next trial")
    ax.set_title("free-phase cost, same samples", fontsize=10)
    ax.legend(fontsize=7)
    _ticks(ax, labels)
    for ax in axes[1][3:]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _ticks(ax, labels) -> None:
    ax.set_xticks(np.arange(len(labels)))
    ax.set_xticklabels(labels, rotation=40, ha="right", fontsize=7)
