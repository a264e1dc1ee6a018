"""Sweeps in one program: `circuitc train FILE --seeds 0-4 --sweep KEY=V1,V2,...`.

Every member of a sweep (one seed, one value of each swept setting; the grid of
all of them) trains in **one** compiled program: the epoch and the evaluation
of `training.py`, mapped with `jax.vmap` over a leading member axis of the
parameters, the optimizer state, the keys, the particles and the swept values
(the data are shared). With `devices=N` the member axis is sharded over N
devices. Member k computes what a lone run with its seed and `--set` computes:
its initialisation and its shuffle order come from its own seed, exactly as
there.

A swept setting becomes a traced value by one mechanism, `Model.bind`: the
model's phases (β, dt), its optimizer (rates, weight decay, momentum, Adam's
b1/b2/eps) and its expression evaluator (a `param`) read the member's value
instead of the constant. Whoever binds must know the member differs in nothing
else: each member's own model (built with its `--set`, so checked like any
other) is traced, bound to an abstract value, and its program must equal the
first member's, literal for literal. A `param` that the checker folds into a
size, a step count or another setting changes that program and is refused, as
are keys that are not numbers the program multiplies by (`SWEEPABLE`).

`out=DIR` gets one ordinary run directory per member (`DIR/seed-0`,
`DIR/phase.nudge.beta=0.3`, `DIR/phase.nudge.beta=0.3,seed-1`: params.npz,
checkpoint.npz, metrics.csv/json, curves.png, run.json; each can be resumed
alone as a lone run), plus

* ``checkpoint.npz`` / ``run.json``  every member's state, stacked (`resume` reads these)
* ``summary.csv`` / ``summary.json`` mean ± std per epoch over the seeds of each swept value
* ``summary.png``                    the mean curves with a ±std band, one per swept value
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import itertools
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import blocking, health, resources
from . import training as T
from .errors import CircuitError
from .model import HYPER_OPTIMIZER, HYPER_PHASE, Model
from .optim import default_rate, make_optimizer
from .rundir import atomic_write, claim

__all__ = ["Member", "members", "parse_seeds", "parse_sweep", "refusal", "train_sweep", "SWEEPABLE"]

SWEEPABLE = ("a `param` (unless it sets a size, a step count or another setting), "
             "phase.NAME.beta, phase.NAME.dt, optimizer.lr, optimizer.lr.WEIGHT, optimizer.weight_decay, "
             "optimizer.momentum, optimizer.b1, optimizer.b2, optimizer.eps")

# why the settings a sweep cannot vary in one program are refused
_SHAPES = {
    "learn.batch": "it sets the shape of every batch",
    "learn.epochs": "every member runs the same epochs (give --epochs)",
    "phase.*.steps": "it sets the length of the relaxation loop",
    "phase.*.present": "it sets the length of each sample's presentation",
    "phase.*.tol": "it turns the relaxation into another loop",
    "phase.*.forward": "it makes the phase another program",
    "phase.*.integrator": "it makes the phase another program",
    "phase.*.clamp": "it makes the phase another program",
    "optimizer.schedule": "it makes the optimizer another program",
    "optimizer.schedule.warmup": "it sets a length of the schedule",
    "optimizer.nesterov": "it makes the optimizer another program",
}


@dataclasses.dataclass(frozen=True)
class Member:
    """One member of a sweep: its directory's name, its seed, its swept settings (as `--set`)."""

    name: str
    seed: int
    settings: tuple[tuple[str, str], ...]

    @property
    def group(self) -> str:
        """The swept values it shares with the other seeds (`all` for a sweep of seeds only)."""
        return ",".join(f"{k}={v}" for k, v in self.settings) or "all"


