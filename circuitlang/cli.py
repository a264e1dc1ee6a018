"""`circuitc`: the command line. Thin: argparse, then calls into the library.

Exit codes: 0 ok; 1 the `.circ` file, the data, the parameters or the
filesystem are at fault (the message names the file); 2 bad usage (every
number's range is checked by its argparse type, below); 3 an internal error,
a bug. `--debug` shows Python tracebacks instead of hiding them.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

from . import __version__
from .check.base import fmt_bytes
from .circuit import Circuit, load
from .errors import CircuitError
from .graph import noise_amplitudes
from .layout import describe
from .ops import OPS

__all__ = ["main"]


class _Usage(Exception):
    """Bad command-line usage (exit 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would exit; we want a code
        raise _Usage(f"{self.prog}: error: {message}\n(try `{self.prog} -h`)")


# ------------------------------------------------------- argument types --
# Every number the command line takes is checked here, so that a value out of
# range is bad usage (exit 2) and never reaches the library as a crash.
def _integer(lo: int, hi: int | None = None, why: str = ""):
    """An argparse type: an integer in [lo, hi]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < lo or (hi is not None and value > hi):
            bound = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
            raise argparse.ArgumentTypeError(f"{text} is out of range: it must be {bound}{why}")
        return value
    return parse


_POSITIVE = _integer(1)
_SEED = _integer(0, 2**32 - 1, " (a 32-bit seed; larger ones would repeat smaller ones' numbers)")


def _betas(text: str) -> list[float]:
    """`--betas 1,0.1,0.01`: finite, non-zero nudging strengths."""
    import math

    betas = []
    for item in (b.strip() for b in text.split(",")):
        if not item:
            continue
        try:
            beta = float(item)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r} is not a number (write e.g. 1,0.1,0.01)") from None
        if not math.isfinite(beta) or beta == 0:
            raise argparse.ArgumentTypeError(f"{item}: each beta must be a finite, non-zero number")
        betas.append(beta)
    if not betas:
        raise argparse.ArgumentTypeError("give at least one beta, e.g. 1,0.1,0.01")
    return betas


# the verbs that compile a program, and so use JAX's persistent compilation cache
_COMPILING = ("train", "evaluate", "simulate", "verify", "experiment")

_DATA_HELP = ("digits (default), fashion-mnist[:DIR], mnist:DIR, cifar10:DIR, cifar100:DIR, "
              "synthetic[:k=v,...], npz:PATH")


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="circuitc",
        description="Check, draw, simulate and train .circ neural circuits.",
    )
    p.add_argument("--version", action="version", version=f"circuitlang {__version__}")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    c = sub.add_parser("check", help="check .circ files and summarize them")
    c.add_argument("files", nargs="+", metavar="FILE", help=".circ files")
    c.add_argument("-q", "--quiet", action="store_true", help="print only errors")

    r = sub.add_parser("render", help="draw a circuit (svg, png, pdf or dot)")
    r.add_argument("file", metavar="FILE", help="the .circ file")
    r.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output file; its extension picks the format (.svg .png .pdf .dot)")
    r.add_argument("--no-legend", action="store_true", help="leave out the legend")

    def with_params(sp, required=False, help="trained parameters (an .npz written by train)"):
        sp.add_argument("--params", required=required, metavar="NPZ", help=help)
        sp.add_argument("--allow-extra-params", action="store_true",
                        help="ignore arrays in --params that the circuit does not have (default: an error)")

    def with_settings(sp):
        sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings",
                        help="change a param or setting: tau=2, phase.free.steps=500, learn.batch=64, optimizer.lr=0.1")

    t = sub.add_parser("train", help="train a circuit on data")
    t.add_argument("file", metavar="FILE", help="the .circ file")
    t.add_argument("--data", default="digits", metavar="SPEC", help=_DATA_HELP)
    t.add_argument("--epochs", type=_POSITIVE, metavar="N", help="default: the file's `epochs`, else 10")
    t.add_argument("--out", metavar="DIR", help="where params, metrics and plots go (default runs/NAME)")
    t.add_argument("--seed", type=_SEED, help="seeds the initialisation and the batches' order (default 0)")
    t.add_argument("--seeds", metavar="S-S|S,S,...",
                   help="train one member per seed (0-4, or 0,3,7) in one compiled program; "
                        "--out DIR gets DIR/seed-S/ per member and DIR/summary.csv, .json, .png")
    t.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="train one member per value, all in one compiled program (with --seeds: every "
                        "value with every seed); KEY: a param, phase.NAME.beta, phase.NAME.dt, optimizer.lr, "
                        "optimizer.lr.WEIGHT, optimizer.weight_decay, optimizer.momentum, optimizer.b1/b2/eps")
    again = t.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    again.add_argument("--force", action="store_true",
                       help="delete the finished run in --out and start over (default: refuse to overwrite it)")
    t.add_argument("--devices", type=_POSITIVE, default=1, metavar="N", help="shard each batch over N devices")
    t.add_argument("--estimator", metavar="METHOD", help="override the file's estimator")
    t.add_argument("--augment", default="", metavar="OPS",
                   help="random augmentation of image batches: crop (pad 4, random crop), flip; e.g. crop,flip")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--no-blocking", action="store_true",
                   help="update every weight after every batch (default: a large input weight under plain SGD "
                        "is updated in blocks of 4 batches, the same updates up to the order of the sums)")
    t.add_argument("--health", choices=("warn", "error", "ignore"),
                   help="when phases do not converge, outputs collapse or a population saturates: warn "
                        "(default, once each), stop with exit 1, or ignore (= --set learn.health=...)")
    with_settings(t)

    ev = sub.add_parser("evaluate", help="evaluate trained parameters")
    ev.add_argument("file", metavar="FILE", help="the .circ file")
    with_params(ev, required=True)
    ev.add_argument("--data", default="digits", metavar="SPEC", help=_DATA_HELP)
    ev.add_argument("--split", choices=("test", "train"), default="test", help="which split to score (default test)")
    with_settings(ev)

    sm = sub.add_parser("simulate", help="run the phases on a few samples and record the states")
    sm.add_argument("file", metavar="FILE", help="the .circ file")
    sm.add_argument("--data", default="digits", metavar="SPEC", help=_DATA_HELP + "; its first test samples are run")
    sm.add_argument("--samples", type=_POSITIVE, default=4, metavar="K", help="how many test samples (default 4)")
    sm.add_argument("--record", metavar="POPS", help="comma-separated populations (default: the free ones)")
    with_params(sm, help="trained parameters (default: a fresh initialisation)")
    sm.add_argument("--seed", type=_SEED, default=0,
                    help="seeds the initialisation when --params is not given, and a noisy circuit's noise")
    sm.add_argument("--out", required=True, metavar="DIR", help="where traces.npz and traces.png go")
    with_settings(sm)

    vf = sub.add_parser("verify", help="compare the learning rule with the true gradient over a sweep of beta")
    vf.add_argument("file", metavar="FILE", help="the .circ file")
    vf.add_argument("--data", default="digits", metavar="SPEC", help=_DATA_HELP + "; its first test samples are used")
    vf.add_argument("--samples", type=_POSITIVE, default=16, metavar="K",
                    help="how many test samples the gradients are averaged over (default 16)")
    vf.add_argument("--betas", type=_betas, default=[1.0, 0.5, 0.1, 0.05, 0.01, 0.001], metavar="B,B,...",
                    help="nudging strengths to sweep: finite, non-zero (default 1,0.5,0.1,0.05,0.01,0.001)")
    vf.add_argument("--estimator", metavar="METHOD", help="the estimator to compare (default: the file's)")
    with_params(vf, help="trained parameters (default: a fresh initialisation)")
    vf.add_argument("--seed", type=_SEED, default=0, help="seeds the initialisation when --params is not given")
    vf.add_argument("--float32", action="store_true", help="compute in float32 (default float64)")
    vf.add_argument("--out", metavar="DIR", help="also write verify.csv and verify.png here")
    with_settings(vf)

    xp = sub.add_parser("experiment", help="paired control and perturbed runs on the same samples: weight "
                                            "updates, compartment drives, cost along the nudge, next trial")
    xp.add_argument("file", metavar="FILE", help="the .circ file")
    with_params(xp, help="trained parameters (default: a fresh initialisation)")
    xp.add_argument("--data", default="digits", metavar="SPEC", help=_DATA_HELP + "; its first samples are used")
    xp.add_argument("--split", choices=("test", "train"), default="test", help="which split's samples (default test)")
    xp.add_argument("--samples", type=_POSITIVE, default=64, metavar="K",
                    help="how many samples, the same in every condition (default 64)")
    xp.add_argument("--perturb", action="append", default=[], metavar="NAME",
                    help="a condition with the file's `perturb NAME` on (A+B: both at once); repeat for more")
    xp.add_argument("--sweep", metavar="NAME.size=V,V,...",
                    help="one condition per value of a perturbation's size (or .fraction)")
    xp.add_argument("--target", default="data", metavar="data,prediction",
                    help="the nudge's target: the data's, or the circuit's own free-phase prediction (no surprise); "
                         "both: data,prediction (default data)")
    xp.add_argument("--estimator", metavar="METHOD", help="whose update to read out (default: the file's)")
    xp.add_argument("--seed", type=_SEED, default=0, help="seeds the initialisation and any random estimator")
    xp.add_argument("--out", required=True, metavar="DIR", help="where experiment.csv, nudge_cost.csv and "
                                                                "experiment.png go")
    with_settings(xp)

    cp = sub.add_parser("compile", help="show the program that runs (jaxpr or XLA HLO)")
    cp.add_argument("file", metavar="FILE", help="the .circ file")
    cp.add_argument("--emit", choices=("jaxpr", "hlo"), default="jaxpr", help="JAX's jaxpr (default) or XLA's HLO")
    cp.add_argument("--fn", choices=("estimate", "relax"), default="estimate",
                    help="the training step's estimate (default) or the free relaxation")
    cp.add_argument("--batch", type=_POSITIVE, metavar="B", help="default: the file's batch")
    cp.add_argument("-o", "--output", metavar="OUT", help="write it to this file (default: print it)")
    with_settings(cp)
    for verb, action in sub.choices.items():  # `circuitc verify FILE --debug` as well as `circuitc --debug verify`
        action.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show Python tracebacks")
        if verb in _COMPILING:
            action.add_argument("--no-compile-cache", action="store_true",
                                help="compile afresh, without JAX's persistent compilation cache "
                                     "(default: <cache>/jax, ~/.cache/circuitlang/jax or $CIRCUITLANG_CACHE/jax)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run `circuitc` with `argv` (default: `sys.argv[1:]`); return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    _show_warnings()
    try:
        args = _build_parser().parse_args(argv)
        if args.command is None:
            _build_parser().print_help()
            return 2
        _compilation_cache(args)
        return _COMMANDS[args.command](args)
    except _Usage as exc:
        print(exc, file=sys.stderr)
        return 2
    except CircuitError as exc:
        if debug:
            raise
        print(exc.render(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `circuitc check ... | head`: the reader left; not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except SystemExit as exc:  # --help / --version
        return int(exc.code or 0)
    except MemoryError:
        if debug:
            raise
        print("circuitc: error: out of memory (the check before the run estimated less than it took); "
              "lower `batch` (--set learn.batch=N), --samples or the population sizes, or free memory",
              file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        if debug:
            raise
        if "RESOURCE_EXHAUSTED" in str(exc):  # XLA could not allocate on the device
            print(f"circuitc: error: the device ran out of memory: {str(exc).splitlines()[0][:300]}\n"
                  "  lower `batch` (--set learn.batch=N), --samples or the population sizes", file=sys.stderr)
            return 1
        print(f"circuitc: internal error: {type(exc).__name__}: {exc}\n"
              "(this is a bug in circuitlang; rerun with --debug for the traceback)", file=sys.stderr)
        return 3


def _compilation_cache(args) -> None:
    """JAX's persistent compilation cache, in `<cache>/jax` (`cachedir`), for the verbs that
    compile: running a file again skips XLA's compilation (`--no-compile-cache`, or
    `CIRCUITLANG_CACHE=off`, turns it off). JAX keys each program by its HLO, the compile
    options, the backend and JAX's version, so a changed file or setting compiles afresh.
    Set for every command, on or off, since JAX's setting outlives a `main()` called in-process."""
    if args.command not in _COMPILING:
        return
    from .cachedir import cache_dir

    where = None if args.no_compile_cache else cache_dir("jax")
    if where is not None:
        try:
            where.mkdir(parents=True, exist_ok=True)
        except OSError:
            where = None  # an unwritable home only costs compilation time
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    wanted = str(where) if where is not None else None
    if jax.config.jax_compilation_cache_dir != wanted:
        compilation_cache.reset_cache()  # JAX opens its cache once; a new directory needs a new one
        jax.config.update("jax_compilation_cache_dir", wanted)
    # the default keeps only programs that took 1 s to compile; a small circuit's epoch takes
    # 0.3-1 s, which is most of a short run's wall time
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def _show_warnings() -> None:
    """Print circuitlang's located warnings as they are (no Python source line), above any
    progress bar."""
    import warnings

    from .errors import HealthWarning

    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, HealthWarning):
            return default(message, category, filename, lineno, file, line)
        try:
            from tqdm.auto import tqdm

            tqdm.write(str(message), file=sys.stderr)
        except ImportError:  # pragma: no cover - tqdm is a dependency
            print(message, file=sys.stderr)

    warnings.showwarning = show
    warnings.simplefilter("always", HealthWarning)


