"""The checker's shared state and the helpers every check uses.

`BuilderBase` holds what the checks have met so far (params, functions, cell
types, populations, connections, the global namespace) and the diagnostics
they collect. Its helpers check what several statements share: one global
namespace, constant expressions, `key=value` options and their numbers, and
references to populations. The checks themselves are mixins on it, one module
per concern; `builder.py` runs them in order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .. import primitives as P
from .. import syntax as S
from ..errors import Diagnostic, did_you_mean
from ..expr import EvalError, evaluate
from ..graph import ConnectionEdge, FunctionDef, NeuronType, PopulationNode
from ..source import Span

# statement keywords; no option is named like one (see `BuilderBase._own_options`)
STATEMENT_WORDS = frozenset(
    ("circuit", "param", "fn", "neuron", "population", "bias", "energy", "dynamics", "cost", "learn", "perturb")
)


class BuilderBase:
    """What every check reads and writes: the declarations met so far and the errors."""

    def __init__(self, program: S.Program) -> None:
        self.program = program
        self.path = program.path
        self.errors: list[Diagnostic] = []
        self.params: dict[str, float] = {}
        self.functions: dict[str, FunctionDef] = {}
        self.fn_name_spans: dict[str, Span] = {}  # function -> where its name is written
        self.neurons: dict[str, NeuronType] = {}
        self.pops: dict[str, PopulationNode] = {}
        self.edges: list[ConnectionEdge] = []
        self.biased: dict[str, Span] = {}
        self.bias_inits: dict[str, object] = {}  # population -> InitSpec of `bias ... init=`
        self.bias_per: dict[str, str] = {}  # population -> `channel` / `neuron` of `bias ... per=`
        self.names: dict[str, tuple[str, Span]] = {}  # global namespace: name -> (kind, span)
        self.param_decls: dict[str, Span] = {}  # every param of the file, defined yet or not
        self.broken: set[str] = set()  # params whose value could not be computed
        self.cost_spans: dict[str, Span] = {}  # population -> its `cost` statement
        self.rho_options: dict[str, S.Option] = {}  # population -> its written `rho=`
        self.tie_spans: dict[str, Span] = {}  # tied weight -> its `= W` / `= transpose(W)`
        self.unknown_dynamics = False  # an energy preset or `dynamics` name was misspelled
        self.cost_statements = 0  # `cost` lines written: a bad cost is reported, not also "missing"
        self.learn_statements = 0  # `learn` blocks written

    def written_parameters(self) -> set[str]:
        """Every weight a connection names and `P.bias` for every population a `bias`
        statement names, as written, whether or not the statement checked: a name that
        is written but failed its own check is reported there, not again where it is
        used (no cascade)."""
        out: set[str] = set()
        for st in self.program.statements:
            if isinstance(st, S.Connection) and st.weight is not None:
                out.add(st.weight.name)
            elif isinstance(st, S.Bias):  # (`bias h y`: the `y` meant as a population too)
                out.update(f"{p.name}.bias" for p in st.populations)
                out.update(f"{o.key}.bias" for o in st.options if o.value is None and o.key in self.pops)
        return out

    # ---------------------------------------------------------- diagnostics --
    def error(self, message: str, span: Span | None, hint: str | None = None) -> None:
        self.errors.append(Diagnostic(message, span, hint))

    def _unknown_name(self, what: str, ident: S.Ident, table: Iterable[str], listing: str, more: str = "") -> None:
        """`unknown cost `sqared`; did you mean `squared`?`, hinting at the choices."""
        self.error(
            f"unknown {what} `{ident.name}`{did_you_mean(ident.name, table)}",
            ident.span,
            f"{listing}: " + ", ".join(table) + more,
        )

    # ------------------------------------------------------------ namespace --
    def declare(self, ident: S.Ident, kind: str) -> bool:
        prev = self.names.get(ident.name)
        if prev is not None:
            pkind, pspan = prev
            self.error(
                f"`{ident.name}` is already defined as a {pkind} at line {pspan.line}",
                ident.span,
                "every param, function, cell type, population and weight needs its own name",
            )
            return False
        if kind in ("param", "population", "weight") and ident.name in P.FUNCTIONS:
            self.error(f"`{ident.name}` is a built-in function; choose another name", ident.span)
            return False
        self.names[ident.name] = (kind, ident.span)
        return True

    def kind_of(self, name: str) -> str | None:
        """What `name` is declared as (`"param"`, `"weight"`, ...), or None."""
        return self.names.get(name, (None,))[0]

    def of_kind(self, kind: str) -> list[str]:
        return [n for n, (k, _) in self.names.items() if k == kind]

    def fn_arities(self) -> dict[str, int]:
        return {n: len(f.params) for n, f in self.functions.items()}

    def param_names(self) -> dict[str, str]:
        """The params, as the names part of an expression `Scope`."""
        return {n: "param" for n in self.params}

    def weight_edges(self) -> dict[str, ConnectionEdge]:
        """Each named weight and its connection."""
        return {e.weight: e for e in self.edges if e.weight is not None}

    def bias_params(self) -> set[str]:
        """The learned biases, named `h.bias`."""
        return {f"{p}.bias" for p in self.biased}

    def _unknown_population(self, ident: S.Ident) -> None:
        kind = self.kind_of(ident.name)
        if kind and kind != "population":
            self.error(f"`{ident.name}` is a {kind}, not a population", ident.span)
        else:
            self.error(
                f"unknown population `{ident.name}`{did_you_mean(ident.name, self.pops)}",
                ident.span,
                f"declare it with `population {ident.name} [SIZE]`",
            )

    def _members(self, obj: str) -> tuple[str, ...] | None:
        """The values `obj.NAME` of population `obj`, or None if there is no such population."""
        pop = self.pops.get(obj)
        if pop is None:
            return None
        if pop.role == "input":  # clamped to the data: no compartments or other states are computed
            return ("s", "rate", "error")
        extra = ("target",) if pop.role == "output" else ()
        comps = () if pop.cell_type is None else pop.compartments
        return (*pop.state, *comps, "rate", "error", *extra)

    # ------------------------------------------------------------ constants --
    def const(self, expr: S.Expr, what: str) -> float | None:
        if self.broken and any(isinstance(n, S.Var) and n.name in self.broken for n in S.walk(expr)):
            return None  # it uses a param whose error is reported already
        try:
            return evaluate(expr, self.params, self.functions, what)
        except EvalError as exc:
            self.errors.append(exc.diagnostic)
            return None

    def _checked_number(self, expr: S.Expr, spec: P.Setting, what: str) -> float | None:
        value = self.const(expr, what)
        if value is None:
            return None
        if spec.kind == "int" and value != int(value):
            self.error(f"{what} must be a whole number, not {fmt_num(value)}", expr.span)
            return None
        if spec.minimum is not None:
            low = value <= spec.minimum if spec.exclusive else value < spec.minimum
            if low:
                bound = f"greater than {fmt_num(spec.minimum)}" if spec.exclusive else f"at least {fmt_num(spec.minimum)}"
                self.error(f"{what} must be {bound}, not {fmt_num(value)}", expr.span)
                return None
        if spec.maximum is not None and value > spec.maximum:
            self.error(f"{what} must be at most {spec.maximum:,}, not {fmt_num(value)}", expr.span,
                       spec.why or None)
            return None
        return value

    # -------------------------------------------------------------- options --
    def _own_options(self, options: tuple[S.Option, ...]) -> tuple[S.Option, ...]:
        """The options up to a statement keyword; `input population y` is two statements.

        Keywords are soft, so `population x [4] input population y [2]` only
        fails to parse at the second `[`; and `... input bias x` parses as
        options. No option is named like a statement, so report the keyword
        and leave what follows it alone.
        """
        for i, opt in enumerate(options):
            if opt.value is None and opt.key in STATEMENT_WORDS:
                self.error(
                    f"`{opt.key}` starts a new statement, but it is on the same line as the one before",
                    opt.key_span,
                    "put each statement on its own line, or separate them with `;`",
                )
                if opt.key in ("energy", "dynamics", "neuron"):
                    self.unknown_dynamics = True  # the swallowed statement may have said how states evolve
                return options[:i]
        return options

    def _no_options(self, options: tuple[S.Option, ...], what: str, hint: str | None = None) -> None:
        """Report each option of a statement that takes none."""
        for opt in self._own_options(options):
            self.error(f"unknown option `{opt.key}` for {what}", opt.key_span, hint)

    def _option(self, opt: S.Option, table: Mapping[str, P.Setting], what: str) -> P.Setting | None:
        spec = table.get(opt.key)
        if spec is None:
            hint = "options: " + ", ".join(table)
            if what == "a connection" and opt.value is None and "." not in opt.key:
                hint = f"to name the weight, write `: {opt.key}` after the target; {hint}"
            self.error(f"unknown option `{opt.key}` for {what}{did_you_mean(opt.key, table)}", opt.key_span, hint)
            return None
        if spec.kind == "flag" and opt.value is not None:
            self.error(f"`{opt.key}` takes no value", opt.span, f"write just `{opt.key}`")
            return None
        if spec.kind != "flag" and opt.value is None:
            self.error(f"`{opt.key}` needs a value", opt.span, f"write `{opt.key}=...`")
            return None
        return spec


def fmt_num(x: float) -> str:
    """`3`, not `3.0`; `0.001`; `1e+20`."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def fmt_bytes(n: float) -> str:
    """`512 B`, `1.5 GiB`: a size for a person."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            break
        n /= 1024
    if unit == "B":
        return f"{int(n)} B"
    return f"{n:.1f} {unit}" if n < 10**6 else f"{n:.1e} {unit}"
