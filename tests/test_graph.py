"""Syntax tree → circuit graph: the schema, shapes and registry-driven checks."""

from __future__ import annotations

import networkx as nx
import pytest

import circuitlang as cl
from circuitlang import primitives as P
from circuitlang.graph import CircuitSpec, ConnectionEdge, PopulationNode, validate

from .conftest import EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_build_valid_frozen_graphs(path):
    circ = cl.load(path)
    validate(circ.graph)
    assert nx.is_frozen(circ.graph)
    assert isinstance(circ.spec, CircuitSpec)
    with pytest.raises(nx.NetworkXError):
        circ.graph.add_node("extra")


def test_hopfield_example_payloads(root):
    circ = cl.load(root / "examples" / "eqprop_hopfield.circ")
    pops = circ.populations
    assert (pops["x"].size, pops["x"].role) == (64, "input")
    assert (pops["h"].size, pops["h"].role, pops["h"].bias) == (256, "hidden", True)
    assert (pops["y"].role, pops["y"].activation) == ("output", "rho")
    w1 = circ.weights["W1"]
    assert isinstance(w1, ConnectionEdge)
    # `h -- x : W1`: W1 enters E as rho(h)^T W1 rho(x), shape (|h|, |x|)
    assert (w1.kind, w1.shape, w1.post, w1.pre) == ("undirected", (256, 64), "h", "x")
    assert w1.init.scheme == "glorot" and w1.plasticity == "plastic"
    learn = circ.spec.learning
    assert learn.method == "eqprop" and learn.estimator == "symmetric" and learn.batch == 32
    free, nudge = learn.phases
    assert (free.steps, free.dt, free.beta) == (40, 0.5, 0.0)
    assert (nudge.steps, nudge.beta) == (8, 0.5)
    opt = learn.optimizer
    assert opt.name == "sgd" and dict(opt.lr_per_param) == {"W1": 0.2, "W2": 0.1, "h.bias": 0.2, "y.bias": 0.1}
    assert opt.settings["schedule"] == "cosine"
    assert (circ.populations["h"].lo, circ.populations["h"].hi) == (0.0, 1.0)
    assert circ.parameter_count() == 256 * 64 + 10 * 256 + 256 + 10


def test_mirror_example_compartments_and_ties(root):
    circ = cl.load(root / "examples" / "mirror_interneurons.circ")
    s1 = circ.populations["s1"]
    assert s1.cell_type == "pyramidal" and s1.compartments == ("basal", "apical") and s1.state == ("s",)
    b2 = circ.weights["B2"]
    assert (b2.plasticity, b2.tied_to, b2.transposed, b2.compartment) == ("tied", "W2", True, "apical")
    # a tied weight reads its target's array and runs its operator backwards
    assert b2.shape == circ.weights["W2"].shape and b2.stages == circ.weights["W2"].stages
    assert circ.weights["V1b"].sign == -1
    rules = circ.spec.learning.rules
    assert [r.weights for r in rules] == [("V1f",), ("V1b",), ("W1",), ("W2",)]
    assert rules[2].phases == rules[3].phases == ("nudge",)
    assert "B2" not in circ.parameter_shapes()


def test_predictive_forward_phase(root):
    circ = cl.load(root / "examples" / "predictive_coding.circ")
    free = circ.spec.learning.phases[0]
    assert free.forward and free.steps is None
    assert circ.populations["y"].activation == "identity"


def test_continuous_stream_phase(root):
    circ = cl.load(root / "examples" / "continuous_learning.circ")
    learn = circ.spec.learning
    assert learn.prospective and learn.phases[0].present == 20 and learn.phases[0].beta == 0.1
    assert learn.rules[0].always and learn.rules[0].weights == ("W1", "W2", "W3")


def test_params_feed_sizes_and_settings():
    circ = cl.loads(
        "param n = 2 ^ 3\nparam k = n * 2\nfn rho(x) = tanh(x)\n"
        "population x [n] input\npopulation y [k] output\nx -> y : W\n"
        "energy predictive\ncost y squared\n"
        "learn eqprop { phase free { steps k; dt 1 / n }\n phase nudge { steps 2; beta 0.1 }\n batch n }"
    )
    assert circ.populations["x"].size == 8 and circ.populations["y"].size == 16
    assert circ.weights["W"].shape == (16, 8)
    learn = circ.spec.learning
    assert learn.phases[0].steps == 16 and learn.phases[0].dt == 0.125 and learn.batch == 8


def test_one_to_one_and_fixed():
    circ = cl.loads(
        "population a [4] input\npopulation b [4]\npopulation c [3]\n"
        "a => b gain=0.5\nb -> c : F fixed init=normal(0.1)\nc -> b : B\ndynamics leaky\n"
    )
    o = next(e for e in circ.connections if e.kind == "one_to_one")
    assert (o.weight, o.gain, o.plasticity, o.shape) == (None, 0.5, "fixed", ())  # no array of its own
    assert [s.kind for s in o.stages] == ["one_to_one"]
    f = circ.weights["F"]
    assert f.plasticity == "fixed" and f.init.scheme == "normal" and f.init.args == (0.1,)
    assert "F" in circ.parameter_shapes()  # fixed weights are arrays too, just not learned
    validate(circ.graph)


def test_validate_rejects_a_broken_graph():
    circ = cl.load(EXAMPLES[0])
    g = nx.MultiDiGraph(circ.graph)  # unfrozen copy
    name = next(iter(g.nodes))
    g.nodes[name]["payload"] = "not a payload"
    with pytest.raises(ValueError, match="frozen|payload"):
        validate(g)


def test_registry_is_the_single_source():
    # every setting the checker accepts comes from the registry
    assert set(P.PHASE_SETTINGS) >= {"steps", "dt", "beta", "forward", "present", "tol", "integrator"}
    assert set(P.ESTIMATORS) == set(P.LEARN_SETTINGS["estimator"].choices)
    with pytest.raises(cl.CircuitError, match="unknown setting `stepz`.*did you mean `steps`"):
        cl.loads("population x [2] input\npopulation y [2] output\nx -> y : W\ndynamics leaky\ncost y squared\n"
                 "learn eqprop { phase free { stepz 3 } }")


def test_population_payload_type():
    circ = cl.load(EXAMPLES[0])
    for pop in circ.populations.values():
        assert isinstance(pop, PopulationNode) and pop.span.line >= 1
