"""`--set key=value`: settings changed from outside the file, before checking.

Keys (the same for `cl.compile(..., overrides=...)` and the CLI):

* ``NAME`` — a `param`
* ``phase.NAME.SETTING`` — a phase setting (``phase.free.steps``); ``true`` /
  ``false`` turn a flag like ``forward`` on or off
* ``learn.SETTING`` — ``learn.batch``, ``learn.estimator``, ...
* ``optimizer.SETTING`` — ``optimizer.lr``, ``optimizer.momentum``.
  ``optimizer.lr`` sets every parameter's learning rate: the file's per-weight
  rates (``lr W1=0.1, W2=0.05``) are dropped, since a user who sets "the
  learning rate" means all of them (a change that silently reached no weight
  was the alternative). ``optimizer.lr.W1`` sets one weight's rate, and wins over
  ``optimizer.lr`` whatever the order they are given in.
* ``perturb.NAME`` — ``on`` / ``off`` (or ``true`` / ``false``) switches a
  `perturb` statement on or off; ``perturb.NAME.size`` sets its value (the
  current of `add`, the factor of `gain`, the level of `clamp`),
  ``perturb.NAME.fraction`` and ``perturb.NAME.seed`` its options.

Overrides rewrite the syntax tree, so the checker sees them like any other
value: a bad override is reported like a bad line, located at ``--set KEY``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any

from . import syntax as S
from .errors import CircuitSemanticError, Diagnostic, did_you_mean
from .source import Span

__all__ = ["apply_overrides"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")


def _value(key: str, raw: Any, span: Span) -> S.Expr | bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, (int, float)):
        return S.Number(float(raw), repr(raw), span)
    text = str(raw).strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        value = float(text)
    except ValueError:
        if _NAME.match(text):
            return S.Var(text, span)
        raise CircuitSemanticError(
            [Diagnostic(f"`{key}={text}`: the value must be a number, a name, true or false", span)]
        ) from None
    if not math.isfinite(value):
        raise CircuitSemanticError([Diagnostic(f"`{key}={text}` is not a finite number", span)])
    return S.Number(value, text, span)


def _set_attr(attrs: tuple[S.Attr, ...], name: str, value, span: Span) -> tuple[S.Attr, ...]:
    kept = tuple(a for a in attrs if a.key.name != name)
    if value is False:
        return kept
    ident = S.Ident(name, span)
    return kept + (S.Attr(ident, None if value is True else value, (), span),)


def apply_overrides(program: S.Program, overrides: Mapping[str, Any]) -> S.Program:
    """A new program with the overrides written into it.

    Raises:
        CircuitSemanticError: an override names nothing in the file.
    """
    if not overrides:
        return program
    statements = list(program.statements)
    errors: list[Diagnostic] = []
    perturb = {k: v for k, v in overrides.items() if k.split(".")[0] == "perturb"}
    if perturb:
        statements = _perturb_overrides(statements, perturb, errors)
        overrides = {k: v for k, v in overrides.items() if k not in perturb}
    # `optimizer.lr` first: it drops the per-weight rates, and `optimizer.lr.W1` then adds its own
    for key, raw in sorted(overrides.items(), key=lambda kv: kv[0] != "optimizer.lr"):
        span = Span(f"--set {key}", 0, 0, 0, 0)
        value = _value(key, raw, span)
        parts = key.split(".")
        if len(parts) == 1:
            idx = [i for i, s in enumerate(statements) if isinstance(s, S.Param) and s.name.name == key]
            if not idx:
                names = [s.name.name for s in statements if isinstance(s, S.Param)]
                errors.append(Diagnostic(
                    f"`--set {key}`: the file has no param `{key}`{did_you_mean(key, names)}", span,
                    "keys: a param name, phase.NAME.SETTING, learn.SETTING or optimizer.SETTING",
                ))
                continue
            if isinstance(value, bool):
                errors.append(Diagnostic(f"`--set {key}`: a param needs a number", span))
                continue
            i = idx[0]
            statements[i] = dataclasses.replace(statements[i], value=value)
            continue
        learns = [i for i, s in enumerate(statements) if isinstance(s, S.Learn)]
        if not learns:
            errors.append(Diagnostic(f"`--set {key}`: the file has no `learn` block", span))
            continue
        li = learns[0]
        learn: S.Learn = statements[li]
        head = parts[0]
        if head == "phase" and len(parts) == 3:
            names = [p.name.name for p in learn.phases]
            if parts[1] not in names:
                errors.append(Diagnostic(
                    f"`--set {key}`: there is no phase `{parts[1]}`{did_you_mean(parts[1], names)}", span,
                    "phases: " + ", ".join(names),
                ))
                continue
            phases = tuple(
                dataclasses.replace(p, attrs=_set_attr(p.attrs, parts[2], value, span)) if p.name.name == parts[1] else p
                for p in learn.phases
            )
            statements[li] = dataclasses.replace(learn, phases=phases)
        elif head == "learn" and len(parts) == 2:
            statements[li] = dataclasses.replace(learn, attrs=_set_attr(learn.attrs, parts[1], value, span))
        elif head == "optimizer" and len(parts) >= 2:
            if len(parts) > 3:  # optimizer.lr.h.bias
                parts = [parts[0], parts[1], ".".join(parts[2:])]
            if not learn.optimizers:
                errors.append(Diagnostic(f"`--set {key}`: the `learn` block has no optimizer", span))
                continue
            opt = learn.optimizers[0]
            if len(parts) == 3:
                if parts[1] != "lr":
                    errors.append(Diagnostic(f"`--set {key}`: only `optimizer.lr.WEIGHT` takes a third part", span))
                    continue
                lr = next((a for a in opt.attrs if a.key.name == "lr"), None)
                kw = S.Option(parts[2], value, span, span)
                if lr is None:
                    lr = S.Attr(S.Ident("lr", span), None, (kw,), span)
                else:
                    lr = dataclasses.replace(lr, kwargs=tuple(k for k in lr.kwargs if k.key != parts[2]) + (kw,))
                attrs = tuple(a for a in opt.attrs if a.key.name != "lr") + (lr,)
            elif parts[1] == "lr":  # every rate: the file's per-weight ones go
                attrs = tuple(a for a in opt.attrs if a.key.name != "lr") + (
                    S.Attr(S.Ident("lr", span), value if not isinstance(value, bool) else None, (), span),
                )
            else:
                attrs = _set_attr(opt.attrs, parts[1], value, span)
            new_opt = dataclasses.replace(opt, attrs=attrs)
            statements[li] = dataclasses.replace(learn, optimizers=(new_opt,) + learn.optimizers[1:])
        else:
            errors.append(Diagnostic(
                f"`--set {key}`: unknown key", span,
                "keys: a param name, phase.NAME.SETTING, learn.SETTING or optimizer.SETTING",
            ))
    if errors:
        raise CircuitSemanticError(errors)
    return dataclasses.replace(program, statements=tuple(statements))


_PERTURB_KEYS = ("size", "fraction", "seed")


def _perturb_overrides(statements: list, overrides: Mapping[str, Any], errors: list[Diagnostic]) -> list:
    """`perturb.NAME=on|off`, `perturb.NAME.size|fraction|seed=VALUE` written into the `perturb` statements."""
    statements = list(statements)
    for key, raw in sorted(overrides.items()):
        span = Span(f"--set {key}", 0, 0, 0, 0)
        parts = key.split(".")
        where = {s.name.name: i for i, s in enumerate(statements) if isinstance(s, S.Perturb)}
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in _PERTURB_KEYS):
            errors.append(Diagnostic(f"`--set {key}`: unknown key", span,
                                     "keys: perturb.NAME=on|off, perturb.NAME.size, .fraction or .seed"))
            continue
        if parts[1] not in where:
            errors.append(Diagnostic(f"`--set {key}`: the file has no perturbation `{parts[1]}`"
                                     f"{did_you_mean(parts[1], where)}", span,
                                     "perturbations: " + (", ".join(where) or "none (declare one with `perturb`)")))
            continue
        i = where[parts[1]]
        st: S.Perturb = statements[i]
        text = str(raw).strip().lower()
        if len(parts) == 2:
            if text not in ("on", "off", "true", "false"):
                errors.append(Diagnostic(f"`--set {key}={raw}`: say `on` or `off`", span))
                continue
            options = tuple(o for o in st.options if o.key != "enabled")
            if text in ("on", "true"):
                options += (S.Option("enabled", None, span, span),)
            statements[i] = dataclasses.replace(st, options=options)
            continue
        try:
            value = _value(key, raw, span)
        except CircuitSemanticError as exc:
            errors.extend(exc.diagnostics)
            continue
        if isinstance(value, bool):
            errors.append(Diagnostic(f"`--set {key}`: needs a number", span))
            continue
        if parts[2] == "size":
            statements[i] = dataclasses.replace(st, value=value)
        else:
            options = tuple(o for o in st.options if o.key != parts[2]) + (S.Option(parts[2], value, span, span),)
            statements[i] = dataclasses.replace(st, options=options)
    return statements
