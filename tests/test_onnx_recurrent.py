"""Recurrent ONNX nodes written by hand: the ``activations`` attribute (a list of strings),
the reverse and bidirectional directions, checked against onnxruntime, and what the
equations lack refused by name."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import helper, numpy_helper  # noqa: E402
from onnx_helpers import ort_runner  # noqa: E402

from nndk.onnx.common import OnnxError  # noqa: E402
from nndk.onnx.importer import import_model  # noqa: E402

T, N, IN, H = 5, 2, 3, 4
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def _cell(op: str, activations: list[str] | None, seed: int = 0, direction: str = "forward",
          extra: tuple[str, ...] = (), **attrs: object) -> object:
    """One node over X [T, N, IN] with constant W, R, B (and P for ``extra`` "P"); ``extra``
    "initial_h" makes the initial state (an LSTM's h and c) graph inputs."""
    rng = np.random.default_rng(seed)
    g, d = GATES[op], 2 if direction == "bidirectional" else 1
    shapes_in = {"W": (d, g * H, IN), "R": (d, g * H, H), "B": (d, 2 * g * H), "P": (d, 3 * H)}
    names = ["W", "R", "B"] + (["P"] if "P" in extra else [])
    inits = [numpy_helper.from_array((rng.standard_normal(shapes_in[n]) * 0.5)
                                     .astype(np.float32), n) for n in names]
    given = ["initial_h"] + (["initial_c"] if op == "LSTM" else []) \
        if "initial_h" in extra else []
    inputs = ["X", "W", "R", "B", "", *given]
    if "P" in extra:
        inputs += [""] * (7 - len(inputs)) + ["P"]
    outs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    attrs = {"hidden_size": H, "direction": direction} | attrs | (
        {"activations": activations} if activations else {})
    node = helper.make_node(op, inputs, outs, **attrs)
    shapes = {"Y": [T, d, N, H], "Y_h": [d, N, H], "Y_c": [d, N, H]}
    graph_in = [helper.make_tensor_value_info("X", 1, [T, N, IN])]
    graph_in += [helper.make_tensor_value_info(n, 1, [d, N, H]) for n in given]
    graph = helper.make_graph(
        [node], "g", graph_in,
        [helper.make_tensor_value_info(o, 1, shapes[o]) for o in outs], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return proto


def _compare(proto: object) -> object:
    """nnre's import against onnxruntime on every output; returns the import."""
    from nndk.onnx.conformance import _run

    rng = np.random.default_rng(9)
    feeds = {vi.name: rng.standard_normal([d.dim_value for d in vi.type.tensor_type.shape.dim])
             .astype(np.float32) for vi in proto.graph.input}  # type: ignore[attr-defined]
    want = ort_runner(proto)(feeds)
    result = import_model(proto)
    got = _run(result, feeds)
    for onnx_name, value in want.items():
        np.testing.assert_allclose(got[onnx_name].reshape(value.shape), value, rtol=0,
                                   atol=1e-5, err_msg=onnx_name)
    return result


@pytest.mark.parametrize("op, activations", [
    ("LSTM", ["Sigmoid", "Tanh", "Tanh"]), ("GRU", ["Sigmoid", "Tanh"]), ("RNN", ["Tanh"]),
    ("RNN", ["Relu"]), ("GRU", ["Sigmoid", "Relu"]), ("LSTM", ["sigmoid", "relu", "tanh"]),
])
def test_activations_given_as_strings_match_onnxruntime(op: str, activations: list[str]
                                                        ) -> None:
    proto = _cell(op, activations)
    attr, = (a for a in proto.graph.node[0].attribute if a.name == "activations")
    assert attr.strings  # stored as ONNX STRINGS: a list of bytes
    _compare(proto)


@pytest.mark.parametrize("op, activations, message", [
    ("RNN", ["HardSigmoid"], "RNN activation HardSigmoid"),
    ("GRU", ["Sigmoid", "Softsign"], "GRU activation Softsign"),
    ("LSTM", ["Sigmoid", "Tanh"], "LSTM with 2 activations"),
])
def test_other_activations_are_refused_by_name(op: str, activations: list[str],
                                               message: str) -> None:
    with pytest.raises(OnnxError, match=message):
        import_model(_cell(op, activations))


@pytest.mark.parametrize("op", sorted(GATES))
@pytest.mark.parametrize("direction", ["reverse", "bidirectional"])
def test_reverse_and_bidirectional_match_onnxruntime(op: str, direction: str) -> None:
    """Y [T, D, N, H] (with two directions the model's [hₜ; h'ₜ], put back in ONNX's
    layout), Y_h and Y_c: the reverse direction's after it ran, i.e. at the first step."""
    result = _compare(_cell(op, None, seed=1, direction=direction))
    assert "h'ₜ₊₁" in result.equations and "hₜ₋₁" in result.equations or \
        direction == "reverse"
    assert result.outputs["Y"][1] == ("directions" if direction == "bidirectional"
                                      else "output")


@pytest.mark.parametrize("op, activations", [
    ("LSTM", ["Sigmoid", "Tanh", "Tanh", "Sigmoid", "Relu", "Tanh"]),
    ("GRU", ["Sigmoid", "Tanh", "Sigmoid", "Relu"]), ("RNN", ["Relu", "Tanh"]),
])
def test_each_direction_takes_its_own_activations(op: str, activations: list[str]) -> None:
    _compare(_cell(op, activations, seed=2, direction="bidirectional"))


def test_bidirectional_extras_match_onnxruntime() -> None:
    """Peepholes per direction, GRU's linear_before_reset, and an initial state given as a
    graph input [2, N, H] (each direction's: the reverse one after the last step)."""
    _compare(_cell("LSTM", None, seed=3, direction="bidirectional", extra=("P", "initial_h")))
    result = _compare(_cell("GRU", None, seed=4, direction="bidirectional",
                            extra=("initial_h",), linear_before_reset=1))
    assert result.inputs["initial_h"] == ("h,h'", "states")
    _compare(_cell("RNN", None, seed=5, direction="reverse", extra=("initial_h",)))


def test_bidirectional_activations_must_come_for_both_directions() -> None:
    with pytest.raises(OnnxError, match="GRU with 2 activations \\(two directions take 4\\)"):
        import_model(_cell("GRU", ["Sigmoid", "Tanh"], direction="bidirectional"))
