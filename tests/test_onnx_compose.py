"""ONNX ops written with the language's functions (``nndk.onnx.compose``), against
onnxruntime on values that reach every branch (negative, zero, past the thresholds)."""

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

# (op type, attributes, how inputs are made finite for it)
UNARY = [
    ("Reciprocal", {}, "nonzero"), ("Softsign", {}, ""), ("Sinh", {}, ""), ("Cosh", {}, ""),
    ("Tan", {}, ""), ("Asinh", {}, ""), ("Acosh", {}, "above1"), ("Atanh", {}, "unit"),
    ("Sign", {}, ""), ("Selu", {}, ""), ("Selu", {"alpha": 2.0, "gamma": 3.0}, ""),
    ("Celu", {}, ""), ("Celu", {"alpha": 2.0}, ""), ("ThresholdedRelu", {"alpha": 0.5}, ""),
    ("Shrink", {}, ""), ("Shrink", {"lambd": 0.3, "bias": 0.2}, ""),
    ("HardSigmoid", {}, ""), ("HardSigmoid", {"alpha": 0.5, "beta": 0.6}, ""),
    ("IsInf", {}, "inf"), ("IsInf", {"detect_negative": 0}, "inf"),
    ("IsInf", {"detect_positive": 0}, "inf"),
]


def _inputs(kind: str) -> np.ndarray:
    x = np.random.default_rng(1).uniform(-2, 2, (6, 5)).astype(np.float32)
    x[0, :3] = [0.0, 0.5, -0.5]
    if kind == "nonzero":
        x[0, 0] = 0.25
    if kind == "above1":
        x = 1.0 + np.abs(x)
    if kind == "unit":
        x = np.clip(x / 2.5, -0.95, 0.95)
    if kind == "inf":
        x[1, :3] = [np.inf, -np.inf, np.nan]
    return x