def parse_seeds(text: str) -> list[int]:
    """`0-4`, `0,3,7`, `1-3,8`; raises ValueError with the reason."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            a, b = (int(lo), int(hi)) if sep else (int(part), int(part))
        except ValueError:
            raise ValueError(f"--seeds {text}: write seeds as 0-4 or 0,3,7") from None
        if a < 0 or b >= 2**32 or b < a:
            raise ValueError(f"--seeds {text}: `{part}` is not a range of seeds from 0 to 2^32-1")
        seeds.extend(range(a, b + 1))
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {text}: a seed is given twice")
    return seeds


def parse_sweep(text: str) -> tuple[str, list[str]]:
    """`KEY=V1,V2,...` → (KEY, [V1, V2, ...]); raises ValueError with the reason."""
    key, sep, values = text.partition("=")
    key = key.strip()
    vals = [v.strip() for v in values.split(",")]
    if not sep or not key or not all(vals):
        raise ValueError(f"--sweep {text}: write KEY=V1,V2,..., e.g. --sweep phase.nudge.beta=0.1,0.5")
    if len(set(vals)) != len(vals):
        raise ValueError(f"--sweep {text}: a value is given twice")
    if any("/" in v for v in vals):
        raise ValueError(f"--sweep {text}: a value names a directory; it cannot hold `/`")
    return key, vals


def refusal(key: str) -> str | None:
    """Why `key` cannot be swept in one program, or None when it may be (a `param` is
    checked later, against the programs its values compile to)."""
    parts = key.split(".")
    if len(parts) == 1:
        return None
    if parts[0] == "phase" and len(parts) == 3 and parts[2] in HYPER_PHASE:
        return None
    if parts[0] == "optimizer" and len(parts) >= 2 and parts[1] in HYPER_OPTIMIZER and (len(parts) == 2 or parts[1] == "lr"):
        return None
    generic = ".".join(["phase", "*", parts[2]]) if parts[0] == "phase" and len(parts) == 3 else key
    why = _SHAPES.get(generic, "it is not a number the compiled program multiplies by")
    return (f"--sweep {key}: cannot be swept in one program: {why}. A sweep varies {SWEEPABLE}; "
            "run other settings as separate trainings (--set)")


def members(seeds: Sequence[int], sweeps: Sequence[tuple[str, list[str]]]) -> list[Member]:
    """Every combination of the swept values, each with every seed (seeds vary fastest)."""
    keys = [k for k, _ in sweeps]
    if len(set(keys)) != len(keys):
        raise ValueError("--sweep: a key is swept twice; give all its values in one --sweep KEY=V1,V2")
    out = []
    for combo in itertools.product(*[vals for _, vals in sweeps]):
        settings = tuple(zip(keys, combo))
        for s in seeds:
            parts = [f"{k}={v}" for k, v in settings] + ([f"seed-{s}"] if len(seeds) > 1 or not settings else [])
            out.append(Member(",".join(parts), s, settings))
    return out


# ---------------------------------------------------------------- the values --
def _value(model: Model, key: str) -> float:
    """The number a member's checked model holds for a swept key."""
    learn = model.learning
    parts = key.split(".")
    if len(parts) == 1:
        return float(model.spec.params[key])
    if parts[0] == "phase":
        return float(getattr(next(p for p in learn.phases if p.name == parts[1]), parts[2]))
    opt = learn.optimizer
    if parts[1] == "lr" and len(parts) > 2:
        return float(opt.lr_per_param[".".join(parts[2:])])
    if parts[1] == "lr":
        return float(opt.lr)
    defaults = {"weight_decay": 0.0, "momentum": 0.0}
    if parts[1] not in opt.settings and parts[1] not in defaults:
        raise CircuitError(f"--sweep {key}: the optimizer `{opt.name}` has no setting `{parts[1]}` to sweep")
    return float(opt.settings.get(parts[1], defaults.get(parts[1])))


@dataclasses.dataclass
class _Program:
    """What one member's model compiles to: its epoch and its evaluation, as functions of
    (hyper, member state, shared data)."""

    model: Model
    epoch: Any
    evaluate: Any
    optimizer: Any


def _program(model: Model, n: int, batch: int, method: str, classify: bool, n_classes: int, n_test: int,
             chunk: int, augment: tuple[str, ...], total_steps: int, stream: bool,
             blocks: blocking.Plan | None = None) -> _Program:
    """`blocks`: the large input weights every member updates in blocks of batches (`blocking.py`)."""
    default_lr = default_rate(model.learning)
    same = lambda a: a  # noqa: E731 - the member axis is what is sharded, not the batch

    def optimizer(hyper):
        m = model.bind(hyper)
        return make_optimizer(m.learning.optimizer, m.trainable, total_steps, default_lr)

    def epoch(hyper, params, opt_state, key, X, Y, L, P):
        m = model.bind(hyper)
        if stream:
            fn, _ = T._make_stream_epoch(m, optimizer(hyper), n, batch, classify, same, jit=False)
        else:
            fn, _ = T._make_epoch(m, optimizer(hyper), n, batch, method, classify, same, augment, jit=False,
                                  blocks=blocks)
        return fn(params, opt_state, key, X, Y, L, P)

    def evaluate(hyper, params, X, Y, L, P, key):
        return T._make_eval(model.bind(hyper), n_test, chunk, classify, n_classes, jit=False)(params, X, Y, L, P, key)

    return _Program(model, epoch, evaluate, optimizer)


