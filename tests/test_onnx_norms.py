"""Normalizations, Split, CumSum and Dropout's mask from ONNX, against onnx's reference
evaluator; normalizations over the batch axis refused."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import helper, numpy_helper  # noqa: E402
from onnx_helpers import ref_runner  # noqa: E402

from nndk.onnx.common import OnnxError  # noqa: E402
from nndk.onnx.importer import import_model  # noqa: E402
from nnre.model import Model  # noqa: E402

RNG = np.random.default_rng(11)
n = helper.make_node


def _w(name: str, *shape: int, dtype: object = np.float32) -> object:
    return numpy_helper.from_array(RNG.uniform(0.5, 1.5, shape).astype(dtype), name)


def _check(nodes: list, inits: list, outputs: list[str], shape: tuple[int, ...] = (3, 4, 5),
           opset: int = 23) -> str:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", 1,
                                                                         ["N", *shape])],
                              [helper.make_tensor_value_info(k, 1, None) for k in outputs],
                              inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    result = import_model(proto)
    model = Model.from_equations(result.equations, result.weights)
    X = RNG.normal(size=(4, *shape)).astype(np.float32)
    got, _ = model.step({"X": X})
    want = ref_runner(proto)({"X": X})
    for name in outputs:
        have = got[result.outputs[name][0]]
        assert have.size == want[name].size, name
        np.testing.assert_allclose(have.reshape(want[name].shape), want[name], rtol=1e-4,
                                   atol=1e-5, err_msg=name)
    return result.equations


def test_layer_and_rms_normalization_over_trailing_axes() -> None:
    for axis in (1, 2, -1):
        text = _check([n("LayerNormalization", ["X", "W", "B"], ["Y", "M", "S"], axis=axis,
                         epsilon=0.1),
                       n("RMSNormalization", ["X", "W"], ["R"], axis=axis)],
                      [_w("W", *(3, 4, 5)[axis - 1 if axis > 0 else axis:]),
                       _w("B", *(3, 4, 5)[axis - 1 if axis > 0 else axis:])],
                      ["Y", "M", "S", "R"])
        assert "mean(" in text


def test_lp_batch_and_instance_normalization() -> None:
    nodes = [n("LpNormalization", ["X"], ["L2"], axis=-1, p=2),
             n("BatchNormalization", ["X", "s", "b", "m", "v"], ["BN"], epsilon=0.01),
             n("InstanceNormalization", ["X", "s", "b"], ["IN"])]
    _check(nodes, [_w("s", 3), _w("b", 3), _w("m", 3), _w("v", 3)], ["L2", "BN", "IN"],
           opset=17)


def test_l1_normalization_divides_by_the_sum_of_magnitudes() -> None:
    """As ONNX's own test computes it (its reference evaluator leaves out the |·|)."""
    graph = helper.make_graph([n("LpNormalization", ["X"], ["Y"], axis=1, p=1)], "g",
                              [helper.make_tensor_value_info("X", 1, ["N", 3, 4])],
                              [helper.make_tensor_value_info("Y", 1, None)])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    result = import_model(proto)
    X = RNG.normal(size=(2, 3, 4)).astype(np.float32)
    X[1, :, 2] = 0.0  # a zero norm gives 0, as the reference has it
    got, _ = Model.from_equations(result.equations, result.weights).step({"X": X})
    total = np.abs(X).sum(axis=1, keepdims=True)
    want = X / np.where(total == 0, 1.0, total)
    np.testing.assert_allclose(got[result.outputs["Y"][0]], want, rtol=1e-5)


def test_split_cumsum_and_dropout_mask() -> None:
    ints = [numpy_helper.from_array(np.array(v, np.int64), k)
            for k, v in (("sizes", [1, 3]), ("last", -1), ("first", 1))]
    nodes = [n("Split", ["X", "sizes"], ["a", "b"], axis=1),  # rows of each example
             n("Flatten", ["X"], ["v"]),
             n("Split", ["v"], ["c", "d", "e"], axis=1, num_outputs=3),  # 7, 7, 6 entries
             n("CumSum", ["X", "last"], ["cs"], exclusive=1),
             n("CumSum", ["X", "first"], ["cr"], reverse=1),
             n("Dropout", ["X"], ["dy", "mask"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", 1, ["N", 4, 5])],
                              [helper.make_tensor_value_info(k, 1, None)
                               for k in ("a", "b", "c", "d", "e", "cs", "cr", "dy")]
                              + [helper.make_tensor_value_info("mask", 9, None)], ints)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    result = import_model(proto)
    got, _ = Model.from_equations(result.equations, result.weights).step(
        {"X": (X := RNG.normal(size=(2, 4, 5)).astype(np.float32))})
    want = ref_runner(proto)({"X": X})
    for name, value in want.items():
        have = got[result.outputs[name][0]].reshape(value.shape)
        np.testing.assert_allclose(have, value.astype(np.float32), rtol=1e-5, atol=1e-6,
                                   err_msg=name)


@pytest.mark.parametrize("node", [
    n("LayerNormalization", ["X", "W"], ["Y"], axis=0),
    n("RMSNormalization", ["X", "W"], ["Y"], axis=-3),
    n("BatchNormalization", ["X", "W", "W", "W", "W"], ["Y", "m", "v"], training_mode=1),
])
def test_statistics_over_the_batch_are_refused(node: object) -> None:
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", 1, ["N", 4, 5])],
                              [helper.make_tensor_value_info("Y", 1, None)], [_w("W", 4, 5)])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    with pytest.raises(OnnxError, match="batch"):
        import_model(proto)


def test_local_response_normalization_matches_the_reference() -> None:
    _check([n("LRN", ["X"], ["Y"], size=3, alpha=0.01, beta=0.75, bias=2.0)], [], ["Y"],
           shape=(4, 2, 3), opset=17)
