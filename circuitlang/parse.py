"""Text → syntax tree. Owns the lark parser and turns its errors into ours.

The grammar lives in `grammar/circuit.lark` (the normative syntax reference;
it also ships inside the wheel). The parser is LALR(1) with a contextual
lexer (the grammar is free of shift/reduce and terminal collisions: a test
builds it with lark's `strict=True`, which needs interegular and 0.3 s, so the
CLI does not pay for that check at every start); a small post-lexer drops newlines inside brackets and
bounds the nesting depth, so no input can exhaust the Python stack.

The syntax nodes are built while lark parses (its embedded-transformer mode):
no intermediate lark tree and no second pass, which halves the time a large
file takes. Each rule's callback gets every token of its text, so it can
locate the node the way lark's `propagate_positions` would: from the start of
its first token to the end of its last, parentheses included.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import math
import re
import threading
from pathlib import Path

import lark
from lark import Token

from . import syntax as S
from .errors import CircuitError, CircuitSyntaxError, Diagnostic
from .source import Source, Span, decode

__all__ = ["parse", "parse_file", "grammar_path", "MAX_NESTING", "MAX_EXPR_DEPTH"]

MAX_NESTING = 64  # brackets inside brackets
MAX_EXPR_DEPTH = 256  # operators on the longest path of one expression

_OPEN = {"LPAR": "RPAR", "D_OPEN": "RPAR", "LSQB": "RSQB", "LBRACE": "RBRACE"}
_CLOSE = {"RPAR", "RSQB", "RBRACE"}


def grammar_path() -> Path:
    """Where `circuit.lark` is: inside the package (wheel) or the repository."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "grammar" / "circuit.lark", here.parent / "grammar" / "circuit.lark"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("circuit.lark is missing from this installation of circuitlang")


class _PostLexer:
    """Drops newlines inside `(...)`/`[...]` and limits bracket nesting."""

    always_accept = ("_NL",)

    def __init__(self) -> None:
        self.path = "<string>"
        self.stack: list[Token] = []

    def process(self, stream):
        self.stack = stack = []
        for tok in stream:
            kind = tok.type
            if kind == "_NL":
                if stack and stack[-1].type != "LBRACE":
                    continue
            elif kind in _OPEN:
                stack.append(tok)
                if len(stack) > MAX_NESTING:
                    raise _Located(
                        f"brackets are nested more than {MAX_NESTING} deep",
                        _token_span(tok, self.path),
                        "split the expression with `param` or `fn` definitions",
                    )
            elif kind in _CLOSE and stack and _OPEN[stack[-1].type] == kind:
                stack.pop()
            yield tok


class _Located(Exception):
    def __init__(self, message: str, span: Span, hint: str | None = None) -> None:
        super().__init__(message)
        self.diagnostic = Diagnostic(message, span, hint)


@functools.lru_cache(maxsize=2)
def _parser(strict: bool = False) -> tuple[lark.Lark, _PostLexer, "_ToSyntax"]:
    post = _PostLexer()
    builder = _ToSyntax()
    options = dict(transformer=builder, postlex=post)  # build syntax nodes while parsing: no lark tree
    parser = None if strict else _cached_parser(options)
    if parser is None:
        parser = lark.Lark(_grammar_text(), strict=strict, **_OPTIONS, **options)
        if not strict:
            _store_parser(parser)
    _locate_callbacks(parser, builder)
    return parser, post, builder


# how the tables are built; a cached file built otherwise is not used
_OPTIONS = {"parser": "lalr", "lexer": "contextual", "maybe_placeholders": True, "lexer_callbacks": {},
            "regex": False, "g_regex_flags": 0, "use_bytes": False}


def _grammar_text() -> str:
    return grammar_path().read_text(encoding="utf-8")


def _parser_cache() -> Path | None:
    """Where the built LALR tables are kept between runs (`cachedir`). Building them costs
    0.3 s, longer than the rest of `circuitc check`; reading them back costs 20 ms."""
    import hashlib

    from .cachedir import cache_dir

    where = cache_dir()
    if where is None:
        return None
    from . import __version__

    key = hashlib.sha256(f"{lark.__version__}\0{__version__}\0{sorted(_OPTIONS.items())}\0{_grammar_text()}"
                         .encode()).hexdigest()[:16]
    return where / f"parser-{key}.json"