def _abstract(tree):
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), tree)


def _signature(fn, *args) -> tuple[str, list[np.ndarray]]:
    closed = jax.make_jaxpr(fn)(*args)
    return str(closed.jaxpr), [np.asarray(c) for c in closed.consts]


def _same_program(base: _Program, other: _Program, args_epoch, args_eval, key: str) -> None:
    """Refuse a member whose program differs from the first member's in more than the
    swept (traced) values: a `param` that sets a size, a loop's length or a setting the
    checker folds in, or a value that switches something off (a β or a weight decay of 0)."""
    try:
        a = _signature(base.epoch, *args_epoch), _signature(base.evaluate, *args_eval)
        b = _signature(other.epoch, *args_epoch), _signature(other.evaluate, *args_eval)
    except (TypeError, ValueError) as exc:  # shapes that do not fit: a param that sets a size
        raise CircuitError(f"--sweep {key}: its values give circuits of different shapes ({exc}); "
                           "sweep it as separate trainings (--set)") from None
    same = all(sa[0] == sb[0] and len(sa[1]) == len(sb[1]) and all(
        x.shape == y.shape and x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(sa[1], sb[1]))
        for sa, sb in zip(a, b))
    if not same:
        raise CircuitError(
            f"--sweep {key}: its values change more than a number in the compiled program (a size, a step "
            "count or another setting the file derives from it, or a value of 0 that switches something off), "
            "so the members cannot share one program; sweep it as separate trainings (--set)")


