"""The connections of one circuit, lowered once: every drive computation in one place.

Energies, vector fields, cell compartments, relaxations, prospective errors
and local rules all read connections through a `Wiring`:

* `drive(e, params, rates)`: what connection `e` delivers into its post
  population, ``sign · gain · stages(W, ρ(pre))`` (`ops/`); for a tied
  ``B = transpose(K)`` the adjoint of K's stages, derived by JAX as a VJP
  (at zero for a linear chain, whose VJP is its transpose everywhere; at the
  current state of the population the chain reads for max-pooling);
* `back(e, params, rates, ct)`: the adjoint of that drive, carrying a
  cotangent at the post population back to the pre one (a VJP: never written
  per operator);
* `pair(e, params, rates)`: its term ⟨ρ(post), drive⟩ in an energy;
* `bias(n, params)`: a population's bias, broadcast to its compiled layout
  (per channel for a shaped population unless `bias ... per=neuron`);
* `weight_update(e, params, P, Q)` / `bias_update(n, P)`: how a local rule
  ``post-side P × pre-side Q`` on the connection's array lowers,
  ∂/∂W ⟨P, stages(W, Q)⟩ summed over the batch: a batched outer product for a
  dense weight, a correlation for a kernel, one VJP either way.

States are dicts {population: array (batch, *compiled shape)}; see `layout.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from ..graph import ConnectionEdge, PopulationNode
from ..layout import internal
from ..ops import OPS
from ..ops.base import chain_apply, chain_is_linear

__all__ = ["DRIVE", "Wiring", "weights_of"]

Array = Any

# A parameter named DRIVE + a weight's name stands for that (untied) connection's drive:
# `drive` returns it and `pair` reads it, without the weight (`blocking.py`).
DRIVE = "drive:"


def _given(e: ConnectionEdge, params) -> Array | None:
    """The drive standing in for `e`'s own (untied) weight in `params`, if any (DRIVE)."""
    if e.weight is None or e.tied_to is not None:
        return None
    return params.get(DRIVE + e.weight)


def weights_of(edges: list[ConnectionEdge], params: Mapping[str, Array]) -> dict[str, Array]:
    """Every named weight's array by name, as rules and energy terms see it: a tied
    weight reads its target's array (transposed for a dense `transpose(W)`)."""
    out: dict[str, Array] = {}
    for e in edges:
        if e.weight is None:
            continue
        if e.tied_to is None:
            out[e.weight] = params[e.weight]
        elif not e.transposed:
            out[e.weight] = params[e.tied_to]
        elif _dense_only(e):
            out[e.weight] = params[e.tied_to].T
    return out


def _dense_only(e: ConnectionEdge) -> bool:
    return [s.kind for s in e.stages] == ["dense"]


