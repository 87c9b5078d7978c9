"""Convolution and pooling through ONNX: each op's export rule and import converter.

Oracles: onnxruntime running the exported node against nnre's kernel; onnxruntime running
an ONNX graph against nnre's kernel fed the parameters and weights the importer wrote; and
the importer's refusals of what one number per parameter cannot say (asymmetric pads).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto  # noqa: E402
from onnx import helper as oh  # noqa: E402
from test_conv import CONV_CASES, POOL_CASES, conv_case, pool_case, run_kernel  # noqa: E402

from nndk.onnx import expr as ex  # noqa: E402
from nndk.onnx.export import Emitter  # noqa: E402
from nndk.onnx.graph import start  # noqa: E402
from nndk.onnx.importer import import_model  # noqa: E402
from nndk.onnx.values import Dyn  # noqa: E402
from nnre.ops import BY_ARITY, OPS, Op  # noqa: E402
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


# -- import: ONNX nodes → conv(W, x; …), maxpool(x; …), avgpool(x; …) --------------------
def _graph(node: Any, x_shape: tuple[int, ...], weights: dict[str, np.ndarray]) -> Any:
    """One node over an input x [N, *x_shape] with constant inputs, output y."""
    graph = oh.make_graph(
        [node], "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *x_shape])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(v, k) for k, v in weights.items()])
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


def _evaluate(e: ex.Expr, values: dict[str, np.ndarray]) -> np.ndarray:
    """The imported expression run by nnre's kernels: parameters through ``Op.param_attrs``."""
    if isinstance(e, ex.Name):
        return values[e.text]
    assert isinstance(e, ex.Call), e
    args = [_evaluate(a, values) for a in (e.arg, *e.more)]
    op = OPS[BY_ARITY[(e.func, len(args))]]
    x = args[0 if op.arity == 1 else 1]
    assert op.param_attrs is not None
    attrs = op.param_attrs(x.ndim - 2, **dict(e.params))
    return run_kernel(op, args, attrs)


IMPORTS: dict[str, tuple[Any, tuple[int, ...], dict[str, np.ndarray], str]] = {
    "conv2d-bias-stride2": (
        oh.make_node("Conv", ["x", "W", "conv.bias"], ["y"], strides=[2, 2], pads=[1] * 4),
        (3, 7, 6), {"W": (4, 3, 3, 3), "conv.bias": (4,)},
        "conv(W, x, b₁; stride=2, pad=1, dilation=1, groups=1)"),
    "conv1d-groups-dilation": (
        oh.make_node("Conv", ["x", "conv.weight"], ["y"], group=2, dilations=[2], pads=[2, 2],
                     kernel_shape=[3]),
        (4, 9), {"conv.weight": (6, 2, 3)},
        "conv(W₁, x; stride=1, pad=2, dilation=2, groups=2)"),
    "conv1d-same": (  # onnxruntime refuses SAME with dilation, so no dilation here
        oh.make_node("Conv", ["x", "W"], ["y"], auto_pad="SAME_LOWER"),
        (2, 8), {"W": (3, 2, 5)}, "conv(W, x; stride=1, pad=2, dilation=1, groups=1)"),
    "conv2d-depthwise-valid": (
        oh.make_node("Conv", ["x", "W"], ["y"], group=3, auto_pad="VALID"),
        (3, 5, 5), {"W": (3, 1, 2, 2)}, "conv(W, x; stride=1, pad=0, dilation=1, groups=3)"),
    "maxpool2d": (
        oh.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4),
        (2, 7, 7), {}, "maxpool(x; size=3, stride=2, pad=1)"),
    "maxpool1d-default-stride": (  # ONNX's default stride is 1, the language's the size
        oh.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2]), (2, 5), {},
        "maxpool(x; size=2, stride=1, pad=0)"),
    "avgpool1d-pad": (
        oh.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3], strides=[1], pads=[1, 1]),
        (3, 6), {}, "avgpool(x; size=3, stride=1, pad=1)"),
}


@pytest.mark.parametrize("case", sorted(IMPORTS))
def test_imported_node_computes_what_onnxruntime_does(case: str) -> None:
    node, x_shape, shapes, text = IMPORTS[case]
    rng = np.random.default_rng(6)
    weights = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    proto = _graph(node, x_shape, weights)
    imp = start(proto)
    imp.run()
    assert not imp.problems, imp.problems
    y = imp.values["y"]
    assert isinstance(y, Dyn)
    expr = dict((t.text, e) for t, e in imp.equations).get("y", y.expr)  # named: y = …
    assert ex.show(expr) == text
    x = rng.normal(size=(2, *x_shape)).astype(np.float32)
    got = _evaluate(expr, {"x": x, **imp.weights})
    assert got.shape[1:] == y.shape
    np.testing.assert_allclose(got, _onnxruntime(proto, x), rtol=1e-5, atol=1e-5)
    assert f"y = {text}" in import_model(proto).equations


