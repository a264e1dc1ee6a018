"""The compiled circuit: `cl.compile(circ)` → `Model` (pure JAX functions).

    model = cl.compile(circ, overrides={"phase.nudge.beta": 0.01})
    params = model.init(jax.random.key(0))
    state = model.relax(params, x)                   # free fixed point, every population
    g = model.estimate(params, x, y)                 # the file's estimator
    g = model.estimate(params, x, y, method="gradient")  # the true gradient, for comparison

Every public method is jitted on first use (static `method`); the raw,
un-jitted versions (`_relax`, `_estimate`, ...) are what `train` scans over.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import learning
from . import primitives as P
from .check.estimators import estimator_problems
from .circuit import Circuit
from .errors import CircuitError
from .graph import OptimizerSpec, PhaseSpec
from .layout import describe, from_flat, from_internal, internal, to_internal
from .lower.exprs import Evaluator
from .lower.init import initialize
from .lower.relax import Relaxation, Relaxer
from .ops import OPS
from .rules import RuleProgram

__all__ = ["Model", "compile", "HYPER_PHASE", "HYPER_OPTIMIZER"]

Array = Any
DEFAULT_FREE = PhaseSpec("free", 100, 0.1, 0.0, False, None, None, "euler", None, None)


# the settings `bind` can make traced values (`circuitc train --sweep`): numbers the program
# multiplies by, never a shape, a loop's length or a choice between programs
HYPER_PHASE = ("beta", "dt")
HYPER_OPTIMIZER = ("lr", "weight_decay", "momentum", "b1", "b2", "eps")


def compile(circ: Circuit, overrides: Mapping[str, Any] | None = None) -> "Model":  # noqa: A001
    """Lower a checked circuit to JAX. `overrides` uses the CLI's `--set` keys."""
    return Model(circ.with_overrides(overrides or {}))


