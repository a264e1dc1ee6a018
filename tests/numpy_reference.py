"""An independent NumPy reference simulator for energy circuits (tests only).

Written from the language spec (`spec/LANGUAGE.md`), not from the compiler:
forces are derived by hand, there is no autodiff and nothing is imported from
`circuitlang`. States are dicts {population: (batch, size) array}; a weight
`W` of a coupling `a -- b` or a connection `b -> a` has shape (|a|, |b|).

* hopfield:   E = Σ_free ½|s|² − Σ_(a--b) ρ(s_a)ᵀ W ρ(s_b) − Σ_n b_nᵀ ρ(s_n)
              ∂E/∂s_n = s_n − ρ'(s_n) ⊙ (Σ_(n--b) W ρ(s_b) + Σ_(a--n) Wᵀ ρ(s_a) + b_n)
* predictive: E = Σ_n ½|e_n|²,  e_n = s_n − μ_n,  μ_n = Σ_(a→n) ±W ρ(s_a) + b_n
              (a term for every free population and every one with a prediction)
              ∂E/∂s_n = e_n − ρ'(s_n) ⊙ Σ_(n→c) ±Wᵀ e_c
* costs:      squared ½|s − y|² → s − y;  cross_entropy −yᵀ log softmax(s) → softmax(s)·Σy − y
* Euler:      s ← s − dt (∂E/∂s + β ∂C/∂s) on the free populations
* prototypical (hopfield, states are rates): r ← (1 − dt) r + dt ρ(Σ W r + b − β ∂C/∂r)
"""

from __future__ import annotations

import dataclasses

import numpy as np


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


ACT = {
    "sigmoid": (_sigmoid, lambda v: _sigmoid(v) * (1.0 - _sigmoid(v))),
    "tanh": (np.tanh, lambda v: 1.0 - np.tanh(v) ** 2),
    "identity": (lambda v: v, np.ones_like),
}


@dataclasses.dataclass
class Net:
    sizes: dict          # population -> size (insertion order = declaration order)
    inputs: tuple        # clamped populations
    act: dict            # population -> activation name in ACT
    undirected: list = dataclasses.field(default_factory=list)  # (a, b, W): ρ(s_a)ᵀ W ρ(s_b)
    directed: list = dataclasses.field(default_factory=list)    # (pre, post, W, sign)
    biased: tuple = ()

    @property
    def free(self):
        return tuple(n for n in self.sizes if n not in self.inputs)

    def rho(self, n, v):
        return ACT[self.act[n]][0](v)

    def drho(self, n, v):
        return ACT[self.act[n]][1](v)


# ------------------------------------------------------------------ hopfield --
def hopfield_input(net, p, s, n):
    """Σ W ρ(s_b) + Σ Wᵀ ρ(s_a) + b_n: the net input to population n (s: all populations)."""
    total = np.zeros_like(s[n])
    for a, b, w in net.undirected:
        if a == n:
            total = total + net.rho(b, s[b]) @ p[w].T
        if b == n:
            total = total + net.rho(a, s[a]) @ p[w]
    if n in net.biased:
        total = total + p[f"{n}.bias"]
    return total


def hopfield_energy(net, p, s):
    """Per-example energies, shape (batch,)."""
    E = sum(0.5 * np.sum(s[n] ** 2, -1) for n in net.free)
    for a, b, w in net.undirected:
        E = E - np.sum(net.rho(a, s[a]) * (net.rho(b, s[b]) @ p[w].T), -1)
    for n in net.biased:
        E = E - net.rho(n, s[n]) @ p[f"{n}.bias"]
    return E


def hopfield_force(net, p, s):
    return {n: s[n] - net.drho(n, s[n]) * hopfield_input(net, p, s, n) for n in net.free}


# ---------------------------------------------------------------- predictive --
def predictive_errors(net, p, s):
    mu = {}
    for pre, post, w, sign in net.directed:
        mu[post] = mu.get(post, 0.0) + sign * (net.rho(pre, s[pre]) @ p[w].T)
    for n in net.biased:
        mu[n] = mu.get(n, 0.0) + p[f"{n}.bias"]
    return {n: s[n] - mu.get(n, 0.0) for n in net.sizes if n in mu or n in net.free}


