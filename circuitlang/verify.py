"""`circuitc verify`: the gap between a circuit's learning rule and the true gradient.

For each β of a sweep (sorted from large to small, the file's own β
included and marked), the file's estimator is compared with the gradient of
the loss at the free fixed point (implicit differentiation), weight by
weight: the cosine of the angle and the relative error |g − ∇| / |∇| (for
local rules, whose constants set their own scale, the size ratio |g| / |∇|
instead, called `size_ratio` in the table, the CSV and the plot alike).

What remains of the gap has one of three causes, and the report tells
which:

* **the estimator's bias**: it shrinks with β, like β for one-sided and
  random-sign EqProp, like β² for symmetric and faster for holomorphic;
* **unconverged phases**: every relaxation reports its residual
  (`lower/relax.py`); a row computed from a phase whose residual is above its
  tolerance is marked `*`, and so is the reference when the free phase did
  not converge (implicit differentiation assumes a fixed point). Such a gap
  does not shrink with β: give the phases more steps;
* **structure**: some rules are not gradients at any β (a vector field with
  ρ' ≠ 1 whose tied feedback does not make the field a gradient, fixed
  random feedback, local rules), so the cosine stays below 1 even with
  converged phases and tiny β.

A reference gradient too small to compare against (below the round-off of
the parameters: 1000 ε (|θ| + 1)) is marked `∇≈0` instead of dividing by it.
Non-finite estimates or references are an error, not a row.
"""

from __future__ import annotations

import math
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from .errors import CircuitError
from .lower.relax import tolerance
from .model import Model

__all__ = ["verify", "format_table", "plot", "DEFAULT_BETAS", "second_figure"]

DEFAULT_BETAS = (1.0, 0.5, 0.1, 0.05, 0.01, 0.001)


def second_figure(method: str) -> str:
    """The name of the second figure of a row: `size_ratio` for local rules, else `rel_error`."""
    return "size_ratio" if method == "rules" else "rel_error"


def _compare(g, ref, scale: bool = False):
    a, b = np.ravel(np.asarray(g, np.float64)), np.ravel(np.asarray(ref, np.float64))
    nb = np.linalg.norm(b)
    na = np.linalg.norm(a)
    cos = float(a @ b / (na * nb)) if na > 0 and nb > 0 else float("nan")
    if scale:  # local rules carry their own constants: compare sizes, not differences
        return cos, float(na / nb) if nb > 0 else float("nan")
    rel = float(np.linalg.norm(a - b) / nb) if nb > 0 else float("nan")
    return cos, rel


def _tiny(ref, theta) -> bool:
    """Whether a reference gradient is within round-off of zero for parameters `theta`."""
    r, t = np.asarray(ref), np.asarray(theta)
    eps = np.finfo(r.dtype if np.issubdtype(r.dtype, np.floating) else np.float64).eps
    return bool(np.linalg.norm(r.ravel()) <= 1000 * eps * (np.linalg.norm(t.ravel()) + 1))


