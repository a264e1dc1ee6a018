"""Checks of connections, their initializers and tied weights, and the memory they need.

* `pre -> post.comp : W [options]` (directed), `a -- b : W` (undirected,
  stored as |a|×|b|), `pre => post` (one-to-one, equal sizes): known ends,
  a compartment the target has, a weight name where one is needed.
* `init=`: a known initializer with its arguments; `gain=` only on `=>`.
* `: B = W` / `: B = transpose(W)`: a tie to a weight that is not itself
  tied, with the matching shape.
* All learned weights and biases together fit in `MAX_PARAMETER_BYTES` of float32 (a bound of the
  language; whether a run fits the machine it starts on is checked then, by `circuitlang.resources`).
"""

from __future__ import annotations

import dataclasses
import math

from .. import primitives as P
from .. import syntax as S
from ..errors import did_you_mean
from ..graph import ConnectionEdge, InitSpec, Stage
from ..layout import describe
from ..ops import OPS, WRITTEN, ShapeError
from ..source import Span
from .base import STATEMENT_WORDS, BuilderBase, fmt_bytes, fmt_num

MAX_PARAMETER_BYTES = 2**40  # 1 TiB of float32: beyond any one machine; what fits on *this* one is `resources`
MAX_OP_ARG = 10**6  # kernel sizes, strides and paddings