# ------------------------------------------------------------------- driver --
def train_sweep(circ, settings: Mapping[str, str], data, group: Sequence[Member], epochs: int | None = None, *,
                out: str | Path | None = None, resume: bool = False, force: bool = False, devices: int = 1,
                method: str | None = None, progress: bool = True, data_spec: str | None = None,
                augment: tuple[str, ...] | str = (), block: bool = True) -> list[T.TrainResult]:
    """Train every member of `group` (see `members`) in one program; return one
    `TrainResult` per member, in order. `circ` is the loaded circuit, `settings` the
    `--set` overrides all members share. See the module docstring for `out`.
    `block`: as `train`'s, for a sweep of seeds or of phase settings (whose members
    would all be blocked alike); a sweep of other values updates after every batch."""
    import circuitlang as cl

    if not group:
        raise CircuitError("a sweep needs at least one member")
    keys = [k for k, _ in group[0].settings]
    for k in keys:
        why = refusal(k)
        if why:
            raise CircuitError(why)
    models: dict[tuple, Model] = {}
    for mb in group:
        if mb.settings not in models:
            models[mb.settings] = cl.compile(circ, {**settings, **dict(mb.settings)})
    base = models[group[0].settings]
    learn = base.learning
    if learn is None:
        raise CircuitError("this circuit has no `learn` block, so it cannot be trained")
    for k, m in models.items():
        if m.shapes != base.shapes or m.learning.batch != learn.batch:
            what = next(iter(dict(k)), "")
            raise CircuitError(f"--sweep {what}: its values give circuits of different shapes or batches; "
                               "sweep it as separate trainings (--set)")
    method, augment, epochs = T.run_settings(base, method, augment, epochs)
    batch, n, M = learn.batch, len(data.x_train), len(group)
    if batch > n:
        raise CircuitError(f"batch {batch} is larger than the training set ({n} examples)")
    if M % max(devices, 1):
        raise CircuitError(f"{M} members do not split evenly over {devices} devices; "
                           "a sweep shards its members over --devices")
    T.check_sizes(base, data)
    chunk = resources.eval_chunk(base, len(data.x_test))
    resources.require_run(resources.estimate(base, "train", batch=batch, data=data, method=method,
                                             eval_chunk=chunk, members=M), base)
    if augment and len(base.fns.pops[base.inputs[0]].shape) != 3:
        raise CircuitError(f"--augment needs images: the input `{base.inputs[0]}` is not [C, H, W]")
    classify = data.n_classes is not None
    nb = n // batch
    stream = base.streaming is not None and method == "rules"
    total_steps = epochs * nb * (base.streaming.steps if stream else 1)
    n_test = len(data.x_test)
    # a sweep of seeds or phase settings: every member's plan is the base's
    block = block and not stream and all(k.startswith("phase.") for k in keys)
    blocks = blocking.plan(base, method, default_rate(learn), 1, augment) if block else None
    build = lambda m: _program(m, n, batch, method, classify, data.n_classes or 0, n_test,  # noqa: E731
                               chunk, augment, total_steps, stream, blocks)
    prog = build(base)

    X = T._inputs(base, data.x_train)
    Y = jnp.asarray(T._targets(data, data.y_train))
    L = jnp.asarray(data.y_train if classify else np.zeros(n, np.int32))
    Xt = T._inputs(base, data.x_test)
    Yt = jnp.asarray(T._targets(data, data.y_test))
    Lt = jnp.asarray(data.y_test if classify else np.zeros(n_test, np.int32))
    dtype = X.dtype

    # the swept values, one row per member, read off each member's checked model
    hyper = {k: jnp.asarray([_value(models[mb.settings], k) for mb in group], dtype) for k in keys}
    params = [models[mb.settings].init(jax.random.fold_in(jax.random.key(mb.seed), 10**6), dtype) for mb in group]
    params = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *params)
    opt_state = jax.vmap(lambda h, p: prog.optimizer(h).init(p))(hyper, params)
    if stream:
        P = {p: jnp.zeros((M, batch, *base.shape_of(p)), dtype) for p in base.state_keys}
        Pt = {}
    else:
        P = {k: jnp.broadcast_to(v, (M, *v.shape)) for k, v in T._particles(base, n, dtype).items()}
        Pt = {k: jnp.broadcast_to(v, (M, *v.shape)) for k, v in T._particles(base, n_test, dtype).items()}

    if keys:  # each member's own model must compile to the first one's program, the swept values aside
        one = lambda t: jax.tree_util.tree_map(lambda a: a[0], t)  # noqa: E731
        key0 = jax.random.key(0)
        args_epoch = _abstract((one(hyper), one(params), one(opt_state), key0, X, Y, L, one(P)))
        args_eval = _abstract((one(hyper), one(params), Xt, Yt, Lt, one(Pt), key0))
        for m in models.values():
            if m is not base:
                _same_program(prog, build(m), args_epoch, args_eval, ", ".join(keys))

    epoch_fn = jax.vmap(prog.epoch, in_axes=(0, 0, 0, 0, None, None, None, 0))
    epoch_fn = jax.jit(epoch_fn, donate_argnums=(1, 2, 7), compiler_options=T.compiler_options())
    eval_fn = jax.jit(jax.vmap(prog.evaluate, in_axes=(0, 0, None, None, None, 0, 0)),
                      compiler_options=T.compiler_options()) if n_test else None
    put_members, put_shared = _placement(devices)
    hyper, params, opt_state, P, Pt = put_members((hyper, params, opt_state, P, Pt))
    X, Y, L, Xt, Yt, Lt = put_shared((X, Y, L, Xt, Yt, Lt))

    out_dir = Path(out) if out is not None else None
    manifests = [T._manifest(models[mb.settings], data, data_spec, mb.seed, method, epochs, devices, augment, blocks)
                 for mb in group]
    manifest = {**manifests[0], "seed": [mb.seed for mb in group],
                "members": [{"name": mb.name, "seed": mb.seed, "settings": dict(mb.settings)} for mb in group],
                "sweep": {k: [v for v in dict.fromkeys(dict(mb.settings)[k] for mb in group)] for k in keys}}
    histories: list[list[dict]] = [[] for _ in group]
    start = 0
    with contextlib.ExitStack() as held:
        dirs: list[Path] = []
        if out_dir is not None:
            held.enter_context(claim(out_dir, resume=resume, force=force))
            dirs = [held.enter_context(claim(out_dir / mb.name, resume=resume, force=force)) for mb in group]
            if resume and (out_dir / "checkpoint.npz").exists():
                _same_members(out_dir, manifest)
                params, opt_state, P, Pt, rows = T._restore(out_dir, params, opt_state, P, Pt, manifest)
                params, opt_state, P, Pt = put_members((params, opt_state, P, Pt))
                start = len(rows)
                histories = [[r[k] for r in rows] for k in range(M)]
                _save(out_dir, dirs, group, params, opt_state, P, Pt, histories, plot=start >= epochs)
            elif resume:
                raise CircuitError(f"--resume: {out_dir} has no checkpoint.npz to resume from")
            atomic_write(out_dir / "run.json", json.dumps(manifest, indent=2).encode())
            for d, mf in zip(dirs, manifests):
                atomic_write(d / "run.json", json.dumps(mf, indent=2).encode())

        bar = T._progress(range(start, epochs), progress, initial=start, total=epochs)
        bases = [jax.random.key(mb.seed) for mb in group]
        warned: set[str] = set()
        last_plot = 0.0
        for e in bar:
            t0 = time.perf_counter()
            keys_e = put_members(jnp.stack([jax.random.fold_in(b, e) for b in bases]))
            params, opt_state, loss, acc, P, fit = epoch_fn(hyper, params, opt_state, keys_e, X, Y, L, P)
            loss = np.asarray(loss)
            seconds = time.perf_counter() - t0
            test = None
            if eval_fn is not None:
                t1 = time.perf_counter()
                # each member's test noise, as a lone run with its seed draws it (`training.EVAL_TAG`)
                ekeys = put_members(jnp.stack([jax.random.fold_in(jax.random.fold_in(b, e), T.EVAL_TAG)
                                               for b in bases]))
                tl, ta, Pt, tfit = jax.block_until_ready(eval_fn(hyper, params, Xt, Yt, Lt, Pt, ekeys))
                test = (np.asarray(tl), np.asarray(ta), {k: np.asarray(v) for k, v in tfit.items()},
                        time.perf_counter() - t1)
            acc = np.asarray(acc)
            fit = {k: np.asarray(v) for k, v in fit.items()}
            bad = [mb.name for mb, x in zip(group, loss) if not np.isfinite(x)]
            if bad:
                raise CircuitError(f"training diverged in epoch {e + 1} for {', '.join(bad)}; "
                                   "lower the learning rates or `dt`")
            found: dict[str, list] = {}
            for k, mb in enumerate(group):
                tk = None if test is None else (test[0][k], test[1][k], {a: v[k] for a, v in test[2].items()}, test[3])
                row, classes = T.epoch_row(data, e, loss[k], acc[k], seconds, {a: v[k] for a, v in fit.items()}, tk)
                if learn.health != "ignore":
                    for p in health.problems(models[mb.settings], row, classes):
                        found.setdefault(p.key, []).append((mb.name, p))
                histories[k].append(row)
            _health(base, found, learn.health, warned, M)
            if out_dir is not None:
                plot = e == epochs - 1 or time.perf_counter() - last_plot > 10.0
                _save(out_dir, dirs, group, params, opt_state, P, Pt, histories, plot)
                if plot:
                    last_plot = time.perf_counter()
            if hasattr(bar, "set_postfix"):
                bar.set_postfix({"members": M, "mean loss": f"{float(np.mean(loss)):.4f}",
                                 "s/epoch": f"{seconds:.2f}"})
        host = jax.tree_util.tree_map(np.asarray, params)
        return [T.TrainResult({n_: jnp.asarray(v[k]) for n_, v in host.items()}, histories[k],
                              dirs[k] if dirs else None) for k in range(M)]