def verify(model: Model, params, x, y, method: str | None = None, betas=DEFAULT_BETAS, report=None):
    """Rows of {beta, weight, cosine, rel_error (size_ratio for rules), converged, file_beta,
    tiny_reference}, with "all" for every parameter together, β from large to small.

    `report(line)` receives one line per relaxation: its residual and whether it converged.
    Raises `CircuitError` when an estimate or the reference is not finite.
    """
    method = method or model.method
    say = report or (lambda line: None)
    second = second_figure(method)
    ref, ref_info = model.estimate(params, x, y, method="gradient", info=True)
    free = np.asarray(ref_info["free"].residual, dtype=float)
    ref_ok = _describe(model, "free phase", ref_info, lambda line: None)
    say(f"residuals (max |s_T - s_(T-1)| / dt at the end of each phase, largest over the samples; tolerance "
        f"{tolerance(model.free_phase):g}, times min(1, the nudge's speed |β ∂C/∂s|) in a nudged phase):")
    say(f"  free phase (the reference's fixed point): {_largest(free):.1e}"
        + ("" if ref_ok else f" (NOT converged for {np.mean(~(free < tolerance(model.free_phase))):.0%} of the "
                             "samples: implicit differentiation assumes a fixed point)"))
    names = [n for n in ref if model.trainable[n] and not (method == "rules" and _unnudged_only(model, n))]
    _finite(ref, names, "the true gradient", model)
    own = model.nudge_phase.beta if model.nudge_phase is not None and model.nudge_phase.beta else None
    betas = sorted({float(b) for b in betas} | ({float(own)} if own is not None else set()),
                   key=lambda b: (-abs(b), -b))
    cat = lambda d: np.concatenate([np.ravel(np.asarray(d[n])) for n in names])  # noqa: E731
    tiny = {n: _tiny(ref[n], params[n]) for n in names}
    tiny["all"] = _tiny(cat(ref), cat(params)) if names else True
    rows = []
    dtype = next(iter(params.values())).dtype
    # the nudge's speed at β = 1 (the free state is the same for every β)
    unit = _cost_slope(model, params, x, y) if method not in ("gradient", "bptt") else None
    for beta in betas:
        g, info = model.estimate(params, x, y, method=method, beta=jnp.asarray(beta, dtype), info=True)
        nudge = None if unit is None else abs(beta) * unit
        ok = _describe(model, f"β = {beta:g}", info, say, nudge) and ref_ok
        _finite(g, names, f"the `{method}` estimate at β = {beta:g}", model)
        for n in [*names, "all"]:
            a, b = (g[n], ref[n]) if n != "all" else (cat(g), cat(ref))
            cos, fig = _compare(a, b, method == "rules")
            if tiny[n]:
                cos = fig = float("nan")
            rows.append({"beta": beta, "weight": n, "cosine": cos, second: fig, "converged": ok,
                         "file_beta": own is not None and math.isclose(beta, own), "tiny_reference": tiny[n]})
    return rows


def _describe(model, what: str, info, say, nudge=None, skip=("free",)) -> bool:
    """Report the relaxations' residuals on one line; whether all of them converged.

    A nudged relaxation must also have slowed below `tolerance × min(1, nudge)`, with
    `nudge` the speed the nudge gives the free state, max |β ∂C/∂s| per sample
    (floored at √ε): at small β the whole displacement is that small, so an
    absolute tolerance would pass a phase that has not moved yet."""
    parts, ok = [], True
    for label, r in info.items():
        res = np.asarray(r.residual, dtype=float)
        tol = tolerance(model.phase_of(label)) * np.ones_like(res)
        if label != "free" and nudge is not None:  # (floored at √ε: a sample the nudge leaves still)
            tol = tol * np.clip(nudge, np.sqrt(np.finfo(res.dtype).eps), 1.0)
        bad = ~(res < tol)
        ok = ok and not bad.any()
        if label in skip:
            continue
        worst = _largest(res)
        parts.append(f"{label} {worst:.1e}" + (f" (NOT converged for {bad.mean():.0%})" if bad.any() else ""))
    if parts:
        say(f"  {what}: residual " + ", ".join(parts))
    return ok


def _largest(v) -> float:
    """The largest value, NaN and inf included (a non-finite residual is the news)."""
    v = np.asarray(v, dtype=float)
    return float(np.max(v)) if v.size and not np.isnan(v).any() else float("nan") if v.size else 0.0


def _cost_slope(model, params, x, y) -> np.ndarray:
    """max |∂C/∂s| per sample at the free state: times |β|, how fast a nudge moves it at first."""
    import jax

    res = model._jitted("verify:free", lambda p, x: model._free(p, model.as_inputs(x)))(params, x)
    free = {n: res.state[n] for n in model.free}
    g = jax.grad(lambda s: model.fns.cost(s, y))(free)
    per = [np.max(np.abs(np.asarray(v)).reshape(v.shape[0], -1), axis=1) for v in g.values()]
    return np.max(np.stack(per), axis=0)


def _finite(g, names, what: str, model) -> None:
    bad = [n for n in names if not np.all(np.isfinite(np.asarray(g[n])))]
    if bad:
        raise CircuitError(
            f"{what} is not finite (NaN or inf) for {', '.join(bad)}: a relaxation diverged or the nudge is too "
            "strong; lower `dt` or β, or give `--params` that relax (`circuitc simulate` shows where)",
            model.circuit.source)


