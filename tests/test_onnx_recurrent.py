"""Recurrent ONNX nodes written by hand: the ``activations`` attribute (a list of strings),
checked against onnxruntime, and activations the equations lack refused by name."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import helper, numpy_helper  # noqa: E402
from onnx_helpers import ort_runner  # noqa: E402

from nndk.onnx.common import OnnxError  # noqa: E402
from nndk.onnx.importer import import_model  # noqa: E402
from nnre.model import Model  # noqa: E402

T, N, IN, H = 5, 2, 3, 4
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def _cell(op: str, activations: list[str] | None, seed: int = 0) -> object:
    rng = np.random.default_rng(seed)
    g = GATES[op]
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.5).astype(np.float32), n)
             for n, s in (("W", (1, g * H, IN)), ("R", (1, g * H, H)), ("B", (1, 2 * g * H)))]
    outs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    attrs = {"hidden_size": H} | ({"activations": activations} if activations else {})
    node = helper.make_node(op, ["X", "W", "R", "B"], outs, **attrs)
    shapes = {"Y": [T, 1, N, H], "Y_h": [1, N, H], "Y_c": [1, N, H]}
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("X", 1, [T, N, IN])],
        [helper.make_tensor_value_info(o, 1, shapes[o]) for o in outs], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return proto


def _compare(proto: object) -> None:
    x = np.random.default_rng(9).standard_normal((T, N, IN)).astype(np.float32)
    want = ort_runner(proto)({"X": x})
    result = import_model(proto)
    model = Model.from_equations(result.equations, result.weights)
    ys, final = model.run({result.inputs["X"][0]: x})
    for onnx_name, (name, kind) in result.outputs.items():
        got = ys[name] if kind == "output" else final[name]
        np.testing.assert_allclose(got.reshape(want[onnx_name].shape), want[onnx_name],
                                   rtol=0, atol=1e-5, err_msg=onnx_name)


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
