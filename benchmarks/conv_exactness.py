"""Exactness of convolutional EqProp, float64, on a small conv + max-pool circuit.

Measures, on the circuit of `tests/test_conv.py` (2×6×6 inputs, a 3×3
convolution with 2×2 max-pooling, a second convolution, a dense readout):

* symmetric EqProp at β = 1e-3 against `method="gradient"` (implicit
  differentiation at the free fixed point): the cosine, overall and per weight,
  and the relative error; also with the max-pooling on a free layer;
* the `gradient` method against central finite differences of the loss at the
  free fixed point, along a random direction of all parameters;
* the compiled relaxation against the NumPy reference simulator
  (`tests/numpy_reference.py`, through the operators' NumPy versions): the
  largest difference of any state after 60 Euler steps, free and nudged.

    python benchmarks/conv_exactness.py        # writes benchmarks/results/conv_exactness.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default=str(HERE / "results" / "conv_exactness.json"))
    a = ap.parse_args()
    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np

    from tests.test_conv import (CONV, FREE_MAX, circuit, cosine, data, finite_difference, flat, relaxations,
                                 scaled_params)

    out: dict = {}
    for name, text in (("pool on the input", CONV), ("pool on a free layer", FREE_MAX)):
        model = circuit(text=text)
        params = scaled_params(model)
        x, y = data(model)
        g = model.estimate(params, x, y, method="symmetric", beta=1e-3)
        true = model.estimate(params, x, y, method="gradient")
        rel = float(np.linalg.norm(flat(g) - flat(true)) / np.linalg.norm(flat(true)))
        out[f"symmetric vs gradient ({name})"] = {
            "beta": 1e-3, "cosine": cosine(g, true), "relative_error": rel,
            "per_weight_cosine": {k: cosine({k: g[k]}, {k: true[k]}) for k in sorted(true)},
        }

    model = circuit(steps=3000)
    params = scaled_params(model)
    x, y = data(model)
    eps = 1e-5
    fd, directional = finite_difference(model, params, x, y, eps)
    out["gradient vs finite differences"] = {"eps": eps, "finite_difference": fd, "gradient": directional,
                                             "relative_error": abs(fd - directional) / abs(fd)}

    model = circuit(steps=60)
    params = scaled_params(model)
    x, y = data(model)
    (got, want), (got_b, want_b) = relaxations(model, params, x, y)
    out["NumPy reference simulator"] = {
        "steps": 60,
        "max_abs_difference_free": max(float(np.max(np.abs(np.asarray(got[n]) - want[n]))) for n in model.free),
        "max_abs_difference_nudged": max(float(np.max(np.abs(np.asarray(got_b[n]) - want_b[n]))) for n in model.free),
    }
    path = Path(a.json)
    path.write_text(json.dumps({"command": "python benchmarks/conv_exactness.py", "results": out}, indent=1))
    for k, v in out.items():
        print(k, {a: b for a, b in v.items() if a != "per_weight_cosine"})


if __name__ == "__main__":
    main()
