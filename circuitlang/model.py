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

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from . import learning
from .circuit import Circuit
from .errors import CircuitError, Diagnostic
from .graph import PhaseSpec
from .lower.energy import EnergyFunctions
from .lower.cells import CellFunctions
from .lower.vectorfield import VectorFieldFunctions
from .rules import RuleProgram
from .lower.exprs import Evaluator
from .lower.relax import Relaxation, Relaxer

__all__ = ["Model", "compile"]

Array = Any
DEFAULT_FREE = PhaseSpec("free", 100, 0.1, 0.0, False, None, None, "euler", None, None)


def compile(circ: Circuit, overrides: Mapping[str, Any] | None = None) -> "Model":  # noqa: A001
    """Lower a checked circuit to JAX. `overrides` uses the CLI's `--set` keys."""
    return Model(circ.with_overrides(overrides or {}))


class Model:
    """A circuit lowered to pure, jittable JAX functions."""

    def __init__(self, circ: Circuit) -> None:
        self.circuit = circ
        spec = circ.spec
        self.spec = spec
        typed = any(p.cell_type for p in circ.populations.values())
        learn = spec.learning
        rules = bool(learn and (learn.estimator or learn.method) == "rules")
        prospective = bool(learn and learn.prospective)
        if spec.energy is not None and typed:
            pop = next(p for p in circ.populations.values() if p.cell_type)
            raise CircuitError(
                Diagnostic(
                    f"`{pop.name}` has cell type `{pop.cell_type}` with its own equations, but the circuit "
                    "also has an energy (whose gradient would be the dynamics)",
                    pop.span,
                    f"remove the energy at line {spec.energy.span.line}, or the cell type",
                ),
                circ.source,
            )
        vector_field = spec.energy is None and (spec.dynamics is not None or typed)
        if spec.energy is None and not vector_field:
            raise CircuitError(
                Diagnostic("nothing says how the states evolve", None,
                           "add `energy ...`, `dynamics leaky`, or give populations a cell type"),
                circ.source,
            )
        if prospective and (
            spec.energy is None or set(spec.energy.presets) != {"predictive"} or spec.energy.terms
            or any(e.kind == "undirected" for e in circ.connections)
        ):
            raise CircuitError(
                Diagnostic(
                    "`prospective` (latent equilibrium) needs a feed-forward predictive circuit: "
                    "`energy predictive` with directed connections only",
                    learn.span,
                    "use `energy predictive`, or remove `prospective`",
                ),
                circ.source,
            )
        self.ev = Evaluator(spec.functions, spec.params, jnp)
        if vector_field and (typed or rules):
            functions = CellFunctions
        else:
            functions = VectorFieldFunctions if vector_field else EnergyFunctions
        self.fns = functions(spec, circ.populations, circ.connections, self.ev)
        self.relaxer = Relaxer(self.fns, circ.graph, circ.source, prospective=prospective)
        self.inputs = self.fns.clamped
        self.free = self.fns.free
        self.state_keys = getattr(self.fns, "state_keys", self.fns.free)
        self.learning = learn
        phases = learn.phases if learn else (DEFAULT_FREE,)
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
        for p in phases:
            if p.integrator == "prototypical" and vector_field:
                raise CircuitError(
                    Diagnostic(f"phase `{p.name}`: the prototypical step needs an energy", p.span,
                               "use `integrator euler` (the default) with `dynamics leaky`"),
                    circ.source,
                )
            if p.integrator == "prototypical" and "predictive" in self.fns.presets:
                raise CircuitError(
                    Diagnostic(
                        f"phase `{p.name}`: the prototypical step needs an energy of the form "
                        "½|s|² + E(ρ(s)) (like `hopfield`); `predictive` is not",
                        p.span,
                        "use `integrator euler` (the default) with this energy",
                    ),
                    circ.source,
                )
        self._jit: dict[str, Any] = {}
        self.rules = RuleProgram(self) if rules else None

    # ------------------------------------------------------------ params --
    def init(self, key: Array, dtype: Any = None) -> dict[str, Array]:
        """Initial parameters: each weight by its `init=`, biases at zero."""
        dtype = dtype or jnp.zeros(()).dtype
        params: dict[str, Array] = {}
        weights = self.circuit.weights
        names = sorted(self.shapes)
        keys = jax.random.split(key, max(len(names), 1))
        for k, name in zip(keys, names):
            shape = self.shapes[name]
            if name.endswith(".bias"):
                init = self.fns.pops[name[: -len(".bias")]].bias_init
                params[name] = jnp.zeros(shape, dtype) if init is None else _initialize(init, k, shape, dtype)
                continue
            params[name] = _initialize(weights[name].init, k, shape, dtype)
        return params

    # ------------------------------------------------------------ inputs --
    def as_inputs(self, x: Array | Mapping[str, Array]) -> dict[str, Array]:
        """`x` as {input population: array}; one array is fine for one input."""
        if isinstance(x, Mapping):
            return {n: jnp.asarray(x[n]) for n in self.inputs}
        if len(self.inputs) != 1:
            raise CircuitError(f"this circuit has inputs {', '.join(self.inputs)}: pass x as a dict")
        return {self.inputs[0]: jnp.asarray(x)}

    def zeros(self, x: Mapping[str, Array], free: tuple[str, ...] | None = None) -> dict[str, Array]:
        batch = next(iter(x.values())).shape[:-1]
        dtype = next(iter(x.values())).dtype
        return {n: jnp.zeros((*batch, self.size_of(n)), dtype) for n in (free or self.state_keys)}

    def size_of(self, key: str) -> int:
        """Size of a state key: a population, or `pop.var` for a cell's other state variables."""
        return self.fns.pops[key.split(".")[0]].size

    # ------------------------------------------------------------- raw fns --
    def _free(self, params, x, s0=None, phase: PhaseSpec | None = None) -> Relaxation:
        phase = phase or self.free_phase
        s0 = self.zeros(x) if s0 is None else s0
        return self.relaxer.run(phase, params, x, s0)

    def _relax(self, params, x, s0=None):
        return self._free(params, self.as_inputs(x), s0).state

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

    def relax(self, params, x, s0=None) -> dict[str, Array]:
        """The free fixed point: {population: (batch, size)} for every population."""
        return self._jitted("relax", self._relax)(params, x, s0)

    def relax_result(self, params, x, s0=None, phase: str | None = None) -> Relaxation:
        """The free phase (or `phase`) with its steps used and result code; raises on failure."""
        ph = self.phases[phase] if phase else self.free_phase
        fn = self._jitted(f"result:{ph.name}", lambda p, x, s0: self._free(p, self.as_inputs(x), s0, ph))
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
                 key: Array | None = None, s0=None) -> dict[str, Array]:
        """An estimate of dLoss/dparams, shaped like `params` (optax convention).

        `method`: one_sided, random_sign, symmetric, holomorphic, chl,
        gradient (implicit differentiation), bptt, or rules (the file's local
        rules: minus their total update); default: the file's.
        """
        method = method or self.method
        learning.check_method(self, method)
        if key is None:
            key = jax.random.key(0)
        fn = self._jitted(
            f"estimate:{method}",
            lambda p, x, y, b, k, s0: self._estimate(p, x, y, method, b, k, s0),
        )
        return fn(params, x, y, beta, key, s0)


def _initialize(init, key, shape, dtype):
    scheme, args = init.scheme, init.args
    fan_out, fan_in = (shape[0], shape[-1]) if len(shape) == 2 else (shape[0], shape[0])
    if scheme == "glorot":
        a = math.sqrt(6.0 / (fan_in + fan_out))
        return jax.random.uniform(key, shape, dtype, -a, a)
    if scheme == "he":
        return jax.random.normal(key, shape, dtype) * math.sqrt(2.0 / fan_in)
    if scheme == "zeros":
        return jnp.zeros(shape, dtype)
    if scheme in ("normal", "random"):
        return jax.random.normal(key, shape, dtype) * args[0]
    if scheme == "uniform":
        return jax.random.uniform(key, shape, dtype, -args[0], args[0])
    if scheme == "constant":
        return jnp.full(shape, args[0], dtype)
    raise ValueError(f"unknown init {scheme}")  # the checker rejects these earlier

