"""Local learning rules (`learn rules`): per-synapse equations lowered through the operators.

    during nudge: dW2/dt = eta * post.apical * rho'(post.s) * rho(pre.s)

A rule is written per synapse (post index i, pre index j). The checker has
factored it (`factor.py`) into a **sum of terms**, each a product of a scalar,
a post-side factor P, a pre-side factor Q and optionally the weight itself.
Each group of terms sharing its pre-side factor is lowered through the
connection's operator as one VJP, ∂/∂W ⟨P, stages(W, Q)⟩ summed over the
batch (`Wiring.weight_update`): for a dense weight that is the batched outer
product Pᵀ Q (one `dot_general`); for a convolution kernel the correlation of
P with Q summed over positions — the sum over every synapse sharing a kernel
entry; for a one-to-one weight Σ P ⊙ Q. Nothing of size batch × post × pre is
ever built. (Through max-pooling, P reaches the synapses through the pool's
derivative at the current weight and pre-side factor.)

**Integration.** Over a step from state s_t to s_(t+1), every single-sided
factor is averaged between both ends (the trapezoid rule per factor), and
``d(X)/dt`` is the finite difference (X(s_(t+1)) − X(s_t)) / dt, expanded by
terms. With this pairing the STDP-like rule ``d(ρ(post.s))/dt · ρ(pre.s)``
applied to both ends of an undirected coupling telescopes exactly: summed
over a phase it equals ΔW = ρ(a_T)ρ(b_T)ᵀ − ρ(a_0)ρ(b_0)ᵀ, the one-sided
EqProp update times β (Bengio et al. 2017) — for any linear operator, since
the update is bilinear in P and Q.

Updates: in an ordinary phase a rule's update is accumulated (the weights
stay fixed during the phases) and `estimate(..., method="rules")` returns
minus the total, as a gradient estimate for the optimizer (default: SGD with
rate 1, so the rule's own constants set the step). In a streaming phase
(`present N`) the weights change at every step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from . import syntax as S
from .factor import POST, PRE, SCALAR, SYN, Atom, CompiledRule, Orientation, Term, factor_rule
from .graph import PhaseSpec, rule_target
from .lower.noise import add, increments
from .lower.relax import OK, _speed
from .lower.wiring import weights_of

__all__ = ["RuleProgram"]

Array = Any


class RuleProgram:
    """Every rule of the file, factored; `run` executes a phase while integrating them."""

    def __init__(self, model) -> None:
        self.model = model
        self.fns = model.fns
        self.source = model.circuit.source
        spec = model.spec
        self.weights = model.circuit.weights
        # the checker has factored every rule already (`factor.rule_problems`): this cannot fail
        self.rules: list[CompiledRule] = [
            factor_rule(rule, target, self.fns.pops, self.weights)
            for rule in spec.learning.rules for target in rule.weights
        ]
        self.targets = tuple(dict.fromkeys(self.param(r.target) for r in self.rules))

    def param(self, target: str) -> str:
        """The parameter a rule's target updates: its own, or, for a plain tie `V2 = V`
        (the same weight evaluated on other populations), the weight it is tied to."""
        return rule_target(self.weights, target)

    def wanted(self, phase: str) -> set[tuple[str, str]]:
        """The (population, member) values the rules active in `phase` read."""
        want: set[tuple[str, str]] = set()
        for r in self.rules:
            if not r.active(phase):
                continue
            for o in r.orientations:
                for term in o.terms:
                    for a in term.atoms:
                        for node in S.walk(a.expr):
                            if isinstance(node, S.Member):
                                obj = {"post": o.post, "pre": o.pre}.get(node.obj.name, node.obj.name)
                                want.add((obj, node.attr.name))
        return want

    # ----------------------------------------------------------- evaluate --
    def update(self, phase: PhaseSpec, params, obs_now, obs_next, beta, t) -> dict[str, Array]:
        """Each target's update rate (dθ/dt) over one step, batch-averaged."""
        w = weights_of(self.fns.edges, params)
        batch = next(iter(obs_now["state"].values())).shape[0]
        out: dict[str, Array] = {}
        for r in self.rules:
            if not r.active(phase.name):
                continue
            total = None
            for o in r.orientations:
                envs = {
                    point: _env(self.model, o, obs, w, r, phase, beta, t + (phase.dt if point == "next" else 0.0))
                    for point, obs in (("now", obs_now), ("next", obs_next))
                }
                m = self._terms(o, r, envs, params, batch)
                total = m if total is None else total + m
            k = self.param(r.target)
            out[k] = out[k] + total if k in out else total
        return out

    def _terms(self, o: Orientation, r: CompiledRule, envs, params, B: int):
        """Δθ of one orientation, batch-averaged: per group of terms sharing their
        pre-side factor Q, the summed post-side factor P, lowered through the
        connection's operator as ∂/∂W ⟨P, stages(W, Q)⟩ (`Wiring.weight_update`): for
        a dense weight the (B, post)ᵀ (B, pre) product, for a kernel a correlation."""
        ev = self.model.ev
        W = self.fns.wiring
        shapes = self.fns.shapes

        def value(a: Atom):
            if a.point == "avg":
                return 0.5 * (ev.eval(a.expr, envs["now"]) + ev.eval(a.expr, envs["next"]))
            return ev.eval(a.expr, envs[a.point])

        groups: dict[tuple, list[Term]] = {}
        for term in o.terms:
            key = tuple(a for a in term.atoms if a.side in (PRE, SYN))
            groups.setdefault(key, []).append(term)
        total = 0.0
        for key, terms in groups.items():
            P = None
            for term in terms:
                p = term.coef
                for a in term.atoms:
                    if a.side in (POST, SCALAR):
                        p = p * value(a)
                p = jnp.broadcast_to(p, (B, *shapes[o.post]))
                P = p if P is None else P + p
            Q = 1.0
            for a in key:
                if a.side == PRE:
                    Q = Q * value(a)
            if r.kind == "bias":
                m = W.bias_update(r.target[: -len(".bias")], params, P * Q) / B
            else:
                e = self.weights[r.target]
                Q = jnp.broadcast_to(Q, (B, *shapes[o.pre]))
                # P lives where the chain ends, Q where it starts; the reverse orientation of
                # an undirected coupling swaps them
                m = (W.weight_update(e, params, Q, P) if o.transpose else W.weight_update(e, params, P, Q)) / B
            for a in key:
                if a.side == SYN:
                    m = m * value(a)
            total = total + m
        return jnp.broadcast_to(total, params[self.param(r.target)].shape)

    # ---------------------------------------------------------------- run --
    def run(self, phase: PhaseSpec, params, x, s0, beta=None, y=None, stream: bool = False,
            opt=None, opt_state=None, key=None):
        """One phase of `phase.steps` Euler steps, integrating the active rules (with noise:
        Euler–Maruyama steps, the noise of `key`, `lower/noise.py`; a rule's `d(X)/dt` then
        sees the noise too).

        Returns (Relaxation, total update {target: Δθ}). With `stream`, the weights
        change at every step instead: the step's update, as the gradient estimate
        −dt · rule, goes through the optax transformation `opt` (default: adding it
        as is), and the result is (Relaxation, params, opt_state).
        """
        model = self.model
        fns = self.fns
        dt = phase.dt
        want = self.wanted(phase.name)
        active = [r for r in self.rules if r.active(phase.name)]
        steps = phase.steps if phase.steps is not None else phase.present
        nudge = beta is not None
        b = beta if nudge else 0.0

        def observe(s, p, t):
            return _observe(model, s, p, x, beta if nudge else None, y, t, want, phase)

        zero = {self.param(r.target): jnp.zeros_like(params[self.param(r.target)]) for r in active}
        noise = increments(model.relaxer.amplitudes, phase, key, s0) or (lambda i: None)

        def body(i, carry):
            s, obs, acc, p, st = carry
            t = i * dt
            new = fns.project(add({k: s[k] + dt * obs["force"][k] for k in s}, noise(i)))
            obs_new = observe(new, p, t + dt)
            upd = self.update(phase, p, obs, obs_new, b, t)
            if stream and opt is None:
                p = {k: (p[k] + dt * upd[k] if k in upd and model.trainable[k] else p[k]) for k in p}
            elif stream:
                g = {k: (-dt * upd[k] if k in upd and model.trainable[k] else jnp.zeros_like(v)) for k, v in p.items()}
                change, st = opt.update(g, st, p)
                p = {k: p[k] + change[k] for k in p}
            else:
                acc = {k: acc[k] + dt * upd[k] for k in acc}
            return new, obs_new, acc, p, st

        start = dict(s0)
        carry = (start, observe(start, params, 0.0), zero, params, opt_state if opt is not None else ())
        _, last, acc, p, opt_state = lax.fori_loop(0, steps, body, carry)
        # what the circuit shows (s, or ŭ with `prospective`), with its residual
        residual = None
        if not model.relaxer.prospective:  # ŭ is exact; otherwise the speed at the last state
            end = {k: last["state"][k] for k in last["force"]}
            moved = fns.project({k: end[k] + dt * last["force"][k] for k in end})
            residual = _speed(moved, end, dt)
        res = model.relaxer._finish(last["state"], x, jnp.asarray(steps), jnp.asarray(OK), residual)
        return (res, p, opt_state) if stream else (res, acc)