def _int_keys(pairs: list[tuple[str, object]]) -> dict:
    # lark's tables are keyed by state and token numbers, which JSON turns into strings; no
    # name in them (rules are lower case, terminals upper case) is all digits
    return {int(k) if k.isdigit() else k: v for k, v in pairs}


def _cached_parser(options: dict) -> lark.Lark | None:
    """The parser from its cached tables: JSON (data, never pickle) ending in its own
    sha256, keyed by the grammar's text, the build options and lark's and circuitlang's
    versions, so an edited grammar, another lark or a damaged file builds afresh."""
    import hashlib
    import json

    path = _parser_cache()
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
        body, _, digest = text.rpartition("\n")
        if hashlib.sha256(body.encode()).hexdigest() != digest:
            return None  # damaged (or edited): build the tables again
        stored = json.loads(body, object_pairs_hook=_int_keys)
        if {k: stored["data"]["options"].get(k) for k in _OPTIONS} != _OPTIONS:
            return None  # tables built with other options (or edited): build them again
        parser = lark.Lark._load_from_dict(stored["data"], stored["memo"], **options)
    except Exception:  # missing, unreadable, damaged or from another lark: build it again
        return None
    parser._circuitlang_cached = True  # `parse` rebuilds it if it misbehaves
    return parser


def _store_parser(parser: lark.Lark) -> None:
    import hashlib
    import json
    import time

    from lark.grammar import Rule
    from lark.lexer import TerminalDef

    from .rundir import atomic_write

    path = _parser_cache()
    if path is None:
        return
    try:
        data, memo = parser.memo_serialize([TerminalDef, Rule])
        # the post-lexer and the transformer are objects of ours, given back when it is loaded
        data["options"] = {k: v for k, v in data["options"].items() if k not in ("postlex", "transformer")}
        body = json.dumps({"data": data, "memo": memo})
        path.parent.mkdir(parents=True, exist_ok=True)
        # its own checksum last; atomic, so a concurrent reader sees the old file or the whole new one
        atomic_write(path, f"{body}\n{hashlib.sha256(body.encode()).hexdigest()}".encode())
        for old in path.parent.glob("parser-*.json"):  # tables of other versions, unused for a month
            if old != path and old.stat().st_mtime < time.time() - 30 * 86400:
                old.unlink()
    except (CircuitError, OSError, TypeError, ValueError):  # a read-only home only costs the next run 0.3 s
        pass


# one parse at a time: the post-lexer and the builder hold the state of the current one
_LOCK = threading.Lock()


def _token_span(tok: Token, path: str) -> Span:
    line = tok.line or 1
    col = tok.column or 1
    end_line = tok.end_line or line
    end_col = tok.end_column or col + max(len(tok.value), 1)
    if tok.type == "_NL":  # point at the end of the line, not the next one
        end_line, end_col = line, col + 1
    return Span(path, line, col, end_line, end_col)


# --------------------------------------------------------------- transform --
class _Parsed:
    """A built value and where its text is (what lark's `meta` would hold),
    with the number of operators on its longest path when it is an expression."""

    __slots__ = ("value", "line", "column", "end_line", "end_column", "depth")


_OPERATORS = frozenset({"call", "call_prime", "time_derivative", "unary", "binary", "compare"})


def _locate_callbacks(parser: lark.Lark, builder: "_ToSyntax") -> None:
    """Give each syntax node its span, the way `propagate_positions` would.

    lark hands a rule's callback only the children it keeps (no keywords, no
    punctuation), yet a node spans from its first token to its last, so
    `population h [4]` starts at `population` and `(a + b) * c` at `(`. lark
    builds one callback per rule from the transformer's method and its child
    filter; wrapping those (`Lark._callbacks`, the table the LALR parser
    calls) shows us every child. The wrapper finds the node's region, lets
    the method build the node, and returns it as a `_Parsed`. It also counts
    operators, so an expression too deep for the later recursive stages is
    rejected here.
    """
    callbacks = parser._callbacks
    for rule, callback in list(callbacks.items()):
        name = rule.alias or rule.options.template_source or rule.origin.name
        builds = hasattr(builder, name) and not name.startswith("_")
        regroups = rule.options.expand1 and len(rule.expansion) > 1 and not rule.alias  # `( expr )`
        if builds or regroups:
            callbacks[rule] = _located(callback, builder, name in _OPERATORS)
    probe = parser.parse("population p [(1)]")
    if type(probe) is not _Parsed or probe.value[0].span.col != 1:  # lark changed how it calls back
        raise RuntimeError(f"circuitlang cannot use lark {lark.__version__}: it needs lark 1.2 or 1.3")