def _check(args) -> int:
    status = 0
    for path in args.files:
        try:
            circ = load(path)
        except CircuitError as exc:
            if args.debug:
                raise
            print(exc.render(), file=sys.stderr)
            status = 1
            continue
        if not args.quiet:
            print(summary(circ))
    return status


def _flops(n: int) -> str:
    for unit, scale in (("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} FLOP"


def _steps(n: int) -> str:
    return " step" if n == 1 else " steps"


def summary(circ: Circuit) -> str:
    """A one-screen description of a checked circuit."""
    spec = circ.spec
    lines = [f"{circ.source.path}: ok — circuit {spec.name}" + (f' "{spec.doc}"' if spec.doc else "")]
    lines.append("  populations:")
    for pop in circ.populations.values():
        kind = f" : {pop.cell_type}" if pop.cell_type else ""
        extra = []
        if pop.role != "hidden":
            extra.append(pop.role)
        default = "rho" if "rho" in spec.functions else "identity"
        if pop.activation != default:
            extra.append(f"rho={pop.activation}")
        if pop.bias:
            extra.append("bias" if len(pop.shape) == 1 else f"bias per {pop.bias_per}")
        if pop.cell_type:
            extra.append("compartments " + ",".join(pop.compartments))
        extra.extend(f"noise {k.split('.', 1)[1] + ' ' if '.' in k else ''}σ={a:.3g}"
                     for k, a in noise_amplitudes({pop.name: pop}, spec.neuron_types).items())
        lines.append(f"    {pop.name}{kind} {describe(pop.shape)}  " + "  ".join(extra))
    lines.append("  connections:")
    arrows = {"undirected": "--", "directed": "->", "one_to_one": "=>"}
    for e in circ.connections:
        pre, post = (e.post, e.pre) if e.kind == "undirected" else (e.pre, e.post)
        target = post if e.compartment in ("soma",) or e.kind == "undirected" else f"{post}.{e.compartment}"
        flags = []
        if e.plasticity == "tied":
            flags.append(f"= {'transpose(' + e.tied_to + ')' if e.transposed else e.tied_to}")
        elif e.plasticity == "fixed" and e.weight is not None:
            flags.append("fixed")
        if e.sign < 0:
            flags.append("inhibitory")
        name = f" : {e.weight}" if e.weight else ""
        dense = [s.kind for s in e.stages] == ["dense"] and all(
            len(circ.populations[n].shape) == 1 for n in (e.pre, e.post))
        if dense:
            shape = f"  {e.shape[0]}×{e.shape[1]}" if e.plasticity != "tied" else ""
        else:
            ops = " → ".join(OPS[s.kind].label(s.kw) for s in e.stages)
            ends = f"{describe(circ.populations[e.pre].shape)} → {describe(circ.populations[e.post].shape)}"
            array = f", {'×'.join(map(str, e.shape))}" if e.shape and e.plasticity != "tied" else ""
            shape = f"  {ops}  ({ends}{array})" if e.kind != "one_to_one" or e.weight else ""
        lines.append(f"    {pre} {arrows[e.kind]} {target}{name}{shape}  {' '.join(flags)}".rstrip())
    count = circ.parameter_count()
    lines.append(f"  parameters: {count:,} ({fmt_bytes(4 * count)} in float32)")
    flops = sum(e.flops for e in circ.connections)
    state = sum(p.size for p in circ.populations.values())
    lines.append(f"  per example: {state:,} neuron states, {_flops(flops)} of connections per step")
    if spec.energy is not None:
        what = ", ".join(spec.energy.presets + tuple("custom term" for _ in spec.energy.terms))
        lines.append(f"  dynamics: gradient flow on the energy ({what})")
    elif spec.dynamics is not None:
        lines.append(f"  dynamics: {spec.dynamics.kind}")
    elif spec.neuron_types:
        lines.append("  dynamics: the cell types' own equations")
    for cost in spec.costs:
        lines.append(f"  cost: {cost.kind} on {cost.population}")
    learn = spec.learning
    if learn is not None:
        phases = ", ".join(
            f"{p.name} ({'forward' if p.forward else str(p.steps or p.present) + (_steps(p.steps) if p.steps else ' steps/sample')}"
            + (f", beta {p.beta:g}" if p.beta else "") + ")"
            for p in learn.phases
        )
        how = f"learn {learn.method}"
        if learn.method == "eqprop":
            how += f", estimator {learn.estimator}"
        else:
            how += f", {len(learn.rules)} rule{'s' if len(learn.rules) != 1 else ''}"
        if learn.optimizer is not None:
            how += f", optimizer {learn.optimizer.name}"
        how += f", batch {learn.batch}"
        lines.append(f"  learning: {how}")
        lines.append(f"  phases: {phases}")
    if spec.perturbations:
        lines.append("  perturbations (off unless enabled): " + "; ".join(
            f"{p.name}: {p.population}{'.' + p.compartment if p.compartment else ''} {p.describe()}"
            for p in spec.perturbations))
    return "\n".join(lines)


def _render(args) -> int:
    from .diagram import render

    circ = load(args.file)
    return render(circ, args.output, legend=not args.no_legend)


def _settings(args) -> dict[str, str]:
    out = {}
    for item in args.settings:
        if "=" not in item:
            raise _Usage(f"circuitc: error: --set {item}: write KEY=VALUE, e.g. --set phase.free.steps=500")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def _model(args):
    import circuitlang as cl

    return cl.compile(load(args.file), _settings(args))


def _data(spec: str):
    """The data of `--data SPEC` (a random data set takes its seed from the spec: `synthetic:seed=3`)."""
    from .data import load as load_data

    return load_data(spec)


def _train(args) -> int:
    from .training import train

    if args.health:
        args.settings = [*args.settings, f"learn.health={args.health}"]
    if args.seeds is not None or args.sweep:
        return _train_sweep(args)
    model = _model(args)
    data = _data(args.data)
    out = args.out or f"runs/{model.spec.name}"
    result = train(
        model, data, args.epochs, seed=args.seed or 0, out=out, resume=args.resume, devices=args.devices,
        method=args.estimator, progress=not args.no_progress, data_spec=args.data, augment=args.augment,
        force=args.force, block=not args.no_blocking,
    )
    last = result.history[-1] if result.history else {}
    parts = _last_epoch(last)
    if "converged" in last:
        parts.append(f"converged {last['converged']:.0%} of the last epoch's examples")
    print(f"trained {model.spec.name} for {len(result.history)} epochs: " + ", ".join(parts))
    print(f"wrote {out}/params.npz, metrics.csv, metrics.json, curves.png, run.json")
    return 0


def _last_epoch(row: dict) -> list[str]:
    """What `train` prints of an epoch's metrics."""
    return [f"{k} {row[k]:.4f}" for k in ("train_loss", "test_loss", "test_accuracy", "test_mse") if k in row]


def _train_sweep(args) -> int:
    """`train --seeds` / `--sweep`: every member in one program (`sweeps.py`)."""
    from . import sweeps

    if args.seeds is not None and args.seed is not None:
        raise _Usage("circuitc: error: give --seed or --seeds, not both")
    try:
        seeds = sweeps.parse_seeds(args.seeds) if args.seeds is not None else [args.seed or 0]
        swept = [sweeps.parse_sweep(s) for s in args.sweep]
        group = sweeps.members(seeds, swept)
    except ValueError as exc:
        raise _Usage(f"circuitc: error: {exc}") from None
    settings = _settings(args)
    for key, _ in swept:
        why = sweeps.refusal(key)
        if why:
            raise _Usage(f"circuitc: error: {why}")
        if key in settings:
            raise _Usage(f"circuitc: error: --sweep {key} and --set {key}: give the key once")
    circ = load(args.file)
    data = _data(args.data)
    out = args.out or f"runs/{circ.spec.name}-sweep"
    results = sweeps.train_sweep(
        circ, settings, data, group, args.epochs, out=out, resume=args.resume, force=args.force,
        devices=args.devices, method=args.estimator, progress=not args.no_progress, data_spec=args.data,
        augment=args.augment, block=not args.no_blocking,
    )
    for mb, result in zip(group, results):
        print(f"{mb.name}: " + ", ".join(_last_epoch(result.history[-1] if result.history else {})))
    print(f"trained {len(group)} members of {circ.spec.name} in one program for "
          f"{len(results[0].history)} epochs")
    print(f"wrote {out}/MEMBER/ (params.npz, metrics.csv, ...) for each member, "
          f"{out}/summary.csv, summary.json, summary.png")
    return 0


def _evaluate(args) -> int:
    from .training import evaluate, load_params

    model = _model(args)
    params = load_params(args.params, model, allow_extra=args.allow_extra_params)
    data = _data(args.data)
    result = evaluate(model, params, data, args.split)
    print(" ".join(f"{k} {v:.4f}" for k, v in result.items()))
    return 0


def _samples(model, data, k: int):
    import jax.numpy as jnp

    from .training import check_sizes

    check_sizes(model, data)
    k = max(1, min(k, len(data.x_test)))
    return jnp.asarray(data.x_test[:k]), jnp.asarray(data.targets(data.y_test[:k]).astype("float32"))


def _needs_an_estimate(model, method: str, verb: str, also: str = "") -> None:
    """`verify` and `compile --fn estimate` differentiate a cost with an estimator: a circuit
    without a cost, or without the phases the estimator needs, is refused here (exit 1)."""
    from .errors import Diagnostic

    path = model.circuit.source.path
    if not model.spec.costs:
        raise CircuitError(Diagnostic(
            f"{path}: {verb} needs a cost to estimate the gradient of, and this circuit has none", None,
            "add one, e.g. `cost y squared` on the output population" + also), model.circuit.source)
    try:
        model.check_estimator(method)
    except CircuitError as exc:
        if model.learning is not None:
            raise
        raise CircuitError(Diagnostic(
            f"{path}: {verb}: the estimator `{method}` needs the phases of a `learn` block, and this circuit "
            "has none", None, "add e.g. `learn eqprop { phase free { steps 40 } phase nudge { steps 8; beta 0.5 } }`"
            + (", or use `--estimator gradient` (the true gradient needs only the free phase)" if verb == "verify"
               else "") + also),
            model.circuit.source) from exc


def _require(model, verb: str, batch: int, **kw) -> None:
    """The memory `verb` needs, against what the machine has, before any work."""
    from .resources import estimate, require_run

    require_run(estimate(model, verb, batch=batch, **kw), model)


def _params(model, args, dtype=None):
    import jax

    from .training import load_params

    if args.params:
        return load_params(args.params, model, dtype, allow_extra=args.allow_extra_params)
    return model.init(jax.random.key(args.seed), dtype)


def _simulate(args) -> int:
    import jax

    from .rundir import make_dir
    from .simulate import simulate

    make_dir(args.out)  # before the work: a path that cannot be a directory is known now
    model = _model(args)
    data = _data(args.data)
    x, y = _samples(model, data, args.samples)
    _require(model, "simulate", len(x))
    record = args.record.split(",") if args.record else None
    results = simulate(model, _params(model, args), x, y, record, args.out, key=jax.random.key(args.seed))
    diverged = None
    for name, r in results.items():
        status = "converged" if r["converged"] else "NOT converged"
        if r.get("stream"):
            n = (len(next(iter(r["states"].values()))) - 1) // r["stream"]
            status = f"streamed {n} samples, {r['stream']} steps each, never reset"
        if not r["finite"]:
            status = "DIVERGED (non-finite states in " + ", ".join(r["nonfinite"]) + ")"
            diverged = diverged or (name, r["nonfinite"][0])
        per = ", ".join(f"{n} {v:.2e}" for n, v in r["residuals"].items())
        if r.get("stream") and r["finite"]:  # a stream never settles: its residual says nothing
            print(f"phase {name}: {status}")
            continue
        print(f"phase {name}: {status}: residual {r['residual']:.2e} (tolerance {r['tol']:g}; {per})")
    if any(not r["converged"] and not r.get("stream") for r in results.values()):
        print("(residual: max |s_T - s_(T-1)| / dt at the end of the phase; raise its `steps` or lower its "
              "`dt` to converge)")
    print(f"wrote {args.out}/traces.npz and traces.png")
    if diverged is not None:
        from .errors import Diagnostic

        phase, pop = diverged
        raise CircuitError(Diagnostic(
            f"the state of population `{pop}` became non-finite (NaN or inf) in phase `{phase}`",
            model.phases[phase].span,
            f"lower `dt` (now {model.phases[phase].dt:g})" + (f" or `beta` (now {model.phases[phase].beta:g})"
                                                              if model.phases[phase].beta else "")
            + ", or the weights' scale"), model.circuit.source)
    return 0


def _verify(args) -> int:
    import jax

    from . import verify as V

    betas = args.betas
    if args.out:
        from .rundir import make_dir

        make_dir(args.out)  # before the work
    if not args.float32:
        jax.config.update("jax_enable_x64", True)
    model = _model(args)
    import jax.numpy as jnp

    dtype = jnp.float32 if args.float32 else jnp.float64
    _needs_an_estimate(model, args.estimator or model.method, "verify")
    data = _data(args.data)
    x, y = _samples(model, data, args.samples)
    _require(model, "verify", len(x), itemsize=4 if args.float32 else 8, method=args.estimator)
    params = {k: v.astype(dtype) for k, v in _params(model, args, dtype).items()}
    method = args.estimator or model.method
    rows = V.verify(model, params, x.astype(dtype), y.astype(dtype), method, betas, report=print)
    print(V.format_table(rows, method))
    if args.out:
        import csv
        import io

        from .rundir import atomic_write, make_dir

        out = make_dir(args.out)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
        atomic_write(out / "verify.csv", buf.getvalue().encode())
        try:
            V.plot(rows, out / "verify.png", method)
        except OSError as exc:
            raise CircuitError(f"{out / 'verify.png'}: cannot write ({exc.strerror or exc})") from None
        print(f"wrote {out}/verify.csv and verify.png")
    return 0


def _experiment(args) -> int:
    import csv
    import io

    from . import experiment as E
    from .rundir import atomic_write, make_dir

    out = make_dir(args.out)  # before the work
    circ = load(args.file)
    targets = [t.strip() for t in args.target.split(",") if t.strip()]
    conds = E.conditions(circ, args.perturb, args.sweep, targets)  # names checked before any work
    model = _model(args)
    if model.learning is None or not model.spec.costs:
        from .errors import Diagnostic

        raise CircuitError(Diagnostic(f"{args.file}: an experiment runs the phases of a `learn` block against a "
                                      "cost, and this circuit lacks " + ("a `learn` block" if model.learning is None
                                                                         else "a cost"), None), circ.source)
    if args.estimator:
        _needs_an_estimate(model, args.estimator, "experiment")
    data = _data(args.data)
    if args.split == "train":
        data = dataclasses.replace(data, x_test=data.x_train, y_test=data.y_train)
    x, y = _samples(model, data, args.samples)
    _require(model, "experiment", len(x), method=args.estimator)
    params = _params(model, args)
    print(f"{len(conds)} conditions on {len(x)} {args.split} samples of {args.data}:")
    rows, curves = E.run(circ, params, x, y, conds, _settings(args), args.estimator, args.seed, report=print)
    print(E.format_table(rows))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    atomic_write(out / "experiment.csv", buf.getvalue().encode())
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["condition", "phase", "step", "cost"])
    for label, by_phase in curves.items():
        for phase, curve in by_phase.items():
            w.writerows([label, phase, k, float(v)] for k, v in enumerate(curve))
    atomic_write(out / "nudge_cost.csv", buf.getvalue().encode())
    nudge = model.nudge_phase.name if model.nudge_phase is not None and model.nudge_phase.beta else None
    try:
        E.plot(rows, curves, out / "experiment.png", f"{model.spec.name}: {len(x)} samples", nudge)
    except OSError as exc:
        raise CircuitError(f"{out / 'experiment.png'}: cannot write ({exc.strerror or exc})") from None
    print(f"wrote {out}/experiment.csv, nudge_cost.csv and experiment.png")
    return 0


def _compile(args) -> int:
    import jax
    import jax.numpy as jnp

    model = _model(args)
    if args.fn == "estimate":
        _needs_an_estimate(model, model.method, "compile --fn estimate", "; or compile the relaxation: --fn relax")
    batch = args.batch or (model.learning.batch if model.learning else 1)
    # shapes only: the program is traced and lowered, never run, so nothing is allocated
    params = jax.eval_shape(model.init, jax.random.key(0))
    dtype = jnp.zeros(()).dtype
    x = {n: jax.ShapeDtypeStruct((batch, *model.shape_of(n)), dtype) for n in model.inputs}
    out_pop = model.spec.costs[0].population if model.spec.costs else None
    y = jax.ShapeDtypeStruct((batch, model.fns.pops[out_pop].size), dtype) if out_pop else None
    if args.fn == "relax":
        fn, fargs = (lambda p, x: model._free(p, x).state), (params, x)
    else:
        from . import learning

        fn = lambda p, x, y, k: learning.estimate(model, p, x, y, model.method, None, k)  # noqa: E731
        fargs = (params, x, y, jax.random.key(0))
    if args.emit == "jaxpr":
        text = str(jax.make_jaxpr(fn)(*fargs))
    else:
        text = jax.jit(fn).lower(*fargs).as_text()
    if args.output:
        from pathlib import Path

        from .rundir import atomic_write

        atomic_write(Path(args.output), text.encode())
        print(f"wrote {args.output}")
    else:
        print(text)
    return 0


_COMMANDS = {
    "check": _check, "render": _render, "train": _train, "evaluate": _evaluate,
    "simulate": _simulate, "verify": _verify, "compile": _compile, "experiment": _experiment,
}
