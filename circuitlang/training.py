"""Training: `cl.train(model, data, epochs)` and what `circuitc train` writes.

An epoch is one jitted `lax.scan` over shuffled mini-batches of
device-resident data (the last `N mod batch` examples of each permutation
are dropped, so shapes are fixed); the test split is evaluated after each
epoch. With `out=DIR`, each epoch atomically rewrites

* ``params.npz``      the parameters (plain arrays; `np.load(allow_pickle=False)`)
* ``checkpoint.npz``  params + optimizer state + epoch, for `resume`
* ``metrics.csv`` / ``metrics.json``  one row per epoch
* ``curves.png``      the learning curves (redrawn at most every 10 s, and at the end)
* ``run.json``        file hash, resolved settings, versions, seed

(the checkpoint also carries the metrics history), so killing the process
at any moment loses at most the current epoch, and
`resume=True` continues bit-for-bit (the key of epoch e is
`fold_in(key(seed), e)`, whatever happened before).

`devices=N` shards each batch over a 1-D `jax.sharding.Mesh` (data
parallel; parameters replicated) — the same program scales to many GPUs.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import hashlib
import io
import json
import math
import platform
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from . import __version__, blocking, health, learning, resources
from .layout import describe
from .errors import CircuitError
from .model import Model
from .optim import default_rate, make_optimizer, nonzero, rates
from .rundir import atomic_write as _atomic_write
from .rundir import claim

__all__ = ["TrainResult", "train", "evaluate", "save_params", "load_params"]


@dataclasses.dataclass
class TrainResult:
    """Trained parameters and one metrics dict per epoch."""

    params: dict[str, Any]
    history: list[dict[str, float]]
    out: Path | None = None


# --------------------------------------------------------------------- files --
def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def save_params(params: dict[str, Any], path: str | Path) -> None:
    """Write parameters as a plain `.npz`, atomically."""
    _atomic_write(Path(path), _npz_bytes({k: np.asarray(v) for k, v in params.items()}))


def load_params(path: str | Path, model: Model | None = None, dtype: Any = None, *,
                allow_extra: bool = False) -> dict[str, Any]:
    """Read parameters written by `save_params`, checking everything before trusting it.

    The zip and each member's header are checked before any data is read (see
    `npzfile.py`; nothing is ever unpickled). With `model`, the file must hold
    exactly its parameters (`model.shapes`): a missing one, a wrong shape or,
    unless `allow_extra`, one the circuit does not have is an error.

    Every parameter must be a finite real floating-point array. Floats of another
    precision are converted to `dtype` (default: JAX's default float, float32 unless
    x64 is on), because a run's precision is a choice of the run, not of the file:
    parameters trained or saved in float64 are the same parameters in a float32
    `evaluate` (and float32 ones in `verify`'s float64); a value that does not fit the new precision (overflows to inf) is an
    error. Integer, boolean, complex, string and object arrays are refused, not
    converted: circuitc never writes them, and converting would hide a wrong file.

    Raises:
        CircuitError: naming the file and what is wrong with it.
    """
    from .npzfile import NpzReader

    dtype = np.dtype(dtype or jnp.zeros(()).dtype)
    with NpzReader(path, "parameter file") as npz:
        members = npz.members
        if model is not None:
            want = model.shapes
            missing = sorted(set(want) - set(members))
            extra = [] if allow_extra else sorted(set(members) - set(want))
            wrong = sorted(k for k in want if k in members and members[k].shape != tuple(want[k]))
            if missing or extra or wrong:
                detail = "; ".join(
                    [f"missing {', '.join(missing)}"] * bool(missing)
                    + [f"{k} is {members[k].shape}, the circuit wants {tuple(want[k])}" for k in wrong]
                    + [f"the circuit has no {', '.join(extra)} (--allow-extra-params ignores them)"] * bool(extra)
                )
                raise npz.error(f"these parameters do not fit the circuit: {detail}")
            keys = list(want)
        else:
            keys = list(members)
        params = {}
        for k in keys:
            m = members[k]
            if m.dtype.kind != "f":
                raise npz.error(f"the parameter {k} holds {m.dtype} values; parameters are real "
                                "floating-point numbers")
            with np.errstate(over="ignore"):  # an overflow is reported below, as a non-finite value
                a = npz.read(k).astype(dtype, copy=False)
            if not np.all(np.isfinite(a)):
                bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
                how = f" ({m.dtype} values beyond {dtype}'s range)" if m.dtype != dtype else ""
                raise npz.error(f"the parameter {k} has {bad} non-finite value(s) (NaN or inf){how}")
            params[k] = jnp.asarray(a)
    return params


EVAL_TAG = 0x65766131  # the test split's noise of epoch e: fold_in(fold_in(key(seed), e), EVAL_TAG)


# ------------------------------------------------------------------- compute --
def compiler_options() -> dict[str, Any]:
    """XLA options for the programs `train` compiles (its epochs and its evaluation), on CPU:

    * ``xla_cpu_copy_insertion_use_region_analysis``: without it XLA copies a loop's
      state in and out of every iteration of a relaxation (two copies of each
      population's state per step, about a tenth of the prototypical form's epoch).
      It changes no number (tests train bit for bit the same with and without it);
    * ``xla_cpu_prefer_vector_width=512``: element-wise fusions (ρ, the integrator's
      update) use the whole width of AVX-512 registers where the CPU has them (LLVM
      uses the widest it has). Vectorised sums then add in another order, so the last
      bits of a run can differ from a run without it (as from another XLA version).

    Empty on other backends, and without the options this jaxlib does not know (an older
    XLA refuses an unknown option: probed once, on a trivial program)."""
    if jax.default_backend() != "cpu":
        return {}
    return dict(supported_options(_CPU_OPTIONS))


_CPU_OPTIONS = (("xla_cpu_copy_insertion_use_region_analysis", True), ("xla_cpu_prefer_vector_width", 512))


@functools.lru_cache(maxsize=4)
def supported_options(wanted: tuple[tuple[str, Any], ...]) -> tuple[tuple[str, Any], ...]:
    """The options of `wanted` that this XLA compiles a trivial program with."""
    kept = []
    for key, value in wanted:
        try:
            jax.jit(lambda a: a + 1, compiler_options={key: value}).lower(jnp.zeros(2)).compile()
        except Exception:  # noqa: BLE001 - XLA's error for an unknown option differs across versions
            continue
        kept.append((key, value))
    return tuple(kept)


def _targets(data, y):
    return data.targets(y).astype(np.float32)


def _make_epoch(model: Model, opt, n: int, batch: int, method: str, classify: bool, shard: Callable,
                augment: tuple[str, ...] = (), jit: bool = True, blocks: blocking.Plan | None = None):
    """The jitted epoch: (params, opt_state, key, X, Y, labels, P) -> (..., loss, accuracy, P).

    `X` is in the compiled layout (batch, H, W, C for images). `P` holds each
    training example's last free state (persistent particles) or is empty.
    `augment` names random augmentations applied to each batch (`augment.py`).
    `jit=False`: the plain function (`sweeps.py` maps it over the members of a sweep).
    `blocks`: large input weights updated in blocks of batches (`blocking.py`).
    """
    nb = n // batch

    def epoch(params, opt_state, key, X, Y, labels, P):
        start = params

        def one(params, opt_state, P, i, k, drives=None):
            """One batch; with the blocked weights' `drives`, it also returns their gradients."""
            x = X[i]
            if augment:
                from .augment import augment as apply_augment

                k, ka = jax.random.split(k)
                x = apply_augment(ka, x, augment)
            x = shard(x)
            y = shard(Y[i])
            xs = model.as_inputs(x, "compiled")
            s0 = {p: shard(v[i]) for p, v in P.items()} if P else None
            est = params if drives is None else blocking.split(blocks, params, drives)
            g, free, info = learning.estimate_with_info(model, est, xs, y, method, None, k, s0)
            g, gd = (g, None) if drives is None else blocking.gather(blocks, g, params)
            updates, opt_state = opt.update(g, opt_state, params)
            fit = health.batch_health(info)
            new = optax.apply_updates(params, updates)
            if drives is not None:  # the blocked weights wait for the block's end
                new = {**new, **{name: params[name] for name in blocks.names}}
            fs = {p: free[p] for p in model.state_keys}
            if P:
                P = {p: v.at[i].set(fs[p]) for p, v in P.items()}
            loss = model.fns.cost(fs, y) / batch
            out = model.fns.readout(free)
            correct = _score(out, y, labels[i], classify)
            return new, opt_state, P, (loss, correct, fit), gd

        def body(carry, inp):
            params, opt_state, P, out, _ = one(*carry, *inp)
            return (params, opt_state, P), out

        def block(carry, inp):
            params, opt_state, P = carry
            ib, kb = inp
            ctx = blocks.start(model, params, [model.as_inputs(shard(X[ib[j]]), "compiled")
                                               for j in range(blocks.size)])
            grads, outs = [], []
            for j in range(blocks.size):
                params, opt_state, P, out, gd = one(params, opt_state, P, ib[j], kb[j], blocks.drives(ctx, j, grads))
                grads.append(gd)
                outs.append(out)
            params = blocks.finish(model, params, ctx, grads)
            return (params, opt_state, P), jax.tree.map(lambda *a: jnp.stack(a), *outs)

        kp, ks = jax.random.split(key)
        idx = jax.random.permutation(kp, n)[: nb * batch].reshape(nb, batch)
        keys = jax.random.split(ks, nb)
        carry, parts = (params, opt_state, P), []
        b = blocks.size if blocks is not None else 1
        whole = nb // b * b if b > 1 else 0  # batches run in blocks; the rest one by one
        if whole:
            carry, out = lax.scan(block, carry, (idx[:whole].reshape(whole // b, b, batch),
                                                 keys[:whole].reshape(whole // b, b)))
            parts.append(jax.tree.map(lambda a: a.reshape(whole, *a.shape[2:]), out))
        if whole < nb:
            carry, out = lax.scan(body, carry, (idx[whole:], keys[whole:]))
            parts.append(out)
        params, opt_state, P = carry
        loss, correct, fit = parts[0] if len(parts) == 1 else jax.tree.map(lambda *a: jnp.concatenate(a), *parts)
        fit = {**health.reduce_health(model, fit), **health.update_ratios(model, start, params, nb)}
        return params, opt_state, jnp.mean(loss), jnp.sum(correct) / (nb * batch), P, fit

    return (jax.jit(epoch, donate_argnums=(0, 1, 6), compiler_options=compiler_options()) if jit else epoch), nb


def _make_stream_epoch(model: Model, opt, n: int, batch: int, classify: bool, shard: Callable, jit: bool = True):
    """The jitted epoch of a streaming phase (`present N`): `batch` parallel streams
    see the shuffled training set, each sample for N steps, with no reset between
    samples (`P` carries the streams' state across batches and epochs), and the
    rules change the weights at every step (through the file's optimizer, if any)."""
    nb = n // batch
    phase = model.streaming
    beta = phase.beta if nonzero(phase.beta) else None

    def epoch(params, opt_state, key, X, Y, labels, P):
        idx = jax.random.permutation(key, n)[: nb * batch].reshape(nb, batch)

        def body(carry, inp):
            params, opt_state, S = carry
            i, b = inp
            xs = model.as_inputs(shard(X[i]), "compiled")
            y = shard(Y[i])
            res, params, opt_state = model.rules.run(phase, params, xs, S, beta, y, stream=True,
                                                     opt=opt, opt_state=opt_state,
                                                     key=jax.random.fold_in(key, b))  # the batch's noise
            fit = health.batch_health({phase.name: res})
            S = {k: res.state[k] for k in model.state_keys}
            loss = model.fns.cost(S, y) / batch
            out = model.fns.readout(res.state)
            correct = _score(out, y, labels[i], classify)
            return (params, opt_state, S), (loss, correct, fit)

        start = params
        (params, opt_state, P), (loss, correct, fit) = lax.scan(body, (params, opt_state, P), (idx, jnp.arange(nb)))
        fit = {**health.reduce_health(model, fit), **health.update_ratios(model, start, params, nb)}
        return params, opt_state, jnp.mean(loss), jnp.sum(correct) / (nb * batch), P, fit

    return (jax.jit(epoch, donate_argnums=(0, 1, 6), compiler_options=compiler_options()) if jit else epoch), nb


def _make_eval(model: Model, n: int, chunk: int, classify: bool, n_classes: int = 0, jit: bool = True):
    """The jitted evaluation: (params, X, Y, labels, P, key) -> (loss, accuracy, P, health), in
    chunks; `health` holds the fraction of saturated units per free population
    (`saturated.POP`) and the counts of predicted classes (`classes`). A noisy circuit is
    evaluated with its noise: chunk c's from `fold_in(key, c)`."""
    chunk = max(1, min(chunk, n))
    full = n // chunk

    def part(params, X, Y, labels, P, key):
        xs = model.as_inputs(X, "compiled")
        free = model._free(params, xs, P or None, key=key).state
        out = model.fns.readout(free)
        fs = {p: free[p] for p in model.state_keys}
        loss = model.fns.cost(fs, Y)
        pred = jnp.argmax(out, -1)
        correct = _score(out, Y, labels, classify)
        fit = {f"saturated.{k}": v for k, v in health.saturation(model, params, xs, free).items()}
        if classify and n_classes:
            fit["classes"] = jnp.sum(jax.nn.one_hot(pred, n_classes, dtype=jnp.int32), axis=0)
        return loss, correct, ({p: fs[p] for p in P} if P else {}), fit

    def evaluate(params, X, Y, labels, P, key):
        def one(i):
            sl = lambda a: lax.dynamic_slice_in_dim(a, i * chunk, chunk)  # noqa: E731
            return part(params, sl(X), sl(Y), sl(labels), {p: sl(v) for p, v in P.items()},
                        jax.random.fold_in(key, i))

        loss, correct, newP, fit = lax.map(one, jnp.arange(full))
        newP = {p: v.reshape((full * chunk, *v.shape[2:])) for p, v in newP.items()}
        loss, correct = jnp.sum(loss), jnp.sum(correct)
        fit = {k: jnp.sum(v, axis=0) for k, v in fit.items()}
        if n > full * chunk:
            rest = slice(full * chunk, None)
            l2, c2, P2, f2 = part(params, X[rest], Y[rest], labels[rest], {p: v[rest] for p, v in P.items()},
                                  jax.random.fold_in(key, full))
            loss, correct = loss + l2, correct + c2
            newP = {p: jnp.concatenate([newP[p], P2[p]]) for p in newP}
            fit = {k: fit[k] + f2[k] for k in fit}
        fit = {k: (v if k == "classes" else v / (n * model.size_of(k.split(".", 1)[1]))) for k, v in fit.items()}
        return loss / n, correct / n, newP, fit

    return jax.jit(evaluate, compiler_options=compiler_options()) if jit else evaluate


def _score(out, y, labels, classify: bool):
    """Per batch: the number of correct predictions (classification), or the summed squared
    error of the output against the targets (regression: divided by the examples and the
    outputs, it is the MSE that `train` and `evaluate` report)."""
    if classify:
        return jnp.sum(jnp.argmax(out, -1) == labels)
    return jnp.sum((out.reshape(y.shape) - y) ** 2)


def _particles(model: Model, n: int, dtype) -> dict[str, Any]:
    """Zero initial states for persistent particles (empty when the file does not ask for them)."""
    if not (model.learning and model.learning.persistent):
        return {}
    return {p: jnp.zeros((n, *model.shape_of(p)), dtype) for p in model.state_keys}


def evaluate(model: Model, params, data, split: str = "test", chunk: int = 1000) -> dict[str, float]:
    """Loss (mean cost) and accuracy of `params` on a split of `data`."""
    X = getattr(data, f"x_{split}")
    y = getattr(data, f"y_{split}")
    classify = data.n_classes is not None
    labels = y if classify else np.zeros(len(X), np.int32)
    check_sizes(model, data)
    chunk = resources.eval_chunk(model, len(X), chunk)
    resources.require_run(resources.estimate(model, "evaluate", batch=chunk, data=data, eval_chunk=chunk,
                                             split=split), model)
    fn = _make_eval(model, len(X), chunk, classify)
    loss, acc, _, _ = fn(params, _inputs(model, X), jnp.asarray(_targets(data, y)), jnp.asarray(labels), {},
                         jax.random.key(0))
    out = {"loss": float(loss)}
    if classify:
        out["accuracy"] = float(acc)
    else:  # the mean over examples and outputs of the squared error
        out["mse"] = float(acc) / data.output_size
    return out


def _sharding(devices: int):
    if devices <= 1:
        return lambda a: a
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    available = jax.devices()
    if devices > len(available):
        raise CircuitError(
            f"--devices {devices}: only {len(available)} device(s) here"
            + (" (on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N makes N)" if available[0].platform == "cpu" else "")
        )
    mesh = Mesh(np.array(available[:devices]), ("batch",))
    spec = NamedSharding(mesh, PartitionSpec("batch"))
    return lambda a: lax.with_sharding_constraint(a, spec)


# -------------------------------------------------------------------- driver --
def run_settings(model: Model, method: str | None, augment: tuple[str, ...] | str, epochs: int | None):
    """A training's estimator (checked when it is not the file's), augmentations (parsed from
    "crop,flip") and epochs (the file's, else 10), for `train` and `sweeps.train`."""
    learn = model.learning
    if learn is None:
        raise CircuitError("this circuit has no `learn` block, so it cannot be trained")
    method = method or model.method
    if method != model.method:
        model.check_estimator(method)
    if isinstance(augment, str):
        from .augment import parse_augment

        augment = parse_augment(augment)
    return method, tuple(augment), epochs if epochs is not None else (learn.epochs or 10)



def train(model: Model, data, epochs: int | None = None, *, seed: int = 0, out: str | Path | None = None,
          resume: bool = False, devices: int = 1, method: str | None = None, progress: bool = True,
          data_spec: str | None = None, on_epoch: Callable[[dict], None] | None = None,
          augment: tuple[str, ...] | str = (), force: bool = False, block: bool = True) -> TrainResult:
    """Train `model` on `data` (a `circuitlang.data.Dataset`).

    Returns the final parameters and the per-epoch metrics. See the module
    docstring for what is written under `out`. `augment` ("crop,flip" or a tuple)
    randomly augments each training batch of images, inside the jitted epoch.

    `out` is held for the whole run (`rundir.claim`): another run writing there is an
    error, and so is a finished run there, unless `resume` (continue it) or `force`
    (delete its files and start over).
    """
    learn = model.learning
    method, augment, epochs = run_settings(model, method, augment, epochs)
    batch = learn.batch
    n = len(data.x_train)
    if batch > n:
        raise CircuitError(f"batch {batch} is larger than the training set ({n} examples)")
    if batch % max(devices, 1):
        raise CircuitError(f"batch {batch} does not split evenly over {devices} devices")
    check_sizes(model, data)
    chunk = resources.eval_chunk(model, len(data.x_test))
    resources.require_run(resources.estimate(model, "train", batch=batch, data=data, method=method,
                                             eval_chunk=chunk), model)
    if augment and len(model.fns.pops[model.inputs[0]].shape) != 3:
        raise CircuitError(
            f"--augment {','.join(augment)} shifts and flips images, but the input `{model.inputs[0]}` is "
            f"{describe(model.fns.pops[model.inputs[0]].shape)}; give it a shape [C, H, W] or drop --augment"
        )
    classify = data.n_classes is not None
    nb = n // batch
    stream = model.streaming is not None and method == "rules"
    steps_per_batch = model.streaming.steps if stream else 1  # a stream updates at every step
    default_lr = default_rate(learn)
    opt = make_optimizer(learn.optimizer, model.trainable, epochs * nb * steps_per_batch, default_lr)
    blocks = blocking.plan(model, method, default_lr, devices, augment) if block and not stream else None
    if stream:
        epoch_fn, _ = _make_stream_epoch(model, opt, n, batch, classify, _sharding(devices))
    else:
        epoch_fn, _ = _make_epoch(model, opt, n, batch, method, classify, _sharding(devices), augment,
                                  blocks=blocks)
    eval_fn = _make_eval(model, len(data.x_test), chunk, classify, data.n_classes or 0) if len(data.x_test) else None

    X = _inputs(model, data.x_train)
    Y = jnp.asarray(_targets(data, data.y_train))
    L = jnp.asarray(data.y_train if classify else np.zeros(n, np.int32))
    Xt = _inputs(model, data.x_test)
    Yt = jnp.asarray(_targets(data, data.y_test))
    Lt = jnp.asarray(data.y_test if classify else np.zeros(len(data.x_test), np.int32))

    dtype = X.dtype
    params = model.init(jax.random.fold_in(jax.random.key(seed), 10**6), dtype)
    opt_state = opt.init(params)
    if stream:  # the streams' state, carried from sample to sample
        P = {p: jnp.zeros((batch, *model.shape_of(p)), dtype) for p in model.state_keys}
        Pt = {}
    else:
        P = _particles(model, n, dtype)
        Pt = _particles(model, len(data.x_test), dtype)
    history: list[dict[str, float]] = []
    start = 0
    out_dir = Path(out) if out is not None else None
    manifest = _manifest(model, data, data_spec, seed, method, epochs, devices, augment, blocks)
    held = claim(out_dir, resume=resume, force=force) if out_dir is not None else contextlib.nullcontext()
    with held:  # the lock on `out` (and its stale temporaries gone) for the whole run
        if out_dir is not None:
            if resume and (out_dir / "checkpoint.npz").exists():
                params, opt_state, P, Pt, history = _restore(out_dir, params, opt_state, P, Pt, manifest)
                start = len(history)
                _save_epoch(out_dir, params, opt_state, P, Pt, history, plot=start >= epochs)  # metrics catch up
            elif resume:
                raise CircuitError(f"--resume: {out_dir} has no checkpoint.npz to resume from")
            _atomic_write(out_dir / "run.json", json.dumps(manifest, indent=2).encode())

        bar = _progress(range(start, epochs), progress, initial=start, total=epochs)
        base = jax.random.key(seed)
        last_plot = 0.0
        warned: set[str] = set()
        for e in bar:
            t0 = time.perf_counter()
            params, opt_state, loss, acc, P, fit = epoch_fn(params, opt_state, jax.random.fold_in(base, e), X, Y, L, P)
            loss = float(loss)
            seconds = time.perf_counter() - t0
            test = None
            if eval_fn is not None:
                t1 = time.perf_counter()
                # a noisy circuit's test noise: its own stream per epoch (`lower/noise.py`)
                ekey = jax.random.fold_in(jax.random.fold_in(base, e), EVAL_TAG)
                tl, ta, Pt, tfit = jax.block_until_ready(eval_fn(params, Xt, Yt, Lt, Pt, ekey))
                test = (tl, ta, tfit, time.perf_counter() - t1)
            row, classes = epoch_row(data, e, loss, acc, seconds, fit, test)
            if not np.isfinite(loss):
                # name the population whose state blew up, with its line, when the relaxation shows it
                model.relax_result(params, X[:batch], None, layout="compiled")
                raise CircuitError(
                    f"training diverged in epoch {e + 1} (loss {loss}); lower the learning rates or `dt`"
                )
            _check_health(model, row, classes, learn.health, warned, bar)
            history.append(row)
            if out_dir is not None:
                # the plot costs ~0.1-1 s: draw it at most every 10 s, and after the last epoch
                plot = e == epochs - 1 or time.perf_counter() - last_plot > 10.0
                _save_epoch(out_dir, params, opt_state, P, Pt, history, plot)
                if plot:
                    last_plot = time.perf_counter()
            if on_epoch is not None:
                on_epoch(row)
            _postfix(bar, row)
        return TrainResult(params, history, out_dir)


def epoch_row(data, e: int, loss, acc, seconds: float, fit: dict, test=None) -> tuple[dict, Any]:
    """An epoch's row of `metrics.csv` and the test split's predicted classes (or None), from
    what the epoch and the evaluation (`test`: loss, accuracy, health, seconds) returned."""
    classify = data.n_classes is not None
    row = {"epoch": e + 1, "train_loss": float(loss), "seconds": seconds}
    if classify:
        row["train_accuracy"] = float(acc)
    else:
        row["train_mse"] = float(acc) / data.output_size
    classes = None
    if test is not None:
        tl, ta, tfit, eval_seconds = test
        tfit = dict(tfit)
        row["test_loss"] = float(tl)
        if classify:
            row["test_accuracy"] = float(ta)
        else:
            row["test_mse"] = float(ta) / data.output_size
        row["eval_seconds"] = eval_seconds
        classes = np.asarray(tfit.pop("classes")) if "classes" in tfit else None
        fit = {**fit, **tfit}
    row.update({k: float(v) for k, v in sorted(fit.items())})
    return row, classes


def _check_health(model: Model, row: dict, classes, policy: str, warned: set[str], bar) -> None:
    """Warn once per kind of problem (or stop, with `health error`) about an epoch's health."""
    if policy == "ignore":
        return
    found = health.problems(model, row, classes)
    if policy == "error" and found:
        health.raise_for(model, found)
    for p in found:
        if p.key in warned:
            continue
        warned.add(p.key)
        warnings.warn(health.render(model, p), health.HealthWarning, stacklevel=3)


def check_sizes(model: Model, data) -> None:
    """The data fit the circuit: the input's shape (or, for flat data, its size), and the targets."""
    (inp,) = model.inputs[:1] or ("",)
    pops = model.fns.pops
    if len(model.inputs) == 1:
        shape = pops[inp].shape
        given = tuple(getattr(data, "shape", ()) or (data.input_size,))
        size = pops[inp].size
        # a vector input takes any data of its size (images flattened in written order);
        # a shaped one takes images of its shape, or flat data of its size
        fits = given == tuple(shape) or (math.prod(given) == size and (len(shape) == 1 or len(given) == 1))
        if not fits:
            what = f"images {describe(given)} (channels, height, width)" if len(given) > 1 else f"{given[0]} inputs"
            if math.prod(given) == pops[inp].size:
                fix = f"give it the data's shape (`population {inp} {describe(given)} input`)"
            elif len(shape) == 1:
                fix = f"resize it (`population {inp} [{math.prod(given)}] input`) or pick other data"
            else:
                fix = f"resize it (`population {inp} {describe(given)} input`) or pick other data"
            raise CircuitError(
                f"the data `{data.name}` has {what} but population `{inp}` is {describe(shape)}; {fix}"
            )
    out = model.spec.costs[0].population if model.spec.costs else None
    if out is not None and pops[out].size != data.output_size:
        raise CircuitError(
            f"the data `{data.name}` has {data.output_size} targets but the output `{out}` has {pops[out].size} neurons"
        )


def _inputs(model: Model, X) -> Any:
    """Data rows (flat, written order) in the compiled layout of the input population."""
    return model.to_compiled(model.inputs[0], jnp.asarray(X))


def _progress(it, enabled: bool, initial: int, total: int):
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, initial=initial, total=total, unit="epoch", dynamic_ncols=True)


def _postfix(bar, row: dict) -> None:
    if hasattr(bar, "set_postfix"):
        shown = {"loss": f"{row['train_loss']:.4f}"}
        if "test_accuracy" in row:
            shown["test_acc"] = f"{row['test_accuracy']:.4f}"
        if "test_mse" in row:
            shown["test_mse"] = f"{row['test_mse']:.4f}"
        if "converged" in row:  # the health figure that matters most: were the phases converged?
            shown["converged"] = f"{row['converged']:.0%}"
        shown["s/epoch"] = f"{row['seconds']:.2f}"
        bar.set_postfix(shown)


# ------------------------------------------------------------- checkpointing --
def _save_epoch(out: Path, params, opt_state, P, Pt, history, plot: bool = True) -> None:
    _atomic_write(out / "checkpoint.npz", _checkpoint_bytes(params, opt_state, P, Pt, history))
    save_params(params, out / "params.npz")
    _atomic_write(out / "metrics.json", json.dumps(history, indent=2).encode())
    buf = io.StringIO()
    keys = list(dict.fromkeys(k for row in history for k in row))
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(history)
    _atomic_write(out / "metrics.csv", buf.getvalue().encode())
    if plot:
        _plot(out, history)


def _checkpoint_bytes(params, opt_state, P, Pt, history) -> bytes:
    """`checkpoint.npz`: what `_restore` reads back (a sweep's holds every member, stacked)."""
    leaves = jax.tree_util.tree_leaves(opt_state)
    arrays = {f"params/{k}": np.asarray(v) for k, v in params.items()}
    arrays.update({f"particles/train/{k}": np.asarray(v) for k, v in P.items()})
    arrays.update({f"particles/test/{k}": np.asarray(v) for k, v in Pt.items()})
    arrays.update({f"opt/{i}": np.asarray(v) for i, v in enumerate(leaves)})
    arrays["epoch"] = np.asarray(len(history))
    # the history travels with the checkpoint, so a kill between the two files cannot desynchronise them
    arrays["history"] = np.asarray(json.dumps(history))
    return _npz_bytes(arrays)


def _restore(out: Path, params, opt_state, P, Pt, manifest):
    """The state saved in `out`, after checking that `run.json` describes this run and
    that `checkpoint.npz` holds exactly the arrays this run has (shapes and dtypes from
    its fresh state, headers checked before reading: `npzfile.py`)."""
    from .npzfile import NpzReader

    run = out / "run.json"
    fix = "train into another --out, or start over with --force"
    try:
        old = json.loads(run.read_text())
    except FileNotFoundError:
        raise CircuitError(f"--resume: {run} is missing, so nothing says which file, settings and seed "
                           f"made the checkpoint; {fix}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CircuitError(f"--resume: {run} is damaged ({exc}); {fix}") from None
    if not isinstance(old, dict):
        raise CircuitError(f"--resume: {run} is damaged (not a JSON object); {fix}")
    for key in ("file_sha256", "settings", "seed", "data", "method", "augment"):
        if old.get(key, [] if key == "augment" else None) != manifest.get(key):
            raise CircuitError(
                f"--resume: {out} was trained with a different {key.replace('_', ' ')}; "
                "resume with the same file and settings, or use another --out"
            )
    leaves, tree = jax.tree_util.tree_flatten(opt_state)
    want = {f"params/{k}": v for k, v in params.items()}
    want.update({f"opt/{i}": v for i, v in enumerate(leaves)})
    want.update({f"particles/train/{k}": v for k, v in P.items()})
    want.update({f"particles/test/{k}": v for k, v in Pt.items()})
    with NpzReader(out / "checkpoint.npz", "checkpoint") as npz:
        damaged = lambda why: npz.error(f"damaged checkpoint: {why}; {fix}")  # noqa: E731
        have = npz.members
        missing = sorted(set(want) - set(have))
        extra = sorted(set(have) - set(want) - {"epoch", "history"})
        if missing or extra or "epoch" not in have or "history" not in have:
            raise damaged(f"it holds other arrays than this run's (missing {', '.join(missing) or 'none'}; "
                          f"unexpected {', '.join(extra) or 'none'})")
        for k, v in want.items():
            if have[k].shape != tuple(v.shape) or have[k].dtype != np.dtype(v.dtype):
                raise damaged(f"`{k}` is {have[k].describe()}, this run's is {tuple(v.shape)} {np.dtype(v.dtype)}")
        if have["epoch"].shape != () or have["epoch"].dtype.kind not in "iu" or have["history"].shape != () \
                or have["history"].dtype.kind != "U":
            raise damaged("its `epoch` or `history` is not what train writes")
        arrays = {k: npz.read(k) for k in want}
        try:
            history = json.loads(str(npz.read("history")))
            epoch = int(npz.read("epoch"))
        except ValueError as exc:
            raise damaged(f"its history is not JSON ({exc})") from None
        if not isinstance(history, list) or len(history) != epoch:
            raise damaged(f"its history does not have the {epoch} epochs it claims")
        bad = sorted(k for k in want if k.startswith("params/") and not np.all(np.isfinite(arrays[k])))
        if bad:
            raise damaged(f"non-finite values in {', '.join(bad)}")
    params = {k: jnp.asarray(arrays[f"params/{k}"]) for k in params}
    opt_state = jax.tree_util.tree_unflatten(tree, [jnp.asarray(arrays[f"opt/{i}"]) for i in range(len(leaves))])
    P = {k: jnp.asarray(arrays[f"particles/train/{k}"]) for k in P}
    Pt = {k: jnp.asarray(arrays[f"particles/test/{k}"]) for k in Pt}
    return params, opt_state, P, Pt, history


def _plot(out: Path, history) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
    axes[0].plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    if "test_loss" in history[0]:
        axes[0].plot(epochs, [r["test_loss"] for r in history], "s-", label="test")
    axes[0].set(xlabel="epoch", ylabel="loss (mean cost)", yscale="log")
    axes[0].legend()
    if "train_accuracy" in history[0]:
        axes[1].plot(epochs, [r["train_accuracy"] for r in history], "o-", label="train")
        if "test_accuracy" in history[0]:
            axes[1].plot(epochs, [r["test_accuracy"] for r in history], "s-", label="test")
        axes[1].set(xlabel="epoch", ylabel="accuracy")
        axes[1].legend()
    elif "train_mse" in history[0]:  # regression: the mean squared error over examples and outputs
        axes[1].plot(epochs, [r["train_mse"] for r in history], "o-", label="train")
        if "test_mse" in history[0]:
            axes[1].plot(epochs, [r["test_mse"] for r in history], "s-", label="test")
        axes[1].set(xlabel="epoch", ylabel="MSE (mean over outputs)", yscale="log")
        axes[1].legend()
    else:
        axes[1].plot(epochs, [r["seconds"] for r in history], "o-")
        axes[1].set(xlabel="epoch", ylabel="seconds")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    _atomic_write(out / "curves.png", buf.getvalue())


def _manifest(model: Model, data, data_spec, seed, method, epochs, devices, augment=(), blocks=None) -> dict:
    circ = model.circuit
    learn = model.learning
    settings = {
        "overrides": {k: str(v) for k, v in circ.overrides},
        "phases": [
            {k: v for k, v in dataclasses.asdict(p).items() if k != "span"} for p in learn.phases
        ],
        "batch": learn.batch,
        "optimizer": None
        if learn.optimizer is None
        else {
            "name": learn.optimizer.name,
            "lr": learn.optimizer.lr,
            "lr_per_param": dict(learn.optimizer.lr_per_param),
            "settings": dict(learn.optimizer.settings),
        },
    }
    return {
        "circuit": circ.name,
        "file": circ.source.path,
        "file_sha256": hashlib.sha256(circ.source.text.encode()).hexdigest(),
        "settings": json.loads(json.dumps(settings, default=str)),
        "method": method,
        "seed": seed,
        "data": getattr(data, "spec", None) or data_spec or data.name,
        # what each parameter learns at (before any schedule), whatever the file and --set said
        "learning_rates": rates(learn.optimizer, model.trainable, default_rate(learn)),
        "epochs": epochs,
        "devices": devices,
        "augment": list(augment),
        # weights updated in blocks of batches (`blocking.py`; `--no-blocking`: none)
        "blocked_updates": {"batches": blocks.size, "weights": sorted(blocks.names)} if blocks else None,
        "versions": {
            "circuitlang": __version__,
            "jax": jax.__version__,
            "optax": optax.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "backend": jax.default_backend(),
    }
