"""ONNX graphs that move entries across the batch axis and back (nndk.onnx.rearrange), and
Gemm's transA over an input laid out [K, N], against onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import helper, numpy_helper  # noqa: E402
from onnx_helpers import const, float_model, ort_runner  # noqa: E402

from nndk.onnx.common import OnnxError  # noqa: E402
from nndk.onnx.conformance import _run  # noqa: E402
from nndk.onnx.importer import import_model  # noqa: E402
from nnre.model import Model  # noqa: E402

RNG = np.random.default_rng(11)
n = helper.make_node


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
    proto = float_model(nodes, [const("b", b), const("c", RNG.normal(size=(1, 4)))],
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
    proto = float_model(nodes, [const("b", RNG.normal(size=(3, 4)))], {"x": [3, 5]}, ["y", "r"])
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
        inits = [const("M", CAUSAL)]
    else:
        nodes = [n("MatMul", ["X", "W"], ["s"]), n("Where", ["keep", "ninf", "s"], ["a"]),
                 n("Softmax", ["a"], ["y"], axis=-1)]
        inits = [const("keep", np.isinf(CAUSAL), np.bool_), const("ninf", -np.inf)]
    inits.append(const("W", RNG.normal(size=(3, 4))))
    proto = float_model(nodes, inits, {"X": [2, 4, 3]}, ["y"])
    result = _agree(proto, {"X": RNG.normal(size=(2, 4, 3)).astype(np.float32)})
    assert all(np.isfinite(w).all() for w in result.weights.values())


def test_minus_infinity_read_by_more_than_a_softmax_is_kept() -> None:
    """Masked scores that are an output too keep their −∞ (which packing then refuses: a
    bundle holds finite weights); a row masked whole is refused."""
    nodes = [n("Add", ["X", "M"], ["a"]), n("Softmax", ["a"], ["y"], axis=-1)]
    proto = float_model(nodes, [const("M", CAUSAL)], {"X": [2, 4, 4]}, ["y", "a"])
    assert any(np.isneginf(w).any() for w in import_model(proto).weights.values())
    whole = CAUSAL.copy()
    whole[0] = -np.inf  # a row with every entry masked: NaN in ONNX
    proto = float_model(nodes, [const("M", whole)], {"X": [2, 4, 4]}, ["y"])
    with pytest.raises(OnnxError, match="masks a whole row of a softmax's input with −∞"):
        import_model(proto)


def _ints(name: str, value: list[int]) -> object:
    return const(name, value, np.int64)


SWAP = n("Transpose", ["X"], ["t"], perm=[1, 0, 2])  # [N, T, E] → [T, N, E]
BACK = n("Transpose", ["z"], ["y"], perm=[1, 0, 2])


@pytest.mark.parametrize("batch", [3, "N"])
def test_ops_with_the_batch_on_axis_one_or_merged_match_onnxruntime(batch: object) -> None:
    """[T, N, E] through a product, a bias, relu, a softmax and a layer norm along the last
    axis; then [T·N, E] (the batch merged as the inner factor) through Gemm, and back:
    each op written per example on each example's (T, E) entries."""
    nodes = [SWAP, n("MatMul", ["t", "W"], ["m"]), n("Add", ["m", "b"], ["a"]),
             n("Relu", ["a"], ["r"]), n("Softmax", ["r"], ["s"], axis=-1),
             n("LayerNormalization", ["s", "g", "b"], ["ln"], axis=-1),
             n("Reshape", ["ln", "flat"], ["f"]), n("Gemm", ["f", "G", "c"], ["gm"], transB=1),
             n("Reshape", ["gm", "back"], ["z"]), BACK]
    inits = [const("W", RNG.normal(size=(5, 4))), const("b", RNG.normal(size=4)),
             const("g", RNG.normal(size=4)), const("G", RNG.normal(size=(2, 4))),
             const("c", RNG.normal(size=2)), _ints("flat", [-1, 4]),
             _ints("back", [4, -1, 2])]
    proto = float_model(nodes, inits, {"X": [batch, 4, 5]}, ["y"])
    _agree(proto, {"X": RNG.normal(size=(3, 4, 5)).astype(np.float32)})


