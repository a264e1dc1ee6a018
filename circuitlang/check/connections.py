"""Checks of connections, their initializers and tied weights, and the memory they need.

* `pre -> post.comp : W [options]` (directed), `a -- b : W` (undirected,
  stored as |a|×|b|), `pre => post` (one-to-one, equal sizes): known ends,
  a compartment the target has, a weight name where one is needed.
* `init=`: a known initializer with its arguments; `gain=` only on `=>`.
* `: B = W` / `: B = transpose(W)`: a tie to a weight that is not itself
  tied, with the matching shape.
* All learned weights and biases together fit in `MAX_PARAMETER_BYTES` of float32.
"""

from __future__ import annotations

from .. import primitives as P
from .. import syntax as S
from ..errors import did_you_mean
from ..graph import ConnectionEdge, InitSpec
from .base import STATEMENT_WORDS, BuilderBase, fmt_bytes, fmt_num

MAX_PARAMETER_BYTES = 16 * 2**30  # float32 weights beyond this fail early


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
        if weight is None and kind != "one_to_one":
            self.error(
                f"this `{s.arrow}` connection needs a weight name",
                s.span,
                f"write `{pre.name} {s.arrow} {target} : W`",
            )
            ok = False
        init, plasticity, sign, gain = InitSpec("glorot"), "plastic", 1, 1.0
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
        if kind == "one_to_one" and weight is None:
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
        # shape: undirected a -- b stores W as (|a|, |b|): post = a, pre = b
        if kind == "undirected":
            pre_name, post_name = post.name, pre.name
            shape = (pre_pop.size, post_pop.size)
        else:
            pre_name, post_name = pre.name, post.name
            shape = (post_pop.size, pre_pop.size)
        if kind == "one_to_one" and pre_pop.size != post_pop.size:
            self.error(
                f"a one-to-one connection needs equal sizes, but `{pre.name}` has {pre_pop.size} neurons and `{post.name}` {post_pop.size}",
                s.span,
                "use `->` with a weight for a full connection",
            )
            return
        if kind == "one_to_one":
            shape = (post_pop.size, pre_pop.size)
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
            )
        )

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
        by_weight = self.weight_edges()
        for e in self.edges:
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
            want = target.shape[::-1] if e.transposed else target.shape
            if want != e.shape:
                form = f"transpose({e.tied_to})" if e.transposed else e.tied_to
                hint = (
                    f"use `= {e.tied_to}`" if e.transposed and target.shape == e.shape
                    else f"use `= transpose({e.tied_to})`" if target.shape[::-1] == e.shape else None
                )
                self.error(
                    f"shape mismatch: `{e.weight}` is {e.shape[0]}×{e.shape[1]} ({_rows(e)}), but `{form}` is "
                    f"{want[0]}×{want[1]} ({_rows(target, e.transposed)})",
                    self.tie_spans.get(e.weight, e.span),
                    hint,
                )

    # -------------------------------------------------------------- memory --
    def memory_estimate(self) -> None:
        total = sum(e.shape[0] * e.shape[1] for e in self.edges if e.weight and e.plasticity != "tied")
        total += sum(self.pops[p].size for p in self.biased if p in self.pops)
        nbytes = 4 * total
        if nbytes > MAX_PARAMETER_BYTES:
            big = max((e for e in self.edges if e.weight), key=lambda e: e.shape[0] * e.shape[1])
            self.error(
                f"this circuit has {total:,} parameters, which need {fmt_bytes(nbytes)} in float32 "
                f"(the limit is {fmt_bytes(MAX_PARAMETER_BYTES)})",
                big.span,
                f"the largest weight, `{big.weight}` ({big.shape[0]:,}×{big.shape[1]:,}), needs "
                f"{fmt_bytes(4 * big.shape[0] * big.shape[1])}; check the population sizes",
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
