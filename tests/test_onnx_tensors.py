"""ONNX graphs whose per-example values are matrices and tensors, against onnxruntime; and
the ops over the batch axis, refused (never imported as something else)."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import helper  # noqa: E402
from onnx_helpers import const, float_model, ort_runner  # noqa: E402

from nndk.onnx.common import OnnxError  # noqa: E402
from nndk.onnx.importer import import_model  # noqa: E402
from nnre.model import Model  # noqa: E402

RNG = np.random.default_rng(5)
n = helper.make_node


def _check(proto: object, feeds: dict[str, np.ndarray]) -> str:
    result = import_model(proto)
    model = Model.from_equations(result.equations, result.weights)
    got, _ = model.step(feeds)
    want = ort_runner(proto)(feeds)
    for name, value in want.items():
        have = got[result.outputs[name][0]]
        assert have.size == value.size, name
        np.testing.assert_allclose(have.reshape(value.shape), value, rtol=1e-5, atol=1e-5,
                                   err_msg=name)
    return result.equations


def test_a_tensor_graph_matches_onnxruntime() -> None:
    """Products (by weights and batched between examples' own matrices), broadcasting
    constants, reductions along axes (kept and dropped), softmax along an inner axis, the
    last two axes swapped, slices, stacking, squeezes and reshapes."""
    nodes = [
        n("Add", ["X", "bias"], ["xb"]), n("MatMul", ["xb", "W"], ["xw"]),  # (3,4)·(4,5)
        n("Transpose", ["X"], ["xt"], perm=[0, 2, 1]),
        n("MatMul", ["xt", "X"], ["gram"]),  # per example Xᵀ X: (4, 4)
        n("Softmax", ["gram"], ["att"], axis=1),
        n("ReduceSum", ["xw", "ax1"], ["rs"], keepdims=0),  # (5,)
        n("ReduceMean", ["xw", "ax12"], ["rm"], keepdims=1),  # (1, 1)
        n("ReduceMax", ["X", "axm1"], ["rx"], keepdims=0),  # (3,)
        n("ReduceLogSumExp", ["X", "ax1"], ["lse"], keepdims=1),  # (1, 4)
        n("Slice", ["X", "s0", "s2", "ax1"], ["top"]),  # rows 0…1
        n("Concat", ["top", "X"], ["cat"], axis=1),  # (5, 4)
        n("Unsqueeze", ["X", "ax1"], ["u"]), n("Squeeze", ["u", "ax1"], ["back"]),
        n("Reshape", ["X", "flat"], ["r"]), n("Tanh", ["r"], ["rt"]),
        n("Mul", ["att", "scale"], ["as"]),
        n("MatMul", ["X", "v"], ["xv"]),  # by a vector: (3,)
    ]
    inits = [const("bias", RNG.normal(size=4)), const("W", RNG.normal(size=(4, 5))),
             const("scale", RNG.normal(size=(4, 1))), const("v", RNG.normal(size=4)),
             const("ax1", [1], np.int64), const("s0", [0], np.int64),
             const("ax12", [1, 2], np.int64), const("axm1", [-1], np.int64),
             const("s2", [2], np.int64), const("flat", [0, -1], np.int64)]
    proto = float_model(nodes, inits, {"X": ["N", 3, 4]},
                   ["xw", "att", "rs", "rm", "rx", "lse", "cat", "back", "rt", "as", "xv"])
    text = _check(proto, {"X": RNG.normal(size=(6, 3, 4)).astype(np.float32)})
    assert "X ∈ ℝ^(3×4)" in text and "softmax(gram; axis=0)" in text
    assert "sum(xw; axis=0)" in text and "gram = xt X" in text and "xt = Xᵀ" in text
    assert "rx = max(X; axis=1)" in text and "b₁" in text and "r = flatten(X)" in text


def test_softmax_and_reductions_of_vectors_and_old_opsets() -> None:
    nodes = [n("Softmax", ["X"], ["y"], axis=1), n("ReduceSum", ["X"], ["s"], axes=[1, 2]),
             n("LogSoftmax", ["X"], ["z"], axis=2)]
    proto = float_model(nodes, [], {"X": ["N", 3, 4]}, ["y", "s", "z"], opset=11)
    text = _check(proto, {"X": RNG.normal(size=(5, 3, 4)).astype(np.float32)})
    assert "softmax(flatten(X))" in text  # opset 11: axes 1… as one vector


@pytest.mark.parametrize("node,message", [
    (n("Softmax", ["X"], ["y"], axis=0), "Softmax over the batch axis"),
    (n("ReduceMax", ["X"], ["y"], axes=[0, 1]), "ReduceMax over the batch axis"),
    (n("ReduceMean", ["X"], ["y"]), "ReduceMean over every axis, the batch's too"),
    (n("Transpose", ["X"], ["y"], perm=[1, 0, 2]), "Transpose that moves the batch axis"),
    (n("Transpose", ["X"], ["y"]), "Transpose that moves the batch axis"),
    (n("Flatten", ["X"], ["y"], axis=2), "Flatten that merges the batch axis"),
    (n("MatMul", ["X", "X"], ["y"]), "MatMul of per-example shapes"),
])
def test_ops_over_the_batch_axis_are_refused(node: object, message: str) -> None:
    proto = float_model([node], [], {"X": ["N", 3, 4]}, ["y"], opset=13)
    with pytest.raises(OnnxError, match=message):
        import_model(proto)


def test_a_vector_times_a_per_example_matrix_is_refused() -> None:
    """x (N, 4) @ Y (N, 4, 5): ONNX pairs x's rows with every example's Y."""
    proto = float_model([n("MatMul", ["x", "Y"], ["y"])], [], {"x": ["N", 4], "Y": ["N", 4, 5]},
                   ["y"])
    with pytest.raises(OnnxError, match="MatMul of a reshaped or vector value"):
        import_model(proto)


def test_slices_with_steps_and_side_by_side_concat_match_onnxruntime() -> None:
    ints = {k: np.array(v, np.int64) for k, v in (("s", [0, 1, 4]), ("e", [9, 3, 0]),
                                                  ("ax", [0, 1, 2]), ("st", [1, 1, -2]))}
    # the batch whole, rows 1…2, columns 4 and 2 (step −2); then side by side, two ways
    nodes = [n("Slice", ["X", "s", "e", "ax", "st"], ["sl"]),
             n("Concat", ["X", "X"], ["cat"], axis=2), n("Concat", ["X", "X"], ["mid"], axis=1)]
    proto = float_model(nodes, [const(k, v, np.int64) for k, v in ints.items()],
                   {"X": [4, 3, 5]}, ["sl", "cat", "mid"])
    _check(proto, {"X": RNG.normal(size=(4, 3, 5)).astype(np.float32)})


def test_a_reshape_to_a_matrix_is_declared_and_read_as_one() -> None:
    """Reshape [N, 12] → [N, 3, 4] is ``r₁ ∈ ℝ^(3×4)``, ``r₁ = reshape(x)``: a product, a
    transpose and a softmax along an axis can follow it."""
    nodes = [n("Reshape", ["x", "shape"], ["r"]), n("MatMul", ["r", "W"], ["m"]),
             n("Transpose", ["m"], ["t"], perm=[0, 2, 1]), n("Softmax", ["t"], ["y"], axis=1),
             n("Flatten", ["t"], ["f"])]
    inits = [const("shape", [0, 3, 4], np.int64), const("W", RNG.normal(size=(4, 2)))]
    proto = float_model(nodes, inits, {"x": ["N", 12]}, ["y", "f"])
    text = _check(proto, {"x": RNG.normal(size=(5, 12)).astype(np.float32)})
    assert "∈ ℝ^(3×4)" in text and "= reshape(x)" in text


def test_transposes_of_per_example_axes_keep_the_batch_first() -> None:
    """(0, 2, 3, 1) with sizes 2, 3, 4: permute, each axis found by its size; (0, 2, 1, 3)
    with two axes of size 3: Z as a (3, 6) matrix times a (3, 6, 2) weight of 0s and 1s that
    picks each new leading index's columns (nndk.onnx.rearrange), not a 18×18 matrix."""
    nodes = [n("Transpose", ["X"], ["p"], perm=[0, 2, 3, 1]),
             n("Transpose", ["Z"], ["q"], perm=[0, 2, 1, 3])]
    proto = float_model(nodes, [], {"X": ["N", 2, 3, 4], "Z": ["N", 3, 3, 2]}, ["p", "q"])
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2  # a fixed batch
    proto.graph.input[1].type.tensor_type.shape.dim[0].dim_value = 2
    text = _check(proto, {"X": RNG.normal(size=(2, 2, 3, 4)).astype(np.float32),
                          "Z": RNG.normal(size=(2, 3, 3, 2)).astype(np.float32)})
    assert "= permute(X)" in text and "= reshape(Z)" in text and "q = r₁ E₁" in text