def _located(callback, builder: "_ToSyntax", operator: bool):
    def located(children):
        here = _Parsed()
        first = _first_located(children)
        if first is None:  # only an empty file has nothing in it
            here.line = here.column = here.end_line = here.end_column = 1
        else:
            here.line, here.column = first.line, first.column
            last = _first_located(children, backward=True)
            here.end_line, here.end_column = last.end_line, last.end_column
        depth = _depth(children)
        builder.here = here
        value = callback(children)
        if type(value) is _Parsed:  # `( expr )`: the expression itself, its region grows
            here.value, here.depth = value.value, value.depth
            return here
        if operator:
            depth += 1
            if depth > MAX_EXPR_DEPTH:
                raise _Located(
                    f"this expression is nested more than {MAX_EXPR_DEPTH} operators deep",
                    value.span,
                    "split it into smaller `param` or `fn` definitions",
                )
        here.value, here.depth = value, depth
        return here

    return located


def _first_located(children, backward: bool = False):
    """The first (or last) token or `_Parsed` among `children`, looking
    inside the trees of inlined rules (`_sep`, `option*`, ...)."""
    for child in reversed(children) if backward else children:
        if child is None:
            continue
        if isinstance(child, lark.Tree):
            found = _first_located(child.children, backward)
            if found is not None:
                return found
            continue
        return child
    return None


def _depth(children) -> int:
    depth = 0
    for child in children:
        if type(child) is _Parsed:
            if child.depth > depth:
                depth = child.depth
        elif isinstance(child, lark.Tree):
            depth = max(depth, _depth(child.children))
    return depth


def _rule(method):
    """Turn `method(self, meta, kids)` into the lark callback `(self, children)`;
    `meta` is the region `_located` found, `kids` the values of the children."""

    @functools.wraps(method)
    def callback(self, children):
        kids = [c.value if type(c) is _Parsed else c for c in children]
        return method(self, self.here, kids)

    return callback


