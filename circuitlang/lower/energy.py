"""Energy circuits: E(s, θ, x) and the cost C(s, y), as pure JAX functions.

States are dicts {population: (batch, size) array}. Energies and costs are
**summed over the batch**, so ∂E/∂s is each example's own gradient and the
mean-loss gradient is the batch sum divided by the batch size.

* ``hopfield`` (Scellier & Bengio 2017)::

      E = Σ_n ½|s_n|² − Σ_(a--b) ρ(s_a)ᵀ W ρ(s_b) − Σ_n b_nᵀ ρ(s_n)

* ``predictive`` (Whittington & Bogacz 2017)::

      E = Σ_n ½|s_n − μ_n|²,   μ_n = Σ_(a→n) ± W ρ(s_a) + b_n

* custom ``term``s: scalars per example, summed.

The parts of E that only involve clamped populations and weights (the
*drives*, e.g. ``W1 ρ(x)``) do not change during a relaxation: `drives()`
computes them once per phase and `energy(..., drives=...)` reuses them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from ..graph import CircuitSpec, ConnectionEdge, PopulationNode
from .exprs import Evaluator

__all__ = ["EnergyFunctions", "weights_of"]

Array = Any
State = Mapping[str, Array]


def weights_of(edges: list[ConnectionEdge], params: Mapping[str, Array]) -> dict[str, Array]:
    """Every weight by name, tied ones derived from their source."""
    out: dict[str, Array] = {}
    for e in edges:
        if e.weight is None:
            continue
        if e.tied_to is not None:
            w = params[e.tied_to]
            out[e.weight] = w.T if e.transposed else w
        else:
            out[e.weight] = params[e.weight]
    return out


class EnergyFunctions:
    """E, C and their pieces for one circuit (built once at compile time)."""

    def __init__(self, spec: CircuitSpec, pops: Mapping[str, PopulationNode],
                 edges: list[ConnectionEdge], ev: Evaluator) -> None:
        self.spec = spec
        self.pops = dict(pops)
        self.edges = edges
        self.ev = ev
        self.presets = set(spec.energy.presets) if spec.energy else set()
        self.terms = spec.energy.terms if spec.energy else ()
        self.clamped = tuple(n for n, p in pops.items() if p.role == "input")
        self.free = tuple(n for n, p in pops.items() if p.role != "input")  # by default
        self.act = {n: ev.function(p.activation) for n, p in pops.items()}
        self.biased = tuple(n for n, p in pops.items() if p.bias)
        self.costs = spec.costs

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

    def rates(self, s: State, rates_are_states: bool = False, free=()) -> dict[str, Array]:
        """ρ(s) per population; in the prototypical form free states are rates."""
        if rates_are_states:
            return {n: (v if n in free else self.act[n](v)) for n, v in s.items()}
        return {n: self.act[n](v) for n, v in s.items()}

    def drives(self, params: Mapping[str, Array], x: State) -> dict[str, dict[str, Array]]:
        """Loop-invariant inputs from clamped populations, per target population.

        For hopfield couplings `a -- c` with `c` clamped, the drive into `a` is
        W ρ(c); for predictive `c -> n`, the part of μ_n that comes from `c`
        (plus b_n).
        """
        w = weights_of(self.edges, params)
        r = {n: self.act[n](v) for n, v in x.items()}
        hop: dict[str, Array] = {}
        pred: dict[str, Array] = {}

        def add(out, n, v):
            out[n] = out[n] + v if n in out else v

        for e in self.edges:
            if e.kind == "undirected" and "hopfield" in self.presets:
                if e.pre in r and e.post not in r:
                    add(hop, e.post, r[e.pre] @ w[e.weight].T)
                elif e.post in r and e.pre not in r:
                    add(hop, e.pre, r[e.post] @ w[e.weight])
            elif e.kind != "undirected" and "predictive" in self.presets and e.pre in r:
                add(pred, e.post, self._predict(e, w, r[e.pre]))
        if "predictive" in self.presets:
            for n in self.biased:
                add(pred, n, params[f"{n}.bias"][None, :])
        return {"hopfield": hop, "predictive": pred}

    def _predict(self, e: ConnectionEdge, w, r_pre):
        if e.kind == "one_to_one":
            v = r_pre * e.gain
            if e.weight is not None:
                v = v * w[e.weight][None, :]
        else:
            v = r_pre @ w[e.weight].T
        return v if e.sign > 0 else -v

    # -------------------------------------------------------------- energy --
    def energy(self, s: State, params: Mapping[str, Array], x: State,
               drives: Mapping[str, Array] | None = None, *,
               leak: bool = True, rates_are_states: bool = False) -> Array:
        """E summed over the batch. `s` holds the free populations, `x` the clamped."""
        full = {**x, **s}
        r = self.rates(full, rates_are_states, free=s)
        w = weights_of(self.edges, params)
        E = 0.0
        if "hopfield" in self.presets:
            E = E + self._hopfield(s, r, w, params, drives and drives["hopfield"], leak)
        if "predictive" in self.presets:
            E = E + self._predictive(s, full, r, w, params, drives and drives["predictive"])
        for term in self.terms:
            E = E + self._term(term, full, w)
        return E

    def _hopfield(self, s, r, w, params, drives, leak):
        E = 0.0
        if leak:
            for n in s:
                E = E + 0.5 * jnp.sum(s[n] * s[n])
        for e in self.edges:
            if e.kind != "undirected":
                continue
            a, b = e.post, e.pre  # W: (|a|, |b|), term ρ(s_a)ᵀ W ρ(s_b)
            # with `drives`, terms with a clamped end come from there (hoisted)
            if drives is None or (a in s and b in s):
                E = E - jnp.sum(r[a] * (r[b] @ w[e.weight].T))
        if drives is not None:
            for n, d in drives.items():
                E = E - jnp.sum(r[n] * d)
        for n in self.biased:
            E = E - jnp.sum(r[n] * params[f"{n}.bias"][None, :])
        return E

    def _predictive(self, s, full, r, w, params, drives):
        mu: dict[str, Array] = dict(drives) if drives is not None else {}
        for e in self.edges:
            if e.kind == "undirected":
                continue
            if drives is not None and e.pre not in s:
                continue
            v = self._predict(e, w, r[e.pre])
            mu[e.post] = mu[e.post] + v if e.post in mu else v
        if drives is None:
            for n in self.biased:
                b = params[f"{n}.bias"][None, :]
                mu[n] = mu[n] + b if n in mu else b
        E = 0.0
        for n in self.pops:
            if n in s or n in mu:
                err = full[n] - mu[n] if n in mu else full[n]
                E = E + 0.5 * jnp.sum(err * err)
        return E

    def _term(self, term, full, w):
        env: dict[str, Array] = dict(w)
        for n, v in full.items():
            env[f"{n}.s"] = v
        if term.over == "weights":
            total = 0.0
            for name in term.targets:
                e = next(x for x in self.edges if x.weight == name)
                local = dict(env, W=w[name])
                local["pre.s"], local["post.s"] = full[e.pre], full[e.post]
                total = total + jnp.sum(self.ev.eval(term.expr, local))
            return total
        if term.over == "populations":
            return sum(jnp.sum(self.ev.eval(term.expr, dict(env, **{"self.s": full[n]}))) for n in term.targets)
        return jnp.sum(self.ev.eval(term.expr, env))

    # ---------------------------------------------------------------- cost --
    def cost(self, s: State, y: Any) -> Array:
        """C summed over the batch. `y`: the target array (one cost) or a dict by population."""
        C = 0.0
        for c in self.costs:
            target = y[c.population] if isinstance(y, Mapping) else y
            out = s[c.population]
            if c.kind == "squared":
                d = out - target
                C = C + 0.5 * jnp.sum(d * d)
            else:  # cross_entropy: the state is the logits
                C = C - jnp.sum(target * jax.nn.log_softmax(out, axis=-1))
        return C

    def readout(self, s: State) -> Array:
        """The first cost's output state (the prediction)."""
        return s[self.costs[0].population]