class ConnectionsMixin(BuilderBase):
    """Connection statements, ties, and the size of the learned parameters."""

    # --------------------------------------------------------- connections --
    def connection(self, s: S.Connection) -> None:
        kind = P.CONNECTION_KINDS[s.arrow]
        pre, post = s.pre.population, s.post.population
        ok = True
        for end in (pre, post):
            if end.name not in self.pops:
                self._unknown_population(end)
                ok = False
        if s.pre.compartment is not None:
            self.error(
                f"a connection leaves a population's rate, not a compartment: drop `.{s.pre.compartment.name}`",
                s.pre.compartment.span,
            )
        target = f"{post.name}{'.' + s.post.compartment.name if s.post.compartment else ''}"
        weight, options = s.weight, self._own_options(s.options)
        if weight is None and (guess := colonless_weight(s)) is not None:
            # `x -> y W1`: the colon is missing; report it once and go on as if it were there
            self.error(
                f"a `:` is missing before the weight name `{guess.name}`",
                guess.span,
                f"write `{pre.name} {s.arrow} {target} : {guess.name}`",
            )
            weight, options = guess, options[1:]
        if weight is None and kind != "one_to_one" and not s.ops:
            self.error(
                f"this `{s.arrow}` connection needs a weight name",
                s.span,
                f"write `{pre.name} {s.arrow} {target} : W`",
            )
            ok = False
        init, plasticity, sign, gain, pathway = InitSpec("glorot"), "plastic", 1, 1.0, None
        init_given = fixed_given = False
        for opt in options:
            spec = self._option(opt, P.CONNECTION_OPTIONS, "a connection")
            if spec is None:
                continue
            if opt.key == "init":
                init = self._init(opt.value) or init
                init_given = True
            elif opt.key == "fixed":
                plasticity, fixed_given = "fixed", True
            elif opt.key == "inhibitory":
                sign = -1
            elif opt.key == "gain":
                if kind != "one_to_one":
                    self.error("`gain` applies to one-to-one connections (`=>`)", opt.key_span,
                               "for a weight matrix, scale its `init` instead")
                gain = self._checked_number(opt.value, spec, "`gain`") or gain
            elif opt.key == "pathway":
                if isinstance(opt.value, S.Var):
                    pathway = opt.value.name
                else:
                    self.error("`pathway` takes a name", opt.value.span if opt.value is not None else opt.span,
                               "write e.g. `pathway=forward` or `pathway=feedback`")
        if weight is None:  # a one-to-one or pooling connection without a weight
            plasticity = "fixed"
        tie_target, transposed = None, False
        if s.tie is not None:
            tie_target, transposed = self._tie_form(s)
            if tie_target is not None:
                plasticity = "tied"
                self.tie_spans[weight.name] = s.tie.span
                if init_given or fixed_given:
                    self.error(
                        f"`{weight.name}` is tied to `{tie_target}`; it takes its values (and learning) from there",
                        s.tie.span,
                        "remove `init=` / `fixed` from the tied connection",
                    )
        if not ok:
            return
        comp = P.DEFAULT_COMPARTMENT
        post_pop = self.pops[post.name]
        if kind == "undirected":
            if s.post.compartment is not None:
                self.error(
                    "an undirected coupling `--` joins two populations; it has no target compartment",
                    s.post.compartment.span,
                    f"write `{pre.name} -- {post.name} : {weight.name}`",
                )
            comp = post_pop.compartments[0]
        elif s.post.compartment is not None:
            comp = s.post.compartment.name
            if comp not in post_pop.compartments:
                where = (
                    f"cell type `{post_pop.cell_type}` has compartments {', '.join(post_pop.compartments)}"
                    if post_pop.cell_type
                    else f"`{post.name}` has no cell type, so its only compartment is `{P.DEFAULT_COMPARTMENT}`"
                )
                self.error(
                    f"`{post.name}` has no compartment `{comp}`{did_you_mean(comp, post_pop.compartments)}",
                    s.post.compartment.span,
                    where,
                )
                return
        else:
            if len(post_pop.compartments) > 1:
                self.error(
                    f"`{post.name}` has compartments {', '.join(post_pop.compartments)}: say which one this connection targets",
                    s.post.span,
                    f"e.g. `{pre.name} {s.arrow} {post.name}.{post_pop.compartments[0]}`",
                )
                return
            comp = post_pop.compartments[0]
        pre_pop = self.pops[pre.name]
        # undirected `a -- b : W` maps b to a, like `b -> a`: post = a, pre = b
        if kind == "undirected":
            pre_name, post_name = post.name, pre.name
            source, target_pop = post_pop, pre_pop
        else:
            pre_name, post_name = pre.name, post.name
            source, target_pop = pre_pop, post_pop
        if tie_target is not None:
            for call in s.ops:
                self.error(
                    f"`{weight.name}` is tied to `{tie_target}`: it takes `{tie_target}`'s operator"
                    + (" (transposed)" if transposed else ""),
                    call.span,
                    f"remove `{call.name.name}(...)` from the tied connection",
                )
            stages: tuple = ()  # filled in by `ties`, from the target's
            shape: tuple[int, ...] = ()
        else:
            built = self._stages(s, kind, source, target_pop, weight)
            if built is None:
                return
            stages = built
            owner = next((st for st in stages if OPS[st.kind].weighted), None)
            shape = ()
            if owner is not None and weight is not None:
                shape = tuple(OPS[owner.kind].weight_shape(owner.kw, owner.in_shape, owner.out_shape))
        self.edges.append(
            ConnectionEdge(
                kind=kind,
                pre=pre_name,
                post=post_name,
                weight=weight.name if weight is not None else None,
                compartment=comp,
                shape=shape,
                init=init,
                plasticity=plasticity,
                tied_to=tie_target,
                transposed=transposed,
                sign=sign,
                gain=gain,
                span=s.span,
                stages=stages,
                flops=sum(OPS[st.kind].flops(st.kw, st.in_shape, st.out_shape) for st in stages),
                pathway=pathway,
            )
        )

    # ------------------------------------------------------------- operators --
    def _stages(self, s: S.Connection, kind: str, source, target, weight) -> tuple[Stage, ...] | None:
        """The connection's operators, resolved and shaped from `source` to `target`
        (None when they cannot be, with the errors reported)."""
        calls: list[tuple[str, dict, Span]] = []
        ok = True
        for call in s.ops:
            resolved = self._op_call(call, s.arrow)
            if resolved is None:
                ok = False
            else:
                calls.append(resolved)
        if not ok:
            return None
        if kind == "one_to_one":
            calls = [("one_to_one", {}, s.span)]
        weighted = [c for c in calls if OPS[c[0]].weighted]
        if len(weighted) > 1:
            self.error(
                f"a connection has one weight, but `{weighted[0][0]}` and `{weighted[1][0]}` both need one",
                weighted[1][2],
                "write each weighted operator as its own connection, through a population",
            )
            return None
        if kind != "one_to_one":
            if weighted and weight is None:
                self.error(
                    f"`{weighted[0][0]}(...)` learns a weight, so this connection needs a weight name",
                    s.span,
                    f"write `{s.pre.population.name} {s.arrow} {s.post.population.name} : K {weighted[0][0]}(...)`",
                )
                return None
            if weight is not None and not weighted:
                calls.append(("dense", {}, s.span))
        shape = source.shape
        stages = []
        for i, (name, args, span) in enumerate(calls):
            op = OPS[name]
            try:
                out = tuple(op.out_shape(args, shape, target.shape, i == len(calls) - 1))
            except ShapeError as exc:
                names = {"source": f"`{source.name}`", "target": f"`{target.name}`"}
                self.error(exc.message.format(**names), span, exc.hint and exc.hint.format(**names))
                return None
            stages.append(Stage(name, tuple(args.items()), tuple(shape), out, span))
            shape = out
        if tuple(shape) != tuple(target.shape):
            last = stages[-1]
            self.error(
                f"this connection delivers {describe(shape)} ({_chain_text(stages)}) but `{target.name}` "
                f"is {describe(target.shape)}",
                last.span,
                _fit_hint(stages, source.shape, target.shape),
            )
            return None
        return tuple(stages)

    def _op_call(self, call: S.OpCall, arrow: str):
        """(kind, {argument: value}, span) of one written operator, or None (reported)."""
        name = call.name.name
        op = OPS.get(name)
        if op is None or not op.written:
            self.error(
                f"unknown connection operator `{name}`{did_you_mean(name, WRITTEN)}",
                call.name.span,
                "operators: " + ", ".join(f"{n}(...)" for n in WRITTEN)
                + "; a dense weight needs no operator (`x -> h : W`)",
            )
            return None
        if arrow not in op.arrows:
            self.error(f"`{name}(...)` cannot follow `{arrow}`", call.name.span,
                       "one-to-one connections (`=>`) take no operators" if arrow == "=>" else None)
            return None
        values: dict[str, object] = {}
        ok = True
        if len(call.args) > len(op.args):
            self.error(
                f"`{name}` takes at most {len(op.args)} arguments ({', '.join(a.name for a in op.args)}), "
                f"{len(call.args)} given",
                call.args[len(op.args)].span,
            )
            ok = False
        given = list(zip(op.args, call.args)) + [
            (next((a for a in op.args if a.name == kw.key), None), kw) for kw in call.kwargs
        ]
        for spec, expr in given:
            if spec is None:
                self.error(
                    f"`{name}` has no argument `{expr.key}`{did_you_mean(expr.key, [a.name for a in op.args])}",
                    expr.key_span,
                    "arguments: " + ", ".join(a.name for a in op.args),
                )
                ok = False
                continue
            if spec.name in values:
                self.error(f"argument `{spec.name}` of `{name}` is given twice", getattr(expr, "key_span", expr.span))
                ok = False
                continue
            value = self._op_arg(name, spec, expr.value if isinstance(expr, S.Option) else expr)
            if value is None:
                ok = False
            else:
                values[spec.name] = value
        for spec in op.args:
            if spec.name not in values:
                if spec.default is None:
                    if ok:
                        self.error(f"`{name}` needs its `{spec.name}` argument: {spec.doc}", call.span,
                                   f"e.g. `{name}(" + ", ".join(_example(a) for a in op.args if a.default is None) + ")`")
                    ok = False
                else:
                    values[spec.name] = spec.default
        return (name, values, call.span) if ok else None

    def _op_arg(self, op: str, spec, expr: S.Expr | None):
        if expr is None:
            self.error(f"`{spec.name}` of `{op}` needs a value", None)
            return None
        if spec.kind in ("choice", "int_or_choice") and isinstance(expr, S.Var) and expr.name not in self.params:
            if expr.name in spec.choices:
                return expr.name
            self.error(
                f"`{expr.name}` is not a valid `{spec.name}` of `{op}`{did_you_mean(expr.name, spec.choices)}",
                expr.span,
                f"`{spec.name}` is " + (" or ".join(f"`{c}`" for c in spec.choices))
                + (" or a whole number" if spec.kind == "int_or_choice" else ""),
            )
            return None
        if spec.kind == "choice":
            self.error(f"`{spec.name}` of `{op}` is a name: " + ", ".join(spec.choices), expr.span)
            return None
        value = self.const(expr, f"`{spec.name}` of `{op}`")
        if value is None:
            return None
        if value != int(value) or value < spec.minimum or value > MAX_OP_ARG:
            low = f"at least {spec.minimum}" if value < spec.minimum else f"at most {MAX_OP_ARG:,}"
            self.error(
                f"`{spec.name}` of `{op}` must be a whole number {low if value == int(value) else ''}".rstrip()
                + f", not {fmt_num(value)}",
                expr.span,
            )
            return None
        return int(value)

    def _init(self, value: S.Expr) -> InitSpec | None:
        if isinstance(value, S.Var):
            name, args = value.name, ()
            span = value.span
        elif isinstance(value, S.Call) and not value.primes:
            name, args, span = value.fn.name, value.args, value.fn.span
        else:
            self.error("`init=` takes an initializer like `glorot` or `random(0.1)`", value.span)
            return None
        spec = P.INITS.get(name)
        if spec is None:
            self.error(
                f"unknown initializer `{name}`{did_you_mean(name, P.INITS)}",
                span,
                "initializers: " + ", ".join(f"{k}" + ("(x)" if v.arity[0] else "") for k, v in P.INITS.items()),
            )
            return None
        if len(args) not in spec.arity:
            self.error(
                f"`{name}` takes {spec.arity[0]} argument{'s' if spec.arity[0] != 1 else ''}, {len(args)} given",
                value.span,
                f"e.g. `init={name}" + ("(0.1)`" if spec.arity[0] else "`"),
            )
            return None
        values = []
        for a in args:
            v = self.const(a, f"`{name}`")
            if v is None:
                return None
            values.append(v)
        if name in ("normal", "random", "uniform") and values and values[0] < 0:
            self.error(f"`{name}` needs a non-negative scale, not {fmt_num(values[0])}", args[0].span)
            return None
        return InitSpec(name, tuple(values))

    def _tie_form(self, s: S.Connection) -> tuple[str | None, bool]:
        tie = s.tie
        if isinstance(tie, S.Var):
            target, transposed, span = tie.name, False, tie.span
        elif isinstance(tie, S.Call) and tie.fn.name == "transpose" and len(tie.args) == 1 and isinstance(tie.args[0], S.Var):
            target, transposed, span = tie.args[0].name, True, tie.args[0].span
        else:
            self.error(
                "a tied weight is written `= W` or `= transpose(W)`",
                tie.span,
                "e.g. `s2 -> s1.apical : B2 = transpose(W2)`",
            )
            return None, False
        kind = self.kind_of(target)
        if kind != "weight":
            pool = self.of_kind("weight")
            self.error(
                f"unknown weight `{target}` in the tie{did_you_mean(target, pool)}",
                span,
                "a weight is named after the colon of a connection, e.g. `h -> y : W2`",
            )
            return None, False
        if s.weight is not None and target == s.weight.name:
            self.error(f"`{target}` cannot be tied to itself", span)
            return None, False
        return target, transposed

    def ties(self) -> None:
        """`B = W` / `B = transpose(W)`: the tied connection takes W's operator (run
        backwards when transposed), so its ends must have the shapes W's ends have."""
        by_weight = self.weight_edges()
        for i, e in enumerate(self.edges):
            if e.tied_to is None:
                continue
            target = by_weight.get(e.tied_to)
            if target is None:
                continue
            if target.tied_to is not None:
                self.error(
                    f"`{e.weight}` is tied to `{e.tied_to}`, which is itself tied to `{target.tied_to}`",
                    self.tie_spans.get(e.weight, e.span),
                    f"tie `{e.weight}` directly to `{target.tied_to}`",
                )
                continue
            ends = (self.pops[e.pre].shape, self.pops[e.post].shape)
            fwd = (self.pops[target.pre].shape, self.pops[target.post].shape)
            want = fwd[::-1] if e.transposed else fwd
            if ends != want:
                self._tie_mismatch(e, target, ends, fwd)
                continue
            self.edges[i] = dataclasses.replace(e, stages=target.stages, shape=target.shape, flops=target.flops)

    def _tie_mismatch(self, e: ConnectionEdge, target: ConnectionEdge, ends, fwd) -> None:
        form = f"transpose({e.tied_to})" if e.transposed else e.tied_to
        fits_other = (ends == fwd) if e.transposed else (ends == fwd[::-1])
        hint = (f"use `= {e.tied_to}`" if e.transposed else f"use `= transpose({e.tied_to})`") if fits_other else None
        at = self.tie_spans.get(e.weight, e.span)
        if all(len(s) == 1 for s in (*ends, *fwd)) and target.weighted_stage is not None \
                and target.weighted_stage.kind == "dense":
            own = (math.prod(ends[1]), math.prod(ends[0]))
            other = (math.prod(fwd[0]), math.prod(fwd[1])) if e.transposed else (math.prod(fwd[1]), math.prod(fwd[0]))
            self.error(
                f"shape mismatch: `{e.weight}` is {own[0]}×{own[1]} ({_rows(e)}), but `{form}` is "
                f"{other[0]}×{other[1]} ({_rows(target, e.transposed)})",
                at, hint,
            )
            return
        self.error(
            f"shape mismatch: `{e.weight}` maps `{e.pre}` {describe(ends[0])} to `{e.post}` {describe(ends[1])}, "
            f"but `{form}` maps {describe(fwd[1] if e.transposed else fwd[0])} to "
            f"{describe(fwd[0] if e.transposed else fwd[1])}",
            at, hint,
        )

    # -------------------------------------------------------------- memory --
    def memory_estimate(self) -> None:
        learned = [e for e in self.edges if e.weight and e.plasticity != "tied"]
        total = sum(math.prod(e.shape) for e in learned)
        total += sum(math.prod(self.pops[p].bias_shape) for p in self.biased if p in self.pops)
        nbytes = 4 * total
        if nbytes > MAX_PARAMETER_BYTES:
            big = max(learned, key=lambda e: math.prod(e.shape))
            self.error(
                f"this circuit has {total:,} parameters, which need {fmt_bytes(nbytes)} in float32 "
                f"(the limit is {fmt_bytes(MAX_PARAMETER_BYTES)})",
                big.span,
                f"the largest weight, `{big.weight}` ({'×'.join(f'{d:,}' for d in big.shape)}), needs "
                f"{fmt_bytes(4 * math.prod(big.shape))}; check the population sizes",
            )