class _ToSyntax:
    """The lark callbacks that build `syntax` nodes while the text is parsed."""

    def __init__(self) -> None:
        self.path = "<string>"
        self.here = _Parsed()  # the region of the node being built

    # helpers
    def _span(self, meta) -> Span:
        return Span(self.path, meta.line, meta.column, meta.end_line, meta.end_column)

    def _tspan(self, tok: Token) -> Span:
        return _token_span(tok, self.path)

    def _ident(self, tok: Token) -> S.Ident:
        return S.Ident(str(tok), self._tspan(tok))

    # expressions
    @_rule
    def number(self, meta, kids):
        (tok,) = kids
        value = float(tok)
        span = self._tspan(tok)
        if not math.isfinite(value):
            raise _Located(
                f"the number {tok} is too large for a float",
                span,
                "numbers must be finite; the largest float is about 1.8e308",
            )
        return S.Number(value, str(tok), span)

    @_rule
    def var(self, meta, kids):
        return S.Var(str(kids[0]), self._tspan(kids[0]))

    @_rule
    def member(self, meta, kids):
        obj, attr = kids
        return S.Member(self._ident(obj), self._ident(attr), self._span(meta))

    @_rule
    def args(self, meta, kids):
        return tuple(kids)

    @_rule
    def call(self, meta, kids):
        fn, args = kids
        args = args or ()
        return S.Call(self._ident(fn), args, 0, self._span(meta))

    @_rule
    def call_prime(self, meta, kids):
        tok, args = kids
        args = args or ()
        name = str(tok).rstrip("'")
        primes = len(str(tok)) - len(name)
        fn = S.Ident(name, self._tspan(tok))
        return S.Call(fn, args, primes, self._span(meta))

    @_rule
    def time_derivative(self, meta, kids):
        return S.TimeDerivative(kids[1], self._span(meta))

    @_rule
    def unary(self, meta, kids):
        op, operand = kids
        return S.Unary(str(op), operand, self._span(meta))

    @_rule
    def binary(self, meta, kids):
        left, op, right = kids
        op = "^" if str(op) == "**" else str(op)
        return S.Binary(op, left, right, self._span(meta))

    compare = binary

    # small pieces
    @_rule
    def names(self, meta, kids):
        return tuple(self._ident(k) for k in kids)

    @_rule
    def dotted(self, meta, kids):
        return (".".join(str(k) for k in kids), self._span(meta))

    @_rule
    def option(self, meta, kids):
        (key, key_span), value = kids
        return S.Option(key, value, self._span(meta), key_span)

    kwarg = option

    @_rule
    def endpoint(self, meta, kids):
        pop, comp = kids
        return S.Endpoint(self._ident(pop), self._ident(comp) if comp is not None else None, self._span(meta))

    # statements
    @_rule
    def header(self, meta, kids):
        name, doc = kids
        return S.Header(self._ident(name), str(doc)[1:-1] if doc is not None else None, self._span(meta))

    @_rule
    def param(self, meta, kids):
        name, value = kids
        return S.Param(self._ident(name), value, self._span(meta))

    @_rule
    def fn_def(self, meta, kids):
        name, params, body = kids
        return S.FnDef(self._ident(name), params or (), body, self._span(meta))

    @_rule
    def compartment(self, meta, kids):
        return ("compartment", kids[0])

    @_rule
    def ode(self, meta, kids):
        tau, op, deriv, rhs = kids
        span = self._span(meta)
        if op is not None and str(op) != "*":
            raise _Located(
                f"expected `*` between the time constant and `{deriv}`, found `{op}`",
                self._tspan(op),
                "write the equation as `tau * ds/dt = ...`",
            )
        state = _deriv_name(deriv, self.path)
        return ("ode", S.Ode(state, tau, rhs, span))

    @_rule
    def let(self, meta, kids):
        name, value = kids
        return ("let", S.Let(self._ident(name), value, self._span(meta)))

    @_rule
    def neuron(self, meta, kids):
        name, *items = kids
        comps = tuple(i for tag, group in _tagged(items, "compartment") for i in group)
        odes = tuple(x for _, x in _tagged(items, "ode"))
        lets = tuple(x for _, x in _tagged(items, "let"))
        return S.Neuron(self._ident(name), comps, odes, lets, self._span(meta))

    @_rule
    def shape(self, meta, kids):
        return tuple(kids)

    @_rule
    def population(self, meta, kids):
        name, cell_type, shape, *options = kids
        ctype = self._ident(cell_type) if cell_type is not None else None
        return S.Population(self._ident(name), ctype, shape, tuple(options), self._span(meta))

    @_rule
    def op_args(self, meta, kids):
        return tuple(kids)

    @_rule
    def op_call(self, meta, kids):
        name, args = kids
        args = args or ()
        positional = tuple(a for a in args if not isinstance(a, S.Option))
        keywords = tuple(a for a in args if isinstance(a, S.Option))
        return S.OpCall(self._ident(name), positional, keywords, self._span(meta))

    @_rule
    def connection(self, meta, kids):
        pre, arrow, post, weight, tie, *rest = kids
        w = self._ident(weight) if weight is not None else None
        options = tuple(k for k in rest if isinstance(k, S.Option))
        ops = tuple(k for k in rest if isinstance(k, S.OpCall))
        return S.Connection(pre, str(arrow), post, w, tie, options, self._span(meta), ops)

    @_rule
    def bias(self, meta, kids):
        pops, *options = kids
        return S.Bias(pops, tuple(options), self._span(meta))

    def _energy_use(self, meta, kids):
        name, *options = kids
        return S.EnergyUse(self._ident(name), tuple(options), self._span(meta))

    energy_use = _rule(_energy_use)

    @_rule
    def energy_preset(self, meta, kids):
        use = self._energy_use(meta, kids)
        return S.Energy((use,), (), self._span(meta))

    @_rule
    def energy_term(self, meta, kids):
        targets, expr = kids
        return S.EnergyTerm(targets or (), expr, self._span(meta))

    @_rule
    def energy_block(self, meta, kids):
        uses = tuple(k for k in kids if isinstance(k, S.EnergyUse))
        terms = tuple(k for k in kids if isinstance(k, S.EnergyTerm))
        return S.Energy(uses, terms, self._span(meta))

    @_rule
    def dynamics(self, meta, kids):
        name, *options = kids
        return S.Dynamics(self._ident(name), tuple(options), self._span(meta))

    @_rule
    def cost(self, meta, kids):
        pop, kind, *options = kids
        return S.Cost(self._ident(pop), self._ident(kind), tuple(options), self._span(meta))

    @_rule
    def attr(self, meta, kids):
        key, value, *kwargs = kids
        return S.Attr(self._ident(key), value, tuple(kwargs), self._span(meta))

    @_rule
    def phase(self, meta, kids):
        name, *attrs = kids
        attrs = [a for a in attrs if a is not None]
        return S.Phase(self._ident(name), tuple(attrs), self._span(meta))

    @_rule
    def optimizer(self, meta, kids):
        name, *rest = kids
        options = tuple(k for k in rest if isinstance(k, S.Option))
        attrs = tuple(k for k in rest if isinstance(k, S.Attr))
        return S.Optimizer(self._ident(name), options, attrs, self._span(meta))

    @_rule
    def for_clause(self, meta, kids):
        return tuple(kids)

    @_rule
    def for_target(self, meta, kids):
        return S.Ident(".".join(str(k) for k in kids if k is not None), self._span(meta))

    @_rule
    def during(self, meta, kids):
        return (False, kids[0])

    @_rule
    def always(self, meta, kids):
        return (True, ())

    @_rule
    def rule(self, meta, kids):
        (always, phases), targets, deriv, expr = kids
        lhs = _deriv_name(deriv, self.path)
        return S.Rule(phases, always, targets or (), lhs, expr, self._span(meta))

    @_rule
    def learn(self, meta, kids):
        method, *items = kids
        items = [i for i in items if i is not None]
        return S.Learn(
            self._ident(method),
            tuple(i for i in items if isinstance(i, S.Phase)),
            tuple(i for i in items if isinstance(i, S.Optimizer)),
            tuple(i for i in items if isinstance(i, S.Rule)),
            tuple(i for i in items if isinstance(i, S.Attr)),
            self._span(meta),
        )

    @_rule
    def perturb_window(self, meta, kids):
        phase, start, stop = kids
        return S.PerturbWindow(self._ident(phase), start, stop, self._span(meta))

    @_rule
    def perturb(self, meta, kids):
        name, target, kind, value, *rest = kids
        windows = tuple(k for k in rest if isinstance(k, S.PerturbWindow))
        options = tuple(k for k in rest if isinstance(k, S.Option))
        return S.Perturb(self._ident(name), target, self._ident(kind), value, windows, options, self._span(meta))

    @_rule
    def start(self, meta, kids):
        return tuple(k for k in kids if k is not None)


