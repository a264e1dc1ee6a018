"""Memory, checked before work starts.

A run that cannot fit should say so in its first second, naming what takes the
room, and not be killed by the kernel half an hour in. Two checks:

* `require_bytes`: a loader about to allocate what a file's header declares
  (an IDX image count, an `.npz` member's shape, a synthetic data set's sizes)
  asks first; headers can be forged, and a 1 MB `.gz` can claim gigabytes.
* `require_run`: before a verb initialises parameters or compiles, the
  estimate of what it will hold at once (`estimate`) is set against the memory
  this machine has available now.

The available memory is the kernel's `MemAvailable` (free memory plus what the
page cache can give back), lowered to what a cgroup limit leaves, the way
container runtimes bound a process; `CIRCUITLANG_MEMORY` (`8GiB`, `512MiB`,
`2e9`) sets it by hand, for a shared machine or for tests.

The run estimate is an upper bound in the sense of an engineer's budget, not
XLA's exact allocation: it counts the data on the device (and the shuffled
copy of an epoch), the parameters with their gradient, optimizer slots and the
host copy that checkpoints are written from, the neuron states of a batch times
the copies a relaxation keeps alive (its carry, the drive it computes, the
phases an estimator compares; for `bptt` the whole trajectory), the largest
evaluation chunk, and a fixed allowance for JAX's runtime and compiled code.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from pathlib import Path
from typing import Any

from .errors import CircuitError, Diagnostic

__all__ = ["available_memory", "parse_size", "fmt_bytes", "Estimate", "estimate", "require_run", "require_bytes"]

RUNTIME_BYTES = 512 * 2**20  # JAX's runtime, XLA's compiled programs, matplotlib and Python's own objects
RELAXATION_COPIES = 6  # state carried, its previous value, the drive, and the phases an estimator keeps
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20,
          "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12, "tib": 2**40}


def fmt_bytes(n: float) -> str:
    """`512 B`, `1.5 GiB`."""
    for unit, scale in (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            v = n / scale
            return f"{v:.3g} {unit}" if v < 1000 else f"{v:,.0f} {unit}"
    return f"{int(n)} B"


def parse_size(text: str) -> int:
    """`8GiB`, `512 MiB`, `2e9` → bytes. Raises ValueError."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"{text!r} is not a size (write e.g. 8GiB, 512MiB or 2e9)")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{text!r} is not a positive size")
    return int(value)


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # cgroup v2 writes "max" for no limit


