"""Training health: is what `train` computes worth anything?

Every epoch `train` records, next to loss and accuracy (see `training.py`):

* ``free_residual_mean`` / ``free_residual_max``: the free phase's residual
  (`lower/relax.py`: the speed of the state at the end of the phase, per
  example), mean and largest over the epoch's training examples; likewise
  ``nudged_residual_*`` over every other relaxation the estimator ran
  (nudged, clamped, or the later phases of local rules);
* ``converged``: the fraction of training examples whose every relaxation
  met its phase's tolerance (`tol`, or `relax.DEFAULT_TOL`), and
  ``converged.LABEL`` per relaxation (``free``, ``nudge+``, ...);
* ``saturated.POP``: per free population, the fraction of units (over the
  test split's free states) held at a bound (`min=`/`max=`) or where ρ' ≈ 0:
  they pass no error back (a hidden population all of whose units are
  saturated is warned about; an output gets its error from the cost directly);
* ``update_ratio.W``: per learned parameter, how far the epoch moved it
  relative to its size, per batch: ‖θ_end − θ_start‖ / ‖θ_start‖ / batches
  (‖θ_start‖ at least 1e-3 per entry in rms, so that a bias starting at zero
  reads sensibly).

`problems` turns a row into warnings, each located at the line it is about
(the phase, the population) with the likely fix: estimates from unconverged
phases, outputs collapsed onto one class, fully saturated populations, a
non-finite residual. The learn setting ``health warn|error|ignore`` (or
`--set learn.health=...`) chooses what `train` does with them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import primitives as P
from .errors import CircuitError, Diagnostic, HealthWarning
from .lower.noise import NOISE_SIGMAS
from .lower.relax import converged, tolerance

__all__ = ["batch_health", "reduce_health", "update_ratios", "saturation", "problems", "raise_for", "render",
           "Problem", "HealthWarning", "CONVERGED_AT_LEAST", "SATURATED_AT_LEAST", "COLLAPSED_AT_LEAST"]

CONVERGED_AT_LEAST = 0.9    # warn when fewer training examples than this converged in a relaxation
SATURATED_AT_LEAST = 0.999  # a population counts as fully saturated
COLLAPSED_AT_LEAST = 0.95   # the outputs collapsed: this fraction of predictions is one class
FLAT = 1e-6                 # |ρ'| below this: a saturated unit

Array = Any


# ------------------------------------------------------------ inside jit --
def batch_health(info: Mapping[str, Any]) -> dict[str, Array]:
    """What a batch keeps for the epoch's health (traced): each relaxation's per-example
    residual, as it is; the statistics are taken once per epoch (`reduce_health`), so a
    batch pays for no reduction of its own."""
    return {label: r.residual for label, r in info.items()}


def reduce_health(model, stacked: Mapping[str, Array]) -> dict[str, Array]:
    """The epoch's figures from the residuals of every batch, {label: (batches, batch)}:
    residual mean and max (free, and over the other relaxations), the fraction of
    examples converged per relaxation and in all of them."""
    out: dict[str, Array] = {}
    conv_all = None
    nudged = [lbl for lbl in stacked if lbl != "free"]
    for label, res in stacked.items():
        ok = converged(res, model.phase_of(label))
        out[f"converged.{label}"] = jnp.mean(ok.astype(jnp.float32))
        conv_all = ok if conv_all is None else conv_all & ok
    if "free" in stacked:
        res = stacked["free"].astype(jnp.float32)
        out["free_residual_mean"], out["free_residual_max"] = jnp.mean(res), jnp.max(res)
    if nudged:
        res = jnp.stack([stacked[lbl].astype(jnp.float32) for lbl in nudged])
        out["nudged_residual_mean"], out["nudged_residual_max"] = jnp.mean(res), jnp.max(res)
    if conv_all is not None:
        out["converged"] = jnp.mean(conv_all.astype(jnp.float32))
    return out


def update_ratios(model, before, after, batches: int) -> dict[str, Array]:
    """Per learned parameter, ‖after − before‖ / ‖before‖ / batches: the epoch's change,
    relative to the parameter, per batch (traced once per epoch: a norm per batch would
    cost as much as a small batch's matmul). ‖before‖ is floored at rms 1e-3, so that a
    bias starting at zero reads sensibly."""
    out = {}
    for name, w in before.items():
        if model.trainable.get(name, False):
            size = jnp.maximum(jnp.linalg.norm(w.ravel()), 1e-3 * jnp.sqrt(w.size))
            out[f"update_ratio.{name}"] = jnp.linalg.norm((after[name] - w).ravel()) / size / batches
    return out


def saturation(model, params, x, free) -> dict[str, Array]:
    """{population: how many of its units (summed over the batch) are saturated} at the
    free state `free` (traced):
    at a bound, or with ρ' below `FLAT` at the unit's input (for the states of the
    prototypical form, which are rates, the input is −∂Φ/∂r)."""
    fns = model.fns
    rate_form = "states_are_rates" in P.INTEGRATORS[model.free_phase.integrator].provides
    pre = None
    if rate_form:
        s = {n: free[n] for n in model.free}
        g = jax.grad(lambda u: fns.energy(u, params, x, None, leak=False, rates_are_states=True))(s)
        pre = {n: -g[n] for n in s}
    out = {}
    for n in model.free:
        pop = fns.pops[n]
        v = free[n]
        flat = jnp.zeros(v.shape, bool)
        if pop.lo is not None:
            flat = flat | (v <= pop.lo)
        if pop.hi is not None:
            flat = flat | (v >= pop.hi)
        u = pre[n] if pre is not None else v
        slope = jax.jvp(fns.act[n], (u,), (jnp.ones_like(u),))[1]
        flat = flat | (jnp.abs(slope) < FLAT)
        out[n] = jnp.sum(flat.astype(jnp.float32))
    return out


# ----------------------------------------------------------- after jit --
@dataclasses.dataclass(frozen=True)
class Problem:
    """One unhealthy sign: `key` says which (warned once per key), `diagnostic` where and why."""

    key: str
    diagnostic: Diagnostic


def problems(model, row: Mapping[str, float], classes: np.ndarray | None = None) -> list[Problem]:
    """What is wrong with an epoch's figures `row`; `classes`: counts of predicted classes."""
    out: list[Problem] = []
    epoch = row.get("epoch")
    when = f"epoch {epoch}: " if epoch is not None else ""
    worst: dict[str, tuple[float, str]] = {}  # per phase, its least converged relaxation
    for key, frac in row.items():
        if key.startswith("converged."):
            label = key.split(".", 1)[1]
            name = model.phase_of(label).name
            if name not in worst or not frac >= worst[name][0]:
                worst[name] = (frac, label)
    for frac, label in worst.values():
        phase = model.phase_of(label)
        if np.isfinite(frac) and frac >= CONVERGED_AT_LEAST:
            continue
        largest = row.get("free_residual_max" if label == "free" else "nudged_residual_max", float("nan"))
        fix = (f"raise `steps` (now {phase.steps})" + (f", lower `dt` (now {phase.dt:g}) if it oscillates"
               if phase.dt else "") + ", or lower the learning rates if it converged in earlier epochs")
        what = "free phase" if label == "free" else f"phase `{phase.name}`" + (
            f" (the {label} relaxation)" if label != phase.name else "")
        if phase.sigma > 0:  # a noisy phase: its residual is the drift's, its tolerance has room for the noise
            fix += f"; `--set phase.{phase.name}.noise=0` shows how it converges without its noise"
        out.append(Problem(f"converged:{phase.name}", Diagnostic(
            f"{when}the {what} did not converge for {1 - frac:.0%} of the training examples (residual up to "
            f"{largest:.3g}, tolerance {tolerance(phase):g}"
            + (f" = {tolerance(phase) - NOISE_SIGMAS * phase.sigma:g} + {NOISE_SIGMAS:g}σ for its noise, "
               f"σ = {phase.sigma:g}"
               if phase.sigma > 0 else "") + "): the estimates built on it are unreliable",
            phase.span, fix, severity="warning")))
    for key, frac in row.items():
        if key.startswith("saturated.") and np.isfinite(frac) and frac >= SATURATED_AT_LEAST:
            n = key.split(".", 1)[1]
            pop = model.fns.pops[n]
            if pop.role == "output":  # the cost reaches an output directly, at a bound too
                continue
            out.append(Problem(f"saturated:{n}", Diagnostic(
                f"{when}population `{n}` is fully saturated ({frac:.1%} of its units at a bound or where "
                f"ρ' ≈ 0): no error passes through it",
                pop.span, "lower the learning rates or the initial weights (`init=`), or widen its bounds",
                severity="warning")))
    if classes is not None and classes.sum() > 0 and len(classes) > 2:
        top = int(np.argmax(classes))
        frac = float(classes[top] / classes.sum())
        if frac >= COLLAPSED_AT_LEAST:
            out_pop = model.spec.costs[0].population if model.spec.costs else None
            span = model.fns.pops[out_pop].span if out_pop else None
            out.append(Problem("collapsed", Diagnostic(
                f"{when}the outputs collapsed onto one class: {frac:.0%} of the test examples are predicted "
                f"as class {top}",
                span, "lower the learning rates (the deeper layers' first), or give the free phase more steps",
                severity="warning")))
    for key in ("free_residual_max", "nudged_residual_max"):
        if key in row and not np.isfinite(row[key]):
            out.append(Problem(f"nonfinite:{key}", Diagnostic(
                f"{when}a relaxation produced non-finite states ({key.replace('_', ' ')} is {row[key]})",
                model.free_phase.span, "lower `dt` or the learning rates", severity="warning")))
    return out


def raise_for(model, found: list[Problem]) -> None:
    """`health error`: stop with the problems as a located error (exit 1 on the command line)."""
    raise CircuitError([dataclasses.replace(p.diagnostic, severity="error") for p in found], model.circuit.source)


def render(model, p: Problem) -> str:
    return p.diagnostic.render(model.circuit.source)