def _tagged(items, tag):
    return [(t, x) for (t, x) in (i for i in items if i is not None) if t == tag]


def _deriv_name(tok: Token, path: str) -> S.Ident:
    """`dW2/dt` → `W2` (positioned on the name)."""
    text = str(tok)
    name = text[1 : text.index("/")]
    span = Span(path, tok.line, tok.column + 1, tok.line, tok.column + 1 + len(name))
    return S.Ident(name, span)


# ------------------------------------------------------------------ errors --
_NICE = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": 'a "string"',
    "DERIV": "a derivative like `ds/dt`",
    "PRIMED": "a derivative like `rho'(x)`",
    "D_OPEN": "`d(`",
    "ARROW": "`--`, `->` or `=>`",
    "ADD_OP": "`+` or `-`",
    "MUL_OP": "`*`, `/` or `@`",
    "POW_OP": "`^`",
    "CMP_OP": "a comparison",
    "_NL": "end of line",
    "$END": "end of file",
}


@functools.lru_cache(maxsize=1)
def _terminal_names() -> dict[str, str]:
    parser = _parser()[0]
    names = dict(_NICE)
    for term in parser.terminals:
        if term.name not in names and term.pattern.type == "str":
            names[term.name] = f"`{term.pattern.value}`"
    return names