def _stats(path: Path) -> dict[str, int]:
    """`memory.stat`: `name value` lines."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        name, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[name] = int(value)
    return out


def _cgroup_room(root: Path = Path("/sys/fs/cgroup"), proc: Path = Path("/proc/self/cgroup")) -> int | None:
    """What this process's memory cgroups let it allocate beyond what they hold now: the
    tightest of every limit from its own cgroup up to the root (Slurm and systemd set the
    limit on a parent), counting reclaimable page cache (`inactive_file`) as room, as the
    kernel does before it kills. cgroup v2 (unified, or under `unified/` in hybrid mode) and
    v1 (`hierarchical_memory_limit`; the mount root itself when the container has no
    cgroup namespace and its path in /proc is not mounted)."""
    try:
        lines = proc.read_text().splitlines()
    except OSError:
        return None
    rooms = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":  # v2
            base = root if (root / "cgroup.controllers").exists() else root / "unified"
            d = base / path.lstrip("/")
            while True:
                limit = _read_int(str(d / "memory.max"))
                if limit is not None:
                    used = _read_int(str(d / "memory.current")) or 0
                    rooms.append(limit - used + _stats(d / "memory.stat").get("inactive_file", 0))
                if d == base or base not in d.parents:
                    break
                d = d.parent
        elif "memory" in controllers.split(","):  # v1
            mount = root / "memory"
            d = mount / path.lstrip("/")
            if not d.is_dir():
                d = mount
            stat = _stats(d / "memory.stat")
            limit = stat.get("hierarchical_memory_limit") or _read_int(str(d / "memory.limit_in_bytes"))
            if limit is not None and limit < 2**60:  # v1 writes ~2**63 for no limit
                used = _read_int(str(d / "memory.usage_in_bytes")) or 0
                rooms.append(limit - used + stat.get("total_inactive_file", 0))
    return max(min(rooms), 0) if rooms else None


def available_memory() -> int | None:
    """Bytes this process can still allocate, or None when the system does not say.

    Raises:
        CircuitError: `CIRCUITLANG_MEMORY` is set but is not a size.
    """
    given = os.environ.get("CIRCUITLANG_MEMORY")
    if given:
        try:
            return parse_size(given)
        except ValueError as exc:
            raise CircuitError(f"CIRCUITLANG_MEMORY: {exc}") from None
    room = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                room = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if room is None:
        try:
            room = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            room = None
    limit = _cgroup_room()
    if limit is not None:
        room = limit if room is None else min(room, limit)
    return room


def require_bytes(nbytes: int, what: str, hint: str | None = None) -> None:
    """Refuse to allocate `nbytes` for `what` (e.g. "`x.gz`: 60000 images of 28×28") when they
    would not fit in the available memory.

    Raises:
        CircuitError: naming `what`, the sizes and the fix.
    """
    room = available_memory()
    if room is not None and nbytes > room:
        raise CircuitError(Diagnostic(f"{what} would need {fmt_bytes(nbytes)} of memory, but only "
                                      f"{fmt_bytes(room)} is available on this machine", None, hint or _OVERRIDE))


_OVERRIDE = "if the machine has more memory to give, set CIRCUITLANG_MEMORY (e.g. CIRCUITLANG_MEMORY=32GiB)"


@dataclasses.dataclass(frozen=True)
class Estimate:
    """What a verb will hold in memory at once, part by part (bytes)."""

    verb: str
    parts: dict[str, int]
    batch: int
    largest: str | None = None  # the population with the most states, for the hint

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def render(self) -> str:
        return ", ".join(f"{name} {fmt_bytes(n)}" for name, n in self.parts.items() if n)


def _optimizer_slots(model: Any) -> int:
    learn = model.learning
    name = getattr(getattr(learn, "optimizer", None), "name", None) or "sgd"
    opts = getattr(getattr(learn, "optimizer", None), "settings", None) or {}
    if name in ("adam", "adamw", "lamb", "lion", "adabelief", "yogi", "nadam"):
        return 2
    if name == "sgd":
        return 1 if opts.get("momentum") else 0
    return 2  # an optimizer we do not know: assume it keeps as much as adam


def _states_per_example(model: Any) -> int:
    """Neuron states, and what operator chains (convolutions, pooling) hold between them."""
    states = sum(model.size_of(k) for k in model.state_keys)
    for e in model.circuit.connections:
        if len(e.stages) > 1 or any(st.kind != "dense" for st in e.stages):
            states += sum(math.prod(getattr(st, "out_shape", ()) or (0,)) for st in e.stages)
    return states


def estimate(model: Any, verb: str, *, batch: int, data: Any = None, itemsize: int = 4,
             method: str | None = None, eval_chunk: int = 1000, split: str = "test", members: int = 1) -> Estimate:
    """The memory `verb` ("train", "evaluate", "simulate", "verify", "experiment") will hold on a
    batch of `batch` examples (see the module docstring for what is counted); a sweep of
    `members` (`sweeps.py`) holds each member's parameters, optimizer state, states and
    evaluation at once, and the data once."""
    n_params = sum(math.prod(s) for s in model.shapes.values())
    states = _states_per_example(model)
    steps = max((p.steps or p.present or 1) for p in model.phases.values()) if model.phases else 1
    method = method or model.method
    parts: dict[str, int] = {}
    copies = RELAXATION_COPIES + (steps if method == "bptt" else 0)
    if verb == "train":
        copies_of_params = 4 + _optimizer_slots(model)  # params, gradient, update, host copy, slots
        parts["parameters and optimizer"] = n_params * itemsize * copies_of_params
        parts[f"states of a batch of {batch}"] = batch * states * itemsize * copies
        if data is not None:
            n_test = len(data.x_test)
            parts[f"evaluation in chunks of {min(eval_chunk, n_test)}"] = (
                min(eval_chunk, n_test) * states * itemsize * RELAXATION_COPIES)
            # on the device, and the shuffled copy each epoch draws its batches from
            parts["data"] = 2 * (data.x_train.nbytes + data.x_test.nbytes) + data.y_train.nbytes + data.y_test.nbytes
    elif verb == "evaluate":
        xs, ys = (getattr(data, f"{a}_{split}") for a in "xy") if data is not None else (None, None)
        parts["parameters"] = n_params * itemsize
        chunk = min(eval_chunk, len(xs)) if xs is not None else eval_chunk
        parts[f"evaluation in chunks of {chunk}"] = chunk * states * itemsize * RELAXATION_COPIES
        if xs is not None:
            parts["data"] = xs.nbytes + ys.nbytes
    else:  # simulate records every step of a phase; verify and experiment compare several estimates
        parts["parameters"] = n_params * itemsize * (1 if verb == "simulate" else 4)
        recorded = steps if verb == "simulate" else RELAXATION_COPIES
        parts[f"states of {batch} example{'s' if batch != 1 else ''}"] = batch * states * itemsize * (recorded + copies)
    if members > 1:  # the data are shared; everything else is each member's
        parts = {k if k == "data" else f"{k}, × {members} members": v if k == "data" else v * members
                 for k, v in parts.items()}
    parts["runtime"] = RUNTIME_BYTES
    largest = max(model.state_keys, key=model.size_of) if model.state_keys else None
    return Estimate(verb, parts, batch, largest)


EVAL_BUDGET = 2**30  # bytes of states an evaluation chunk may hold at once


def eval_chunk(model: Any, n: int, most: int = 1000) -> int:
    """The evaluation chunk: `most` examples at a time, halved while a chunk's states would
    hold more than `EVAL_BUDGET` (1 GiB). A function of the circuit alone, never of the
    machine, so that a file evaluates (and compiles) the same everywhere; whether the
    chunk fits this machine is `require_run`'s question."""
    states = _states_per_example(model) * 4 * RELAXATION_COPIES
    chunk = max(1, min(most, n))
    while chunk > 1 and chunk * states > EVAL_BUDGET:
        chunk //= 2
    return chunk


