"""The registry: every primitive of the language, defined once.

Checking (`check/`), lowering (`lower/`) and drawing (`diagram.py`) all read
these tables; adding a function, an energy preset, a cost, an estimator, an
optimizer, an integrator or a phase setting is one entry here (and the code
that gives it meaning, which the entry names). Connection operators have
their own table, `ops.OPS`. Every list of names shown to users is derived
from these tables, and an unknown name is an error, never a default.

Element-wise functions carry an `impl(xp, *args)` that works for both NumPy
and `jax.numpy` (pass the module as `xp`), so the NumPy reference simulator
and the compiled JAX code share one definition.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

__all__ = [
    "Function",
    "FUNCTIONS",
    "Setting",
    "ENERGIES",
    "DYNAMICS",
    "COSTS",
    "LEARN_METHODS",
    "ESTIMATORS",
    "INTEGRATORS",
    "LOWERINGS",
    "Kind",
    "OPTIMIZERS",
    "INITS",
    "PHASE_SETTINGS",
    "LEARN_SETTINGS",
    "POPULATION_OPTIONS",
    "CONNECTION_OPTIONS",
    "CONNECTION_KINDS",
    "ROLES",
    "RULE_NAMES",
    "DEFAULT_COMPARTMENT",
    "NUDGE_COMPARTMENT",
    "PERTURBATIONS",
    "PERTURB_OPTIONS",
    "PERTURB_LOWERINGS",
]


def _frozen(d: dict) -> Mapping:
    return MappingProxyType(d)


# --------------------------------------------------------------- functions --
@dataclasses.dataclass(frozen=True)
class Function:
    """A built-in function usable in every expression.

    `arity` is the number of arguments (a tuple for several allowed counts);
    `elementwise` functions may be differentiated with `f'`; `reduction`s turn
    a vector into a scalar (energy terms).
    """

    name: str
    arity: tuple[int, ...]
    doc: str
    impl: Callable[..., Any] | str
    elementwise: bool = True
    reduction: bool = False
    noise: bool = False  # white noise: only added to a cell type's equation (`check/noise.py`)

    def impl_fn(self) -> Callable[..., Any]:
        """`impl`, imported first when it is written ``"module:attribute"``."""
        if isinstance(self.impl, str):
            import importlib

            module, _, attr = self.impl.partition(":")
            return getattr(importlib.import_module(module), attr)
        return self.impl


def _clip(xp, x, lo, hi):
    """clip(x, lo, hi); in JAX its derivative is 1 on the closed interval [lo, hi].

    (A plain min/max gives 1/2 exactly at the edges, where projected dynamics
    hold states; with 1/2 there a unit at a bound chatters instead of resting.)
    """
    if xp.__name__.startswith("jax"):
        return _jax_clip()(x, lo, hi)
    return xp.clip(x, lo, hi)


_JAX_CLIP = None


def _jax_clip():
    global _JAX_CLIP
    if _JAX_CLIP is None:
        import jax
        import jax.numpy as jnp

        @jax.custom_jvp
        def clip(x, lo, hi):
            return jnp.clip(x, lo, hi)

        @clip.defjvp
        def _(primals, tangents):
            x, lo, hi = primals
            tx = tangents[0]
            inside = (x >= lo) & (x <= hi)
            return jnp.clip(x, lo, hi), jnp.where(inside, tx, jnp.zeros_like(tx))

        _JAX_CLIP = clip
    return _JAX_CLIP


def _sigmoid(xp, x):
    return 0.5 * (xp.tanh(0.5 * x) + 1.0)  # stable for large |x|, same in NumPy and JAX


def _softplus(xp, x):
    return xp.logaddexp(x, 0.0)


_FUNCTION_LIST = [
    Function("identity", (1,), "x", lambda xp, x: x),
    Function("tanh", (1,), "hyperbolic tangent", lambda xp, x: xp.tanh(x)),
    Function("sigmoid", (1,), "logistic 1/(1+exp(-x))", _sigmoid),
    Function("hard_sigmoid", (1,), "clip(x, 0, 1)", lambda xp, x: _clip(xp, x, 0.0, 1.0)),
    Function("relu", (1,), "max(x, 0)", lambda xp, x: xp.maximum(x, 0.0)),
    Function("softplus", (1,), "log(1 + exp(x))", _softplus),
    Function("clip", (3,), "clip(x, lo, hi): x limited to [lo, hi]", _clip),
    Function("exp", (1,), "exponential", lambda xp, x: xp.exp(x)),
    Function("log", (1,), "natural logarithm", lambda xp, x: xp.log(x)),
    Function("sqrt", (1,), "square root", lambda xp, x: xp.sqrt(x)),
    Function("abs", (1,), "absolute value", lambda xp, x: xp.abs(x)),
    Function("sign", (1,), "-1, 0 or 1", lambda xp, x: xp.sign(x)),
    Function("sin", (1,), "sine", lambda xp, x: xp.sin(x)),
    Function("cos", (1,), "cosine", lambda xp, x: xp.cos(x)),
    Function("min", (2,), "element-wise minimum", lambda xp, a, b: xp.minimum(a, b)),
    Function("max", (2,), "element-wise maximum", lambda xp, a, b: xp.maximum(a, b)),
    Function("where", (3,), "where(c, a, b): a where c is true, else b", lambda xp, c, a, b: xp.where(c, a, b)),
    Function("sum", (1,), "sum over neurons (a scalar)", lambda xp, x: xp.sum(x, axis=-1), False, True),
    Function("mean", (1,), "mean over neurons (a scalar)", lambda xp, x: xp.mean(x, axis=-1), False, True),
    Function(
        "transpose", (1,), "the transpose of a weight matrix",
        lambda xp, w: xp.swapaxes(w, -1, -2), False,
    ),
    # white noise has no drift: an equation evaluates to its drift with white() = 0, and the
    # relaxation adds the noise's increment sigma sqrt(dt) N(0, 1) itself (`lower/noise.py`)
    Function(
        "white", (0,), "white(): unit Gaussian white noise xi(t), <xi(t) xi(t')> = delta(t - t'); only added "
        "to a cell type's equation, `+ sigma * white()`, which is the SDE term sigma dW (Euler-Maruyama: "
        "an increment sigma sqrt(dt) N(0, 1) per step)",
        lambda xp: 0.0, False, noise=True,
    ),
]
FUNCTIONS: Mapping[str, Function] = _frozen({f.name: f for f in _FUNCTION_LIST})


# ---------------------------------------------------------------- settings --
INT32 = 2**31 - 1  # the largest step, batch or epoch count the compiled program can count to


@dataclasses.dataclass(frozen=True)
class Setting:
    """One `key value` setting of a phase, a learn block or an optimizer.

    kind:
      * ``flag``: no value (`forward`)
      * ``int`` / ``number``: a constant expression; `minimum` and
        `exclusive` bound it from below, `maximum` from above
      * ``choice``: one of `choices`, written as a bare name; with `registry`,
        the names of that table of this module (read when checked, so a new
        entry is a new choice)
      * ``name``: a bare name of the file's choosing (`pathway=feedback`)
      * ``per_weight``: a number, and/or `W1=0.1, h.bias=0.2` overrides
    """

    name: str
    kind: str
    doc: str
    minimum: float | None = None
    exclusive: bool = False
    maximum: float | None = None  # inclusive; with `why`, said in the error
    why: str = ""
    fixed_choices: tuple[str, ...] = ()
    options: tuple[str, ...] = ()  # allowed `k=v` after the value
    registry: str = ""

    @property
    def choices(self) -> tuple[str, ...]:
        if self.registry:
            return tuple(globals()[self.registry])
        return self.fixed_choices


def _settings(*items: Setting) -> Mapping[str, Setting]:
    return _frozen({s.name: s for s in items})


# ------------------------------------------------------------------ kinds --
@dataclasses.dataclass(frozen=True)
class Kind:
    """A named choice (energy preset, cost, estimator, optimizer, ...): its meaning,
    what it needs, and where its implementation is.

    `impl` is ``"module:attribute"``, imported on first use by `load()`, so the
    checker (which reads names, docs and needs) never imports JAX. `needs`
    lists the conditions `check` verifies before anything is lowered (see
    `check/learning.py` for estimators and integrators).
    """

    name: str
    doc: str
    paper: str = ""
    needs: tuple[str, ...] = ()
    impl: str = ""
    provides: tuple[str, ...] = ()  # what it offers: the couplings an energy gives meaning to, ...
    settings: Mapping[str, "Setting"] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    # costs only: ``"module:attribute"`` of `nudged(v, target, beta)`, the exact nudged output
    # u = v - beta dC/du(u) that `prospective` (latent equilibrium) needs; "" if it has none
    nudged: str = ""

    def load(self, which: str = "impl") -> Any:
        """The implementation (a function, a class or an object); `which="nudged"`: that one."""
        import importlib

        module, _, attr = getattr(self, which).partition(":")
        return getattr(importlib.import_module(module), attr)


def _kinds(*items: Kind) -> Mapping[str, Kind]:
    return _frozen({k.name: k for k in items})


# provides: the couplings an energy gives meaning to; `rate_form` (E = 1/2|s|^2 + E(rho(s)));
# `rates_only_sent` (E reads a population's rho(s) only where the population drives another,
# so an output's own `rho=` changes nothing: `check` says so)
ENERGIES = _kinds(
    Kind("hopfield",
         "E = sum_n 1/2|s_n|^2 - sum_(a--b) <rho(s_a), P(W * rho(s_b))> - sum_n b_n^T rho(s_n)",
         "Scellier & Bengio 2017; Laborieux et al. 2021 (convolutions)",
         impl="circuitlang.lower.energy:HOPFIELD", provides=("undirected", "rate_form", "layer_minimum")),
    Kind("predictive", "E = sum_n 1/2|s_n - mu_n|^2, mu_n = sum_(a->n) P(W * rho(s_a)) + b_n",
         "Whittington & Bogacz 2017", impl="circuitlang.lower.energy:PREDICTIVE",
         provides=("directed", "one_to_one", "rates_only_sent")),
)

# How the states evolve: the gradient flow of an energy, a named vector field, or the
# cell types' own equations. Only the `DYNAMICS` names are written in files (`dynamics leaky`).
DYNAMICS = _kinds(
    Kind("leaky", "tau ds/dt = -s + sum_in P(W * rho(pre)) + b - beta dC/ds", "Scellier et al. 2018",
         impl="circuitlang.lower.vectorfield:VectorFieldFunctions", provides=("directed", "one_to_one")),
)
LOWERINGS = _kinds(
    Kind("energy", "ds/dt = -dE/ds - beta dC/ds (gradient flow)", impl="circuitlang.lower.energy:EnergyFunctions"),
    *DYNAMICS.values(),
    Kind("cells", "the cell types' own ODEs; compartments sum their connections",
         impl="circuitlang.lower.cells:CellFunctions"),
)

# provides: `closed_form` (C = 1/2 |s|^2 + linear in s: a nudged layer's minimum stays closed
# form, which the async integrator needs)
COSTS = _kinds(
    Kind("squared", "C = 1/2 |s - target|^2", impl="circuitlang.lower.energy:squared",
         nudged="circuitlang.lower.energy:squared_nudged", provides=("closed_form",)),
    Kind("cross_entropy", "C = -sum target log softmax(s) (softmax read-out)", "Laborieux et al. 2021",
         impl="circuitlang.lower.energy:cross_entropy", nudged="circuitlang.lower.energy:cross_entropy_nudged"),
)

LEARN_METHODS = _kinds(
    Kind("eqprop", "the compiler derives the update from the energy or the vector field"),
    Kind("rules", "local per-synapse rules written in the file"),
)

# needs: `nudge` a phase after the first with beta; `energy` an energy (not a vector
# field); `analytic` analytic activations and operators (complex beta, points > 2);
# `clamp` a phase after the first (the clamped one); `rules` local rules. provides:
# `negative_beta` (it also nudges with -beta).
ESTIMATORS = _kinds(
    Kind("one_sided", "-(1/beta)(dE/dtheta(s^beta) - dE/dtheta(s^0))", "Scellier & Bengio 2017",
         needs=("nudge",), impl="circuitlang.learning:one_sided"),
    Kind("random_sign", "one_sided with a random sign of beta per batch", "Scellier & Bengio 2017",
         needs=("nudge",), impl="circuitlang.learning:random_sign", provides=("negative_beta",)),
    Kind("symmetric", "-(1/2beta)(dE/dtheta(s^+beta) - dE/dtheta(s^-beta))", "Laborieux et al. 2021",
         needs=("nudge",), impl="circuitlang.learning:symmetric", provides=("negative_beta",)),
    Kind("holomorphic", "N complex beta on a circle (Cauchy integral)", "Laborieux & Zenke 2022",
         needs=("nudge", "energy", "analytic"), impl="circuitlang.learning:holomorphic",
         provides=("negative_beta",)),
    Kind("chl", "contrastive Hebbian learning: output clamped to the target", "Movellan 1991",
         needs=("clamp", "energy"), impl="circuitlang.learning:chl"),
    Kind("rules", "the file's local rules integrated over the phases", needs=("rules",),
         impl="circuitlang.learning:rules"),
    Kind("gradient", "the true gradient at the free fixed point (implicit differentiation)",
         impl="circuitlang.learning:gradient"),
    Kind("bptt", "autodiff through the unrolled free phase", impl="circuitlang.learning:bptt"),
)

# needs: `energy` (the step differentiates an energy), `rate_form` (the energy is
# 1/2|s|^2 + E(rho(s)), like hopfield, so states can be read as rates), `layered` (each free
# layer's minimum given the others is closed form: an energy providing `layer_minimum`, no
# custom terms or cell types, couplings between two colour classes of free populations;
# a nudged output with a `closed_form` cost and rho = identity on its bounds). provides:
# `trajectory` (Euler steps local rules integrate along), `states_are_rates` (the
# free states are rates: estimators then differentiate E without its 1/2|s|^2), `boxed_rates`
# (every step projects the states into their bounds, and the step takes `boxed`: populations
# whose rates it may read as their states, `Relaxer._boxed`), `noise` (a step of size dt takes
# the noise increment sigma sqrt(dt) N(0, 1): `lower/noise.py`)
INTEGRATORS = _kinds(
    Kind("euler", "s <- s - dt (dE/ds + beta dC/ds), or s <- s + dt ds/dt", "Scellier & Bengio 2017",
         impl="circuitlang.lower.relax:euler_step", provides=("trajectory", "boxed_rates", "noise")),
    Kind("prototypical", "s <- (1 - dt) s + dt rho(-dPhi/dr), states read as rates",
         "Ernoult et al. 2019; Laborieux et al. 2021", needs=("energy", "rate_form"),
         impl="circuitlang.lower.relax:prototypical_step", provides=("states_are_rates", "noise")),
    Kind("async", "even layers, then odd ones, jump to their closed-form minimum rho(-dPhi/dr) (block-coordinate)",
         "Scellier et al. 2023", needs=("energy", "rate_form", "layered"),
         impl="circuitlang.lower.relax:async_step", provides=("states_are_rates",)),
)

PHASE_SETTINGS = _settings(
    Setting("steps", "int", "number of integration steps", minimum=1, maximum=INT32,
            why="the step counter is a 32-bit integer"),
    Setting("dt", "number", "step size of the Euler integrator (prototypical, async: the damping, 1 = none)",
            minimum=0, exclusive=True),
    Setting("beta", "number", "nudging strength: the cost enters the dynamics as -beta dC/ds"),
    Setting("forward", "flag", "exact one-pass fixed point of a feed-forward (DAG) circuit"),
    Setting("present", "int", "streaming: steps each sample is shown before the next one", minimum=1,
            maximum=INT32, why="the step counter is a 32-bit integer"),
    Setting("tol", "number", "stop early once the residual max |s_t - s_(t-1)| / dt < tol (also: the threshold of `converged`)", minimum=0, exclusive=True),
    Setting("integrator", "choice", "how a step is taken", registry="INTEGRATORS"),
    Setting("clamp", "choice", "`output` clamps the output to the target (CHL's clamped phase)",
            fixed_choices=("output",)),
    Setting("noise", "number", "scale of every noise in this phase (`noise=` of populations, `white()` in "
            "equations): 1 as written, 0 turns it off", minimum=0),
)

LEARN_SETTINGS = _settings(
    Setting("estimator", "choice", "how the gradient is estimated", registry="ESTIMATORS", options=("points",)),
    Setting("batch", "int", "examples per update", minimum=1, maximum=INT32,
            why="array dimensions are 32-bit integers"),
    Setting("prospective", "flag", "rates look ahead: rho(s + tau ds/dt) (latent equilibrium)"),
    Setting("epochs", "int", "default number of epochs for `circuitc train`", minimum=1, maximum=INT32,
            why="the epoch counter is a 32-bit integer"),
    Setting("persistent", "flag", "persistent particles: each example's free phase starts where its last one "
            "ended (Scellier & Bengio 2017)"),
    Setting("health", "choice", "what `train` does when phases do not converge, the outputs collapse to one "
            "class or a population saturates: warn (once each), error (stop) or ignore",
            fixed_choices=("warn", "error", "ignore")),
)

_SCHEDULE = Setting("schedule", "choice", "learning-rate schedule", fixed_choices=("constant", "cosine"),
                    options=("warmup",))
_LR = Setting("lr", "per_weight", "learning rate (per weight: `lr W1=0.1, W2=0.05`)", minimum=0)

OPTIMIZERS = _kinds(
    Kind("sgd", "stochastic gradient descent, with momentum and L2 weight decay", impl="circuitlang.optim:sgd",
         settings=_settings(
             _LR,
             Setting("momentum", "number", "heavy-ball momentum", minimum=0),
             Setting("nesterov", "flag", "Nesterov momentum"),
             Setting("weight_decay", "number", "L2 weight decay, added to the gradient before momentum "
                     "(as PyTorch's SGD does)", minimum=0),
             _SCHEDULE,
         )),
    Kind("adam", "Adam (AdamW with weight_decay)", "Kingma & Ba 2015", impl="circuitlang.optim:adam",
         settings=_settings(
             _LR,
             Setting("b1", "number", "decay of the first moment", minimum=0),
             Setting("b2", "number", "decay of the second moment", minimum=0),
             Setting("eps", "number", "denominator offset", minimum=0),
             Setting("weight_decay", "number", "decoupled weight decay (AdamW)", minimum=0),
             _SCHEDULE,
         )),
)

# initialisers: `impl` is the function `lower/init.py` calls with (key, shape, dtype, fans, *args)
INITS = _frozen(
    {
        "glorot": Function("glorot", (0,), "Glorot/Xavier uniform (fan-in and fan-out of the operator)",
                           "circuitlang.lower.init:glorot", False),
        "he": Function("he", (0,), "He normal (fan-in of the operator)", "circuitlang.lower.init:he", False),
        "zeros": Function("zeros", (0,), "all zero", "circuitlang.lower.init:zeros", False),
        "normal": Function("normal", (1,), "normal(std)", "circuitlang.lower.init:normal", False),
        "uniform": Function("uniform", (1,), "uniform(a): U(-a, a)", "circuitlang.lower.init:uniform", False),
        "random": Function("random", (1,), "random(std): normal with this std", "circuitlang.lower.init:normal", False),
        "constant": Function("constant", (1,), "constant(c)", "circuitlang.lower.init:constant", False),
    }
)

ROLES = ("input", "hidden", "output")

# `kind` for a population option: flag, number, int, fn (names a function), ...
POPULATION_OPTIONS = _settings(
    Setting("input", "flag", "clamped to the data"),
    Setting("hidden", "flag", "free (the default)"),
    Setting("output", "flag", "where the cost nudges"),
    Setting("rho", "fn", "the population's activation (default: `rho` if defined, else identity)"),
    Setting("tau", "number", "time constant of the population's default dynamics", minimum=0, exclusive=True),
    Setting("min", "number", "lower bound of the state: the dynamics are projected onto [min, max], "
            "as Scellier & Bengio 2017 keep s in [0, 1]"),
    Setting("max", "number", "upper bound of the state (see `min`)"),
    Setting("noise", "number", "additive Gaussian noise: sigma dW added to the state's update in every phase "
            "(Euler-Maruyama: s <- s + dt f(s) + sigma sqrt(dt) N(0, 1))", minimum=0),
)

CONNECTION_OPTIONS = _settings(
    Setting("init", "init", "initial values: glorot, he, zeros, normal(std), uniform(a), random(std), constant(c)"),
    Setting("fixed", "flag", "never learned (e.g. random feedback for feedback alignment)"),
    Setting("inhibitory", "flag", "the drive is subtracted"),
    Setting("gain", "number", "scale of a one-to-one connection"),
    Setting("pathway", "name", "the path the connection belongs to, a name of the file's choosing "
            "(e.g. `pathway=feedback`): the diagram draws each pathway in a colour of its own, with a legend entry"),
)

CONNECTION_KINDS = _frozen({"--": "undirected", "->": "directed", "=>": "one_to_one"})

# names a rule or a neuron ODE may use without declaring them
RULE_NAMES = ("pre", "post", "beta", "dt", "t")
DEFAULT_COMPARTMENT = "soma"
# where a cell-type output receives the nudge -beta dC/ds, when its cell has this compartment
# (`lower/cells.py`; the diagram draws the nudge into it)
NUDGE_COMPARTMENT = "apical"


# --------------------------------------------------------------- perturbations --
# `perturb NAME : pop[.compartment] KIND [VALUE] during PHASE[a:b]`: what an experiment does
# to a population or one of its compartments (`lower/perturb.py` gives each its meaning; the
# diagram draws it). needs: `value` (KIND is followed by a number). `doc` says what it does to
# a compartment, then to a population.
PERTURBATIONS = _kinds(
    Kind("add", "a current: VALUE is added to the compartment's summed drive; on a population, to the "
         "right-hand side of its main ODE (tau ds/dt = ... + VALUE)", needs=("value",),
         impl="circuitlang.lower.perturb:ADD"),
    Kind("gain", "the compartment's drive is multiplied by VALUE; on a population, the rate it transmits "
         "(VALUE * rho(s))", needs=("value",), impl="circuitlang.lower.perturb:GAIN"),
    Kind("silence", "the compartment's drive is 0; a population is held at rest (s = 0) and transmits "
         "nothing (rate 0)", impl="circuitlang.lower.perturb:SILENCE"),
    Kind("clamp", "the compartment's value is held at VALUE; a population's state is held at VALUE "
         "(it transmits rho(VALUE))", needs=("value",), impl="circuitlang.lower.perturb:CLAMP"),
)

PERTURB_OPTIONS = _settings(
    Setting("fraction", "number", "the fraction of the population's cells perturbed, round(fraction * N) "
            "of them (at least one), chosen at random with `seed`", minimum=0, exclusive=True, maximum=1),
    Setting("seed", "int", "the seed of the random choice of cells (`fraction`)", minimum=0, maximum=2**32 - 1,
            why="seeds are 32-bit"),
    Setting("enabled", "flag", "on in every run, `train` included; without it the perturbation is off "
            "unless selected (`circuitc experiment --perturb NAME`, `--set perturb.NAME=on`)"),
)

# the lowerings whose step a perturbation can enter: a vector field's or a cell's force
# (an energy circuit's states follow -dE/ds, which no perturbation term is defined on)
PERTURB_LOWERINGS = ("leaky", "cells")