_EXPRESSION_START = {"LPAR", "NUMBER", "NAME", "ADD_OP", "D_OPEN", "PRIMED"}


def _describe(kinds) -> str:
    names = _terminal_names()
    kinds = set(kinds) - {"SEMICOLON"}
    words = set()
    if _EXPRESSION_START <= kinds:
        kinds -= _EXPRESSION_START
        words.add("an expression")
    words = sorted(words | {names.get(k, f"`{k.lower()}`") for k in kinds})
    if not words:
        return "something else"
    if len(words) == 1:
        return words[0]
    if len(words) > 8:
        return ", ".join(words[:8]) + ", ..."
    return ", ".join(words[:-1]) + " or " + words[-1]


def _show(tok: Token) -> str:
    if tok.type == "$END":
        return "end of file"
    if tok.type == "_NL":
        return "end of line"
    text = str(tok)
    if len(text) > 20:
        text = text[:17] + "..."
    return f"`{text}`"


def _hint_for(expected: set[str], tok: Token, source: Source, open_brackets: list[Token]) -> str | None:
    line = source.line(tok.line or 1).strip()
    if open_brackets and tok.type != "$END" and expected & {"RPAR", "RSQB"}:
        first = open_brackets[-1]
        if first.line != tok.line and first.type != "LBRACE":
            return f"the `{str(first)[-1]}` at line {first.line}, column {first.column} is never closed"
    word = line.split()[0] if line.split() else ""
    if "LSQB" in expected and word == "population":
        return "give the size in brackets, e.g. `population h [256]`"
    if tok.type == "EQUAL" and expected & {"NUMBER", "NAME", "_NL", "RBRACE"} and "EQUAL" not in expected:
        return "settings inside a block are written without `=`, e.g. `steps 20`"
    if "COLON" in expected and word not in ("during", "always", "term"):
        return "name the weight after a colon, e.g. `x -> h : W1`"
    if "COLON" in expected:
        return "end the rule's head with a colon, e.g. `during nudge: dW/dt = ...`"
    if "RBRACE" in expected and tok.type == "$END":
        braces = [b for b in open_brackets if b.type == "LBRACE"]
        if braces:
            b = braces[-1]
            return f"the `{{` at line {b.line}, column {b.column} is never closed: add the matching `}}`"
        return "a `{` is never closed: add the matching `}`"
    if "RPAR" in expected and tok.type in ("_NL", "$END"):
        return "a `(` is never closed: add the matching `)`"
    if tok.type == "ARROW" and str(tok) == "--":
        return "undirected couplings are statements of their own: `a -- b : W`"
    if "_NL" in expected and tok.type not in ("_NL", "$END"):
        return "put each statement on its own line, or separate them with `;`"
    return None


def parse(text: str, path: str = "<string>") -> S.Program:
    """Parse `.circ` text into a `syntax.Program`.

    Raises:
        CircuitSyntaxError: located, with the expected tokens and a hint.
    """
    try:
        return _parse(text, path)
    except CircuitError:
        raise
    except Exception:
        # tables read from a damaged cache can fail in ways no grammar error does: drop the
        # file, build the tables from the grammar, and parse again (a real bug then raises)
        if not getattr(_parser()[0], "_circuitlang_cached", False):
            raise
        path_ = _parser_cache()
        if path_ is not None:
            with contextlib.suppress(OSError):
                path_.unlink()
        _parser.cache_clear()
        return _parse(text, path)


