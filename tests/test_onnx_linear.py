"""Linear ONNX ops as constant matrices (``nndk.onnx.linear``), against onnxruntime; ops
that touch the batch axis, and maps that are not linear, refused."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import helper, numpy_helper  # noqa: E402
from onnx_helpers import ort_runner  # noqa: E402

from nndk.onnx import linear  # noqa: E402
from nndk.onnx.common import OnnxError  # noqa: E402
from nndk.onnx.importer import import_model  # noqa: E402
from nnre.model import Model  # noqa: E402

RNG = np.random.default_rng(7)
n = helper.make_node


def _model(nodes: list, consts: dict[str, np.ndarray], outputs: list[str],
           shape: tuple[int, ...] = (3, 2, 4, 4), opset: int = 18) -> object:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", 1, list(shape))],
                              [helper.make_tensor_value_info(k, 1, None) for k in outputs],
                              [numpy_helper.from_array(v, k) for k, v in consts.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_resize_pad_pool_and_depth_to_space_match_onnxruntime() -> None:
    nodes = [n("Resize", ["X", "", "scales"], ["up"], mode="linear"),
             n("Resize", ["X", "", "", "sizes"], ["near"], mode="nearest"),
             n("Pad", ["X", "pads", "value"], ["pad"]),
             n("AveragePool", ["X"], ["pool"], kernel_shape=[2, 2], pads=[1, 1, 0, 0]),
             n("DepthToSpace", ["X"], ["d2s"], blocksize=1),
             n("Tanh", ["up"], ["t"])]
    consts = {"scales": np.array([1, 1, 2, 1.5], np.float32),
              "sizes": np.array([3, 2, 3, 5], np.int64),
              "pads": np.array([0, 0, 1, 0, 0, 0, 0, 2], np.int64),
              "value": np.array(0.5, np.float32)}
    outs = ["up", "near", "pad", "pool", "d2s", "t"]
    proto = _model(nodes, consts, outs)
    result = import_model(proto)
    assert "flatten(X)" in result.equations and "M₁" in result.equations
    X = RNG.normal(size=(3, 2, 4, 4)).astype(np.float32)
    got, _ = Model.from_equations(result.equations, result.weights).step({"X": X})
    want = ort_runner(proto)({"X": X})
    for name in outs:
        np.testing.assert_allclose(got[result.outputs[name][0]].reshape(want[name].shape),
                                   want[name], rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("node,consts", [
    (n("Resize", ["X", "", "scales"], ["y"]), {"scales": np.array([2, 1, 1, 1], np.float32)}),
    (n("Pad", ["X", "pads"], ["y"]), {"pads": np.array([1, 0, 0, 0, 0, 0, 0, 0], np.int64)}),
    (n("Gather", ["X", "i"], ["y"], axis=0), {"i": np.array([0, 1], np.int64)}),
])
def test_ops_along_the_batch_axis_are_refused(node: object, consts: dict) -> None:
    with pytest.raises(OnnxError, match="batch axis"):
        import_model(_model([node], consts, ["y"]))


def test_a_map_that_is_not_linear_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(linear.GUARDS, "Relu", linear._always)
    monkeypatch.setitem(linear.RULES, "Relu", linear.linear)
    from nndk.onnx import ops

    monkeypatch.delitem(ops.RULES, "Relu")
    with pytest.raises(OnnxError, match="not a linear map"):
        import_model(_model([n("Relu", ["X"], ["y"])], {}, ["y"]))


def test_einsum_expand_and_scatter_match_onnxruntime() -> None:
    cases = [(n("Einsum", ["X"], ["y"], equation="ij->i"), {}, (2, 4)),
             (n("Expand", ["X", "shape"], ["y"]), {"shape": np.array([2, 3], np.int64)},
              (2, 1)),
             (n("ScatterElements", ["X", "idx", "upd"], ["y"], axis=1),
              {"idx": np.array([[1, 3]], np.int64), "upd": np.array([[5, 6]], np.float32)},
              (1, 5))]
    for node, consts, shape in cases:
        proto = _model([node], consts, ["y"], shape=shape, opset=18)
        result = import_model(proto)
        X = RNG.normal(size=shape).astype(np.float32)
        got, _ = Model.from_equations(result.equations, result.weights).step({"X": X})
        want = ort_runner(proto)({"X": X})["y"]
        np.testing.assert_allclose(got[result.outputs["y"][0]].reshape(want.shape), want,
                                   rtol=1e-6, err_msg=node.op_type)


def test_scatter_with_max_is_refused_as_not_linear() -> None:
    node = n("ScatterElements", ["X", "idx", "upd"], ["y"], axis=1, reduction="max")
    consts = {"idx": np.array([[[[0]]]], np.int64), "upd": np.array([[[[5.0]]]], np.float32)}
    with pytest.raises(OnnxError, match="batch axis"):
        import_model(_model([node], consts, ["y"]))


def test_max_and_lp_pooling_match_onnxruntime() -> None:
    nodes = [n("MaxPool", ["X"], ["mp"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             n("LpPool", ["X"], ["lp"], kernel_shape=[2, 2], p=3)]
    proto = _model(nodes, {}, ["mp", "lp"], shape=(2, 2, 5, 5), opset=18)
    result = import_model(proto)
    X = RNG.normal(size=(2, 2, 5, 5)).astype(np.float32)
    got, _ = Model.from_equations(result.equations, result.weights).step({"X": X})
    for name, want in ort_runner(proto)({"X": X}).items():
        np.testing.assert_allclose(got[result.outputs[name][0]].reshape(want.shape), want,
                                   rtol=1e-5, atol=1e-6, err_msg=name)
