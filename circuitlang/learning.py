"""Estimators: every learning method as `(params, x, y, key) -> gradient estimate`.

All return an estimate of dLoss/dθ (Loss = mean cost over the batch at the
free fixed point), shaped like `params`, with zeros for fixed weights, so any
two can be compared on the same circuit and any optax optimizer consumes them.
Each is one entry of `primitives.ESTIMATORS`, which names its function here
and what it needs (checked by `check/estimators.py` before anything runs):

* ``one_sided`` (Scellier & Bengio 2017): (1/β)(∂E/∂θ(s^β) − ∂E/∂θ(s^0))
* ``random_sign``: the same with β's sign drawn per batch
* ``symmetric`` (Laborieux et al. 2021): (1/2β)(∂E/∂θ(s^β) − ∂E/∂θ(s^−β))
* ``holomorphic`` (Laborieux & Zenke 2022): N points β e^{2πik/N};
  Re (1/Nβ) Σ_k e^{−2πik/N} ∂E/∂θ(s^{β_k}) — a Cauchy-integral derivative;
  N = 2 is ``symmetric``
* ``chl`` (Movellan 1991): ∂E/∂θ(output clamped) − ∂E/∂θ(free)
* ``rules``: the file's local rules integrated over its phases
* ``gradient``: the true gradient by implicit differentiation at the free
  fixed point (a dense solve per example)
* ``bptt``: autodiff through the unrolled free phase

On a vector field (no energy) the EqProp estimators use the generalized
update of Scellier et al. 2018 (`VectorFieldFunctions.update_potential`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import networkx as nx

from . import primitives as P
from .lower.wiring import DRIVE
from .optim import nonzero

__all__ = ["estimate", "estimate_with_info", "estimate_with_state"]

# ------------------------------------------------------------------- helpers --
def _rate_form(model) -> bool:
    """Whether the free phase's integrator reads the states as rates (the prototypical
    step): E is then differentiated without its ½|s|²."""
    return "states_are_rates" in P.INTEGRATORS[model.free_phase.integrator].provides


def _contrast(model, params, a, b, x, s0, xa=None):
    """The EqProp difference between two states `a` and `b`, as a parameter gradient:

    * on an energy, ∂E/∂θ(a) − ∂E/∂θ(b) in one gradient call. With the same clamped
      inputs in both states, the clamped populations' drives (W ρ(x), ...) are computed
      once inside the differentiated function: autodiff then sums the two phases'
      cotangents before the backward product, so the input weight's update costs one
      matmul, as in hand-written EqProp;
    * on a vector field, −⟨a_post − b_post, ∂ drive(ρ(s0_pre))/∂θ⟩ (Scellier et al. 2018).
    """
    fns = model.fns
    if getattr(fns, "vector_field", False):
        free = model.free
        delta = {n: a[n] - b[n] for n in free}
        return jax.grad(lambda p: fns.update_potential(p, delta, {n: s0[n] for n in free}, x))(params)
    rate = _rate_form(model)
    same = xa is None
    xa = x if xa is None else xa
    fa = {n: a[n] for n in a if n not in xa}
    fb = {n: b[n] for n in b if n not in x}

    def diff(p):
        da = fns.drives(p, xa) if same else None
        ea = fns.energy(fa, p, xa, da, leak=not rate, rates_are_states=rate)
        eb = fns.energy(fb, p, x, da, leak=not rate, rates_are_states=rate)
        return ea - eb

    return jax.grad(diff)(params)


def _finish(model, grads, scale):
    # a drive standing in for a weight (`blocking.py`) is scaled as the weight's gradient is
    return {
        n: (g * scale if n.startswith(DRIVE) or model.trainable[n] else jnp.zeros_like(g)) for n, g in grads.items()
    }


def _batch(x) -> int:
    return next(iter(x.values())).shape[0]


def _nudge(model, params, x, s_free, beta, y, key=None):
    """The nudged relaxation from the free state (a `Relaxation`); `key`: its noise's."""
    free = {n: s_free[n] for n in model.state_keys}
    return model.relaxer.run(model.nudge_phase, params, x, free, beta, y, key)


def _report(res):
    """A relaxation without its state: what `info` carries (steps, code, residual)."""
    return dataclasses.replace(res, state={})


def _beta(model, beta):
    return model.nudge_phase.beta if beta is None else beta


def _points(model) -> int:
    opts = model.learning.estimator_options if model.learning else {}
    return int(opts.get("points", 4))


# ---------------------------------------------------------------- dispatch --
def estimate(model, params, x, y, method, beta=None, key=None, s0=None) -> dict[str, Any]:
    """The estimate of `method` (an entry of `primitives.ESTIMATORS`)."""
    return estimate_with_info(model, params, x, y, method, beta, key, s0)[0]


def estimate_with_state(model, params, x, y, method, beta=None, key=None, s0=None):
    """(gradient estimate, free-phase state): training reports loss and accuracy from the latter."""
    return estimate_with_info(model, params, x, y, method, beta, key, s0)[:2]


