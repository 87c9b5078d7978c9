"""ONNX Attention imported as equations, against onnx's reference evaluator: heads stacked
(4-D) or side by side (3-D), grouped heads, a past, masks, causal and window terms, softcap,
every qk_matmul_output mode, a fully masked row; per-example key lengths refused."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import helper, numpy_helper  # noqa: E402
from onnx_helpers import ref_runner  # noqa: E402

from nndk.onnx.common import OnnxError  # noqa: E402
from nndk.onnx.importer import import_model  # noqa: E402
from nnre.model import Model  # noqa: E402

RNG = np.random.default_rng(23)


def _run(inputs: dict[str, tuple[int, ...]], consts: dict[str, np.ndarray], outputs: list[str],
         **attrs: object) -> str:
    names = ["Q", "K", "V", "mask", "past_key", "past_value"]
    node = helper.make_node("Attention", [n if n in inputs or n in consts else ""
                                          for n in names], outputs, **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info(k, 1, ["N", *s]) for k, s in inputs.items()],
        [helper.make_tensor_value_info(k, 1, None) for k in outputs],
        [numpy_helper.from_array(v, k) for k, v in consts.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    result = import_model(proto)
    feeds = {k: RNG.normal(size=(2, *s)).astype(np.float32) for k, s in inputs.items()}
    got, _ = Model.from_equations(result.equations, result.weights).step(feeds)
    want = ref_runner(proto)(feeds)
    for name in outputs:
        have = got[result.outputs[name][0]]
        np.testing.assert_allclose(have.reshape(want[name].shape), want[name], rtol=1e-4,
                                   atol=1e-5, err_msg=name)
    return result.equations


def test_grouped_heads_with_a_past_a_mask_and_causal_terms() -> None:
    mask = RNG.normal(size=(4, 9)).astype(np.float32)
    text = _run({"Q": (6, 4, 8), "K": (2, 5, 8), "V": (2, 5, 3), "past_key": (2, 4, 8),
                 "past_value": (2, 4, 3)}, {"mask": mask},
                ["Y", "present_key", "present_value", "qk"], is_causal=1,
                qk_matmul_output_mode=3)
    assert "softmax(" in text and "[0]; " in text  # grouped heads: each key head repeated


def test_heads_side_by_side_with_softcap_and_a_window() -> None:
    for mode in (0, 1, 2):
        _run({"Q": (4, 12), "K": (6, 12), "V": (6, 6)}, {}, ["Y", "qk"], q_num_heads=3,
             kv_num_heads=3, softcap=2.0, qk_matmul_output_mode=mode, scale=0.3)
    _run({"Q": (4, 12), "K": (6, 12), "V": (6, 6)}, {}, ["Y"], q_num_heads=3,
         kv_num_heads=3, is_causal=1, left_window_size=1)


def test_a_fully_masked_row_gives_zeros_and_a_bool_mask_is_a_bias() -> None:
    mask = np.array([[True, False, True], [False, False, False]])
    _run({"Q": (2, 2, 4), "K": (2, 3, 4), "V": (2, 3, 4)}, {"mask": mask}, ["Y", "qk"],
         qk_matmul_output_mode=3)


def test_key_lengths_per_example_are_refused() -> None:
    node = helper.make_node("Attention", ["Q", "K", "V", "", "", "", "n"], ["Y"])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info(k, 1, ["N", 2, 3, 4]) for k in "QKV"],
        [helper.make_tensor_value_info("Y", 1, None)],
        [numpy_helper.from_array(np.array([3, 2], np.int64), "n")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 24)])
    with pytest.raises(OnnxError, match="nonpad_kv_seqlen"):
        import_model(proto)


def test_a_boolean_mask_per_example_is_refused() -> None:
    """It could mask a whole row, which ONNX sets to 0: the equations cannot tell."""
    node = helper.make_node("Attention", ["Q", "K", "V", "m"], ["Y"])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info(k, 1, ["N", 2, 3, 4]) for k in "QKV"]
        + [helper.make_tensor_value_info("m", 9, ["N", 1, 3, 3])],
        [helper.make_tensor_value_info("Y", 1, None)])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    with pytest.raises(OnnxError, match="not of floats"):
        import_model(proto)
