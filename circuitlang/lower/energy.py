"""Energy circuits: E(s, θ, x) and the cost C(s, y), as pure JAX functions.

States are dicts {population: (batch, *compiled shape) array}. Energies and
costs are **summed over the batch**, so ∂E/∂s is each example's own gradient
and the mean-loss gradient is the batch sum divided by the batch size.

* ``hopfield`` (Scellier & Bengio 2017; with convolutions and pooling,
  Laborieux et al. 2021's Φ)::

      E = Σ_n ½|s_n|² − Σ_(a--b) ⟨ρ(s_a), P(W ⋆ ρ(s_b))⟩ − Σ_n ⟨b_n, ρ(s_n)⟩

  where ``P(W ⋆ ·)`` is the coupling's operator (`ops/`; a dense W: W ρ(s_b)).
* ``predictive`` (Whittington & Bogacz 2017)::

      E = Σ_n ½|s_n − μ_n|²,   μ_n = Σ_(a→n) ± P(W ⋆ ρ(s_a)) + b_n

* custom ``term``s: scalars per example, summed.

Every coupling is read through `Wiring` (one drive computation for the whole
back end). The parts of E that only involve clamped populations and weights
(the *drives*, e.g. ``W1 ρ(x)``, or a clamped input's pooled convolution) do
not change during a relaxation: `drives()` computes them once per phase and
`energy(..., drives=...)` reuses them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from .. import primitives as P
from ..graph import CircuitSpec, ConnectionEdge, PopulationNode
from ..layout import internal
from ..ops.base import chain_apply
from .exprs import WHOLE_LINE, Evaluator, identity_interval
from .perturb import Perturber
from .wiring import Wiring, weights_of

__all__ = ["EnergyFunctions", "weights_of"]

Array = Any
State = Mapping[str, Array]


class EnergyFunctions:
    """E, C and their pieces for one circuit (built once at compile time)."""

    def __init__(self, spec: CircuitSpec, pops: Mapping[str, PopulationNode],
                 edges: list[ConnectionEdge], ev: Evaluator) -> None:
        self.spec = spec
        self.pops = dict(pops)
        self.edges = edges
        self.ev = ev
        self.wiring = Wiring(pops, edges)
        self.presets = set(spec.energy.presets) if spec.energy else set()
        self.preset_impls = {name: P.ENERGIES[name].load() for name in (spec.energy.presets if spec.energy else ())}
        self.terms = spec.energy.terms if spec.energy else ()
        self.clamped = tuple(n for n, p in pops.items() if p.role == "input")
        self.free = tuple(n for n, p in pops.items() if p.role != "input")  # by default
        self.act = {n: ev.function(p.activation) for n, p in pops.items()}
        self.biased = tuple(n for n, p in pops.items() if p.bias)
        self.costs = spec.costs
        self.shapes = {n: internal(p.shape) for n, p in pops.items()}
        # free populations whose rates are their states while within their bounds
        self.boxed = frozenset(n for n in self.free if _rates_are_states_in_bounds(pops[n], spec))
        # the enabled `perturb` statements (`check` allows them on vector fields and cells only)
        self.perturb = Perturber(spec.perturbations, self.pops, self.act)

    # -------------------------------------------------------------- pieces --
    def project(self, s: State) -> dict[str, Array]:
        """Clip states with `min=`/`max=` bounds (projected dynamics); others unchanged."""
        out = dict(s)
        for n, v in s.items():
            pop = self.pops.get(n)  # a cell's other state variables (`h.a`) are unbounded
            if pop is not None and (pop.lo is not None or pop.hi is not None) and not jnp.iscomplexobj(v):
                out[n] = jnp.clip(v, pop.lo, pop.hi)
        return out

    @property
    def bounded(self) -> bool:
        return any(p.lo is not None or p.hi is not None for p in self.pops.values())

    def rates(self, s: State, rates_are_states: bool = False, free=(), boxed=()) -> dict[str, Array]:
        """ρ(s) per population; in the prototypical form free states are rates, and so are
        the states of the `boxed` populations (see `boxed`: only for states within bounds)."""
        if rates_are_states:
            return {n: (v if n in free else self.act[n](v)) for n, v in s.items()}
        return {n: (_state_as_rate(v) if n in boxed else self.act[n](v)) for n, v in s.items()}

    def _hoisted(self, e: ConnectionEdge, clamped) -> bool:
        """Whether a hopfield coupling's term is folded into the clamped drives: its drive
        into a free `post` reads clamped populations only, or its `post` is clamped and the
        operator is linear (its adjoint then carries ρ(post) to the free `pre`)."""
        if (e.pre in clamped) == (e.post in clamped):
            return False
        if e.post in clamped:
            return self.wiring.linear[id(e)]
        return self.wiring.reads(e) <= set(clamped)

    def drives(self, params: Mapping[str, Array], x: State) -> dict[str, dict[str, Array]]:
        """Loop-invariant inputs from clamped populations, per preset and target population."""
        r = {n: self.act[n](v) for n, v in x.items()}
        return {name: impl.drives(self, params, r) for name, impl in self.preset_impls.items()}

    # -------------------------------------------------------------- energy --
    def energy(self, s: State, params: Mapping[str, Array], x: State,
               drives: Mapping[str, Array] | None = None, *,
               leak: bool = True, rates_are_states: bool = False, boxed=()) -> Array:
        """E summed over the batch. `s` holds the free populations, `x` the clamped. The
        caller promises that the states of the `boxed` populations lie within their bounds:
        their rates are then the states themselves (`EnergyFunctions.boxed`)."""
        full = {**x, **s}
        r = self.rates(full, rates_are_states, free=s, boxed=boxed)
        E = 0.0
        for name, impl in self.preset_impls.items():
            E = E + impl.energy(self, s, full, r, x, params, drives and drives[name], leak)
        for term in self.terms:
            E = E + self._term(term, full, params)
        return E

    def _term(self, term, full, params):
        """A custom term: population values as flat vectors (batch, N), weights as arrays;
        `W @ v` applies a weight's operator (a matrix product for a dense weight)."""
        w = weights_of(self.edges, params)
        by_name = {e.weight: e for e in self.edges if e.weight in w}
        env: dict[str, Array] = {name: self._handle(by_name[name], array) for name, array in w.items()}
        flat = {n: v.reshape(v.shape[0], -1) for n, v in full.items()}
        for n, v in flat.items():
            env[f"{n}.s"] = v
        if term.over == "weights":
            total = 0.0
            for name in term.targets:
                e = next(x for x in self.edges if x.weight == name)
                local = dict(env, W=env[name])
                local["pre.s"], local["post.s"] = flat[e.pre], flat[e.post]
                total = total + jnp.sum(self.ev.eval(term.expr, local))
            return total
        if term.over == "populations":
            return sum(jnp.sum(self.ev.eval(term.expr, dict(env, **{"self.s": flat[n]}))) for n in term.targets)
        return jnp.sum(self.ev.eval(term.expr, env))

    def _handle(self, e: ConnectionEdge, array):
        """A weight in a term: the matrix itself when dense, else its operator."""
        if [st.kind for st in e.stages] == ["dense"]:
            return array
        return _Operator(e, array, self.shapes)

    # ---------------------------------------------------------------- cost --
    def cost(self, s: State, y: Any) -> Array:
        """C summed over the batch. `y`: the target array (one cost) or a dict by population."""
        C = 0.0
        for c in self.costs:
            target = y[c.population] if isinstance(y, Mapping) else y
            C = C + P.COSTS[c.kind].load()(s[c.population], target)
        return C

    def readout(self, s: State) -> Array:
        """The first cost's output state (the prediction)."""
        return s[self.costs[0].population]


