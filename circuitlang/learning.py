"""Estimators: every learning method as `(params, x, y, key) -> gradient estimate`.

All return an estimate of dLoss/dθ (Loss = mean cost over the batch at the
free fixed point), shaped like `params`, with zeros for fixed weights, so any
two can be compared on the same circuit and any optax optimizer consumes them.

* ``one_sided`` (Scellier & Bengio 2017): (1/β)(∂E/∂θ(s^β) − ∂E/∂θ(s^0))
* ``random_sign``: the same with β's sign drawn per batch
* ``symmetric`` (Laborieux et al. 2021): (1/2β)(∂E/∂θ(s^β) − ∂E/∂θ(s^−β))
* ``holomorphic`` (Laborieux & Zenke 2022): N points β e^{2πik/N};
  Re (1/Nβ) Σ_k e^{−2πik/N} ∂E/∂θ(s^{β_k}) — a Cauchy-integral derivative;
  N = 2 is ``symmetric``
* ``chl`` (Movellan 1991): ∂E/∂θ(output clamped) − ∂E/∂θ(free)
* ``gradient``: the true gradient by implicit differentiation at the free
  fixed point (a dense solve per example)
* ``bptt``: autodiff through the unrolled free phase
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from . import syntax as S
from .errors import CircuitError, Diagnostic

__all__ = ["estimate", "estimate_with_state", "check_method", "METHODS", "NON_ANALYTIC"]

METHODS = ("one_sided", "random_sign", "symmetric", "holomorphic", "chl", "rules", "gradient", "bptt")
NON_ANALYTIC = frozenset({"clip", "hard_sigmoid", "relu", "abs", "sign", "min", "max", "where"})


def check_method(model, method: str) -> None:
    """Raise a clear error when `method` cannot work on this circuit."""
    if method not in METHODS:
        raise CircuitError(f"unknown estimator `{method}`; choose one of: {', '.join(METHODS)}")
    if method == "rules" and model.rules is None:
        raise CircuitError("estimator `rules` needs local rules: write them in `learn rules { ... }`")
    if method in ("one_sided", "random_sign", "symmetric", "holomorphic", "chl") and model.nudge_phase is None:
        raise CircuitError(f"estimator `{method}` needs a second (nudged) phase in the `learn` block")
    if getattr(model.fns, "vector_field", False) and method in ("holomorphic", "chl"):
        raise CircuitError(f"estimator `{method}` needs an energy; for `dynamics leaky` use one_sided, "
                           "random_sign, symmetric, gradient or bptt")
    if method == "holomorphic" and _points(model) > 2:
        bad = _non_analytic(model)
        if bad:
            name, span = bad
            raise CircuitError(
                Diagnostic(
                    f"the holomorphic estimator runs the dynamics with complex β, but `{name}` is not analytic",
                    span,
                    "use an analytic activation (tanh, sigmoid, identity, exp, ...) or `points=2` (= symmetric)",
                ),
                model.circuit.source,
            )


def _points(model) -> int:
    opts = model.learning.estimator_options if model.learning else {}
    return int(opts.get("points", 4))


def _non_analytic(model):
    for pop in model.fns.pops.values():
        if pop.role == "input":
            continue
        name = pop.activation
        if name in NON_ANALYTIC:
            return name, pop.span
        fn = model.spec.functions.get(name)
        if fn is not None:
            for node in S.walk(fn.body):
                if isinstance(node, S.Call) and node.fn.name in NON_ANALYTIC:
                    return node.fn.name, node.fn.span
    return None


# ------------------------------------------------------------------- helpers --
def _proto(model) -> bool:
    return model.free_phase.integrator == "prototypical"


def _dE_dtheta(model, params, state, x):
    """∂E/∂θ at a state, as a function we differentiate."""
    proto = _proto(model)
    free = {n: state[n] for n in model.free if n not in x}
    return jax.grad(
        lambda p: model.fns.energy(free, p, x, None, leak=not proto, rates_are_states=proto)
    )(params)


def _contrast(model, params, a, b, x, xa=None, xb=None):
    """∂E/∂θ(a) − ∂E/∂θ(b) in one gradient call.

    With the same clamped inputs in both states, the clamped populations'
    drives (W ρ(x), ...) are computed once inside the differentiated function:
    autodiff then sums the two phases' cotangents before the backward product,
    so the input weight's update costs one matmul, as in hand-written EqProp.
    """
    proto = _proto(model)
    fns = model.fns
    same = xa is None and xb is None
    xa = x if xa is None else xa
    xb = x if xb is None else xb
    fa = {n: a[n] for n in a if n not in xa}
    fb = {n: b[n] for n in b if n not in xb}

    def diff(p):
        da = fns.drives(p, xa) if same else None
        db = da if same else None
        ea = fns.energy(fa, p, xa, da, leak=not proto, rates_are_states=proto)
        eb = fns.energy(fb, p, xb, db, leak=not proto, rates_are_states=proto)
        return ea - eb

    return jax.grad(diff)(params)


def _vf_update(model, params, a, b, s0, x):
    """Vector-field EqProp (Scellier et al. 2018): −(s_post^a − s_post^b) ρ(s_pre^0)ᵀ per weight."""
    free = model.free
    delta = {n: a[n] - b[n] for n in free}
    return jax.grad(lambda p: model.fns.update_potential(p, delta, {n: s0[n] for n in free}, x))(params)


def _finish(model, grads, scale):
    return {
        n: (g * scale if model.trainable[n] else jnp.zeros_like(g)) for n, g in grads.items()
    }


def _batch(x) -> int:
    return next(iter(x.values())).shape[0]


def _nudge(model, params, x, s_free, beta, y):
    free = {n: s_free[n] for n in model.state_keys}
    return model.relaxer.run(model.nudge_phase, params, x, free, beta, y).state


# ---------------------------------------------------------------- estimators --
def estimate(model, params, x, y, method, beta=None, key=None, s0=None) -> dict[str, Any]:
    """Dispatch to one estimator; see the module docstring."""
    return estimate_with_state(model, params, x, y, method, beta, key, s0)[0]


def estimate_with_state(model, params, x, y, method, beta=None, key=None, s0=None):
    """(gradient estimate, free-phase state): training reports loss and accuracy from the latter."""
    if method == "rules":
        return _rules(model, params, x, y, s0, beta)
    free = model._free(params, x, s0).state
    return _estimate(model, params, x, y, method, beta, key, s0, free), free


def _estimate(model, params, x, y, method, beta, key, s0, free):
    B = _batch(x)
    if method == "bptt":
        return _bptt(model, params, x, y, s0)
    if method == "gradient":
        return _implicit(model, params, x, y, free)
    beta = model.nudge_phase.beta if beta is None else beta
    if method == "random_sign":  # one_sided with β's sign drawn per batch
        beta = beta * (2.0 * jax.random.bernoulli(key).astype(jnp.result_type(float)) - 1.0)
    if getattr(model.fns, "vector_field", False):
        if method == "symmetric":
            plus = _nudge(model, params, x, free, beta, y)
            minus = _nudge(model, params, x, free, -beta, y)
            return _finish(model, _vf_update(model, params, plus, minus, free, x), 1.0 / (2.0 * beta * B))
        nudged = _nudge(model, params, x, free, beta, y)
        return _finish(model, _vf_update(model, params, nudged, free, free, x), 1.0 / (beta * B))
    if method in ("one_sided", "random_sign"):
        nudged = _nudge(model, params, x, free, beta, y)
        return _finish(model, _contrast(model, params, nudged, free, x), 1.0 / (beta * B))
    if method == "symmetric" or (method == "holomorphic" and _points(model) == 2):
        plus = _nudge(model, params, x, free, beta, y)
        minus = _nudge(model, params, x, free, -beta, y)
        return _finish(model, _contrast(model, params, plus, minus, x), 1.0 / (2.0 * beta * B))
    if method == "holomorphic":
        return _holomorphic(model, params, x, y, free, beta, B)
    if method == "chl":
        out = [c.population for c in model.spec.costs]
        target = y if isinstance(y, dict) else {out[0]: y}
        xc = {**x, **{n: target[n] for n in out}}
        free_c = {n: free[n] for n in model.free if n not in out}
        clamped = model.relaxer.run(model.clamp_phase, params, xc, free_c).state
        return _finish(model, _contrast(model, params, clamped, free, x, xa=xc), 1.0 / B)
    raise CircuitError(f"unknown estimator `{method}`")


def _rules(model, params, x, y, s0, beta_override=None):
    """Run the phases in order (each from the end of the last), integrating the rules.

    Returns minus the total update (a gradient estimate) and the first phase's state.
    `beta_override` replaces the β of every nudged phase (for `verify`'s sweeps)."""
    s = model.zeros(x) if s0 is None else dict(s0)
    total = {k: jnp.zeros_like(v) for k, v in params.items()}
    first = None
    for ph in model.learning.phases:
        beta = ph.beta if ph.beta != 0 else None
        if beta is not None and beta_override is not None:
            beta = beta_override
        if ph.steps is None and ph.present is not None:
            ph = dataclasses.replace(ph, steps=ph.present)
        if any(r.active(ph.name) for r in model.rules.rules):
            res, acc = model.rules.run(ph, params, x, s, beta, y)
            total = {k: total[k] + acc[k] if k in acc else total[k] for k in total}
        else:
            res = model.relaxer.run(ph, params, x, s, beta, y)
        s = {k: res.state[k] for k in model.state_keys}
        if first is None:
            first = res.state
    return _finish(model, {k: -v for k, v in total.items()}, 1.0), first


def _holomorphic(model, params, x, y, free, beta, B):
    n = _points(model)
    ctype = jnp.result_type(jnp.zeros(()).dtype, jnp.complex64)
    cparams = {k: v.astype(ctype) for k, v in params.items()}
    cx = {k: v.astype(ctype) for k, v in x.items()}
    cy = y.astype(ctype) if not isinstance(y, dict) else {k: v.astype(ctype) for k, v in y.items()}
    cfree = {k: free[k].astype(ctype) for k in model.free}
    total = None
    proto = _proto(model)
    for k in range(n):
        w = jnp.exp(2j * jnp.pi * k / n)
        s = model.relaxer.run(model.nudge_phase, cparams, cx, cfree, beta * w, cy).state
        fs = {m: s[m] for m in model.free}
        g = jax.grad(
            lambda p: model.fns.energy(fs, p, cx, None, leak=not proto, rates_are_states=proto),
            holomorphic=True,
        )(cparams)
        term = {m: v / w for m, v in g.items()}
        total = term if total is None else {m: total[m] + term[m] for m in total}
    real = {m: jnp.real(v).astype(params[m].dtype) for m, v in total.items()}
    return _finish(model, real, 1.0 / (n * beta * B))


def _bptt(model, params, x, y, s0):
    phase = model.free_phase
    if phase.tol is not None:  # a while_loop has no reverse-mode derivative: unroll all steps
        phase = dataclasses.replace(phase, tol=None)

    def loss(p):
        st = model.relaxer.run(phase, p, x, model.zeros(x) if s0 is None else s0).state
        return model.fns.cost({n: st[n] for n in model.free}, y)

    return _finish(model, jax.grad(loss)(params), 1.0 / _batch(x))


def _residual(model, params, x, u):
    """G(u, θ) = 0 at the free fixed point: ∂E/∂s; u − P(u − ∂E/∂s) with state bounds
    (P the projection); u − P(ρ(−∂Φ/∂r)) in the prototypical form."""
    fns = model.fns
    if getattr(fns, "vector_field", False):  # G = −ds/dt, projected with state bounds
        f = fns.force(u, params, x)
        target = fns.project({n: u[n] + f[n] for n in u})
        return {n: u[n] - target[n] for n in u}
    if _proto(model):
        g = jax.grad(lambda s: fns.energy(s, params, x, None, leak=False, rates_are_states=True))(u)
        target = fns.project({n: fns.act[n](-g[n]) for n in u})
        return {n: u[n] - target[n] for n in u}
    g = jax.grad(lambda s: fns.energy(s, params, x, None))(u)
    if fns.bounded:  # projected: units held at a bound do not move with θ
        target = fns.project({n: u[n] - g[n] for n in u})
        return {n: u[n] - target[n] for n in u}
    return g


def _implicit(model, params, x, y, free):
    """dL/dθ = −(∂G/∂θ)ᵀ λ with (∂G/∂u)ᵀ λ = ∂C/∂u, solved densely per example."""
    fns = model.fns
    names = model.state_keys
    u = {n: free[n] for n in names}
    sizes = [u[n].shape[-1] for n in names]

    def flat(d):
        return jnp.concatenate([d[n] for n in names], axis=-1)

    def unflat(v):
        out, i = {}, 0
        for n, k in zip(names, sizes):
            out[n] = v[..., i : i + k]
            i += k
        return out

    def resid_one(v, xi):
        xb = {k: a[None] for k, a in xi.items()}
        return flat(_residual(model, params, xb, unflat(v[None])))[0]

    U = flat(u)
    J = jax.vmap(jax.jacfwd(resid_one))(U, x)  # (B, n, n)
    dC = flat(jax.grad(lambda s: fns.cost(s, y))(u))
    lam = jnp.linalg.solve(jnp.swapaxes(J, -1, -2), dC[..., None])[..., 0]
    lam_d = unflat(lam)

    def inner(p):
        G = _residual(model, p, x, u)
        return sum(jnp.sum(G[n] * lam_d[n]) for n in names)

    g = jax.grad(inner)(params)
    return _finish(model, {k: -v for k, v in g.items()}, 1.0 / _batch(x))