def predictive_energy(net, p, s):
    return sum(0.5 * np.sum(e ** 2, -1) for e in predictive_errors(net, p, s).values())


def predictive_force(net, p, s):
    err = predictive_errors(net, p, s)
    out = {}
    for n in net.free:
        back = np.zeros_like(s[n])
        for pre, post, w, sign in net.directed:
            if pre == n:
                back = back + sign * (err[post] @ p[w])
        out[n] = err[n] - net.drho(n, s[n]) * back
    return out


def feedforward(net, p, x):
    """The one-pass fixed point of a DAG predictive circuit (every e_n = 0)."""
    s = dict(x)
    todo = list(net.free)
    while todo:
        n = next(m for m in todo if all(pre in s for pre, post, _, _ in net.directed if post == m))
        mu = p[f"{n}.bias"] + 0.0 if n in net.biased else 0.0
        for pre, post, w, sign in net.directed:
            if post == n:
                mu = mu + sign * (net.rho(pre, s[pre]) @ p[w].T)
        s[n] = mu * np.ones((next(iter(x.values())).shape[0], net.sizes[n]))
        todo.remove(n)
    return s


# ---------------------------------------------------------------- dynamics --
def cost_force(kind, out, y):
    if kind == "squared":
        return out - y
    z = np.exp(out - out.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True) * y.sum(-1, keepdims=True) - y


FORCES = {"hopfield": hopfield_force, "predictive": predictive_force}
ENERGIES = {"hopfield": hopfield_energy, "predictive": predictive_energy}


def euler(net, p, x, s0, dt, steps, energy, beta=0.0, y=None, out=None, cost="squared", record=False):
    """Euler steps of the (nudged) gradient flow; returns the final free state or every state."""
    s = {**{k: np.asarray(v, float) for k, v in x.items()}, **{k: np.array(v, float) for k, v in s0.items()}}
    traj = [{n: s[n].copy() for n in net.free}]
    for _ in range(steps):
        f = FORCES[energy](net, p, s)
        if beta:
            f[out] = f[out] + beta * cost_force(cost, s[out], y)
        s = {**s, **{n: s[n] - dt * f[n] for n in net.free}}
        if record:
            traj.append({n: s[n].copy() for n in net.free})
    return traj if record else {n: s[n] for n in net.free}


def prototypical(net, p, x, r0, dt, steps, beta=0.0, y=None, out=None, cost="squared"):
    """Rate iteration of a hopfield circuit: free states are rates, clamped ones pass through ρ."""
    r = {**{k: net.rho(k, np.asarray(v, float)) for k, v in x.items()}, **{k: np.array(v, float) for k, v in r0.items()}}
    for _ in range(steps):
        new = {}
        for n in net.free:
            u = _rate_input(net, p, r, n)
            if beta and n == out:
                u = u - beta * cost_force(cost, r[n], y)
            new[n] = (1 - dt) * r[n] + dt * net.rho(n, u)
        r.update(new)
    return {n: r[n] for n in net.free}


def _rate_input(net, p, r, n):
    total = np.zeros_like(r[n])
    for a, b, w in net.undirected:
        if a == n:
            total = total + r[b] @ p[w].T
        if b == n:
            total = total + r[a] @ p[w]
    if n in net.biased:
        total = total + p[f"{n}.bias"]
    return total


def rate_residual(net, p, x, r):
    """max |r − ρ(Σ W r + b)| over the free populations (0 at a prototypical fixed point)."""
    full = {**{k: net.rho(k, np.asarray(v, float)) for k, v in x.items()}, **r}
    return max(float(np.max(np.abs(r[n] - net.rho(n, _rate_input(net, p, full, n))))) for n in net.free)