def device_kind() -> str:
    import jax

    return f"{jax.default_backend().upper()} device"


def _device_room() -> int | None:
    """Free memory of the first accelerator (None on CPU, whose memory is the machine's, or
    when the backend does not say): the run's arrays live there."""
    import sys

    if "jax" not in sys.modules or os.environ.get("CIRCUITLANG_MEMORY"):
        return None
    import jax

    try:
        if jax.default_backend() == "cpu":
            return None
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:  # noqa: BLE001 - a backend without memory statistics
        return None
    limit = stats.get("bytes_limit")
    return None if not limit else max(int(limit) - int(stats.get("bytes_in_use", 0)), 0)


def require_run(est: Estimate, model: Any) -> None:
    """Refuse a run whose estimate exceeds the available memory (see `estimate`).

    Raises:
        CircuitError: with the parts and what would shrink the largest, located where that
            is written (the largest weight, the largest population, or the `learn` block).
    """
    room, where = available_memory(), "this machine"
    device = _device_room()
    if device is not None and (room is None or device < room):
        room, where = device, f"the {device_kind()}"
    if room is None or est.total <= room:
        return
    biggest = max(est.parts, key=est.parts.get)
    learn = model.learning
    span = getattr(learn, "span", None) if learn is not None else None  # where the batch is set
    fixes = []
    if biggest.startswith("states") or biggest.startswith("evaluation"):
        if est.verb == "train":
            fixes.append(f"a smaller `batch` (now {est.batch}; e.g. --set learn.batch={max(1, est.batch // 4)})")
        elif est.verb in ("simulate", "verify"):
            fixes.append(f"fewer samples (now {est.batch}; --samples)")
        if est.largest:
            fixes.append(f"fewer units in `{est.largest}` ({model.size_of(est.largest):,} states per example)")
            if est.verb != "train" or span is None:
                span = getattr(model.circuit.populations.get(est.largest), "span", None) or span
    elif biggest.startswith("parameters"):
        big = max(model.shapes, key=lambda k: math.prod(model.shapes[k]))
        edge = next((e for e in model.circuit.connections if e.weight == big), None)
        span = getattr(edge, "span", None) or span
        fixes.append(f"smaller populations: the largest weight, `{big}` "
                     f"({'×'.join(f'{d:,}' for d in model.shapes[big])}), alone needs "
                     f"{fmt_bytes(4 * math.prod(model.shapes[big]))}")
    elif biggest == "data":
        fixes.append("a smaller data set")
    fixes.append(_OVERRIDE.replace("if the machine", "or, if the machine") if fixes else _OVERRIDE)
    message = (f"{est.verb} would need about {fmt_bytes(est.total)} of memory ({est.render()}), "
               f"but only {fmt_bytes(room)} is available on {where}")
    if span is None:
        raise CircuitError(Diagnostic(message, None, "; ".join(fixes)))
    raise CircuitError(Diagnostic(message, span, "; ".join(fixes)), model.circuit.source)
