"""The boxes of a circuit diagram: populations (with their compartments' ports) and the learning panel.

A population is a graphviz HTML table. Its **body** (port `BODY`) names it
and says what its neurons are: cell type, shape, role, state bounds, rate
function ρ and bias. A population with a cell type shows its compartments
beside the body, `apical` ones in a row above the others, so that the body
keeps a free top and bottom side for the connections it sends. Every
connection into a compartment ends on a port of its own, a slot on the
compartment's outer side (`Ports`): two arrow heads never share a point.
"""

from __future__ import annotations

import html
from collections.abc import Iterable

from . import primitives as P
from .circuit import Circuit
from .graph import PhaseSpec, PopulationNode, noise_amplitudes
from .layout import describe
from .plasticity import Plasticity
from .source import Span

__all__ = ["BODY", "Ports", "population_label", "learning_panel", "source_text"]

# not a NAME of the language, so no compartment can be called this
BODY = "(body)"
ROLE_COLORS = {"input": "#dbeafe", "hidden": "#f3f4f6", "output": "#fde68a"}
ROLE_BORDER = {"input": "#1d4ed8", "hidden": "#4b5563", "output": "#b45309"}


def _is_top(compartment: str) -> bool:
    return "apical" in compartment.lower()


class Ports:
    """The head ports of one population's compartments, handed out one per connection.

    `take(compartment, side)` gives a new port on `side` (``"top"`` for a
    connection from a higher rank, ``"bottom"`` otherwise) when that side of
    the compartment faces outwards, else on the side that does: the upper
    row's outer side is its top, the lower row's its bottom, and a single row
    has both. A population without a cell type is one box: its edges end on
    the node itself, so `take` gives `BODY`.
    """

    def __init__(self, pop: PopulationNode) -> None:
        self.pop = pop
        comps = pop.compartments if pop.cell_type else ()
        self.top = [c for c in comps if _is_top(c)]
        self.bottom = [c for c in comps if not _is_top(c)]
        two_rows = bool(self.top) and bool(self.bottom)
        self.sides = {c: ("top",) if two_rows else ("top", "bottom") for c in self.top}
        self.sides.update({c: ("bottom",) if two_rows else ("top", "bottom") for c in self.bottom})
        self.taken: dict[tuple[str, str], list[str]] = {}
        self.count: dict[str, int] = {}

    def take(self, compartment: str, side: str) -> str:
        if compartment not in self.sides:
            return BODY
        sides = self.sides[compartment]
        side = side if side in sides else sides[0]
        n = self.count.get(compartment, 0) + 1
        self.count[compartment] = n
        port = f"{compartment}.{n}"
        self.taken.setdefault((compartment, side), []).append(port)
        return port

    def on(self, compartment: str, side: str) -> list[str]:
        return self.taken.get((compartment, side), [])


def source_text(circ: Circuit, span: Span) -> str | None:
    """The `.circ` text a span covers (lines joined by spaces), or None if it is not in this file."""
    if span.line <= 0 or span.path != circ.source.path:
        return None
    lines = [circ.source.line(n) for n in range(span.line, span.end_line + 1)]
    if len(lines) == 1:
        return lines[0][span.col - 1:span.end_col - 1]
    lines[0] = lines[0][span.col - 1:]
    lines[-1] = lines[-1][:span.end_col - 1]
    return " ".join(part.split("#", 1)[0].strip() for part in lines)


def _rate(circ: Circuit, pop: PopulationNode) -> str:
    """``ρ(x) = clip(x, 0, 1)``: the rate function, with its body when the file defines it."""
    name = pop.activation
    fn = circ.spec.functions.get(name)
    if fn is None:
        return f"ρ = {name}"
    body = source_text(circ, fn.body.span) if fn.body.span else None
    args = ", ".join(fn.params)
    if body is None:
        return f"ρ = {name}"
    return f"ρ({args}) = {body}" if name == "rho" else f"ρ = {name}({args}) = {body}"


def _bounds(pop: PopulationNode) -> str | None:
    s = pop.state[0] if pop.state else "s"
    if pop.lo is not None and pop.hi is not None:
        return f"{s} ∈ [{pop.lo:g}, {pop.hi:g}]"
    if pop.lo is not None:
        return f"{s} ≥ {pop.lo:g}"
    if pop.hi is not None:
        return f"{s} ≤ {pop.hi:g}"
    return None


def _noise(circ: Circuit, pop: PopulationNode) -> list[str]:
    """`+ σ dW, σ = 0.05` for each noisy state of `pop` (`noise=`, `white()` in its equations)."""
    amps = noise_amplitudes({pop.name: pop}, circ.spec.neuron_types)
    out = []
    for key, sigma in amps.items():
        var = key.split(".", 1)[1] if "." in key else ("s" if "s" in pop.state else pop.state[0])
        out.append(f"d{var} += σ dW, σ = {sigma:.3g}")
    return out


def _notes(circ: Circuit, pop: PopulationNode, bias: Plasticity | None) -> list[str]:
    first = [t for t in (pop.role if pop.role != "hidden" else None, _bounds(pop)) if t]
    lines = [" · ".join(first)] if first else []
    lines.append(_rate(circ, pop))
    lines.extend(_noise(circ, pop))
    if pop.bias:
        text = "+ bias" if len(pop.shape) == 1 else f"+ bias per {pop.bias_per}"
        if bias is not None and bias.label:
            text += f" · {bias.label}"
        lines.append(text)
    return lines