def _health(model: Model, found: dict[str, list], policy: str, warned: set[str], total: int) -> None:
    """The members' health problems, aggregated: one warning per kind of problem (the first
    member's, naming every member that has it), or, with `health error`, a stop."""
    import warnings

    if policy == "error" and found:
        health.raise_for(model, [_named(names, p) for names, p in _firsts(found)])
    for key, (names, p) in zip(found, _firsts(found)):
        if key not in warned:
            warned.add(key)
            who = "every member" if len(names) == total and total > 1 else ", ".join(names)
            warnings.warn(health.render(model, _named([who], p)), health.HealthWarning, stacklevel=3)


def _firsts(found):
    return [([n for n, _ in items], items[0][1]) for items in found.values()]


def _named(names, p):
    d = p.diagnostic
    return dataclasses.replace(p, diagnostic=dataclasses.replace(d, message=f"{', '.join(names)}: {d.message}"))


def _placement(devices: int):
    """(put member-stacked arrays, put shared arrays): sharded over the member axis of a 1-D
    mesh of `devices` devices, the shared data replicated; the identity on one device."""
    if devices <= 1:
        return (lambda t: t), (lambda t: t)
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    available = jax.devices()
    if devices > len(available):
        T._sharding(devices)  # raises, saying how many there are
    mesh = Mesh(np.array(available[:devices]), ("members",))
    split, whole = NamedSharding(mesh, PartitionSpec("members")), NamedSharding(mesh, PartitionSpec())
    return (lambda t: jax.device_put(t, split)), (lambda t: jax.device_put(t, whole))