@jax.custom_jvp
def _state_as_rate(v):
    """The identity, with a derivative that is an operation of its own (× 1): the cotangents
    of the rate are summed before they join the state's, as they are through ρ, so the
    energy's gradient adds its terms in the same order, bit for bit, whether or not ρ is
    skipped (XLA then drops the × 1)."""
    return v


_state_as_rate.defjvp(lambda primals, tangents: (primals[0], tangents[0] * 1.0))


def _rates_are_states_in_bounds(pop: PopulationNode, spec: CircuitSpec) -> bool:
    """Whether ρ of the population is exactly the identity (value and derivative) on the
    interval its bounds keep its states in, while not the identity everywhere: within
    bounds its rates are its states, and the relaxation skips ρ (a pass over the
    population per step; for the hard sigmoid of Scellier & Bengio 2017 with `min=0
    max=1`, also ρ' = 1, which the step no longer computes)."""
    interval = identity_interval(pop.activation, spec.functions, spec.params)
    if interval is None or interval == WHOLE_LINE:
        return False
    lo = -float("inf") if pop.lo is None else pop.lo
    hi = float("inf") if pop.hi is None else pop.hi
    return interval[0] <= lo and hi <= interval[1]


class Hopfield:
    """``E = Σ ½|s|² − Σ_(a--b) ⟨ρ(s_a), P(W ⋆ ρ(s_b))⟩ − Σ ⟨b, ρ(s)⟩`` (`ENERGIES["hopfield"]`)."""

    def drives(self, fns: EnergyFunctions, params, r) -> dict[str, Array]:
        """For `a -- c` with `c` clamped, the drive into `a` (W ρ(c), or a pooled
        convolution of ρ(c)); with `a` clamped and a linear operator, its adjoint
        applied to ρ(a), into `c`."""
        out: dict[str, Array] = {}
        for e in fns.edges:
            if e.kind != "undirected" or not fns._hoisted(e, r):
                continue
            if e.pre in r:
                _add(out, e.post, fns.wiring.drive(e, params, r))
            else:
                _add(out, e.pre, fns.wiring.adjoint_drive(e, params, r[e.post]))
        return out

    def energy(self, fns: EnergyFunctions, s, full, r, x, params, drives, leak):
        W = fns.wiring
        E = 0.0
        if leak:
            for n in s:
                E = E + 0.5 * jnp.sum(s[n] * s[n])
        for e in fns.edges:
            if e.kind != "undirected":
                continue
            if drives is None or (not fns._hoisted(e, x) and (e.pre in s or e.post in s)):
                E = E - W.pair(e, params, r)
        if drives is not None:
            for n, d in drives.items():
                E = E - jnp.sum(r[n] * d)
        for n in fns.biased:
            E = E - jnp.sum(r[n] * W.bias(n, params))
        return E


