"""Checks of `perturb` statements: what an experiment does to a population.

    perturb stim : g1 add 0.5 during nudge
    perturb quiet : g1.dendrite silence during nudge[5:20] fraction=0.5 seed=3

* the name is declared in the global namespace, once;
* the target is a free population (not an input: those are clamped to the
  data), or one of its compartments;
* the kind is an entry of `primitives.PERTURBATIONS`, with a finite value when
  it `needs` one and none otherwise; a clamp of a bounded population stays in
  its bounds;
* every phase is a phase of the `learn` block, with steps (not `forward`), and
  a window `[a:b]` holds whole numbers with 0 <= a < b <= the phase's steps;
* options from `primitives.PERTURB_OPTIONS` (`fraction` in (0, 1], `seed`);
* the circuit's states have a force the perturbation can enter
  (`primitives.PERTURB_LOWERINGS`: a vector field or cell types, not an energy,
  and not `prospective`, whose state is computed in one pass).
"""

from __future__ import annotations

import math

from .. import primitives as P
from .. import syntax as S
from ..errors import did_you_mean
from ..graph import EnergySpec, LearningSpec, PerturbSpec
from .base import BuilderBase, fmt_num


class PerturbationsMixin(BuilderBase):
    """The `perturb` statements."""

    def perturbations(self, statements: list[S.Perturb], energy: EnergySpec | None,
                      learning: LearningSpec | None) -> tuple[PerturbSpec, ...]:
        out = []
        for s in statements:
            spec = self.perturbation(s, energy, learning)
            if spec is not None:
                out.append(spec)
        return tuple(out)

    def perturbation(self, s: S.Perturb, energy: EnergySpec | None,
                     learning: LearningSpec | None) -> PerturbSpec | None:
        ok = self.declare(s.name, "perturbation")
        pop_name = s.target.population.name
        pop = self.pops.get(pop_name)
        comp = s.target.compartment.name if s.target.compartment is not None else None
        if pop is None:
            self._unknown_population(s.target.population)
            ok = False
        elif pop.role == "input":
            self.error(f"`{pop_name}` is an input, clamped to the data: it cannot be perturbed", s.target.span,
                       "perturb a hidden or output population, or one of its compartments")
            ok = False
        elif comp is not None and comp not in pop.compartments:
            self.error(
                f"population `{pop_name}` has no compartment `{comp}`{did_you_mean(comp, pop.compartments)}",
                s.target.compartment.span, "its compartments: " + ", ".join(pop.compartments),
            )
            ok = False
        kind = s.kind.name
        value = None
        if kind not in P.PERTURBATIONS:
            self._unknown_name("perturbation", s.kind, P.PERTURBATIONS, "perturbations")
            ok = False
        elif "value" in P.PERTURBATIONS[kind].needs:
            if s.value is None:
                self.error(f"`{kind}` needs a value", s.kind.span, f"e.g. `{kind} 0.5`")
                ok = False
            else:
                value = self.const(s.value, f"the value of `{kind}`")
                ok = ok and value is not None
        elif s.value is not None:
            self.error(f"`{kind}` takes no value", s.value.span, f"write just `{kind}`")
            ok = False
        if (kind == "clamp" and value is not None and pop is not None and comp is None
                and not ((pop.lo is None or value >= pop.lo) and (pop.hi is None or value <= pop.hi))):
            bounds = f"[{fmt_num(pop.lo) if pop.lo is not None else '-inf'}, {fmt_num(pop.hi) if pop.hi is not None else 'inf'}]"
            self.error(f"`clamp {fmt_num(value)}` is outside the bounds {bounds} of `{pop_name}`", s.value.span)
            ok = False
        windows = self._windows(s, learning)
        ok = ok and windows is not None
        fraction, seed, enabled = 1.0, 0, False
        for opt in self._own_options(s.options):
            setting = self._option(opt, P.PERTURB_OPTIONS, "a perturbation")
            if setting is None:
                ok = False
                continue
            if setting.kind == "flag":
                enabled = True
                continue
            v = self._checked_number(opt.value, setting, f"`{opt.key}`")
            if v is None:
                ok = False
            elif opt.key == "fraction":
                fraction = v
            else:
                seed = int(v)
        if energy is not None:
            self.error(
                "a perturbation enters the force of a vector field or of cell types; this circuit's states "
                "follow its energy (-dE/ds)", s.kind.span,
                "write the circuit with `dynamics leaky` or cell types (`neuron ...`) to perturb it",
            )
            ok = False
        elif learning is not None and learning.prospective:
            self.error("a `prospective` circuit shows its state in one pass, with no steps to perturb",
                       s.kind.span, "drop `prospective` to perturb it")
            ok = False
        if not ok:
            return None
        return PerturbSpec(s.name.name, pop_name, comp, kind, value, windows, fraction, seed, enabled, s.span)

    def _windows(self, s: S.Perturb, learning: LearningSpec | None):
        if learning is None:
            if not self.learn_statements:
                self.error("a perturbation acts during a phase, and this circuit has no `learn` block",
                           s.windows[0].phase.span, "add `learn ... { phase NAME { steps N; dt D } }`")
            return None
        phases = {p.name: p for p in learning.phases}
        out, ok = [], True
        for w in s.windows:
            ph = phases.get(w.phase.name)
            if ph is None:
                self.error(f"unknown phase `{w.phase.name}`{did_you_mean(w.phase.name, phases)}", w.phase.span,
                           "phases: " + ", ".join(phases))
                ok = False
                continue
            steps = ph.steps if ph.steps is not None else ph.present
            if steps is None:
                self.error(f"phase `{ph.name}` is `forward`: it has no steps to perturb", w.phase.span)
                ok = False
                continue
            if w.start is None:
                out.append((ph.name, 0, None))
                continue
            a = self.const(w.start, "the first step of a window")
            b = self.const(w.stop, "the end of a window")
            if a is None or b is None:
                ok = False
                continue
            bad = [(x, e) for x, e in ((a, w.start), (b, w.stop)) if not (math.isfinite(x) and x == int(x))]
            for x, e in bad:
                self.error(f"a step must be a whole number, not {fmt_num(x)}", e.span)
            if bad:
                ok = False
                continue
            a, b = int(a), int(b)
            if a >= b:
                self.error(f"the window [{a}:{b}] holds no step" + (": it ends where it starts" if a == b else ": it ends before it starts"), w.span,
                           f"write `{ph.name}[a:b]` with a < b (steps a .. b-1)")
                ok = False
                continue
            if not 0 <= a < b <= steps:
                self.error(
                    f"the window [{a}:{b}] is not inside phase `{ph.name}`, whose steps are 0 .. {steps - 1}",
                    w.span, f"write `{ph.name}[a:b]` with 0 <= a < b <= {steps} (steps a .. b-1)",
                )
                ok = False
                continue
            out.append((ph.name, a, b))
        return tuple(out) if ok else None
