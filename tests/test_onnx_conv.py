"""Convolution and pooling through ONNX: each op's export rule against onnxruntime."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from test_conv import CONV_CASES, POOL_CASES, conv_case, pool_case, run_kernel  # noqa: E402

from nndk.onnx.export import Emitter  # noqa: E402
from nnre.ops import OPS, Op  # noqa: E402
from nnre.program import Instr, Program, Slot, check_program  # noqa: E402


# -- export: the exported node against onnxruntime -----------------------------------------
def _export_one(op: Op, args: list[np.ndarray], attrs: dict[str, Any]) -> Any:
    """A graph of one instruction, through the exporter's own Emitter and ``Op.onnx``."""
    x = 0 if op.arity == 1 else 1
    names = ["x"] if op.arity == 1 else ["W", "x", "b"][:len(args)]
    prog = Program("float32")
    for k, (name, a) in enumerate(zip(names, args, strict=True)):
        per_example = k == x
        prog.slots.append(Slot(name, "input" if per_example else "param",
                               a.shape[1:] if per_example else a.shape,
                               "pre" if per_example else "prologue"))
        (prog.inputs if per_example else prog.params)[name] = k
    out_shape = op.shape(*[s.shape for s in prog.slots], **attrs)
    prog.slots.append(Slot("y", "temp", out_shape, "pre"))
    prog.pre.append(Instr(op.name, len(args), tuple(range(len(args))), tuple(attrs.items())))
    prog.outputs = {"y": len(args)}
    check_program(prog)  # the attributes are of the types the op declares
    e = Emitter(prog, opset=17)
    for k, a in enumerate(args):
        if k != x:
            e.inits.append(onnx.numpy_helper.from_array(a.astype(np.float32), e.name(k)))
    e.emit(prog.pre[0])
    info = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph(
        e.nodes, op.name, [info(e.name(x), onnx.TensorProto.FLOAT, ["N", *args[x].shape[1:]])],
        [info(e.name(len(args)), onnx.TensorProto.FLOAT, ["N", *out_shape])], e.inits)
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _onnxruntime(proto: Any, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {sess.get_inputs()[0].name: x})[0])


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_conv_exports_and_matches_onnxruntime(case: str) -> None:
    op, args, attrs = conv_case(case, seed=4)
    args = [a.astype(np.float32) for a in args]
    got = _onnxruntime(_export_one(op, args, attrs), args[1])
    np.testing.assert_allclose(got, run_kernel(op, args, attrs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("case", sorted(POOL_CASES))
def test_pool_exports_and_matches_onnxruntime(case: str, kind: str) -> None:
    op = OPS[kind + "pool"]
    x, attrs = pool_case(case, seed=4)
    x = x.astype(np.float32)
    got = _onnxruntime(_export_one(op, [x], attrs), x)
    np.testing.assert_allclose(got, run_kernel(op, [x], attrs), rtol=1e-6, atol=1e-6)