def _same_members(out: Path, manifest: dict) -> None:
    try:
        old = json.loads((out / "run.json").read_text())
    except (OSError, ValueError):
        return  # `_restore` names what is wrong with it
    if isinstance(old, dict) and old.get("members") != manifest["members"]:
        raise CircuitError(f"--resume: {out} holds a sweep of other members; resume with the same --seeds "
                           "and --sweep, or use another --out")


def _save(out: Path, dirs, group, params, opt_state, P, Pt, histories, plot: bool) -> None:
    """Each member's run directory, then the sweep's own checkpoint (last: a kill in between
    repeats the epoch, bit for bit), then the summary."""
    host = jax.tree_util.tree_map(np.asarray, (params, opt_state, P, Pt))
    for k, d in enumerate(dirs):
        member = jax.tree_util.tree_map(lambda a, k=k: a[k], host)
        T._save_epoch(d, *member, histories[k], plot)
    rows = [list(r) for r in zip(*histories)]
    atomic_write(out / "checkpoint.npz", T._checkpoint_bytes(*host, rows))
    write_summary(out, group, histories, plot)


# ------------------------------------------------------------------ summary --
def summarize(group: Sequence[Member], histories: Sequence[Sequence[dict]]) -> dict[str, list[dict]]:
    """{swept values: one row per epoch with `METRIC_mean`, `METRIC_std` (population
    standard deviation over the seeds) and `members`}; the metrics every row has."""
    out: dict[str, list[dict]] = {}
    by: dict[str, list[int]] = {}
    for k, mb in enumerate(group):
        by.setdefault(mb.group, []).append(k)
    for name, ks in by.items():
        rows = []
        for e in range(min(len(histories[k]) for k in ks)):
            these = [histories[k][e] for k in ks]
            metrics = [m for m in these[0] if m != "epoch" and all(m in r for r in these)]
            row: dict[str, Any] = {"epoch": e + 1, "members": len(ks)}
            for m in metrics:
                v = np.asarray([r[m] for r in these], float)
                row[f"{m}_mean"], row[f"{m}_std"] = float(v.mean()), float(v.std())
            rows.append(row)
        out[name] = rows
    return out


def write_summary(out: Path, group: Sequence[Member], histories, plot: bool = True) -> None:
    """`summary.json`, `summary.csv` (one row per swept value and epoch) and `summary.png`."""
    summary = summarize(group, histories)
    atomic_write(out / "summary.json", json.dumps(
        {"members": [mb.name for mb in group], "groups": summary}, indent=2).encode())
    flat = [{"group": g, **row} for g, rows in summary.items() for row in rows]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in flat for k in r)))
    w.writeheader()
    w.writerows(flat)
    atomic_write(out / "summary.csv", buf.getvalue().encode())
    if plot and flat:
        _plot_summary(out, summary)


def _plot_summary(out: Path, summary: dict[str, list[dict]]) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    first = next(iter(summary.values()))[0]
    panels = [m for m in ("train_loss", "test_loss", "test_accuracy", "test_mse") if f"{m}_mean" in first]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), constrained_layout=True, squeeze=False)
    for ax, m in zip(axes[0], panels):
        for name, rows in summary.items():
            ep = np.asarray([r["epoch"] for r in rows])
            mean = np.asarray([r[f"{m}_mean"] for r in rows])
            std = np.asarray([r[f"{m}_std"] for r in rows])
            (line,) = ax.plot(ep, mean, "o-", ms=3, label=f"{name} (n={rows[0]['members']})")
            ax.fill_between(ep, mean - std, mean + std, color=line.get_color(), alpha=0.25, lw=0)
        ax.set(xlabel="epoch", ylabel=f"{m.replace('_', ' ')} (mean ± std)")
        if "loss" in m or "mse" in m:
            ax.set_yscale("log")
    axes[0][0].legend(fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write(out / "summary.png", buf.getvalue())