class Predictive:
    """``E = Σ ½|s_n − μ_n|²``, ``μ_n = Σ_(a→n) ± P(W ⋆ ρ(s_a)) + b_n`` (`ENERGIES["predictive"]`)."""

    def drives(self, fns: EnergyFunctions, params, r) -> dict[str, Array]:
        """The part of each μ_n that comes from clamped populations, plus b_n."""
        out: dict[str, Array] = {}
        for e in fns.edges:
            if e.kind != "undirected" and e.post not in r and fns.wiring.reads(e) <= set(r):
                _add(out, e.post, fns.wiring.drive(e, params, r))
        for n in fns.biased:
            _add(out, n, fns.wiring.bias(n, params))
        return out

    def energy(self, fns: EnergyFunctions, s, full, r, x, params, drives, leak):
        W = fns.wiring
        mu: dict[str, Array] = dict(drives) if drives is not None else {}
        for e in fns.edges:
            if e.kind == "undirected":
                continue
            if drives is not None and e.post not in x and W.reads(e) <= set(x):
                continue  # in `drives`
            _add(mu, e.post, W.drive(e, params, r))
        if drives is None:
            for n in fns.biased:
                _add(mu, n, W.bias(n, params))
        E = 0.0
        for n in fns.pops:
            if n in s or n in mu:
                err = full[n] - mu[n] if n in mu else full[n]
                E = E + 0.5 * jnp.sum(err * err)
        return E


HOPFIELD = Hopfield()
PREDICTIVE = Predictive()


class _Operator:
    """A non-dense weight inside an energy term: `W @ v` runs its stages on a flat `v`."""

    def __init__(self, e: ConnectionEdge, array, shapes) -> None:
        self.e, self.array, self.shapes = e, array, shapes

    def __matmul__(self, v):
        b = v.shape[0]
        out = chain_apply(self.e.stages, self.array, v.reshape((b, *self.shapes[self.e.pre])))
        return out.reshape(b, -1)

    @property
    def ndim(self) -> int:  # not a matrix: `exprs._matvec` uses `@`
        return 0


