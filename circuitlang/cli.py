"""`circuitc`: the command line. Thin: argparse, then calls into the library.

Exit codes: 0 ok, 1 the `.circ` file has errors, 2 bad usage.
`--debug` shows Python tracebacks instead of hiding them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from .circuit import Circuit, load
from .errors import CircuitError

__all__ = ["main"]


class _Usage(Exception):
    """Bad command-line usage (exit 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would exit; we want a code
        raise _Usage(f"{self.prog}: error: {message}\n(try `{self.prog} -h`)")


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="circuitc",
        description="Check, draw, simulate and train .circ neural circuits.",
    )
    p.add_argument("--version", action="version", version=f"circuitlang {__version__}")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    c = sub.add_parser("check", help="check .circ files and summarize them")
    c.add_argument("files", nargs="+", metavar="FILE")
    c.add_argument("-q", "--quiet", action="store_true", help="print only errors")

    r = sub.add_parser("render", help="draw a circuit (svg, png, pdf or dot)")
    r.add_argument("file", metavar="FILE")
    r.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output file; its extension picks the format (.svg .png .pdf .dot)")
    r.add_argument("--no-legend", action="store_true", help="leave out the legend")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run `circuitc` with `argv` (default: `sys.argv[1:]`); return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = _build_parser().parse_args(argv)
        if args.command is None:
            _build_parser().print_help()
            return 2
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
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        if debug:
            raise
        print(f"circuitc: internal error: {type(exc).__name__}: {exc}\n"
              "(this is a bug in circuitlang; rerun with --debug for the traceback)", file=sys.stderr)
        return 3


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
            extra.append("bias")
        if pop.cell_type:
            extra.append("compartments " + ",".join(pop.compartments))
        lines.append(f"    {pop.name}{kind} [{pop.size}]  " + "  ".join(extra))
    lines.append("  connections:")
    arrows = {"undirected": "--", "directed": "->", "one_to_one": "=>"}
    for e in circ.connections:
        pre, post = (e.post, e.pre) if e.kind == "undirected" else (e.pre, e.post)
        target = post if e.compartment in ("soma",) or e.kind == "undirected" else f"{post}.{e.compartment}"
        flags = []
        if e.plasticity == "tied":
            flags.append(f"= {'transpose(' + e.tied_to + ')' if e.transposed else e.tied_to}")
        elif e.plasticity == "fixed":
            flags.append("fixed")
        if e.sign < 0:
            flags.append("inhibitory")
        name = f" : {e.weight}" if e.weight else ""
        shape = f"  {e.shape[0]}×{e.shape[1]}" if e.kind != "one_to_one" else ""
        lines.append(f"    {pre} {arrows[e.kind]} {target}{name}{shape}  {' '.join(flags)}".rstrip())
    count = circ.parameter_count()
    lines.append(f"  parameters: {count:,}")
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
            f"{p.name} ({'forward' if p.forward else str(p.steps or p.present) + (' steps' if p.steps else ' steps/sample')}"
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
    return "\n".join(lines)


def _render(args) -> int:
    from .diagram import render

    circ = load(args.file)
    return render(circ, args.output, legend=not args.no_legend)


_COMMANDS = {"check": _check, "render": _render}