# ------------------------------------------------------------ observations --
def _observe(model, s, params, x, beta, y, t, want, phase=None) -> dict[str, Any]:
    """At state `s`, time `t` of `phase`: {"force": ds/dt, "values": {"pop.member": value} for
    the members in `want`, "state": what the circuit shows (s, or ŭ with `prospective`)}.
    Rates are what the populations transmit, perturbed as the force saw them."""
    fns = model.fns
    vals: dict[str, Any] = {}
    if model.relaxer.prospective:
        # latent equilibrium: the circuit shows (and its rules read) the prospective
        # state ŭ; the slow membrane state s only follows it
        u, mu = model.relaxer.prospective_state(params, x, s, beta, y, with_forward=True)
        force = {n: (u[n] - s[n]) / fns.pops[n].tau for n in s}
        for pop, member in want:
            if member == "error" and pop in u:  # the prospective error: ŭ − its feed-forward prediction
                vals[f"{pop}.error"] = u[pop] - mu[pop]
        s = u
    elif getattr(fns, "vector_field", False):
        if hasattr(fns, "compartments"):
            force, comps = fns.force(s, params, x, None, beta, y, t=t, phase=phase, observe=True)
            for n, d in comps.items():
                for c, v in d.items():
                    vals[f"{n}.{c}"] = v
        else:
            force = fns.force(s, params, x, None, beta, y, t=t, phase=phase)
    else:
        def total(u):
            E = fns.energy(u, params, x, None)
            if beta is not None:
                E = E + beta * fns.cost(u, y)
            return E

        g = jax.grad(total)(dict(s))
        force = {k: -v for k, v in g.items()}
    full = {**x, **s}
    rates = {}
    if any(m == "rate" for _, m in want):
        rates = {n: fns.act[n](v) for n, v in full.items() if n in fns.pops}
        if getattr(fns, "perturb", None) and phase is not None:
            rates = fns.perturb.rates(rates, phase, fns.perturb.step_of(t, phase))
    need_mu = any(m == "error" for _, m in want)
    mu = _net_input(model, full, params, x) if need_mu else {}
    for pop, member in want:
        key = f"{pop}.{member}"
        if key in vals:
            continue
        if member == "target":
            vals[key] = y[pop] if isinstance(y, Mapping) else (y if y is not None else jnp.zeros_like(full[pop]))
        elif member == "error":
            vals[key] = full[pop] - mu[pop] if pop in mu else full[pop]
        elif member == "rate":  # what the population transmits: its own activation of its state
            vals[key] = rates[pop]
        elif pop in full and member == fns_main(fns, pop):
            vals[key] = full[pop]
        else:  # a cell's other state variable (compartments came with the force)
            vals[key] = full[key]
    return {"force": force, "values": vals, "state": dict(s)}