@pytest.mark.parametrize("node, inits, message", [
    (n("Softmax", ["t"], ["z"], axis=1), [], "along the axis that holds the batch"),
    (n("LayerNormalization", ["t", "g"], ["z"], axis=0), [const("g", np.ones((3, 5)))],
     "along the axis that holds the batch"),
    (n("MatMul", ["t", "W3"], ["z"]), [const("W3", np.ones((4, 5, 2)))],
     "not a product by a constant matrix on the right"),
    (n("Add", ["t", "k"], ["z"]), [const("k", np.arange(3.0).reshape(1, 3, 1))],
     "a constant that varies along the batch's axis"),
    (n("Reshape", ["t", "lit"], ["z"]), [_ints("lit", [12, 5])], "name examples"),
    (n("Gather", ["t", "ix"], ["z"], axis=1), [_ints("ix", [0, 1])], "name examples"),
    (n("ReduceSum", ["t"], ["z"], keepdims=1), [],
     "ReduceSum of a per-example value whose batch axis"),
])
def test_ops_that_would_mix_moved_examples_are_refused(node: object, inits: list,
                                                       message: str) -> None:
    """With the batch size unknown, picking examples 0 and 1 is all of a probe of 2 but
    not of 3: refused, as is a reshape to a size that holds a batch of 3 only."""
    proto = float_model([SWAP, node, BACK], inits, {"X": ["N", 4, 5]}, ["y"])
    with pytest.raises(OnnxError, match=message):
        import_model(proto)


def test_an_output_left_with_the_batch_moved_is_refused() -> None:
    proto = float_model([SWAP], [], {"X": [3, 4, 5]}, ["t"])
    with pytest.raises(OnnxError, match="Transpose that moves the batch axis .* and no later "
                                        "node puts each example's entries back together"):
        import_model(proto)


@pytest.mark.parametrize("seed", range(24))
def test_random_rearrangements_are_written_exactly_or_refused(seed: int) -> None:
    """Random transposes over every axis (the batch's too), a reshape merging two axes,
    and a transpose that brings the batch back first, then a product that reads the result:
    imported, the model equals onnxruntime (its entries are moved by 0/1 weights), or the
    import is refused for want of a form."""
    rng, batch = np.random.default_rng(seed), 5  # no other axis has 5 entries
    sizes = [int(s) for s in rng.choice([2, 3, 4], size=3)]
    first = [int(p) for p in rng.permutation(4)]
    shape = [[batch, *sizes][p] for p in first]
    cut = int(rng.integers(1, 4))  # merge axes cut − 1 and cut, unless the batch is one
    merged = shape if 0 in (first[cut - 1], first[cut]) else \
        shape[:cut - 1] + [shape[cut - 1] * shape[cut]] + shape[cut + 1:]
    at = merged.index(batch)
    back = [at, *[int(p) for p in rng.permutation([i for i in range(len(merged)) if i != at])]]
    nodes = [n("Transpose", ["X"], ["a"], perm=first),
             n("Reshape", ["a", "s"], ["b"]), n("Transpose", ["b"], ["c"], perm=back),
             n("Reshape", ["c", "flat"], ["f"]), n("MatMul", ["f", "W"], ["m"]),
             n("Reshape", ["m", "out"], ["y"])]
    total = int(np.prod(sizes))
    cols = [int(np.prod(sizes[:k])) for k in (1, 2)][seed % 2]  # read as rows × cols
    inits = [_ints("s", merged), _ints("flat", [batch, total // cols, cols]),
             const("W", rng.normal(size=(cols, 3))), _ints("out", [batch, -1])]
    proto = float_model(nodes, inits, {"X": [batch, *sizes]}, ["y"])
    try:
        result = import_model(proto)
    except OnnxError as err:
        assert "no form for" in str(err), err
        return
    feeds = {"X": rng.normal(size=(batch, *sizes)).astype(np.float32)}
    got = _run(result, feeds)["y"]
    want = ort_runner(proto)(feeds)["y"]
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-5, atol=1e-5)