def estimate_with_info(model, params, x, y, method, beta=None, key=None, s0=None):
    """(gradient estimate, free-phase state, info): `info` maps each relaxation the
    estimate used (`free`, `nudge`, `nudge+`/`nudge-`, `nudge@k`, `clamp`, or the
    phases of local rules) to its `Relaxation` without the state: steps, result code
    and per-example residual. An estimator entry may return just (estimate, state)."""
    out = P.ESTIMATORS[method].load()(model, params, x, y, beta, key, s0)
    return (*out, {}) if len(out) == 2 else tuple(out)


# ---------------------------------------------------------------- estimators --
def one_sided(model, params, x, y, beta, key, s0):
    res = model._free(params, x, s0, key=key)
    free = res.state
    beta = _beta(model, beta)
    nudged = _nudge(model, params, x, free, beta, y, key)
    g = _contrast(model, params, nudged.state, free, x, free)
    return _finish(model, g, 1.0 / (beta * _batch(x))), free, {"free": _report(res), "nudge": _report(nudged)}


def random_sign(model, params, x, y, beta, key, s0):
    """one_sided with β's sign drawn once per batch."""
    sign = 2.0 * jax.random.bernoulli(key).astype(jnp.result_type(float)) - 1.0
    return one_sided(model, params, x, y, _beta(model, beta) * sign, key, s0)


def symmetric(model, params, x, y, beta, key, s0):
    res = model._free(params, x, s0, key=key)
    free = res.state
    beta = _beta(model, beta)
    plus = _nudge(model, params, x, free, beta, y, key)  # the same noise in both (`lower/noise.py`)
    minus = _nudge(model, params, x, free, -beta, y, key)
    g = _contrast(model, params, plus.state, minus.state, x, free)
    info = {"free": _report(res), "nudge+": _report(plus), "nudge-": _report(minus)}
    return _finish(model, g, 1.0 / (2.0 * beta * _batch(x))), free, info


def holomorphic(model, params, x, y, beta, key, s0):
    n = _points(model)
    if n == 2:
        return symmetric(model, params, x, y, beta, key, s0)
    res = model._free(params, x, s0, key=key)
    free = res.state
    info = {"free": _report(res)}
    beta = _beta(model, beta)
    ctype = jnp.result_type(jnp.zeros(()).dtype, jnp.complex64)
    cparams = {k: v.astype(ctype) for k, v in params.items()}
    cx = {k: v.astype(ctype) for k, v in x.items()}
    cy = y.astype(ctype) if not isinstance(y, dict) else {k: v.astype(ctype) for k, v in y.items()}
    cfree = {k: free[k].astype(ctype) for k in model.free}
    rate = _rate_form(model)
    total = None
    for k in range(n):
        w = jnp.exp(2j * jnp.pi * k / n)
        rk = model.relaxer.run(model.nudge_phase, cparams, cx, cfree, beta * w, cy, key)
        info[f"nudge@{k}"] = _report(rk)
        s = rk.state
        fs = {m: s[m] for m in model.free}
        g = jax.grad(
            lambda p: model.fns.energy(fs, p, cx, None, leak=not rate, rates_are_states=rate),
            holomorphic=True,
        )(cparams)
        term = {m: v / w for m, v in g.items()}
        total = term if total is None else {m: total[m] + term[m] for m in total}
    real = {m: jnp.real(v).astype(params[m].dtype) for m, v in total.items()}
    return _finish(model, real, 1.0 / (n * beta * _batch(x))), free, info


def chl(model, params, x, y, beta, key, s0):
    res = model._free(params, x, s0, key=key)
    free = res.state
    out = [c.population for c in model.spec.costs]
    target = y if isinstance(y, dict) else {out[0]: y}
    xc = {**x, **{n: target[n] for n in out}}
    free_c = {n: free[n] for n in model.free if n not in out}
    rc = model.relaxer.run(model.clamp_phase, params, xc, free_c, key=key)
    g = _contrast(model, params, rc.state, free, x, free, xa=xc)
    return _finish(model, g, 1.0 / _batch(x)), free, {"free": _report(res), "clamp": _report(rc)}


def rules(model, params, x, y, beta, key, s0):
    """Run the phases in order (each from the end of the last), integrating the rules.

    Returns minus the total update (a gradient estimate) and the first phase's state.
    `beta` replaces the β of every nudged phase (for `verify`'s sweeps)."""
    s = model.zeros(x) if s0 is None else dict(s0)
    total = {k: jnp.zeros_like(v) for k, v in params.items()}
    first = None
    info = {}
    for ph in model.learning.phases:
        b = ph.beta if nonzero(ph.beta) else None
        if b is not None and beta is not None:
            b = beta
        if ph.steps is None and ph.present is not None:
            ph = dataclasses.replace(ph, steps=ph.present)
        if any(r.active(ph.name) for r in model.rules.rules):
            res, acc = model.rules.run(ph, params, x, s, b, y, key=key)
            total = {k: total[k] + acc[k] if k in acc else total[k] for k in total}
        else:
            res = model.relaxer.run(ph, params, x, s, b, y, key)
        s = {k: res.state[k] for k in model.state_keys}
        info[ph.name] = _report(res)
        if first is None:
            first = res.state
    return _finish(model, {k: -v for k, v in total.items()}, 1.0), first, info


