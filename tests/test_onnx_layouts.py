"""ONNX graphs that move entries across the batch axis and back (nndk.onnx.rearrange), and
Gemm's transA over an input laid out [K, N], against onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import helper, numpy_helper  # noqa: E402
from onnx_helpers import ort_runner  # noqa: E402

from nndk.onnx.common import OnnxError  # noqa: E402
from nndk.onnx.conformance import _run  # noqa: E402
from nndk.onnx.importer import import_model  # noqa: E402
from nnre.model import Model  # noqa: E402

RNG = np.random.default_rng(11)
n = helper.make_node


def _const(name: str, value: object, dtype: object = np.float32) -> object:
    return numpy_helper.from_array(np.asarray(value, dtype), name)


def _model(nodes: list, inits: list, inputs: dict, outputs: list[str], opset: int = 18
           ) -> object:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(k, 1, v) for k, v in inputs.items()],
        [helper.make_tensor_value_info(k, 1, None) for k in outputs], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _agree(proto: object, feeds: dict[str, np.ndarray]) -> object:
    """nnre's import (fed as the ImportResult says) matches onnxruntime; the result."""
    result = import_model(proto)
    got = _run(result, feeds)
    for name, want in ort_runner(proto)(feeds).items():
        np.testing.assert_allclose(got[name].reshape(want.shape), want, rtol=1e-5, atol=1e-5,
                                   err_msg=name)
    return result


@pytest.mark.parametrize("batch", [3, "N"])
@pytest.mark.parametrize("trans_b, alpha, beta", [(0, 1.0, 1.0), (1, 0.25, 0.35)])
def test_gemm_trans_a_reads_an_input_laid_out_one_example_per_column(
        batch: object, trans_b: int, alpha: float, beta: float) -> None:
    """A [K, N] with transA: row n of Aᵀ B + C is example n's; the model takes A's
    transpose [N, K], and says so (``onnx.batch_first``, a comment in the equations)."""
    b = RNG.normal(size=(4, 5) if trans_b else (5, 4)).astype(np.float32)
    nodes = [n("Gemm", ["a", "b", "c"], ["y"], transA=1, transB=trans_b, alpha=alpha,
               beta=beta)]
    proto = _model(nodes, [_const("b", b), _const("c", RNG.normal(size=(1, 4)))],
                   {"a": [5, batch]}, ["y"])
    a = RNG.normal(size=(5, 3)).astype(np.float32)
    result = _agree(proto, {"a": a})
    assert result.batch_first == ("a",)
    assert "the ONNX graph's a [K, N] (an example per column) are [N, K] here" in \
        result.equations
    model = Model.from_equations(result.equations, result.weights)
    got, _ = model.step({"a": a.T})  # the model's own feed: an example per row
    want = alpha * a.T @ (b.T if trans_b else b) + beta * numpy_helper.to_array(
        proto.graph.initializer[1])
    np.testing.assert_allclose(got[result.outputs["y"][0]], want, rtol=1e-5, atol=1e-5)


def test_gemm_trans_a_of_examples_as_rows_is_refused() -> None:
    """x [N, K] read by a Relu too keeps its examples as rows: Aᵀ would sum over them."""
    nodes = [n("Relu", ["x"], ["r"]), n("Gemm", ["x", "b"], ["y"], transA=1)]
    proto = _model(nodes, [_const("b", RNG.normal(size=(3, 4)))], {"x": [3, 5]}, ["y", "r"])
    with pytest.raises(OnnxError, match=r"Gemm with transA of a value laid out \[N, K\], an "
                                        r"example per row \(Aᵀ B would add up the examples\)"):
        import_model(proto)


CAUSAL = np.triu(np.full((4, 4), -np.inf, np.float32), 1)


@pytest.mark.parametrize("how", ["Add", "Where"])
def test_a_causal_mask_of_minus_infinity_before_a_softmax(how: str) -> None:
    """scores + M and Where(mask, −∞, scores) feeding a softmax: −∞ becomes the dtype's most
    negative number (a bundle holds finite weights), which gives the same probabilities."""
    if how == "Add":
        nodes = [n("MatMul", ["X", "W"], ["s"]), n("Add", ["s", "M"], ["a"]),
                 n("Softmax", ["a"], ["y"], axis=-1)]
        inits = [_const("M", CAUSAL)]
    else:
        nodes = [n("MatMul", ["X", "W"], ["s"]), n("Where", ["keep", "ninf", "s"], ["a"]),
                 n("Softmax", ["a"], ["y"], axis=-1)]
        inits = [_const("keep", np.isinf(CAUSAL), np.bool_), _const("ninf", -np.inf)]
    inits.append(_const("W", RNG.normal(size=(3, 4))))
    proto = _model(nodes, inits, {"X": [2, 4, 3]}, ["y"])
    result = _agree(proto, {"X": RNG.normal(size=(2, 4, 3)).astype(np.float32)})
    assert all(np.isfinite(w).all() for w in result.weights.values())


def test_minus_infinity_read_by_more_than_a_softmax_is_kept() -> None:
    """Masked scores that are an output too keep their −∞ (which packing then refuses: a
    bundle holds finite weights); a row masked whole is refused."""
    nodes = [n("Add", ["X", "M"], ["a"]), n("Softmax", ["a"], ["y"], axis=-1)]
    proto = _model(nodes, [_const("M", CAUSAL)], {"X": [2, 4, 4]}, ["y", "a"])
    assert any(np.isneginf(w).any() for w in import_model(proto).weights.values())
    whole = CAUSAL.copy()
    whole[0] = -np.inf  # a row with every entry masked: NaN in ONNX
    proto = _model(nodes, [_const("M", whole)], {"X": [2, 4, 4]}, ["y"])
    with pytest.raises(OnnxError, match="masks a whole row of a softmax's input with −∞"):
        import_model(proto)