def _parse(text: str, path: str) -> S.Program:
    source = Source(text, path)
    lexed = _for_lexer(text)
    collecting = gc.isenabled()
    found: list[Diagnostic] = []
    with _LOCK:
        parser, post, builder = _parser()
        post.path = builder.path = path
        # parsing allocates many objects and frees few, so Python's cycle
        # collector would scan an ever larger heap (40 % of the time of a
        # 200 000-line file); the syntax nodes hold no cycles
        gc.disable()
        try:
            # every statement-level error in one run: after an error, the statement that
            # holds it is blanked out (its lines kept, so positions stay) and the parse
            # starts again; what follows the broken statement is then read on its own,
            # so an error never cascades into the statements after it
            current = lexed
            while len(found) < MAX_SYNTAX_ERRORS:
                try:
                    program = S.Program(path, parser.parse(current).value)
                except lark.exceptions.UnexpectedInput as exc:
                    found.extend(_syntax_error(exc, lexed, source, post.stack).diagnostics)
                    line, col = getattr(exc, "line", None) or 1, getattr(exc, "column", None) or 1
                    if getattr(exc, "token", None) is not None and exc.token.type == "$END":
                        line, col = len(current.split("\n")) + 1, 1
                except _Located as exc:
                    found.append(exc.diagnostic)
                    span = exc.diagnostic.span
                    line, col = (span.line, span.col) if span else (1, 1)
                else:
                    if not found:
                        return program
                    break
                blanked = _blank_statement(current, line, col)
                if blanked == current:
                    break
                current = blanked
        finally:
            if collecting:
                gc.enable()
    raise CircuitSyntaxError(found, source) from None


MAX_SYNTAX_ERRORS = 20  # statements reported broken in one run


def _blank_statement(text: str, line: int, col: int = 1) -> str:
    """`text` with the broken top-level statement, and all before it, replaced by blank
    lines: the one that covers the error at `line`, `col`, or the one before when the
    error is the first token of a statement (the parser could not end the previous one
    there).

    A top-level statement starts on a line that begins outside every bracket and
    does not continue the previous one (`\\`); it ends where the next one starts. (An
    error on the end of the file, `line` past the last line, blanks the last
    statement.)"""
    lines = text.split("\n")
    starts, braces, brackets, continued = [], 0, 0, False
    for i, raw in enumerate(lines):
        code = raw.split("#", 1)[0]
        words = code.split()
        # an open `(`/`[` continues a statement onto the next line, unless that line
        # starts a statement of its own at the left margin (the bracket was left open)
        fresh = brackets <= 0 or (words and words[0] in _STATEMENT_WORDS and not raw[:1].isspace())
        if braces <= 0 and code.strip() and not continued and fresh:
            starts.append(i)
            braces = brackets = 0
        braces += code.count("{") - code.count("}")
        brackets += sum(code.count(c) for c in "([") - sum(code.count(c) for c in ")]")
        continued = code.rstrip().endswith("\\")
    at = min(max(line - 1, 0), len(lines) - 1)
    if at in starts and line <= len(lines) and not lines[at][: max(col - 1, 0)].strip() and starts.index(at) > 0:
        at = starts[starts.index(at) - 1]
    begin = max((s for s in starts if s <= at), default=None)
    if begin is None:
        return text
    end = min((s for s in starts if s > at), default=len(lines))
    # what came before parsed: blank it too, so that the next parse reads only what is
    # left (a run of empty lines is one token) and many errors in a long file stay cheap
    return "\n".join([""] * end + lines[end:])


