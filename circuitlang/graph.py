"""The circuit graph: schema of its payloads, and `validate`.

A checked circuit is a frozen `networkx.MultiDiGraph`:

* **nodes** are populations, keyed by name; ``graph.nodes[name]["payload"]``
  is a `PopulationNode`.
* **edges** are connections, from the source population to the target one,
  keyed by the weight name (or ``"pre=>post"`` for a weightless one,
  ``"pre=>post#2"`` for a second one between the same populations); ``graph.edges[pre, post, key]["payload"]`` is a
  `ConnectionEdge`. An undirected coupling ``a -- b : W`` is one edge
  ``b → a`` with ``kind == "undirected"``; its weight has shape
  ``(|a|, |b|)`` and enters the energy as ``rho(s_a)^T W rho(s_b)``.
* **graph-level**: ``graph.graph["circuit"]`` is a `CircuitSpec`: params,
  functions, cell types, biases, energy, dynamics, costs and learning.

Every payload carries the `Span` of the `.circ` text it came from. A
population has a written `shape` (``(N,)``, or ``(C, H, W)``: channels
first, as in the file; see `layout.py` for the compiled, channels-last
layout). A connection carries its operator as a chain of `Stage`s (`ops/`):
the drive into ``post`` is ``sign · gain · stages(W, rho(pre))``; its
`shape` is the shape of its learned array (a dense weight is
``(|post|, |pre|)``, a convolution kernel ``(k, k, C_in, C_out)``). A tied
``B = transpose(K)`` carries K's stages and sends their adjoint back.
Expressions are kept as `syntax` nodes; `lower/` compiles them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import networkx as nx

from . import primitives as P
from . import syntax as S
from .source import Span

__all__ = [
    "PopulationNode",
    "InitSpec",
    "Stage",
    "ConnectionEdge",
    "NeuronType",
    "OdeSpec",
    "EnergySpec",
    "EnergyTermSpec",
    "DynamicsSpec",
    "CostSpec",
    "PhaseSpec",
    "OptimizerSpec",
    "RuleSpec",
    "LearningSpec",
    "CircuitSpec",
    "PerturbSpec",
    "validate",
    "weights",
    "noise_amplitudes",
]

_frozen = dataclasses.dataclass(frozen=True)


@_frozen
class PopulationNode:
    """`size` neurons, arranged as `shape` (written order: channels first).

    `compartments` are the input sites connections can target (``("soma",)``
    for a population without a cell type); `state` its state variables
    (``("s",)`` by default); `activation` the name of the function that turns
    the state into a rate (`rho`).
    """

    name: str
    size: int
    role: str
    cell_type: str | None
    compartments: tuple[str, ...]
    state: tuple[str, ...]
    activation: str
    tau: float
    bias: bool
    span: Span
    lo: float | None = None  # state bounds: projected dynamics (`min=`, `max=`)
    hi: float | None = None
    bias_init: "InitSpec | None" = None  # `bias y init=constant(0.5)`; zeros when None
    shape: tuple[int, ...] = ()  # as written: (N,) or (C, H, W); () means (size,)
    bias_per: str = "channel"  # a shaped population's bias: one per `channel` or per `neuron`
    noise: float = 0.0  # `noise=`: sigma of the additive noise sigma dW on its (main) state

    def __post_init__(self) -> None:
        if not self.shape:
            object.__setattr__(self, "shape", (self.size,))

    @property
    def bias_shape(self) -> tuple[int, ...]:
        """The learned bias: (N,) for a vector, (C,) per channel, else one per neuron (compiled layout)."""
        if len(self.shape) == 1:
            return self.shape
        if self.bias_per == "channel":
            return (self.shape[0],)
        return (*self.shape[1:], self.shape[0])


@_frozen
class InitSpec:
    """How a weight starts: `scheme` from `primitives.INITS` and its arguments."""

    scheme: str
    args: tuple[float, ...] = ()


@_frozen
class Stage:
    """One resolved operator of a connection: `kind` names an entry of `ops.OPS`,
    `args` its arguments (name, value), the shapes are written shapes."""

    kind: str
    args: tuple[tuple[str, object], ...]
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    span: Span | None = None

    @property
    def kw(self) -> dict[str, object]:
        return dict(self.args)


@_frozen
class ConnectionEdge:
    """A connection `pre ARROW post.compartment : weight`.

    kind: ``undirected`` (``--``), ``directed`` (``->``) or ``one_to_one``
    (``=>``). plasticity: ``plastic``, ``fixed`` or ``tied`` (then `tied_to`
    names the weight it equals, transposed when `transposed`).
    """

    kind: str
    pre: str
    post: str
    weight: str | None
    compartment: str
    shape: tuple[int, ...]
    init: InitSpec
    plasticity: str
    tied_to: str | None
    transposed: bool
    sign: int
    gain: float
    span: Span
    stages: tuple[Stage, ...] = ()
    flops: int = 0  # of one forward pass, per example
    pathway: str | None = None  # `pathway=NAME`: which drawn path it belongs to (diagram only)

    @property
    def value_shape(self) -> tuple[int, ...] | None:
        """The shape of the array rules and energy terms see under this weight's name: its
        own; for a tied `transpose(W)` of a dense W, Wᵀ; None for the tied transpose of
        another operator (it has no array of its own)."""
        if self.tied_to is None or not self.transposed:
            return tuple(self.shape)
        if [s.kind for s in self.stages] == ["dense"]:
            return tuple(self.shape[::-1])
        return None

    @property
    def weighted_stage(self) -> "Stage | None":
        from .ops import OPS

        return next((s for s in self.stages if OPS[s.kind].weighted), None)


def rule_target(weights: Mapping[str, ConnectionEdge], name: str) -> str:
    """The parameter a rule written on weight `name` updates: its own, or, for a plain
    tie `V = W` (the same weight evaluated on other populations), the weight `W`."""
    e = weights.get(name)
    return e.tied_to if e is not None and e.tied_to is not None and not e.transposed else name


@_frozen
class OdeSpec:
    """`tau * dX/dt = rhs`. `noise` is the amplitude sigma of its white noise: with
    `rhs = f + c1 white() + c2 white() + ...` (constant c_k, `check/noise.py`), the SDE
    dX = f/tau dt + sigma dW with sigma = sqrt(sum c_k^2) / |tau|; `rhs` evaluates to f."""

    state: str
    tau: S.Expr | None
    rhs: S.Expr
    span: Span
    noise: float = 0.0


@_frozen
class NeuronType:
    name: str
    compartments: tuple[str, ...]
    odes: tuple[OdeSpec, ...]
    lets: tuple[tuple[str, S.Expr], ...]
    span: Span


@_frozen
class FunctionDef:
    name: str
    params: tuple[str, ...]
    body: S.Expr
    span: Span


@_frozen
class EnergyTermSpec:
    """A custom energy term; `over` is ``"weights"``, ``"populations"`` or ``""``."""

    targets: tuple[str, ...]
    over: str
    expr: S.Expr
    span: Span


@_frozen
class EnergySpec:
    presets: tuple[str, ...]
    terms: tuple[EnergyTermSpec, ...]
    span: Span


@_frozen
class DynamicsSpec:
    kind: str
    span: Span


@_frozen
class CostSpec:
    population: str
    kind: str
    span: Span


@_frozen
class PhaseSpec:
    """One stretch of dynamics. `steps` is None for `forward` phases."""

    name: str
    steps: int | None
    dt: float
    beta: float
    forward: bool
    present: int | None
    tol: float | None
    integrator: str
    clamp: str | None
    span: Span
    noise: float = 1.0  # `noise 0.5`: the scale of every noise in this phase (0: none)
    sigma: float = 0.0  # the largest noise amplitude in this phase (scale included; 0: deterministic)


@_frozen
class OptimizerSpec:
    name: str
    lr: float | None
    lr_per_param: Mapping[str, float]
    settings: Mapping[str, object]
    span: Span


@_frozen
class RuleSpec:
    """A local rule: `d(target)/dt = expr` for each weight in `weights`."""

    phases: tuple[str, ...]
    always: bool
    weights: tuple[str, ...]
    placeholder: str | None
    expr: S.Expr
    span: Span


@_frozen
class LearningSpec:
    method: str
    phases: tuple[PhaseSpec, ...]
    estimator: str | None
    estimator_options: Mapping[str, float]
    batch: int
    prospective: bool
    epochs: int | None
    optimizer: OptimizerSpec | None
    rules: tuple[RuleSpec, ...]
    span: Span
    persistent: bool = False
    health: str = "warn"  # train's answer to unhealthy epochs: warn | error | ignore


@_frozen
class PerturbSpec:
    """`perturb NAME : population[.compartment] KIND [VALUE] during PHASE[a:b], ...`.

    `compartment` is None for the population itself; `kind` names an entry of
    `primitives.PERTURBATIONS`; `windows` are (phase, first step, stop step), the
    steps ``first .. stop-1`` of the phase (stop None: to the phase's end);
    `fraction` of the cells, drawn with `seed`; `enabled`: on in every run.
    """

    name: str
    population: str
    compartment: str | None
    kind: str
    value: float | None
    windows: tuple[tuple[str, int, int | None], ...]
    fraction: float
    seed: int
    enabled: bool
    span: Span

    def describe(self) -> str:
        """`add 0.5 · nudge[5:20] · 50% (seed 3)`: what it does, when, to how many (diagram, summary)."""
        def num(x: float) -> str:
            return str(int(x)) if float(x).is_integer() else f"{x:g}"

        what = self.kind + (f" {num(self.value)}" if self.value is not None else "")
        when = ", ".join(name + (f"[{a}:{b}]" if b is not None else "") for name, a, b in self.windows)
        parts = [what, when]
        if self.fraction < 1:
            parts.append(f"{num(round(100 * self.fraction, 1))}% (seed {self.seed})")
        if self.enabled:
            parts.append("enabled")
        return " · ".join(parts)


@_frozen
class CircuitSpec:
    name: str
    doc: str | None
    path: str
    params: Mapping[str, float]
    functions: Mapping[str, FunctionDef]
    neuron_types: Mapping[str, NeuronType]
    energy: EnergySpec | None
    dynamics: DynamicsSpec | None
    costs: tuple[CostSpec, ...]
    learning: LearningSpec | None
    perturbations: tuple[PerturbSpec, ...] = ()


def weights(graph: nx.MultiDiGraph) -> dict[str, ConnectionEdge]:
    """Every named weight of the circuit, in declaration order."""
    found = [d["payload"] for _, _, d in graph.edges(data=True)]
    found.sort(key=lambda e: (e.span.line, e.span.col))
    return {e.weight: e for e in found if e.weight is not None}


def noise_amplitudes(pops: Mapping[str, PopulationNode], types: Mapping[str, NeuronType]) -> dict[str, float]:
    """{state key: sigma} for every noisy state of the free populations, as written (a phase
    scales them by its `noise`): a population's main state (`s`, or its cell's first state
    variable; key `pop`) gets its `noise=` and its equation's `white()` terms, independent, so
    their variances add; another state variable (key `pop.var`) its equation's. See
    `lower/noise.py` for how they enter a step."""
    out: dict[str, float] = {}
    for n, pop in pops.items():
        if pop.role == "input":
            continue
        nt = types.get(pop.cell_type) if pop.cell_type else None
        main = "s" if "s" in pop.state else pop.state[0]
        own = {o.state: o.noise for o in nt.odes} if nt is not None else {}
        sigma = math.hypot(pop.noise, own.get(main, 0.0))
        if sigma > 0:
            out[n] = sigma
        for var, amp in own.items():
            if var != main and amp > 0:
                out[f"{n}.{var}"] = amp
    return out


def _stage_problems(key: str, edge: ConnectionEdge, pre: tuple[int, ...], post: tuple[int, ...]) -> list[str]:
    """The chain of a connection fits its ends and its weight (a transposed tie runs it backwards)."""
    from .ops import OPS

    out = []
    if not edge.stages:
        return [f"edge {key}: no stages"]
    start, end = (post, pre) if edge.transposed else (pre, post)
    if edge.stages[0].in_shape != start or edge.stages[-1].out_shape != end:
        out.append(f"edge {key}: its stages map {edge.stages[0].in_shape} to {edge.stages[-1].out_shape}, "
                   f"not {start} to {end}")
    for a, b in zip(edge.stages, edge.stages[1:]):
        if a.out_shape != b.in_shape:
            out.append(f"edge {key}: stage {a.kind} gives {a.out_shape} but {b.kind} takes {b.in_shape}")
    for st in edge.stages:
        if st.kind not in OPS:
            out.append(f"edge {key}: unknown stage kind {st.kind!r}")
    weighted = [st for st in edge.stages if st.kind in OPS and OPS[st.kind].weighted]
    if len(weighted) > 1:
        out.append(f"edge {key}: more than one stage owns a weight")
    if edge.weight is not None and weighted:
        st = weighted[0]
        want = tuple(OPS[st.kind].weight_shape(st.kw, st.in_shape, st.out_shape))
        if want != tuple(edge.shape):
            out.append(f"edge {key}: shape {edge.shape} is not its stage's {want}")
    return out


def validate(graph: nx.MultiDiGraph) -> None:
    """Check the graph against the schema above; raise `ValueError` if it is off.

    This guards the contract between `check.py` (which builds graphs) and the
    stages that read them; user errors never get this far.
    """
    problems: list[str] = []
    if not nx.is_frozen(graph):
        problems.append("graph is not frozen")
    spec = graph.graph.get("circuit")
    if not isinstance(spec, CircuitSpec):
        problems.append("graph.graph['circuit'] is not a CircuitSpec")
    pops: dict[str, PopulationNode] = {}
    for name, data in graph.nodes(data=True):
        pop = data.get("payload")
        if not isinstance(pop, PopulationNode) or pop.name != name:
            problems.append(f"node {name!r}: payload missing or misnamed")
            continue
        pops[name] = pop
        if pop.size < 1 or pop.role not in P.ROLES or not pop.compartments or not pop.state:
            problems.append(f"node {name!r}: bad size, role, compartments or state")
        if math.prod(pop.shape) != pop.size:
            problems.append(f"node {name!r}: shape {pop.shape} does not hold {pop.size} neurons")
    seen: set[str] = set()
    for pre, post, key, data in graph.edges(keys=True, data=True):
        edge = data.get("payload")
        if not isinstance(edge, ConnectionEdge):
            problems.append(f"edge {pre}->{post}: payload missing")
            continue
        unnamed = f"{pre}=>{post}"
        if (edge.pre, edge.post) != (pre, post) or not (
            key == edge.weight or (edge.weight is None and (key == unnamed or key.startswith(unnamed + "#")))
        ):
            problems.append(f"edge {key}: endpoints or key disagree with payload")
        if edge.kind not in P.CONNECTION_KINDS.values():
            problems.append(f"edge {key}: unknown kind {edge.kind!r}")
        if post not in pops or pre not in pops:
            problems.append(f"edge {key}: an end has no valid population payload")
            continue
        problems.extend(_stage_problems(key, edge, pops[pre].shape, pops[post].shape))
        if edge.compartment not in pops[post].compartments:
            problems.append(f"edge {key}: compartment {edge.compartment!r} missing on {post}")
        if edge.weight is not None:
            if edge.weight in seen:
                problems.append(f"weight {edge.weight} appears twice")
            seen.add(edge.weight)
        if (edge.plasticity == "tied") != (edge.tied_to is not None):
            problems.append(f"edge {key}: tied_to and plasticity disagree")
        if edge.sign not in (1, -1):
            problems.append(f"edge {key}: sign must be +1 or -1")
    all_w = weights(graph)
    for edge in all_w.values():
        if edge.tied_to is not None:
            target = all_w.get(edge.tied_to)
            if target is None or target.shape != edge.shape or target.stages != edge.stages:
                problems.append(f"weight {edge.weight}: shape or operator differs from {edge.tied_to}, its tie")
    if isinstance(spec, CircuitSpec) and spec.learning is not None:
        names = {p.name for p in spec.learning.phases}
        for rule in spec.learning.rules:
            if not set(rule.phases) <= names:
                problems.append(f"rule at {rule.span}: unknown phase")
            for w in rule.weights:
                if w not in all_w and not w.endswith(".bias"):
                    problems.append(f"rule at {rule.span}: unknown weight {w}")
        for cost in spec.costs:
            if cost.population not in graph:
                problems.append(f"cost on missing population {cost.population}")
        for pert in spec.perturbations:
            pop = pops.get(pert.population)
            if pop is None or (pert.compartment is not None and pert.compartment not in pop.compartments):
                problems.append(f"perturbation {pert.name}: missing target")
            if pert.kind not in P.PERTURBATIONS or not set(w[0] for w in pert.windows) <= names:
                problems.append(f"perturbation {pert.name}: unknown kind or phase")
    if problems:
        raise ValueError("invalid circuit graph:\n  " + "\n  ".join(problems))