def fns_main(fns, pop: str) -> str:
    main = getattr(fns, "main", {})
    return main.get(pop, "s")


def _net_input(model, full, params, x) -> dict[str, Array]:
    """μ per population: Σ ± P(W ⋆ ρ(pre)) over its inputs plus its bias (both ways for `--`)."""
    fns = model.fns
    W = fns.wiring
    r = {n: fns.act[n](v) for n, v in full.items() if n in fns.pops}
    out: dict[str, Array] = {}

    def add(n, v):
        out[n] = out[n] + v if n in out else v

    for e in fns.edges:
        add(e.post, W.drive(e, params, r))
        if e.kind == "undirected":  # its term sends ∂/∂ρ(b) ⟨ρ(a), P(W ⋆ ρ(b))⟩ to the other end
            add(e.pre, W.back(e, params, r, r[e.post]))
    for n in fns.biased:
        add(n, W.bias(n, params))
    return out


def _env(model, o: Orientation, obs, w, rule: CompiledRule, phase: PhaseSpec, beta, t) -> dict[str, Any]:
    env: dict[str, Any] = {"beta": beta, "dt": phase.dt, "t": t}
    for key, v in obs["values"].items():
        pop, member = key.split(".", 1)
        env[f"{pop}.{member}"] = v
        if pop == o.post:
            env[f"post.{member}"] = v
        if pop == o.pre:
            env[f"pre.{member}"] = v
    for name, value in w.items():  # synaptic factors multiply the update in the weight's own layout
        env[name] = value
    if rule.placeholder:
        env[rule.placeholder] = env[rule.target] if rule.target in env else None
    return env
