"""`circuitc verify`: the gap between a circuit's learning rule and the true gradient.

For each β of a sweep, the file's estimator is compared with the gradient
of the loss at the free fixed point (implicit differentiation), weight by
weight: the cosine of the angle and the relative error |g − ∇| / |∇| (for
local rules, whose constants set their own scale, the size ratio |g| / |∇|
instead). As
β → 0 an EqProp estimator's error should fall like β (one-sided) or β²
(symmetric); what remains at small β is the bias of an unconverged
relaxation.
"""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np

from .model import Model

__all__ = ["verify", "format_table", "DEFAULT_BETAS"]

DEFAULT_BETAS = (1.0, 0.5, 0.1, 0.05, 0.01, 0.001)


def _compare(g, ref, scale: bool = False):
    a, b = np.ravel(np.asarray(g, np.float64)), np.ravel(np.asarray(ref, np.float64))
    nb = np.linalg.norm(b)
    na = np.linalg.norm(a)
    cos = float(a @ b / (na * nb)) if na > 0 and nb > 0 else float("nan")
    if scale:  # local rules carry their own constants: compare sizes, not differences
        return cos, float(na / nb) if nb > 0 else float("nan")
    rel = float(np.linalg.norm(a - b) / nb) if nb > 0 else float("nan")
    return cos, rel


def verify(model: Model, params, x, y, method: str | None = None, betas=DEFAULT_BETAS):
    """Rows of {beta, weight, cosine, rel_error}, plus "all" for every parameter together."""
    method = method or model.method
    ref = model.estimate(params, x, y, method="gradient")
    names = [n for n in ref if model.trainable[n] and not (method == "rules" and _unnudged_only(model, n))]
    if model.nudge_phase is not None and model.nudge_phase.beta not in betas:
        betas = (*betas, model.nudge_phase.beta)  # the file's own β too
    rows = []
    for beta in betas:
        g = model.estimate(params, x, y, method=method, beta=jnp.asarray(beta, next(iter(params.values())).dtype))
        for n in names:
            cos, rel = _compare(g[n], ref[n], method == "rules")
            rows.append({"beta": beta, "weight": n, "cosine": cos, "rel_error": rel})
        cat = lambda d: np.concatenate([np.ravel(np.asarray(d[n])) for n in names])  # noqa: E731
        cos, rel = _compare(cat(g), cat(ref), method == "rules")
        rows.append({"beta": beta, "weight": "all", "cosine": cos, "rel_error": rel})
    return rows


def _unnudged_only(model, name: str) -> bool:
    """A parameter whose rules act only in un-nudged phases (e.g. a microcircuit's
    interneuron weights, which learn to predict, not to descend the loss)."""
    betas = {p.name: p.beta for p in model.learning.phases}
    rules = [r for r in model.rules.rules if r.target == name]
    if not rules or any(r.always or not r.phases for r in rules):
        return False
    return all(betas[ph] == 0 for r in rules for ph in r.phases)


def format_table(rows, method: str) -> str:
    weights = list(dict.fromkeys(r["weight"] for r in rows))
    betas = list(dict.fromkeys(r["beta"] for r in rows))
    head = f"{'beta':>8}  " + "  ".join(f"{w:>20}" for w in weights)
    second = "size ratio |g|/|∇|" if method == "rules" else "relative error"
    lines = [f"estimator `{method}` vs the true gradient: cosine / {second}", head, "-" * len(head)]
    for b in betas:
        cells = []
        for w in weights:
            r = next(r for r in rows if r["beta"] == b and r["weight"] == w)
            cells.append(f"{r['cosine']:>9.6f} / {r['rel_error']:<8.2e}")
        lines.append(f"{b:>8g}  " + "  ".join(f"{c:>20}" for c in cells))
    return "\n".join(lines)


def plot(rows, path: Path, method: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
    for w in dict.fromkeys(r["weight"] for r in rows):
        sel = [r for r in rows if r["weight"] == w]
        style = "k-o" if w == "all" else "-o"
        axes[0].plot([r["beta"] for r in sel], [1 - r["cosine"] for r in sel], style, label=w, ms=3)
        axes[1].plot([r["beta"] for r in sel], [r["rel_error"] for r in sel], style, label=w, ms=3)
    axes[0].set(xscale="log", yscale="log", xlabel="β", ylabel="1 − cosine", title=f"{method} vs gradient")
    axes[1].set(xscale="log", yscale="log", xlabel="β", ylabel="relative error")
    axes[1].legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