class Wiring:
    """Drives, adjoints, energy pairs and rule updates of one circuit's connections."""

    def __init__(self, pops: Mapping[str, PopulationNode], edges: list[ConnectionEdge]) -> None:
        self.pops = dict(pops)
        self.edges = list(edges)
        self.linear = {id(e): chain_is_linear(e.stages) for e in self.edges}

    # --------------------------------------------------------------- arrays --
    def array(self, e: ConnectionEdge, params) -> Array | None:
        """The array `e`'s weighted stage uses (its own, or its tie's), or None."""
        name = e.tied_to or e.weight
        return params[name] if name is not None else None

    def _scale(self, e: ConnectionEdge, v):
        s = e.sign * e.gain
        return v if s == 1 else v * s

    def _forward(self, e: ConnectionEdge, w, v):
        return chain_apply(e.stages, w, v)

    def _adjoint(self, e: ConnectionEdge, w, ct, rates):
        """The chain run backwards: the transpose of its linear map, or, when it is not
        linear, its VJP at the state it reads (`rates[e.post]`)."""
        if self.linear[id(e)]:
            point = jnp.zeros((ct.shape[0], *internal(self.pops[e.post].shape)), jnp.result_type(ct))
        else:
            point = rates[e.post].astype(jnp.result_type(ct))
        _, vjp = jax.vjp(lambda v: self._forward(e, w, v), point)
        return vjp(ct)[0]

    def reads(self, e: ConnectionEdge) -> set[str]:
        """The populations `e`'s drive depends on (a tied transpose of a max-pooling
        chain also reads the state it is linearised at)."""
        if e.transposed and not self.linear[id(e)]:
            return {e.pre, e.post}
        return {e.pre}

    # --------------------------------------------------------------- drives --
    def drive(self, e: ConnectionEdge, params, rates: Mapping[str, Array]) -> Array:
        """What `e` delivers into `e.post` (batch, *compiled shape of post)."""
        given = _given(e, params)
        if given is not None:
            return given
        w = self.array(e, params)
        if e.transposed:
            return self._scale(e, self._adjoint(e, w, rates[e.pre], rates))
        return self._scale(e, self._forward(e, w, rates[e.pre]))

    def back(self, e: ConnectionEdge, params, rates: Mapping[str, Array], ct: Array) -> Array:
        """The cotangent `ct` at `e.post` carried back to `e.pre` through the drive."""
        _, vjp = jax.vjp(lambda r: self.drive(e, params, {**rates, e.pre: r}), rates[e.pre])
        return vjp(ct)[0]

    def adjoint_drive(self, e: ConnectionEdge, params, ct: Array) -> Array:
        """For a linear drive: its transpose applied to `ct` (at `e.post`), at `e.pre`;
        no state is needed, so clamped populations' drives can be hoisted with it."""
        shape = (ct.shape[0], *internal(self.pops[e.pre].shape))
        point = jnp.zeros(shape, jnp.result_type(ct))  # linear: any point gives the same VJP
        _, vjp = jax.vjp(lambda r: self.drive(e, params, {e.pre: r, e.post: ct}), point)
        return vjp(ct)[0]

    def pair(self, e: ConnectionEdge, params, rates: Mapping[str, Array]) -> Array:
        """⟨ρ(post), drive⟩ summed over the batch: the coupling's term in an energy."""
        if _given(e, params) is None and not e.transposed and e.sign * e.gain == 1:
            st = e.stages[-1] if len(e.stages) == 1 else None
            if st is not None:  # one stage: let it define its own term
                w = self.array(e, params)
                return OPS[st.kind].pair(st, w if OPS[st.kind].weighted else None, rates[e.post], rates[e.pre])
        return jnp.sum(rates[e.post] * self.drive(e, params, rates))

    def bias(self, n: str, params) -> Array:
        """`n`'s bias, shaped to broadcast against a batch of its states."""
        b = params[f"{n}.bias"]
        return self._bias_view(n, b)

    def _bias_view(self, n: str, b):
        pop = self.pops[n]
        shape = internal(pop.shape)
        if len(pop.shape) > 1 and pop.bias_per == "channel":
            return b.reshape((1,) * len(shape) + (b.shape[0],))
        return b.reshape((1, *shape))

    def into(self, params, rates: Mapping[str, Array], to, skip=None, biases: bool = True,
             group=None, bias_group=None) -> dict:
        """The summed drives into each population in `to`, and their biases.

        `skip(e)` leaves a connection out; `group(e)` / `bias_group(n)` say where a
        drive or a bias is summed (default: the post population itself)."""
        group = group or (lambda e: e.post)
        bias_group = bias_group or (lambda n: n)
        out: dict = {}
        for e in self.edges:
            if e.post not in to or (skip is not None and skip(e)):
                continue
            _add(out, group(e), self.drive(e, params, rates))
        if biases:
            for n, pop in self.pops.items():
                if pop.bias and n in to:
                    _add(out, bias_group(n), self.bias(n, params))
        return out

    # ---------------------------------------------------------------- rules --
    def weight_update(self, e: ConnectionEdge, params, P: Array, Q: Array) -> Array:
        """∂/∂W ⟨P, stages(W, Q)⟩ summed over the batch: the rule `P × Q` summed over every
        synapse that shares an entry of W (P at the chain's output, Q at its input); for a
        plain tie `V2 = V`, the entries of V."""
        w = self.array(e, params)
        _, vjp = jax.vjp(lambda a: self._forward(e, a, Q.astype(a.dtype)), w)
        return vjp(P.astype(w.dtype))[0]

    def bias_update(self, n: str, params, P: Array) -> Array:
        """∂/∂b ⟨P, bias⟩ summed over the batch (and over the positions a channel's bias covers)."""
        b = params[f"{n}.bias"]
        _, vjp = jax.vjp(lambda v: jnp.broadcast_to(self._bias_view(n, v), P.shape), b)
        return vjp(P.astype(b.dtype))[0]


def _add(out: dict, k, v) -> None:
    out[k] = out[k] + v if k in out else v