# ------------------------------------------------------- couplings through operators --
@dataclasses.dataclass
class OpNet:
    """A hopfield circuit whose couplings go through operators (convolutions, pooling).

    `couplings` holds (a, b, W, fwd, vjp): the term −⟨ρ(s_a), fwd(p[W], ρ(s_b))⟩, with
    `vjp(w, v, ct) -> (∂⟨ct, fwd(w, v)⟩/∂v, ∂/∂w)`; the operators' own NumPy versions
    are passed in by the tests (`ops/*.py`: `numpy`, `numpy_vjp`), so this file still
    imports nothing from circuitlang. States are arrays (batch, *shape) in the compiled
    layout (channels last); a bias is added along the last axis (one per channel).
    """

    shapes: dict
    inputs: tuple
    act: dict
    couplings: list
    biased: tuple = ()

    @property
    def free(self):
        return tuple(n for n in self.shapes if n not in self.inputs)

    def rho(self, n, v):
        return ACT[self.act[n]][0](v)

    def drho(self, n, v):
        return ACT[self.act[n]][1](v)


def op_input(net, p, r, n):
    """Σ fwd(ρ(b)) + Σ vjp(ρ(b), ρ(a)) + b_n: what population n receives, from rates `r`."""
    total = np.zeros_like(r[n])
    for a, b, w, fwd, vjp in net.couplings:
        if a == n:
            total = total + fwd(p[w], r[b])
        if b == n:
            total = total + vjp(p[w], r[b], r[a])[0]
    if n in net.biased:
        total = total + p[f"{n}.bias"]
    return total


def op_energy(net, p, s):
    """Per-example hopfield energies, shape (batch,)."""
    r = {n: net.rho(n, v) for n, v in s.items()}
    axes = lambda v: tuple(range(1, v.ndim))  # noqa: E731
    E = sum(0.5 * np.sum(s[n] ** 2, axes(s[n])) for n in net.free)
    for a, b, w, fwd, vjp in net.couplings:
        E = E - np.sum(r[a] * fwd(p[w], r[b]), axes(r[a]))
    for n in net.biased:
        E = E - np.sum(r[n] * p[f"{n}.bias"], axes(r[n]))
    return E


def op_euler(net, p, x, s0, dt, steps, beta=0.0, y=None, out=None):
    """Euler steps of the (nudged) gradient flow on the operator energy."""
    s = {**{k: np.asarray(v, float) for k, v in x.items()}, **{k: np.array(v, float) for k, v in s0.items()}}
    for _ in range(steps):
        r = {n: net.rho(n, v) for n, v in s.items()}
        f = {n: s[n] - net.drho(n, s[n]) * op_input(net, p, r, n) for n in net.free}
        if beta:
            f[out] = f[out] + beta * cost_force("squared", s[out], y)
        s = {**s, **{n: s[n] - dt * f[n] for n in net.free}}
    return {n: s[n] for n in net.free}


def op_prototypical(net, p, x, r0, steps, beta=0.0, y=None, out=None):
    """r ← ρ(∂Φ/∂r − β ∂C/∂r) with dt = 1 (Laborieux et al. 2021's P_CNN update)."""
    r = {**{k: net.rho(k, np.asarray(v, float)) for k, v in x.items()}, **{k: np.array(v, float) for k, v in r0.items()}}
    for _ in range(steps):
        new = {}
        for n in net.free:
            u = op_input(net, p, r, n)
            if beta and n == out:
                u = u - beta * cost_force("squared", r[n], y)
            new[n] = net.rho(n, u)
        r.update(new)
    return {n: r[n] for n in net.free}


def op_weight_gradient(net, p, r):
    """∂E/∂θ summed over the batch at rates `r` (E = −Φ in the rate form)."""
    g = {}
    for a, b, w, fwd, vjp in net.couplings:
        g[w] = g.get(w, 0.0) - vjp(p[w], r[b], r[a])[1]
    for n in net.biased:
        g[f"{n}.bias"] = -np.sum(r[n], axis=tuple(range(r[n].ndim - 1)))
    return g