def _for_lexer(text: str) -> str:
    """The text as the lexer reads it: every line ending (`\\r\\n`, `\\r`,
    `\\n`) is a newline, as in `Source.lines`, and a leading byte-order mark
    is a space, so that lines and columns stay those of `text`."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text.startswith("\ufeff"):
        text = " " + text[1:]
    return text


def _syntax_error(
    exc: lark.exceptions.UnexpectedInput, text: str, source: Source, open_brackets: list[Token]
) -> CircuitSyntaxError:
    """lark's error → ours: located, with what was expected and a hint."""
    path = source.path
    if isinstance(exc, lark.exceptions.UnexpectedCharacters):
        span = Span(path, exc.line, exc.column, exc.line, exc.column + 1)
        char = text[exc.pos_in_stream] if 0 <= exc.pos_in_stream < len(text) else "?"
        shown = repr(char)[1:-1] if not char.isprintable() else char
        hint = None
        if char in "'\"":
            hint = 'strings are only used for the circuit\'s doc: `circuit Name "doc"`'
        elif char == "{":
            hint = "blocks follow `neuron NAME`, `energy`, `learn METHOD`, `phase NAME` or `optimizer NAME`"
        elif exc.allowed:
            hint = f"expected {_describe(exc.allowed)} here"
        return CircuitSyntaxError([Diagnostic(f"unexpected character `{shown}`", span, hint)], source)
    if isinstance(exc, lark.exceptions.UnexpectedToken):
        tok = exc.token
        if tok.type == "$END":
            last = max(len(source.lines), 1)
            while last > 1 and not source.line(last).strip():
                last -= 1
            col = len(source.line(last)) + 1
            span = Span(path, last, col, last, col + 1)
        else:
            span = _token_span(tok, path)
        expected = set(exc.expected) if exc.expected else set()
        unclosed = _unclosed_inline_brace(open_brackets, tok, source)
        if unclosed is not None:  # `phase free { steps 20; dt 0.5` and the error a line later
            line, col = unclosed.line, unclosed.column
            return CircuitSyntaxError([Diagnostic(
                f"the `{{` at line {line}, column {col} is never closed",
                Span(path, line, col, line, col + 1),
                f"close it with `}}` at the end of line {line} (the parser stopped at {_show(tok)} on line "
                f"{tok.line})")], source)
        message = f"unexpected {_show(tok)}; expected {_describe(expected)}"
        hint = _hint_for(expected, tok, source, open_brackets)
        second = _second_statement(source, tok) if "_NL" in expected and tok.type not in ("_NL", "$END") else None
        if second is not None:  # `population x [4] input population y [2]`: point at the second keyword
            word, col = second
            span = Span(path, tok.line, col, tok.line, col + len(word))
            message = f"`{word}` starts a new statement, but the previous one has not ended"
        return CircuitSyntaxError([Diagnostic(message, span, hint)], source)
    # LALR reports an early end as UnexpectedToken($END); this is a safety net
    return CircuitSyntaxError([Diagnostic("unexpected end of file", Span(path, 1, 1, 1, 2))], source)


def _unclosed_inline_brace(open_brackets: list[Token], tok: Token, source: Source) -> Token | None:
    """The innermost `{` still open at the error if it opened a block written on one line
    (text follows it on its line) and the error is on a later line: the `}` was forgotten."""
    braces = [b for b in open_brackets if b.type == "LBRACE"]
    if not braces or tok.type == "$END" or not tok.line:
        return None
    b = braces[-1]
    if not b.line or b.line >= tok.line:
        return None
    after = source.line(b.line)[b.column:].split("#", 1)[0]
    return b if after.strip() else None


_STATEMENT_WORDS = ("circuit", "param", "fn", "neuron", "population", "bias", "energy", "dynamics", "cost", "learn",
                    "perturb")


def _second_statement(source: Source, tok: Token) -> tuple[str, int] | None:
    """A statement keyword earlier on the error's line (not its first word), if any."""
    line = source.line(tok.line or 1)
    upto = line[: max((tok.column or 1) - 1, 0)]
    found = None
    for m in re.finditer(r"(?<![\w.])([A-Za-z_]\w*)", upto):
        if m.group(1) in _STATEMENT_WORDS and upto[: m.start()].strip():
            found = (m.group(1), m.start() + 1)
    return found


MAX_SOURCE_BYTES = 64 * 2**20  # a .circ file; the largest the tests parse is 6 MiB


def read_source(path: str | Path) -> bytes:
    """The bytes of a `.circ` file, at most `MAX_SOURCE_BYTES` of them (`/dev/zero` and
    other endless or huge inputs are refused, not read into memory)."""
    p = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SOURCE_BYTES + 1)
    except IsADirectoryError:
        raise CircuitError(f"{p}: is a directory, not a .circ file") from None
    except FileNotFoundError:
        raise CircuitError(f"{p}: no such file") from None
    except PermissionError:
        raise CircuitError(f"{p}: permission denied") from None
    except OSError as exc:
        raise CircuitError(f"{p}: cannot read it ({exc.strerror or exc})") from None
    if len(data) > MAX_SOURCE_BYTES:
        raise CircuitError(f"{p}: longer than {MAX_SOURCE_BYTES // 2**20} MiB, which no .circ file needs "
                           "(is it the right file?)")
    return data


def parse_file(path: str | Path) -> tuple[S.Program, Source]:
    """Read, decode and parse a file; errors name the file."""
    p = str(path)
    data = read_source(path)
    text = decode(data, p)
    return parse(text, p), Source(text, p)
