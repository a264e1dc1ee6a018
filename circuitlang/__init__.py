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

__all__ = [
    "Circuit",
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