def _model(node: object, inputs: dict, inits: list, opset: int = 22, out: int = 1) -> object:
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info(k, 1, v) for k, v in inputs.items()],
        [helper.make_tensor_value_info("y", out, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _check(proto: object, feeds: dict[str, np.ndarray]) -> str:
    result = import_model(proto)
    model = Model.from_equations(result.equations, result.weights)
    got, _ = model.step(feeds)
    want = ort_runner(proto)(feeds)["y"]
    have = got[result.outputs["y"][0]].reshape(want.shape)
    np.testing.assert_allclose(have, want.astype(np.float32), rtol=1e-5, atol=1e-6)
    return result.equations


@pytest.mark.parametrize("op,attrs,kind", UNARY, ids=lambda v: str(v))
def test_a_composed_op_matches_onnxruntime(op: str, attrs: dict, kind: str) -> None:
    proto = _model(helper.make_node(op, ["x"], ["y"], **attrs), {"x": ["N", 5]}, [],
                   out=9 if op == "IsInf" else 1)  # IsInf gives booleans
    _check(proto, {"x": _inputs(kind)})


def test_swish_needs_opset_24_and_matches_its_definition() -> None:
    x = _inputs("")
    for alpha in (1.0, 0.5):
        proto = _model(helper.make_node("Swish", ["x"], ["y"], alpha=alpha), {"x": ["N", 5]},
                       [], opset=24)
        result = import_model(proto)
        got, _ = Model.from_equations(result.equations, result.weights).step({"x": x})
        want = x / (1 + np.exp(-alpha * x))
        np.testing.assert_allclose(got[result.outputs["y"][0]], want, rtol=1e-5, atol=1e-6)


def test_prelu_pow_sum_and_mean_match_onnxruntime() -> None:
    x, z = _inputs(""), _inputs("above1")
    slope = numpy_helper.from_array(np.array([0.1, -0.2, 0.3, 0.0, 2.0], np.float32), "s")
    two = numpy_helper.from_array(np.array(2.0, np.float32), "k")
    n = helper.make_node
    text = _check(_model(n("PRelu", ["x", "s"], ["y"]), {"x": ["N", 5]}, [slope]), {"x": x})
    assert "relu(" in text
    assert "²" in _check(_model(n("Pow", ["x", "k"], ["y"]), {"x": ["N", 5]}, [two]),
                         {"x": x})
    both = {"x": ["N", 5], "z": ["N", 5]}
    _check(_model(n("Sum", ["x", "z", "s"], ["y"]), both, [slope]), {"x": x, "z": z})
    _check(_model(n("Mean", ["x", "z"], ["y"]), both, []), {"x": x, "z": z})
    _check(_model(n("Max", ["x"], ["y"]), {"x": ["N", 5]}, []), {"x": x})


def test_per_example_values_of_different_ranks_are_refused() -> None:
    """ONNX would add y's examples to x's entries: refused, never imported as x + y."""
    proto = _model(helper.make_node("Add", ["x", "y0"], ["y"]), {"x": ["N", 5], "y0": ["N"]},
                   [])
    with pytest.raises(OnnxError, match="different numbers of axes"):
        import_model(proto)
    clash = _model(helper.make_node("Add", ["x", "y0"], ["y"]), {"x": [3, 5], "y0": [5]}, [])
    with pytest.raises(OnnxError, match="inputs share their leading"):
        import_model(clash)


def test_boolean_inputs_are_zeros_and_ones_for_the_logic_ops() -> None:
    """And, Or, Xor, Not and Where read booleans fed as 0 and 1; Equal compares numbers."""
    n = helper.make_node
    nodes = [n("And", ["a", "b"], ["and"]), n("Or", ["a", "b"], ["or"]),
             n("Xor", ["a", "b"], ["xor"]), n("Not", ["a"], ["not"]),
             n("Where", ["a", "x", "z"], ["wh"]), n("Equal", ["x", "z"], ["eq"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(k, 9, ["N", 5]) for k in "ab"]
        + [helper.make_tensor_value_info(k, 1, ["N", 5]) for k in "xz"],
        [helper.make_tensor_value_info(k, 9, None) for k in ("and", "or", "xor", "not", "eq")]
        + [helper.make_tensor_value_info("wh", 1, None)])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    result = import_model(proto)
    rng = np.random.default_rng(4)
    feeds = {"a": rng.random((6, 5)) > 0.5, "b": rng.random((6, 5)) > 0.5,
             "x": rng.integers(0, 3, (6, 5)).astype(np.float32),
             "z": rng.integers(0, 3, (6, 5)).astype(np.float32)}
    got, _ = Model.from_equations(result.equations, result.weights).step(
        {k: v.astype(np.float32) for k, v in feeds.items()})
    for name, want in ort_runner(proto)(feeds).items():
        np.testing.assert_array_equal(got[result.outputs[name][0]], want.astype(np.float32),
                                      err_msg=name)


def test_one_hot_and_is_nan_match_onnxruntime() -> None:
    n = helper.make_node
    consts = [numpy_helper.from_array(np.array(4.0, np.float32), "depth"),
              numpy_helper.from_array(np.array([-1.0, 2.0], np.float32), "values")]
    nodes = [n("OneHot", ["x", "depth", "values"], ["oh"], axis=1),
             n("OneHot", ["x", "depth", "values"], ["ol"]), n("IsNaN", ["x"], ["nan"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", 1, ["N", 3])],
        [helper.make_tensor_value_info(k, 1, None) for k in ("oh", "ol")]
        + [helper.make_tensor_value_info("nan", 9, None)], consts)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    result = import_model(proto)
    x = np.array([[0, 3, -1], [2, 7, np.nan]], np.float32)  # -1 is the last; 7 is none
    got, _ = Model.from_equations(result.equations, result.weights).step({"x": x})
    want = ort_runner(proto)({"x": np.nan_to_num(x, nan=1.0)})
    for name in ("oh", "ol"):
        have = got[result.outputs[name][0]].reshape(want[name].shape)
        np.testing.assert_array_equal(have[0], want[name][0], err_msg=name)
    np.testing.assert_array_equal(got[result.outputs["nan"][0]], np.isnan(x))