def bptt(model, params, x, y, beta, key, s0):
    phase = model.free_phase
    if phase.tol is not None:  # a while_loop has no reverse-mode derivative: unroll all steps
        phase = dataclasses.replace(phase, tol=None)

    def loss(p):
        res = model.relaxer.run(phase, p, x, model.zeros(x) if s0 is None else s0, key=key, boxed=False)
        st = res.state
        return model.fns.cost({n: st[n] for n in model.free}, y), (st, _report(res))

    g, (free, res) = jax.grad(loss, has_aux=True)(params)
    return _finish(model, g, 1.0 / _batch(x)), free, {"free": res}


def gradient(model, params, x, y, beta, key, s0):
    """dL/dθ = −(∂G/∂θ)ᵀ λ with (∂G/∂u)ᵀ λ = ∂C/∂u at the free fixed point u, solved
    densely per example (states of every shape flattened into one vector) over the states
    `_upstream_of_cost` keeps (every state on an energy; on a vector field, those that reach
    the cost: the others' adjoints are 0). With noise, the free phase's end state stands in for
    the fixed point (it fluctuates around it)."""
    res = model._free(params, x, s0, key=key)
    free = res.state
    fns = model.fns
    names = _upstream_of_cost(model)
    u = {n: free[n] for n in model.state_keys}
    shapes = {n: u[n].shape[1:] for n in names}
    sizes = [int(jnp.size(u[n][0])) for n in names]

    def flat(d):
        return jnp.concatenate([d[n].reshape(d[n].shape[0], -1) for n in names], axis=-1)

    def unflat(v):
        out, i = {}, 0
        for n, k in zip(names, sizes):
            out[n] = v[..., i : i + k].reshape((v.shape[0], *shapes[n]))
            i += k
        return out

    def resid_one(v, xi, ui):
        xb = {k: a[None] for k, a in xi.items()}
        ub = {k: a[None] for k, a in ui.items()}
        return flat(_residual(model, params, xb, {**ub, **unflat(v[None])}))[0]

    U = flat(u)
    J = jax.vmap(jax.jacrev(resid_one))(U, x, u)  # (B, n, n); reverse mode: operators may define only VJPs
    dC = flat(jax.grad(lambda s: fns.cost(s, y))(u))
    lam = jnp.linalg.solve(jnp.swapaxes(J, -1, -2), dC[..., None])[..., 0]
    lam_d = unflat(lam)

    def inner(p):
        G = _residual(model, p, x, u)
        return sum(jnp.sum(G[n] * lam_d[n]) for n in names)

    g = jax.grad(inner)(params)
    return _finish(model, {k: -v for k, v in g.items()}, 1.0 / _batch(x)), free, {"free": _report(res)}


def _upstream_of_cost(model) -> list[str]:
    """On a vector field (directed drives, cell equations), the state keys whose populations
    can reach a costed population through the drives (an undirected coupling both ways). The
    others cannot move the cost: their adjoint is 0, and leaving them out of the solve keeps it
    regular when one has no dynamics of its own (a corruption population that only holds its
    noise, `examples/dtp.circ`). An energy circuit keeps every state: its terms may couple
    populations that no connection joins."""
    if not getattr(model.fns, "vector_field", False):
        return list(model.state_keys)
    W = model.fns.wiring
    drives = nx.DiGraph()  # pre -> post for every population a drive reads
    for e in model.fns.edges:
        drives.add_edges_from((pre, e.post) for pre in W.reads(e))
        if e.kind == "undirected":
            drives.add_edge(e.post, e.pre)
    keep = {c.population for c in model.fns.costs}
    keep |= {a for c in list(keep) if c in drives for a in nx.ancestors(drives, c)}
    return [k for k in model.state_keys if k.split(".")[0] in keep]


def _residual(model, params, x, u):
    """G(u, θ) = 0 at the free fixed point: ∂E/∂s; u − P(u − ∂E/∂s) with state bounds
    (P the projection); u − P(ρ(−∂Φ/∂r)) in the prototypical form; −ds/dt (projected)
    on a vector field."""
    fns = model.fns
    if getattr(fns, "vector_field", False):  # the free phase's force at its last step
        ph = model.free_phase
        f = fns.force(u, params, x, t=((ph.steps or 1) - 1) * ph.dt, phase=ph)
        target = fns.project({n: u[n] + f[n] for n in u})
        return {n: u[n] - target[n] for n in u}
    if _rate_form(model):
        g = jax.grad(lambda s: fns.energy(s, params, x, None, leak=False, rates_are_states=True))(u)
        target = fns.project({n: fns.act[n](-g[n]) for n in u})
        return {n: u[n] - target[n] for n in u}
    g = jax.grad(lambda s: fns.energy(s, params, x, None))(u)
    if fns.bounded:  # projected: units held at a bound do not move with θ
        target = fns.project({n: u[n] - g[n] for n in u})
        return {n: u[n] - target[n] for n in u}
    return g