def _unnudged_only(model, name: str) -> bool:
    """A parameter whose rules act only in un-nudged phases (e.g. a microcircuit's
    interneuron weights, which learn to predict, not to descend the loss)."""
    betas = {p.name: p.beta for p in model.learning.phases}
    rules = [r for r in model.rules.rules if model.rules.param(r.target) == name]  # rules on its plain ties too
    if not rules or any(r.always or not r.phases for r in rules):
        return False
    return all(betas[ph] == 0 for r in rules for ph in r.phases)


def format_table(rows, method: str) -> str:
    """The rows as a table: `cosine / figure` per weight and β, with marks and a legend."""
    second = second_figure(method)
    weights = list(dict.fromkeys(r["weight"] for r in rows))
    betas = list(dict.fromkeys(r["beta"] for r in rows))
    head = f"{'beta':>10}  " + "  ".join(f"{w:>22}" for w in weights)
    what = "size_ratio |g|/|∇|" if second == "size_ratio" else "rel_error |g−∇|/|∇|"
    lines = [f"estimator `{method}` vs the true gradient: cosine / {what}", head, "-" * len(head)]
    marks = set()
    for b in betas:
        cells = []
        sel = [r for r in rows if r["beta"] == b]
        for w in weights:
            r = next(r for r in sel if r["weight"] == w)
            if r["tiny_reference"]:
                cells.append("∇≈0")
                marks.add("tiny")
            else:
                cells.append(f"{r['cosine']:>9.6f} / {r[second]:<9.2e}")
        flag = ("*" if not sel[0]["converged"] else "") + ("  (the file's β)" if sel[0]["file_beta"] else "")
        marks.update({"*"} if not sel[0]["converged"] else set())
        lines.append((f"{b:>10g}  " + "  ".join(f"{c:>22}" for c in cells) + ("  " + flag if flag else "")).rstrip())
    if "*" in marks:
        lines.append("* computed from a phase that did not converge (see the residuals above): the gap "
                     "includes the relaxation's error; give the phases more `steps`")
    if "tiny" in marks:
        lines.append("∇≈0: the true gradient is within round-off of zero for this weight (units at their "
                     "bounds pass no gradient); nothing to compare")
    return "\n".join(lines)


def plot(rows, path: Path, method: str) -> None:
    """1 − cosine and the second figure against β, log-log where the values allow it."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    second = second_figure(method)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
    for w in dict.fromkeys(r["weight"] for r in rows):
        sel = [r for r in rows if r["weight"] == w and not r["tiny_reference"]]
        style = "k-o" if w == "all" else "-o"
        for ax, val in ((axes[0], lambda r: 1 - r["cosine"]), (axes[1], lambda r: r[second])):
            pts = [(r["beta"], val(r)) for r in sel if np.isfinite(val(r))]
            if pts:
                ax.plot(*zip(*pts), style, label=w, ms=3)
            bad = [(r["beta"], val(r)) for r in sel if not r["converged"] and np.isfinite(val(r))]
            if bad:
                ax.plot(*zip(*bad), "x", color="red", ms=7)
    labels = {"rel_error": "relative error |g − ∇| / |∇|", "size_ratio": "size ratio |g| / |∇|"}
    axes[0].set(xlabel="β", ylabel="1 − cosine", title=f"{method} vs the true gradient")
    axes[1].set(xlabel="β", ylabel=labels[second])
    for ax in axes:
        xs = [x for line in ax.get_lines() for x in line.get_xdata()]
        ys = [y for line in ax.get_lines() for y in line.get_ydata()]
        if xs and min(xs) > 0:
            ax.set_xscale("log")
        if ys and min(ys) > 0:
            ax.set_yscale("log")
    if any(not r["converged"] for r in rows):
        axes[0].plot([], [], "x", color="red", label="unconverged phase")
    if any(ax.get_lines() for ax in axes):
        axes[1].legend(fontsize=8) if axes[1].get_lines() else None
        axes[0].legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
