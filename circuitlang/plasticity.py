"""Which parameters learn, by what, and in which phase, as the `learn` block says.

A view of the circuit's spec (no lowering): the diagram labels each weight
and bias with it, so a reader sees `W1 · eqprop`, `W_IP · rule (predict)` or
`B2 · fixed` without opening the `.circ` file.

* `learn eqprop`: every weight that is neither `fixed` nor tied, and every
  bias, learns by the estimator (it contrasts the free phase with the nudged
  ones, so no phase of its own is named).
* `learn rules`: a weight or bias learns only if a rule names it, in the
  phases the rule is `during` (or `always`); any other one keeps its initial
  value.
* A tied weight `B = transpose(W)` follows `W`; a `fixed` one never changes.
* Without a `learn` block nothing is said (`how == ""`), except that a
  `fixed` weight is fixed.
"""

from __future__ import annotations

import dataclasses

from .circuit import Circuit
from .graph import rule_target

__all__ = ["Plasticity", "plasticity", "ALWAYS"]

ALWAYS = "always"


@dataclasses.dataclass(frozen=True)
class Plasticity:
    """What happens to one parameter during learning.

    how: ``"eqprop"``, ``"rule"`` (a local rule of the file), ``"fixed"``,
    ``"tied"`` (follows `tied_to`), ``"no rule"`` (a `learn rules` circuit
    has none for it) or ``""`` (the circuit has no `learn` block).
    phases: for a rule, the phases it is active in (``("always",)`` for an
    `always` rule), in the order of the `learn` block.
    """

    how: str
    phases: tuple[str, ...] = ()
    tied_to: str | None = None

    @property
    def learned(self) -> bool:
        """The parameter changes by its own update (a tied one changes only through its tie)."""
        return self.how in ("eqprop", "rule")

    @property
    def label(self) -> str:
        """Short text for a diagram: ``eqprop``, ``rule (predict, nudge)``, ``fixed``, ..."""
        if self.how == "rule":
            return f"rule ({', '.join(self.phases)})"
        if self.how == "no rule":
            return "not learned"
        if self.how == "tied":
            return ""
        return self.how


def plasticity(circ: Circuit) -> dict[str, Plasticity]:
    """Every named weight (declaration order), then every bias as ``"<pop>.bias"``."""
    learn = circ.spec.learning
    ruled: dict[str, list[str]] = {}
    if learn is not None and learn.method == "rules":
        order = [p.name for p in learn.phases]
        for rule in learn.rules:
            for target in rule.weights:
                target = rule_target(circ.weights, target)  # a rule on a plain tie updates its weight
                phases = ruled.setdefault(target, [])
                for ph in (ALWAYS,) if rule.always else rule.phases:
                    if ph not in phases:
                        phases.append(ph)
        for phases in ruled.values():
            phases.sort(key=lambda p: order.index(p) if p in order else -1)

    def own(name: str) -> Plasticity:
        if learn is None:
            return Plasticity("")
        if learn.method == "rules":
            return Plasticity("rule", tuple(ruled[name])) if name in ruled else Plasticity("no rule")
        return Plasticity(learn.method)

    out: dict[str, Plasticity] = {}
    for name, e in circ.weights.items():
        if e.plasticity == "tied":
            out[name] = Plasticity("tied", tied_to=e.tied_to)
        elif e.plasticity == "fixed":
            out[name] = Plasticity("fixed")
        else:
            out[name] = own(name)
    for name, pop in circ.populations.items():
        if pop.bias:
            out[f"{name}.bias"] = own(f"{name}.bias")
    return out