def population_label(circ: Circuit, pop: PopulationNode, ports: Ports, bias: Plasticity | None) -> str:
    """The population's HTML table (see the module docstring)."""
    esc = html.escape
    fill, border = ROLE_COLORS[pop.role], ROLE_BORDER[pop.role]
    title = f"<B>{esc(pop.name)}</B>"
    if pop.cell_type:
        title += f" : <I>{esc(pop.cell_type)}</I>"
    title += f"  {describe(pop.shape)}"
    notes = "".join(f'<BR/><FONT POINT-SIZE="9">{esc(n)}</FONT>' for n in _notes(circ, pop, bias))
    if not pop.cell_type:
        return (
            f'<<TABLE BORDER="1" COLOR="{border}" CELLBORDER="0" CELLSPACING="0" CELLPADDING="6" '
            f'BGCOLOR="{fill}" STYLE="ROUNDED"><TR><TD PORT="{BODY}">{title}{notes}</TD></TR></TABLE>>'
        )
    rows = [r for r in (ports.top, ports.bottom) if r]
    width = max(len(r) for r in rows)
    body = (f'<TD PORT="{BODY}" ROWSPAN="{len(rows)}" BGCOLOR="{fill}" CELLPADDING="6">'
            f'{title}{notes}</TD>')
    trs = []
    for i, comps in enumerate(rows):
        cells = []
        for j, c in enumerate(comps):
            span = width - len(comps) + 1 if j == len(comps) - 1 else 1
            sides = "L" + ("B" if i == 0 and len(rows) == 2 else "")
            cells.append(f'<TD PORT="{esc(c)}" COLSPAN="{span}" BGCOLOR="white" BORDER="1" SIDES="{sides}" '
                         f'COLOR="{border}">{_compartment(c, ports)}</TD>')
        trs.append("<TR>" + (body if i == 0 else "") + "".join(cells) + "</TR>")
    return (
        f'<<TABLE BORDER="1" COLOR="{border}" CELLBORDER="0" CELLSPACING="0" CELLPADDING="0" '
        f'STYLE="ROUNDED">{"".join(trs)}</TABLE>>'
    )


def _slots(names: Iterable[str]) -> str:
    cells = "".join(f'<TD PORT="{html.escape(p)}" HEIGHT="4" WIDTH="20"></TD>' for p in names)
    return (f'<TR><TD><TABLE BORDER="0" CELLSPACING="0" CELLPADDING="0"><TR>{cells}</TR></TABLE></TD></TR>'
            if cells else "")


def _compartment(c: str, ports: Ports) -> str:
    """The compartment's name between the rows of its ports (the top ones above, the bottom ones below)."""
    name = f'<TR><TD CELLPADDING="4"><FONT POINT-SIZE="10"><I>{html.escape(c)}</I></FONT></TD></TR>'
    return (f'<TABLE BORDER="0" CELLSPACING="0" CELLPADDING="0">'
            f'{_slots(ports.on(c, "top"))}{name}{_slots(ports.on(c, "bottom"))}</TABLE>')


# ---------------------------------------------------------- learning panel --
def _phase(ph: PhaseSpec) -> str:
    if ph.forward:
        bits = ["one forward pass"]
    elif ph.steps is None and ph.present is not None:
        bits = [f"{ph.present} steps per sample", f"dt {ph.dt:g}"]
    else:
        bits = [f"{ph.steps} step{'' if ph.steps == 1 else 's'}", f"dt {ph.dt:g}"]
    if ph.beta:
        bits.append(f"β {ph.beta:g}")
    if ph.clamp:
        bits.append(f"clamped to {ph.clamp}")
    if ph.integrator != "euler":
        bits.append(f"integrator {ph.integrator}")
    if ph.tol is not None:
        bits.append(f"until residual < {ph.tol:g}")
    if ph.noise != 1.0:  # the populations' noise, scaled (0: off)
        bits.append("no noise" if ph.noise == 0 else f"noise ×{ph.noise:g}")
    return f"{ph.name} ({', '.join(bits)})"


def learning_panel(circ: Circuit) -> str | None:
    """The `learn` block in a few lines (an HTML table): method, phases in order, estimator or
    rules as written, optimizer."""
    learn = circ.spec.learning
    if learn is None:
        return None
    esc = html.escape
    lines = [f"<B>learn {esc(learn.method)}</B>: {esc(P.LEARN_METHODS[learn.method].doc)}"]
    lines.append("phases: " + esc(" → ".join(_phase(ph) for ph in learn.phases)))
    if learn.method != "rules" and learn.estimator:
        est = P.ESTIMATORS[learn.estimator]
        doc = est.doc.replace("dE/dtheta", "∂E/∂θ").replace("beta", "β")
        lines.append(f"estimator {esc(est.name)}: {esc(doc)}")
    for rule in learn.rules:
        text = source_text(circ, rule.span)
        if text is None:
            text = f"rule for {', '.join(rule.weights)}"
        lines.append(f'<FONT FACE="Courier">{esc(text)}</FONT>')
    if learn.prospective:
        lines.append("prospective: rates look ahead, ρ(s + τ ds/dt)")
    if learn.optimizer is not None:
        lines.append(f"optimizer {esc(learn.optimizer.name)} · batch {learn.batch}")
    rows = "".join(f'<TR><TD ALIGN="LEFT"><FONT POINT-SIZE="9">{line}</FONT></TD></TR>' for line in lines)
    return f'<TABLE BORDER="0" CELLSPACING="0" CELLPADDING="1">{rows}</TABLE>'
