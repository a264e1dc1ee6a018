"""Syntax tree → checked, frozen circuit graph (see `graph.py` for the schema).

All semantic errors are collected and raised together, sorted by position,
as one `CircuitSemanticError`. Nothing here imports JAX.

Modules, one per concern:

* `builder`: `build` and the order in which the checks run;
* `base`: the shared state and helpers (namespace, constants, options);
* `names`: params, functions and cell types;
* `populations`: populations and biases;
* `connections`: connections, initializers, ties and the parameter memory;
* `dynamics`: energy, dynamics, what connections mean under them, costs;
* `learning`: the `learn` block (phases, estimator, optimizer, rules);
* `perturbations`: `perturb` statements (targets, kinds, phases and windows).
"""

from .builder import build
from .connections import MAX_PARAMETER_BYTES

__all__ = ["build", "MAX_PARAMETER_BYTES"]