def colonless_weight(s: S.Connection) -> S.Ident | None:
    """`x -> y W1`: a bare first option that is no connection option is a weight name."""
    if s.weight is not None or s.arrow == "=>" or not s.options:
        return None
    first = s.options[0]
    if first.value is not None or "." in first.key or first.key in P.CONNECTION_OPTIONS or first.key in STATEMENT_WORDS:
        return None
    return S.Ident(first.key, first.key_span)


def _rows(e: ConnectionEdge, transposed: bool = False) -> str:
    """`|h| × |y|`: which populations a weight's rows and columns follow."""
    rows, cols = (e.pre, e.post) if transposed else (e.post, e.pre)
    return f"`{rows}` × `{cols}`"


def _chain_text(stages) -> str:
    """`conv 5×5 pad 2 → max-pool 2×2`."""
    return " → ".join(OPS[st.kind].label(st.kw) for st in stages)


def _fit_hint(stages, source: tuple[int, ...], target: tuple[int, ...]) -> str:
    got = stages[-1].out_shape
    if len(got) == len(target) and got[0] == target[0] and len(got) > 1:
        return ("the spatial sizes differ: change the padding, stride or pooling, "
                f"or make the target `{describe(got)}`")
    return f"make the target `{describe(got)}`, or change the operators"


def _example(arg) -> str:
    return arg.choices[0] if arg.kind == "choice" else "3"
