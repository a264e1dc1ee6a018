"""circuitlang: a declarative language and compiler for neural circuits that
learn without backprop (Equilibrium Propagation and its family).

    import circuitlang as cl
    circ = cl.load("examples/eqprop_hopfield.circ")
    circ.populations["h"].size
"""

from .circuit import Circuit, load, loads
from .errors import (
    CircuitError,
    CircuitRuntimeError,
    CircuitSemanticError,
    CircuitSyntaxError,
    Diagnostic,
)
from .graph import validate
from .source import Span

__version__ = "0.1.0"

_LAZY = {"compile": "model", "Model": "model", "train": "training", "evaluate": "training", "load_data": "data"}


def __getattr__(name: str):
    """JAX-backed parts load on first use, so `circuitc check` stays quick."""
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        attr = getattr(module, "load" if name == "load_data" else name)
        globals()[name] = attr
        return attr
    raise AttributeError(f"module 'circuitlang' has no attribute {name!r}")

__all__ = [
    "Circuit",
    "Model",
    "compile",
    "CircuitError",
    "CircuitRuntimeError",
    "CircuitSemanticError",
    "CircuitSyntaxError",
    "Diagnostic",
    "Span",
    "load",
    "loads",
    "validate",
    "__version__",
]
