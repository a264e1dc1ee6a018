"""Blocked SGD updates of a large input weight: one update per batch, as written, in
fewer passes over the weight.

With plain SGD, a weight `W` that only feeds a free population from a clamped input
(`h -- x : W1`) is read once per batch, through its hoisted drive ``D = ρ(x)Wᵀ``, and its gradient is ``gᵀρ(x)``, with
``g`` the batch's gradient with respect to that drive. So for the `b` batches of a block,
with ``W₀`` the weight at the block's start,

* batch `j`'s drive is ``D_j(W₀) − lr·Σ_(m<j) (ρ(x_j)ρ(x_m)ᵀ) g_m``: the same
  number as ``D_j(W_j)`` after the `j` updates before it, computed from the block's
  stacked inputs in one product with `W₀` and a `b·B × b·B` Gram matrix;
* the `b` updates are applied at the block's end as one product with an inner
  dimension of `b·B` and one pass over `W`: ``W₀ − lr·Σ_m g_mᵀρ(x_m)``.

Only the order of the floating-point sums differs from updating after every batch
(`tests/test_blocking.py` trains both ways and compares). On Scellier & Bengio's
784-500-10 the input weight's two products and its update are most of an epoch
(`benchmarks/speed_breakdown.py`); in blocks of 4 they cost about a third less.

`plan` says when this applies, conservatively: an EqProp estimator that reads the
weights only through the energy (`one_sided`, `random_sign`, `symmetric`), a Hopfield
energy without custom terms, SGD without momentum, weight decay or schedule, one
device, no augmentation, and a dense, untied, unscaled, trained weight of at least
`MIN_ELEMENTS` entries that no other connection shares, into at least 4 units per
example of a block (`MAX_EXAMPLES_PER_UNIT`: the Gram matrix grows with the block). Inside a block the estimator
gets the parameters without that weight and with the drive in its place (under
`wiring.DRIVE` + its name), so any other read of the weight would fail when the
program is traced rather than read a stale value.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from .lower.energy import Hopfield
from .lower.wiring import DRIVE
from .optim import nonzero, rates

__all__ = ["MIN_ELEMENTS", "SIZE", "Plan", "plan"]

Array = Any

SIZE = 4  # batches per block (`benchmarks/speed_breakdown.py` measures what it saves)
MIN_ELEMENTS = 1 << 16  # smaller weights: the passes over them are cheap anyway
# A block's Gram matrix and corrections cost about 2·SIZE·B²·|pre| per batch of B, against the
# 4·B·|pre|·|post| of the weight's two products: block only while the block's examples are at most
# a quarter of the weight's output units (Scellier & Bengio's batch of 20 into 500 units: 80;
# the prototypical batch of 50 gained nothing measurable, and larger batches would lose).
MAX_EXAMPLES_PER_UNIT = 0.25
ESTIMATORS = ("one_sided", "random_sign", "symmetric")


@dataclasses.dataclass(frozen=True)
class Blocked:
    name: str
    edge: Any  # graph.ConnectionEdge
    lr: float


@dataclasses.dataclass(frozen=True)
class Plan:
    size: int
    weights: tuple[Blocked, ...]

    @property
    def names(self) -> frozenset[str]:
        return frozenset(w.name for w in self.weights)

    # ------------------------------------------------------------ one block --
    def start(self, model, params, inputs: Sequence[Mapping[str, Array]]) -> dict:
        """The block's products with the weights at its start: for each blocked weight,
        the stacked input rates, their drives and their Gram matrix."""
        fns = model.fns
        out = {}
        for w in self.weights:
            e = w.edge
            r = jnp.concatenate([fns.act[e.pre](x[e.pre]) for x in inputs])
            flat = r.reshape(r.shape[0], -1)
            out[w.name] = (r, fns.wiring.drive(e, params, {e.pre: r}), flat @ flat.T)
        return out

    def drives(self, ctx: dict, j: int, grads: Sequence[Mapping[str, Array]]) -> dict[str, Array]:
        """Batch `j`'s drives, as the weights would give after the block's `j` earlier
        updates, keyed for the estimator's parameters (`wiring.DRIVE` + weight)."""
        out = {}
        for w in self.weights:
            _, d_all, gram = ctx[w.name]
            b = d_all.shape[0] // self.size
            d = d_all[j * b:(j + 1) * b]
            for m in range(j):
                g = grads[m][w.name]
                corr = gram[j * b:(j + 1) * b, m * b:(m + 1) * b] @ g.reshape(b, -1)
                d = d + (-w.lr) * corr.reshape(d.shape)
            out[DRIVE + w.name] = d
        return out

    def finish(self, model, params, ctx: dict, grads: Sequence[Mapping[str, Array]]) -> dict[str, Array]:
        """`params` with the block's updates of the blocked weights applied (SGD: W − lr·∇W)."""
        new = dict(params)
        for w in self.weights:
            r, _, _ = ctx[w.name]
            g = jnp.concatenate([gr[w.name] for gr in grads])
            grad = model.fns.wiring.weight_update(w.edge, params, g, r)
            new[w.name] = optax.apply_updates(params[w.name], -w.lr * grad)  # as SGD's step
        return new