REFUSED = [
    (oh.make_node("Conv", ["x", "W"], ["y"], pads=[0, 1, 1, 0]), {"W": (2, 2, 3, 3)},
     r"Conv with pad=\[0, 1, 1, 0\]: equations write one pad for every axis and side"),
    (oh.make_node("Conv", ["x", "W"], ["y"], strides=[1, 2]), {"W": (2, 2, 3, 3)},
     r"Conv with stride=\[1, 2\]"),
    (oh.make_node("Conv", ["x", "W"], ["y"], auto_pad="SAME_UPPER", kernel_shape=[2, 2]),
     {"W": (2, 2, 2, 2)}, r"Conv with pad=\[0, 0, 1, 1\]"),
    (oh.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], pads=[1, 1, 1, 1],
                  count_include_pad=1), {}, "AveragePool with count_include_pad=1 and padding"),
    (oh.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], ceil_mode=1), {},
     "MaxPool with ceil_mode"),
    (oh.make_node("Conv", ["x", "W"], ["y"]), {"W": (2, 3, 3, 3)},
     "Conv: conv with groups=1: x has 2 channels"),
]


@pytest.mark.parametrize("node, shapes, message", REFUSED,
                         ids=[m.split(" with ")[-1][:30] for _, _, m in REFUSED])
def test_import_refuses_what_one_number_per_parameter_cannot_say(
        node: Any, shapes: dict[str, tuple[int, ...]], message: str) -> None:
    weights = {k: np.ones(s, np.float32) for k, s in shapes.items()}
    with pytest.raises(Exception, match=message):
        import_model(_graph(node, (2, 5, 5), weights))


def _lenet(rng: np.random.Generator) -> Any:
    """Conv → Add (a per-channel bias (1, C, 1, 1)) → Relu → MaxPool → Conv with B → Relu →
    AveragePool → Flatten → Gemm → Softmax: a small CNN as an exporter writes one."""
    def init(name: str, *shape: int) -> Any:
        value = (rng.normal(size=shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)
        return onnx.numpy_helper.from_array(value, name)
    n = oh.make_node
    nodes = [n("Conv", ["x", "conv1.weight"], ["c1"], pads=[1] * 4),
             n("Add", ["c1", "conv1.shift"], ["a1"]), n("Relu", ["a1"], ["r1"]),
             n("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
             n("Conv", ["p1", "conv2.weight", "conv2.bias"], ["c2"], pads=[1] * 4, group=2),
             n("Relu", ["c2"], ["r2"]),
             n("AveragePool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
             n("Flatten", ["p2"], ["f"]), n("Gemm", ["f", "fc.weight", "fc.bias"], ["z"],
                                            transB=1),
             n("Softmax", ["z"], ["y"], axis=-1)]
    inits = [init("conv1.weight", 4, 1, 3, 3), init("conv1.shift", 1, 4, 1, 1),
             init("conv2.weight", 6, 2, 3, 3), init("conv2.bias", 6),
             init("fc.weight", 5, 24), init("fc.bias", 5)]
    graph = oh.make_graph(
        nodes, "lenet", [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], inits)
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


def test_a_small_cnn_imports_and_runs_as_onnxruntime_does() -> None:
    """The whole path: ONNX → equations read with tensor shapes → nnre, against onnxruntime."""
    from nnre.model import Model

    rng = np.random.default_rng(8)
    proto = _lenet(rng)
    result = import_model(proto)
    text = result.equations
    assert "x ∈ ℝ^(1×8×8)" in text and "flatten(" in text, text
    model = Model.from_equations(text, result.weights, dtype="float32")
    x = rng.normal(size=(3, 1, 8, 8)).astype(np.float32)
    got = model.step({result.inputs["x"][0]: x})[0][result.outputs["y"][0]]
    np.testing.assert_allclose(got, _onnxruntime(proto, x), rtol=1e-5, atol=1e-6)


def test_a_conv_graph_transposes_its_tensor_in_the_last_two_axes() -> None:
    """The tensor a convolution gives keeps its axes: Transpose of the last two is ``cᵀ``,
    and the result matches onnxruntime."""
    n = oh.make_node
    node_graph = oh.make_graph(
        [n("Conv", ["x", "W"], ["c"]), n("Transpose", ["c"], ["y"], perm=[0, 1, 3, 2])], "g",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 5, 5])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(
            np.random.default_rng(1).normal(size=(3, 2, 3, 3)).astype(np.float32), "W")])
    proto = oh.make_model(node_graph, opset_imports=[oh.make_opsetid("", 17)])
    result = import_model(proto)
    assert "cᵀ" in result.equations
    from nnre.model import Model

    x = np.random.default_rng(2).normal(size=(2, 2, 5, 5)).astype(np.float32)
    got, _ = Model.from_equations(result.equations, result.weights).step({"x": x})
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})[0]
    np.testing.assert_allclose(got[result.outputs["y"][0]], want, rtol=1e-5, atol=1e-5)


def test_a_pytorch_cnn_export_imports_as_conv_equations(tmp_path: Any) -> None:
    """torch.onnx.export of Conv2d/MaxPool2d/AvgPool2d (which writes count_include_pad=1 even
    without padding) reads back as conv/maxpool/avgpool and computes what PyTorch does."""
    torch = pytest.importorskip("torch")
    import onnx

    from nnre.model import Model

    nn = torch.nn
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                        nn.Flatten(), nn.Linear(24, 5))
    x = torch.randn(3, 1, 8, 8)
    path = tmp_path / "cnn.onnx"
    torch.onnx.export(net, x, str(path), dynamo=False, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    result = import_model(onnx.load(str(path)))
    assert "conv(" in result.equations and "avgpool(" in result.equations, result.equations
    model = Model.from_equations(result.equations, result.weights, dtype="float32")
    got = model.step({"x": x.numpy()})[0]["y"]
    with torch.no_grad():
        np.testing.assert_allclose(got, net(x).numpy(), rtol=1e-4, atol=1e-5)
