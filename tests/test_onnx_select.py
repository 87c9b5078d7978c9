"""ArgMax, ArgMin, Hardmax and ReduceProd from ONNX against onnxruntime, ties included."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import helper, numpy_helper  # noqa: E402
from onnx_helpers import ort_runner, ref_runner  # noqa: E402

from nndk.onnx.common import OnnxError  # noqa: E402
from nndk.onnx.importer import import_model  # noqa: E402
from nnre.model import Model  # noqa: E402

n = helper.make_node


def test_arg_extremes_hardmax_and_products_match_onnxruntime() -> None:
    nodes = [n("ArgMax", ["X"], ["am"], axis=2), n("ArgMin", ["X"], ["an"], axis=1, keepdims=0),
             n("ArgMax", ["X"], ["al"], axis=-1, select_last_index=1),
             n("Hardmax", ["X"], ["h"], axis=1), n("Hardmax", ["X"], ["h2"]),
             n("ReduceProd", ["X", "ax"], ["p"], keepdims=0)]
    outs = {"am": 7, "an": 7, "al": 7, "h": 1, "h2": 1, "p": 1}
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", 1, ["N", 3, 4])],
                              [helper.make_tensor_value_info(k, t, None) for k, t in outs.items()],
                              [numpy_helper.from_array(np.array([2], np.int64), "ax")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    result = import_model(proto)
    X = np.random.default_rng(2).integers(-2, 3, (5, 3, 4)).astype(np.float32)  # many ties
    X[0, 0] = 0.0
    got, _ = Model.from_equations(result.equations, result.weights).step({"X": X})
    for name, want in ort_runner(proto)({"X": X}).items():
        have = got[result.outputs[name][0]].reshape(want.shape)
        np.testing.assert_allclose(have, want.astype(np.float32), atol=1e-5, err_msg=name)


def test_running_products_match_the_reference() -> None:
    ints = [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in (("last", -1),
                                                                           ("first", 1))]
    nodes = [n("CumProd", ["X", "last"], ["cp"]),
             n("CumProd", ["X", "first"], ["cr"], exclusive=1, reverse=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", 11, ["N", 3, 4])],
                              [helper.make_tensor_value_info(k, 11, None)
                               for k in ("cp", "cr")], ints)
    opset = onnx.defs.onnx_opset_version()  # CumProd is newer than onnxruntime knows
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    result = import_model(proto)
    X = np.random.default_rng(3).normal(size=(4, 3, 4))
    X[0, 1, 2] = 0.0  # a zero: the products after it are 0
    got, _ = Model.from_equations(result.equations, result.weights, dtype="float64").step(
        {"X": X})
    for name, want in ref_runner(proto)({"X": X}).items():
        np.testing.assert_allclose(got[result.outputs[name][0]].reshape(want.shape), want,
                                   rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("shape", [(5,), (5, 3), (5, 2, 3)])
def test_per_example_losses_with_class_index_labels(shape: tuple[int, ...]) -> None:
    """Integer labels read only as class indices are inputs (fed as numbers); reduction
    'none' is a loss per example; a mean over the batch is refused."""
    nodes = [n("SoftmaxCrossEntropyLoss", ["X", "y", "w"], ["sce", "logp"], reduction="none",
               ignore_index=2),
             n("NegativeLogLikelihoodLoss", ["X", "y"], ["nll"], reduction="none")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("X", 1, ["N", *shape]),
                     helper.make_tensor_value_info("y", 7, ["N", *shape[1:]])],
        [helper.make_tensor_value_info(k, 1, None) for k in ("sce", "logp", "nll")],
        [numpy_helper.from_array(np.linspace(0.5, 1.5, 5).astype(np.float32), "w")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    result = import_model(proto)
    rng = np.random.default_rng(6)
    feeds = {"X": rng.normal(size=(4, *shape)).astype(np.float32),
             "y": rng.integers(0, 5, (4, *shape[1:])).astype(np.int64)}
    model = Model.from_equations(result.equations, result.weights)
    labels = feeds["y"].astype(np.float32).reshape(4, *model.inputs["y"].shape)
    got, _ = model.step({"X": feeds["X"], "y": labels})
    for name, want in ort_runner(proto)(feeds).items():
        np.testing.assert_allclose(got[result.outputs[name][0]].reshape(want.shape), want,
                                   rtol=1e-5, atol=1e-6, err_msg=name)
    proto.graph.node[1].attribute[0].s = b"mean"
    with pytest.raises(OnnxError, match="a mean or sum over the batch"):
        import_model(proto)