class Model:
    """A circuit lowered to pure, jittable JAX functions.

    The circuit has been checked (`check/`): everything the lowering relies on
    holds, so building a model does not fail on a file that `circuitc check`
    accepts.
    """

    def __init__(self, circ: Circuit) -> None:
        self.circuit = circ
        spec = circ.spec
        self.spec = spec
        learn = spec.learning
        rules = bool(learn and (learn.estimator or learn.method) == "rules")
        prospective = bool(learn and learn.prospective)
        self.lowering = lowering_of(circ)
        self.ev = Evaluator(spec.functions, spec.params, jnp)
        functions = P.LOWERINGS[self.lowering].load()
        self.fns = functions(spec, circ.populations, circ.connections, self.ev)
        self.relaxer = Relaxer(self.fns, circ.graph, circ.source, prospective=prospective)
        self.inputs = self.fns.clamped
        self.free = self.fns.free
        self.state_keys = getattr(self.fns, "state_keys", self.fns.free)
        self.learning = learn
        phases = learn.phases if learn else (dataclasses.replace(  # its σ, as `check/noise.py` sets a phase's
            DEFAULT_FREE, sigma=max(self.relaxer.amplitudes.values(), default=0.0)),)
        self.streaming = next((p for p in phases if p.present is not None and p.steps is None), None)
        if self.streaming is not None:  # evaluation relaxes with the stream's dynamics, un-nudged
            phases = tuple(
                dataclasses.replace(p, steps=p.present) if p.steps is None and p.present is not None else p
                for p in phases
            )
            self.streaming = phases[[p.name for p in phases].index(self.streaming.name)]
        self.phases = {p.name: p for p in phases}
        self.free_phase = phases[0]
        if self.free_phase.beta != 0:  # a single always-nudged (streaming) phase: relax un-nudged
            self.free_phase = dataclasses.replace(self.free_phase, beta=0.0)
        nudged = [p for p in phases[1:] if p.beta != 0]
        clamped = [p for p in phases[1:] if p.clamp]
        later = phases[1] if len(phases) > 1 else None
        self.nudge_phase = nudged[0] if nudged else later
        self.clamp_phase = clamped[0] if clamped else later  # CHL's clamped phase
        self.method = (learn.estimator if learn else None) or "one_sided"
        self.shapes = circ.parameter_shapes()
        self.trainable = {
            name: (name.endswith(".bias") or circ.weights[name].plasticity == "plastic") for name in self.shapes
        }
        self._jit: dict[str, Any] = {}
        self.rules = RuleProgram(self) if rules else None

    def bind(self, hyper: Mapping[str, Any]) -> "Model":
        """This model with some settings replaced by (traced) values: one program for many
        members of a sweep (`sweeps.py`). `hyper` maps `--set` keys to values: a `param`
        name, `phase.NAME.beta` / `phase.NAME.dt`, or `optimizer.SETTING` (`lr`,
        `lr.WEIGHT`, `weight_decay`, `momentum`, `b1`, `b2`, `eps`), with the meaning they
        have for `--set`. Everything else is this model's own, so whoever binds must check
        that a member's model differs from this one in nothing else (`sweeps.py` compares
        their programs)."""
        if not hyper:
            return self
        m = copy.copy(self)
        m._jit = {}
        params = {k: v for k, v in hyper.items() if "." not in k}
        phases: dict[str, dict[str, Any]] = {}
        opt: dict[str, Any] = {}
        for key, v in hyper.items():
            parts = key.split(".")
            if parts[0] == "phase" and len(parts) == 3 and parts[2] in HYPER_PHASE:
                phases.setdefault(parts[1], {})[parts[2]] = v
            elif parts[0] == "optimizer" and len(parts) >= 2 and parts[1] in HYPER_OPTIMIZER:
                opt[".".join(parts[1:])] = v
            elif "." in key:
                raise ValueError(f"bind: {key} is not a setting a sweep can trace")
        if params:
            m.ev = Evaluator(self.spec.functions, {**self.spec.params, **params}, jnp)
            m.fns = P.LOWERINGS[self.lowering].load()(self.spec, self.circuit.populations,
                                                      self.circuit.connections, m.ev)
            m.relaxer = Relaxer(m.fns, self.circuit.graph, self.circuit.source,
                                prospective=bool(self.learning and self.learning.prospective))
        learn = self.learning
        if phases or opt:
            new = lambda p: dataclasses.replace(p, **phases[p.name]) if p.name in phases else p  # noqa: E731
            optimizer = learn.optimizer
            if opt:
                optimizer = optimizer or OptimizerSpec("sgd", None, {}, {}, learn.span)
                lr, per, settings = optimizer.lr, dict(optimizer.lr_per_param), dict(optimizer.settings)
                if "lr" in opt:  # as `--set optimizer.lr`: every rate, the per-weight ones dropped
                    lr, per = opt["lr"], {}
                per.update({k[3:]: v for k, v in opt.items() if k.startswith("lr.")})
                settings.update({k: v for k, v in opt.items() if k != "lr" and not k.startswith("lr.")})
                optimizer = dataclasses.replace(optimizer, lr=lr, lr_per_param=per, settings=settings)
            m.learning = dataclasses.replace(learn, phases=tuple(new(p) for p in learn.phases), optimizer=optimizer)
            m.phases = {k: new(p) for k, p in self.phases.items()}
            free = phases.get(self.free_phase.name, {})
            if self.free_phase.beta != learn.phases[0].beta:  # an always-nudged phase relaxes un-nudged
                free = {k: v for k, v in free.items() if k != "beta"}
            m.free_phase = dataclasses.replace(self.free_phase, **free)
            m.nudge_phase = self.nudge_phase and new(self.nudge_phase)
            m.clamp_phase = self.clamp_phase and new(self.clamp_phase)
            m.streaming = self.streaming and new(self.streaming)
        if self.rules is not None:
            m.rules = RuleProgram(m)
        return m

    def check_estimator(self, method: str, beta_given: bool = False) -> None:
        """Raise the checker's located error when `method` cannot work on this circuit
        (the file's own estimator was checked with the file)."""
        problems = estimator_problems(self.circuit.graph, method, None, beta_given)
        if problems:
            raise CircuitError(problems, self.circuit.source)

    # ------------------------------------------------------------ params --
    def init(self, key: Array, dtype: Any = None) -> dict[str, Array]:
        """Initial parameters: each weight by its `init=` (fan-in and fan-out from its
        operator), biases at zero unless `bias ... init=`."""
        dtype = dtype or jnp.zeros(()).dtype
        params: dict[str, Array] = {}
        weights = self.circuit.weights
        names = sorted(self.shapes)
        keys = jax.random.split(key, max(len(names), 1))
        for k, name in zip(keys, names):
            shape = self.shapes[name]
            if name.endswith(".bias"):
                init = self.fns.pops[name[: -len(".bias")]].bias_init
                params[name] = jnp.zeros(shape, dtype) if init is None else initialize(init, k, shape, dtype)
                continue
            e = weights[name]
            st = e.weighted_stage
            fans = OPS[st.kind].fans(st.kw, st.in_shape, st.out_shape)
            params[name] = initialize(e.init, k, shape, dtype, fans)
        return params

    # ------------------------------------------------------------ inputs --
    def as_inputs(self, x: Array | Mapping[str, Array], layout: str = "written") -> dict[str, Array]:
        """`x` as {input population: array (batch, *compiled shape)}; one array is fine for
        one input. A `written` array is flat (batch, C·H·W) in the written order of the
        population's shape, or shaped (batch, C, H, W); `compiled` is (batch, H, W, C)."""
        if isinstance(x, Mapping):
            arrays = {n: jnp.asarray(x[n]) for n in self.inputs}
        elif len(self.inputs) != 1:
            raise CircuitError(f"this circuit has inputs {', '.join(self.inputs)}: pass x as a dict")
        else:
            arrays = {self.inputs[0]: jnp.asarray(x)}
        if layout == "compiled":
            return arrays
        return {n: self.to_compiled(n, v) for n, v in arrays.items()}

    def to_compiled(self, n: str, v: Array) -> Array:
        """A batch of population `n` in the written layout → the compiled one."""
        shape = self.fns.pops[n].shape
        if v.ndim == 2 and len(shape) > 1:
            return from_flat(v, shape)
        if tuple(v.shape[1:]) == tuple(shape):
            return to_internal(v, shape)
        raise CircuitError(
            f"population `{n}` is {describe(shape)}, but the array given for it is shaped "
            f"{tuple(v.shape)}; pass (batch, {', '.join(map(str, shape))}) or (batch, {math.prod(shape)})"
        )

    def to_written(self, state: Mapping[str, Array], lead: int = 1) -> dict[str, Array]:
        """States in the compiled layout → the written one, (batch, C, H, W)."""
        out = {}
        for k, v in state.items():
            pop = self.fns.pops.get(k.split(".")[0])
            out[k] = from_internal(v, pop.shape, lead) if pop is not None else v
        return out

    def zeros(self, x: Mapping[str, Array], free: tuple[str, ...] | None = None) -> dict[str, Array]:
        """Zero states, batched like the inputs `x` (a circuit without inputs relaxes one copy)."""
        first = next(iter(x.values()), None)
        batch, dtype = (first.shape[:1], first.dtype) if first is not None else ((1,), jnp.zeros(()).dtype)
        return {n: jnp.zeros((*batch, *self.shape_of(n)), dtype) for n in (free or self.state_keys)}

    def shape_of(self, key: str) -> tuple[int, ...]:
        """The compiled per-example shape of a state key: a population, or `pop.var`."""
        return internal(self.fns.pops[key.split(".")[0]].shape)

    def size_of(self, key: str) -> int:
        """The number of values of a state key per example."""
        return self.fns.pops[key.split(".")[0]].size

    # ------------------------------------------------------------- raw fns --
    def _free(self, params, x, s0=None, phase: PhaseSpec | None = None, key=None) -> Relaxation:
        phase = phase or self.free_phase
        s0 = self.zeros(x) if s0 is None else s0
        return self.relaxer.run(phase, params, x, s0, key=key)

    def _relax(self, params, x, s0=None, key=None):
        return self._free(params, self.as_inputs(x), s0, key=key).state

    def _loss(self, params, x, y, s0=None):
        x = self.as_inputs(x)
        st = self._free(params, x, s0).state
        batch = next(iter(x.values())).shape[0]
        return self.fns.cost({n: st[n] for n in self.free}, y) / batch

    def _predict(self, params, x, s0=None):
        return self.fns.readout(self._free(params, self.as_inputs(x), s0).state)

    def _estimate(self, params, x, y, method=None, beta=None, key=None, s0=None):
        return learning.estimate(self, params, self.as_inputs(x), y, method or self.method, beta, key, s0)

    # ----------------------------------------------------------- public --
    def _jitted(self, name: str, fn, **kw):
        if name not in self._jit:
            self._jit[name] = jax.jit(fn, **kw)
        return self._jit[name]

    def relax(self, params, x, s0=None, info: bool = False, key=None):
        """The free fixed point: {population: (batch, *shape as written)} for every population
        (`s0`, if given, in the compiled layout, as `relax_result(...).state` is). `key` draws
        a noisy circuit's noise (`lower/noise.py`; None: `jax.random.key(0)`).

        With `info=True`, returns (state, relaxation): the free phase's `Relaxation`
        without its state (steps, result code, per-example `residual`;
        `relaxation.converged(model.free_phase)` says which examples converged)."""
        if not info:
            return self.to_written(self._jitted("relax", self._relax)(params, x, s0, key))
        res = self._jitted("relax:info", lambda p, x, s0, k: self._free(p, self.as_inputs(x), s0, key=k))(
            params, x, s0, key)
        return self.to_written(res.state), dataclasses.replace(res, state={})

    def relax_result(self, params, x, s0=None, phase: str | None = None, layout: str = "written") -> Relaxation:
        """The free phase (or `phase`) with its steps used and result code; raises on failure.
        `x` is in `layout` (see `as_inputs`); the state is in the compiled layout."""
        ph = self.phases[phase] if phase else self.free_phase
        fn = self._jitted(f"result:{ph.name}:{layout}",
                          lambda p, x, s0: self._free(p, self.as_inputs(x, layout), s0, ph))
        res = fn(params, x, s0)
        self.relaxer.check(res, ph)
        return res

    def loss(self, params, x, y, s0=None) -> Array:
        """Mean cost over the batch at the free fixed point."""
        return self._jitted("loss", self._loss)(params, x, y, s0)

    def predict(self, params, x, s0=None) -> Array:
        """The output population's free state (argmax it for a class)."""
        return self._jitted("predict", self._predict)(params, x, s0)

    def estimate(self, params, x, y, method: str | None = None, beta: float | None = None,
                 key: Array | None = None, s0=None, info: bool = False):
        """An estimate of dLoss/dparams, shaped like `params` (optax convention).

        `method`: one_sided, random_sign, symmetric, holomorphic, chl,
        gradient (implicit differentiation), bptt, or rules (the file's local
        rules: minus their total update); default: the file's.

        With `info=True`, returns (estimate, info): `info` maps each relaxation the
        estimate used (`free`, `nudge`, `nudge+`, `nudge-`, `clamp`, ...) to its
        `Relaxation` without the state (steps, code, per-example `residual`), so a
        caller can tell an estimate from unconverged phases (`unconverged`).
        """
        method = method or self.method
        if method != self.method:
            self.check_estimator(method, beta_given=beta is not None)
        if key is None:
            key = jax.random.key(0)
        fn = self._jitted(
            f"estimate:{method}",
            lambda p, x, y, b, k, s0: learning.estimate_with_info(self, p, self.as_inputs(x), y, method, b, k, s0),
        )
        g, _, relaxations = fn(params, x, y, beta, key, s0)
        return (g, relaxations) if info else g

    def phase_of(self, label: str) -> PhaseSpec:
        """The phase behind a label of `estimate(..., info=True)` (`nudge+` → the nudged phase)."""
        if label in self.phases:
            return self.phases[label]
        if label == "free":
            return self.free_phase
        if label == "clamp":
            return self.clamp_phase
        return self.nudge_phase

    def unconverged(self, relaxations: Mapping[str, Relaxation]) -> dict[str, tuple[float, float]]:
        """{label: (fraction of examples not converged, largest residual)} for every
        relaxation of `estimate(..., info=True)` that did not converge everywhere."""
        out = {}
        for label, r in relaxations.items():
            ok = np.asarray(r.converged(self.phase_of(label)))
            if not ok.all():
                res = np.asarray(r.residual, dtype=float)
                out[label] = (float(1 - ok.mean()), float(np.nanmax(res)) if np.isfinite(res).any() else float("nan"))
        return out


def lowering_of(circ: Circuit) -> str:
    """Which entry of `primitives.LOWERINGS` runs this (checked) circuit."""
    spec = circ.spec
    learn = spec.learning
    if spec.energy is not None:
        return "energy"
    typed = any(p.cell_type for p in circ.populations.values())
    rules = bool(learn and (learn.estimator or learn.method) == "rules")
    if typed or rules:  # local rules read compartments: the cell lowering (leaky cells without a type)
        return "cells"
    if spec.dynamics is None:  # only possible without a `learn` block (checked): nothing is trained
        return "leaky"
    return spec.dynamics.kind