def split(plan: Plan, params: Mapping[str, Array], drives: Mapping[str, Array]) -> dict[str, Array]:
    """The estimator's parameters inside a block: the blocked weights replaced by their drives."""
    return {**{k: v for k, v in params.items() if k not in plan.names}, **drives}


def gather(plan: Plan, grads: Mapping[str, Array], params: Mapping[str, Array]):
    """(the optimizer's gradients, the drives' gradients): the estimate with zeros for
    the blocked weights (their updates wait for the block's end), and apart from it
    each blocked weight's gradient with respect to its drive."""
    g = {k: v for k, v in grads.items() if not k.startswith(DRIVE)}
    for name in plan.names:
        g[name] = jnp.zeros_like(params[name])
    return g, {name: grads[DRIVE + name] for name in plan.names}


def plan(model, method: str, default_lr: float, devices: int = 1, augment: tuple[str, ...] = (),
         batch: int | None = None) -> Plan | None:
    """The blocked weights of a training run, or None where blocking does not apply;
    `default_lr`: the rate of a parameter the optimizer block gives none (as `train`'s);
    `batch`: the examples per batch (default: the file's)."""
    learn = model.learning
    fns = model.fns
    if learn is None or method not in ESTIMATORS or devices != 1 or augment:
        return None
    if getattr(fns, "vector_field", False) or getattr(fns, "terms", ()) or not getattr(fns, "preset_impls", None):
        return None
    if not all(isinstance(impl, Hopfield) for impl in fns.preset_impls.values()):
        return None
    spec = learn.optimizer
    if (spec.name if spec else "sgd") != "sgd":
        return None
    settings = dict(spec.settings) if spec else {}
    if any(nonzero(settings.get(key, 0)) for key in ("momentum", "weight_decay", "schedule.warmup")):
        return None
    if settings.get("schedule", "constant") != "constant" or settings.get("nesterov"):
        return None
    given = [spec.lr, *dict(spec.lr_per_param).values()] if spec else []
    if any(isinstance(v, jax.core.Tracer) for v in given):  # a swept rate (`sweeps.py`)
        return None
    lrs = rates(spec, model.trainable, default_lr)
    inputs = set(model.inputs)
    chosen = []
    for e in fns.edges:
        name = e.weight
        if (name is None or e.tied_to is not None or e.transposed or e.kind != "undirected"
                or [s.kind for s in e.stages] != ["dense"] or e.sign * e.gain != 1
                or e.pre not in inputs or e.post in inputs
                or not model.trainable.get(name, False) or not lrs.get(name)):
            continue
        if sum(1 for f in fns.edges if f.weight == name or f.tied_to == name) != 1:
            continue
        pre, post = (math.prod(int(d) for d in fns.pops[n].shape) for n in (e.pre, e.post))
        examples = SIZE * (batch if batch is not None else learn.batch)
        if pre * post >= MIN_ELEMENTS and examples <= MAX_EXAMPLES_PER_UNIT * post:
            chosen.append(Blocked(name, e, float(lrs[name])))
    return Plan(SIZE, tuple(chosen)) if chosen else None