def _add(out: dict, k, v) -> None:
    out[k] = out[k] + v if k in out else v


def squared(out, target):
    """C = ½ |s − target|², summed over the batch."""
    d = out - target
    return 0.5 * jnp.sum(d * d)


def cross_entropy(out, target):
    """C = −Σ target · log softmax(s): the state is read as logits."""
    return -jnp.sum(target * jax.nn.log_softmax(out, axis=-1))


# ------------------------------------------------------------ nudged outputs --
# `COSTS[...].nudged`: the output u that latent equilibrium (`prospective`) settles to when
# the cost nudges a prediction v, i.e. the exact solution of u = v − β ∂C/∂u(u) per example.
# For β > 0 it is the proximal point argmin_u β C(u) + ½|u − v|².


def squared_nudged(v, target, beta):
    """u = v − β (u − target), solved: u = (v + β target)/(1 + β), i.e.
    u − v = −β/(1 + β) (v − target). Defined for β ≠ −1."""
    return (v + beta * target) / (1.0 + beta)


_CE_OUTER, _CE_INNER = 16, 8  # Newton iterations; 8 and 6 reach machine precision (see `cross_entropy_nudged`)


def cross_entropy_nudged(v, target, beta):
    """u = v − β (T softmax(u) − target), T = Σ target, solved per example to machine precision.

    With a = v + β target and c = β T, u = a − c p where p = softmax(u). Writing
    m = log Σ exp(u), each p_i solves log p_i + c p_i = a_i − m, so the problem is one
    unknown m per example with Σ_i p_i(m) = 1:

    * inner, per unit: l = log p solves f(l) = l + c eˡ − (a_i − m) = 0. For c > 0, f is
      convex increasing and Newton starts to the right of the root (from the Wright-omega
      bound w = c eˡ ≤ log z for z = a_i − m + log c > 1, else w ≤ e^z), so it decreases
      monotonically to it; for −1 < c ≤ 0 and p ≤ 1, f is concave increasing and Newton
      starts to the left (l = a_i − m), increasing monotonically;
    * outer: each p_i(m) is convex and decreasing in m (dp/dy = p/(1 + c p) grows with
      p), so H(m) = Σ p_i − 1 is convex decreasing. Newton from m₀ = max a − c, where the
      largest p is 1 and H ≥ 0, stays left of the root and increases monotonically to it.

    The iteration counts are fixed (inside jit); `tests/test_continuous.py` compares the
    result with an independent float64 solve. Exact for βΣtarget > −1, which covers every
    β > 0 and, with one-hot targets, the negative nudge of the symmetric estimator for
    |β| < 1. Targets are non-negative (probabilities).
    """
    T = jnp.sum(target, axis=-1, keepdims=True)
    c = beta * T
    a = v + beta * target
    pos = c > 0
    log_c = jnp.log(jnp.where(pos, c, 1.0))

    def log_p(y):
        z = y + log_c  # for c > 0: w = c p solves w + log w = z
        w_hi = jnp.where(z > 1.0, jnp.log(jnp.maximum(z, 1.0)), z)  # log of an upper bound of w
        l0 = jnp.where(pos, w_hi - log_c, y)

        def newton(_, l):
            cp = c * jnp.exp(l)
            return l - (l + cp - y) / (1.0 + cp)

        return jax.lax.fori_loop(0, _CE_INNER, newton, l0)

    def outer(_, m):
        p = jnp.exp(log_p(a - m))
        H = jnp.sum(p, axis=-1, keepdims=True) - 1.0
        slope = jnp.sum(p / (1.0 + c * p), axis=-1, keepdims=True)  # −dH/dm
        return m + H / slope

    m0 = jnp.max(a, axis=-1, keepdims=True) - c
    m = jax.lax.fori_loop(0, _CE_OUTER, outer, m0)
    return a - c * jnp.exp(log_p(a - m))
