"""The file's `optimizer` block → an optax transformation (nothing hand-written).

    optimizer sgd  { lr W1=0.1, W2=0.05; momentum 0.9; nesterov; weight_decay 1e-4 }
    optimizer adam { lr 1e-3; b1 0.9; b2 0.999; eps 1e-8; weight_decay 1e-4 }
    ...          { schedule cosine warmup=100 }

Each parameter gets its own learning rate (the block's `lr`, overridden per
weight); fixed weights get `optax.set_to_zero()`. The schedule multiplies
every rate; its length is the whole run (epochs × batches per epoch).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import optax

from . import primitives as P
from .graph import OptimizerSpec

__all__ = ["make_optimizer", "nonzero", "rates", "default_rate", "sgd", "adam", "DEFAULT_LR", "RULES_LR"]

DEFAULT_LR = 0.01
RULES_LR = 1.0  # `learn rules`: the rules' own constants set the step; SGD applies them as written


def _schedule(spec: OptimizerSpec | None, lr: float, total_steps: int):
    settings = spec.settings if spec else {}
    kind = settings.get("schedule", "constant")
    warmup = int(settings.get("schedule.warmup", 0))
    if kind == "cosine":
        if warmup:
            return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(total_steps, warmup + 1))
        return optax.cosine_decay_schedule(lr, max(total_steps, 1))
    if warmup:
        return optax.join_schedules(
            [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup]
        )
    return lr


def default_rate(learning) -> float:
    """The learning rate of a parameter the optimizer block gives none: RULES_LR for
    `learn rules` (the rules' own constants set the step), else DEFAULT_LR."""
    return RULES_LR if learning.method == "rules" else DEFAULT_LR


def nonzero(v) -> bool:
    """Whether a setting is on: a number other than 0, or a traced value (a swept setting,
    `Model.bind`; `sweeps.py` checks that every member's program is the same, so a member
    with the setting off is refused rather than run with it on)."""
    return isinstance(v, jax.core.Tracer) or bool(v != 0)


def sgd(rate, settings: Mapping[str, object]) -> optax.GradientTransformation:
    """`OPTIMIZERS["sgd"]`: optax SGD, heavy-ball or Nesterov momentum, L2 weight decay added to the gradient."""
    momentum = settings.get("momentum", 0.0)
    out = optax.sgd(rate, momentum=momentum if nonzero(momentum) else None,
                    nesterov=bool(settings.get("nesterov", False)))
    decay = settings.get("weight_decay", 0.0)
    return optax.chain(optax.add_decayed_weights(decay), out) if nonzero(decay) else out


def adam(rate, settings: Mapping[str, object]) -> optax.GradientTransformation:
    """`OPTIMIZERS["adam"]`: optax Adam, AdamW with `weight_decay`."""
    kw = {k: settings[k] for k in ("b1", "b2", "eps") if k in settings}
    decay = settings.get("weight_decay", 0.0)
    return optax.adamw(rate, weight_decay=decay, **kw) if nonzero(decay) else optax.adam(rate, **kw)


def _one(spec: OptimizerSpec | None, lr: float, total_steps: int) -> optax.GradientTransformation:
    name = spec.name if spec else "sgd"  # no optimizer block: plain SGD (documented in the README)
    settings = dict(spec.settings) if spec else {}
    return P.OPTIMIZERS[name].load()(_schedule(spec, lr, total_steps), settings)


def rates(spec: OptimizerSpec | None, trainable: Mapping[str, bool],
          default_lr: float = DEFAULT_LR) -> dict[str, float]:
    """The learning rate in effect for each parameter, before any schedule: its own
    (`lr W1=0.1`), else the block's (`lr 0.1`), else `default_lr`; 0 for a fixed one."""
    base = spec.lr if (spec and spec.lr is not None) else default_lr
    per = dict(spec.lr_per_param) if spec else {}
    return {name: float(per.get(name, base)) if learns else 0.0 for name, learns in trainable.items()}


def make_optimizer(spec: OptimizerSpec | None, trainable: Mapping[str, bool],
                   total_steps: int, default_lr: float = DEFAULT_LR) -> optax.GradientTransformation:
    """One optax transformation for the whole params dict, each parameter at its rate (`rates`)."""
    base = spec.lr if (spec and spec.lr is not None) else default_lr
    per = dict(spec.lr_per_param) if spec else {}
    lr = {name: per.get(name, base) for name in trainable}  # `rates`, without float(): a swept rate is traced
    transforms = {}
    labels = {}
    for name, learns in trainable.items():
        if not learns:
            labels[name] = "__fixed__"
            continue
        labels[name] = name
        transforms[name] = _one(spec, lr[name], total_steps)
    transforms["__fixed__"] = optax.set_to_zero()
    return optax.multi_transform(transforms, labels)
