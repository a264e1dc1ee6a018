"""Checks of populations and biases.

* `population NAME [SIZE] OPTIONS` / `population NAME : CELLTYPE [SIZE]`: a
  positive whole size within `MAX_POPULATION`, at most one role, an activation
  that is a function of one argument, and a declared cell type whose
  compartments and states the population takes.
* `bias h, y`: a learned bias per population, once each, never on an input.
"""

from __future__ import annotations

import math

from .. import primitives as P
from .. import syntax as S
from ..errors import did_you_mean
from ..graph import PopulationNode
from .base import BuilderBase, fmt_bytes, fmt_num

MAX_POPULATION = 10**8
BIAS_PER = ("channel", "neuron")
MAX_RANK = 4  # channels + up to three spatial dimensions


class PopulationsMixin(BuilderBase):
    """`population` and `bias` statements."""

    # --------------------------------------------------------- populations --
    def population(self, s: S.Population) -> None:
        ok = self.declare(s.name, "population")
        shape = self._shape(s)
        size = math.prod(shape)
        roles = []
        activation = "rho" if "rho" in self.functions else "identity"
        tau = 1.0
        noise = 0.0
        bounds: dict[str, float] = {}
        for opt in self._own_options(s.options):
            spec = self._option(opt, P.POPULATION_OPTIONS, "a population")
            if spec is None:
                continue
            if opt.key in P.ROLES:
                roles.append(opt)
            elif opt.key == "rho":
                written = self._function_name(opt)
                if written is not None:
                    activation = written
                    self.rho_options[s.name.name] = opt
            elif opt.key == "tau" and opt.value is not None:
                tau = self._checked_number(opt.value, spec, f"`tau` of `{s.name.name}`") or tau
            elif opt.key == "noise" and opt.value is not None:
                noise = self._checked_number(opt.value, spec, f"the noise of `{s.name.name}`") or 0.0
                noise_opt = opt
            elif opt.key in ("min", "max") and opt.value is not None:
                value = self._checked_number(opt.value, spec, f"`{opt.key}` of `{s.name.name}`")
                if value is not None:
                    bounds[opt.key] = value
                    if "min" in bounds and "max" in bounds and bounds["min"] >= bounds["max"]:
                        self.error(
                            f"the state bounds of `{s.name.name}` are empty: min {fmt_num(bounds['min'])} "
                            f"is not below max {fmt_num(bounds['max'])}",
                            opt.span,
                        )
        if len(roles) > 1:
            self.error(
                f"`{s.name.name}` has two roles: `{roles[0].key}` and `{roles[1].key}`",
                roles[1].span,
                "a population is one of input, hidden (the default) or output",
            )
        role = roles[0].key if roles else "hidden"
        if noise and role == "input":
            self.error(
                f"`{s.name.name}` is an input population: it is clamped to the data, so noise on its state has "
                "no effect", noise_opt.span, "put the noise on the populations the input drives",
            )
            noise = 0.0
        comps: tuple[str, ...] = (P.DEFAULT_COMPARTMENT,)
        state: tuple[str, ...] = ("s",)
        ctype = None
        if s.cell_type is not None:
            ctype = s.cell_type.name
            nt = self.neurons.get(ctype)
            if nt is None:
                kinds = self.kind_of(ctype)
                msg = (
                    f"`{ctype}` is a {kinds}, not a cell type"
                    if kinds
                    else f"unknown cell type `{ctype}`{did_you_mean(ctype, self.neurons)}"
                )
                self.error(msg, s.cell_type.span, "declare it with `neuron NAME { ... }`")
                ctype = None
            else:
                comps = nt.compartments or (P.DEFAULT_COMPARTMENT,)
                state = tuple(o.state for o in nt.odes) or ("s",)
        if ok:
            self.pops[s.name.name] = PopulationNode(
                s.name.name, size, role, ctype, comps, state, activation, tau, False, s.span,
                bounds.get("min"), bounds.get("max"), shape=shape, noise=noise,
            )

    def _shape(self, s: S.Population) -> tuple[int, ...]:
        """`[64]` or `[C, H, W]`: positive whole sizes, at most `MAX_RANK` of them, within
        `MAX_POPULATION` neurons in all (a bad size counts as 1, so checking goes on)."""
        name = s.name.name
        if len(s.shape) > MAX_RANK:
            self.error(
                f"`{name}` has {len(s.shape)} dimensions; a population is a vector `[N]` or "
                f"`[channels, ...]` with at most {MAX_RANK - 1} spatial dimensions",
                s.shape[MAX_RANK].span,
                "e.g. `[64]` or `[32, 14, 14]` (channels, height, width)",
            )
        dims: list[float] = []
        for i, expr in enumerate(s.shape[:MAX_RANK]):
            what = f"the size of `{name}`" if len(s.shape) == 1 else f"dimension {i + 1} of `{name}`"
            value = self.const(expr, what)
            if value is None:
                dims.append(1)
            elif value != int(value) or value < 1:
                self.error(f"{what} must be a positive whole number, not {fmt_num(value)}", expr.span)
                dims.append(1)
            elif value > MAX_POPULATION:
                dims.append(value)
            else:
                dims.append(int(value))
        total = math.prod(float(d) for d in dims)
        if total > MAX_POPULATION:
            written = "×".join(fmt_num(d) for d in dims) if len(dims) > 1 else fmt_num(dims[0])
            self.error(
                f"`{name}` has {fmt_num(total) if total < 1e15 else f'{total:.3g}'} neurons"
                + (f" ({written})" if len(dims) > 1 else "") + f"; the limit is {MAX_POPULATION:,}",
                s.shape[0].span if len(s.shape) == 1 else s.span,
                f"its state alone would take {fmt_bytes(total * 4)} per example; check the size",
            )
            return (1,) * len(dims)
        return tuple(int(d) for d in dims)

    def _function_name(self, opt: S.Option) -> str | None:
        v = opt.value
        if not isinstance(v, S.Var):
            self.error(f"`{opt.key}=` takes the name of a function", v.span, "e.g. `rho=tanh`")
            return None
        if v.name in self.functions:
            if len(self.functions[v.name].params) != 1:
                self.error(f"`{v.name}` takes {len(self.functions[v.name].params)} arguments; an activation takes 1", v.span)
                return None
            return v.name
        fn = P.FUNCTIONS.get(v.name)
        if fn is not None and (fn.arity != (1,) or not fn.elementwise):
            why = f"takes {' or '.join(map(str, fn.arity))} arguments" if fn.elementwise else "is not element-wise"
            self.error(
                f"`{v.name}` {why}, so it cannot be an activation",
                v.span,
                f"wrap it in a function of one argument, e.g. `fn rho(x) = {v.name}(x, 0, 1)` and `rho=rho`"
                if v.name == "clip" else "an activation is a function of one argument, like `tanh` or your own `fn`",
            )
            return None
        if fn is None:
            pool = [f for f in P.FUNCTIONS if P.FUNCTIONS[f].arity == (1,) and P.FUNCTIONS[f].elementwise]
            self.error(
                f"unknown activation `{v.name}`{did_you_mean(v.name, pool + list(self.functions))}",
                v.span,
                "use a function of one argument: a built-in (" + ", ".join(pool[:6]) + ", ...) or your own `fn`",
            )
            return None
        return v.name

    # ---------------------------------------------------------------- bias --
    def bias(self, s: S.Bias) -> None:
        init = None
        per = None
        for opt in s.options:
            if opt.key == "init" and opt.value is not None:
                init = self._init(opt.value)
            elif opt.key == "per" and isinstance(opt.value, S.Var) and opt.value.name in BIAS_PER:
                per = opt.value.name
            elif opt.key == "per":
                self.error("`per=` is `channel` (one bias per channel, the default) or `neuron`",
                           opt.value.span if opt.value is not None else opt.span)
            else:
                self.error(f"`bias` takes only `init=` and `per=`, not `{opt.key}`", opt.span,
                           "write `bias h, y` (zeros), `bias y init=constant(0.5)` or `bias h1 per=neuron`")
        for p in s.populations:
            if p.name not in self.pops:
                self._unknown_population(p)
            elif p.name in self.biased:
                self.error(f"`{p.name}` already has a bias (line {self.biased[p.name].line})", p.span)
            elif self.pops[p.name].role == "input":
                self.error(
                    f"`{p.name}` is an input population: it is clamped to the data, so a bias has no effect",
                    p.span,
                    f"remove `{p.name}` from the `bias` list",
                )
            else:
                self.biased[p.name] = p.span
                if init is not None:
                    self.bias_inits[p.name] = init
                if per is not None:
                    self.bias_per[p.name] = per
