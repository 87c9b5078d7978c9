"""``nndk import``: ONNX graphs → readable equations + weights, checked against onnxruntime;
refusals that name every unsupported node; the CLI's output and its one-line errors; and
ONNX's own backend node tests for every supported op."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx_helpers import ort_runner  # noqa: E402

from nndk.onnx.common import OnnxError  # noqa: E402
from nndk.onnx.conformance import SUPPORTED, cases, run_case  # noqa: E402
from nndk.onnx.importer import import_model  # noqa: E402
from nnre.loader import load  # noqa: E402
from nnre.model import Model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RNG = np.random.default_rng(0)


def _init(name: str, *shape: int) -> TensorProto:
    return numpy_helper.from_array(RNG.standard_normal(shape).astype(np.float32), name)


def _model(nodes: list, inits: list, inputs: dict, outputs: dict, opset: int = 17) -> object:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(k, 1, v) for k, v in inputs.items()],
        [helper.make_tensor_value_info(k, 1, v) for k, v in outputs.items()], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    return proto


# outputs of the functions added after softplus (Mish and Gelu need newer opsets: below)
NEW = ["si", "co", "ef", "eu", "ea", "hs", "hw"]


def _many_ops() -> object:
    """An MLP-like graph that uses most supported ops once."""
    n = helper.make_node
    nodes = [
        n("Flatten", ["img"], ["flat"], axis=1),
        n("Gemm", ["flat", "fc.weight", "fc.bias"], ["g"], transB=1, alpha=0.5),
        n("LeakyRelu", ["g"], ["lr"], alpha=0.2),
        n("Constant", [], ["two"], value=numpy_helper.from_array(np.float32(2.0))),
        n("Div", ["lr", "two"], ["half"]),
        n("Clip", ["half", "lo", "hi"], ["clipped"]),
        n("MatMul", ["clipped", "w2"], ["m"]),
        n("Sub", ["m", "bias2"], ["s"]),
        n("Sigmoid", ["s"], ["sg"]), n("Tanh", ["s"], ["th"]),
        n("Concat", ["sg", "th"], ["cat"], axis=1),
        n("Dropout", ["cat"], ["drop"]),
        n("Reshape", ["drop", "shape"], ["r"]),
        n("Exp", ["r"], ["e"]), n("Add", ["e", "one"], ["e1"]), n("Log", ["e1"], ["l"]),
        n("Sqrt", ["l"], ["q"]), n("Neg", ["q"], ["nq"]), n("Abs", ["nq"], ["a"]),
        n("Mul", ["a", "scale"], ["ms"]), n("Identity", ["ms"], ["id"]),
        n("Softmax", ["id"], ["y"], axis=1), n("LogSoftmax", ["id"], ["z"], axis=-1),
        n("Relu", ["id"], ["rl"]), n("Softplus", ["id"], ["sp"]),
        n("ReduceSum", ["e1", "last"], ["rs"], keepdims=1), n("Div", ["e1", "rs"], ["nd"]),
        n("ReduceMax", ["id"], ["rx"], axes=[-1], keepdims=1),
        n("Sin", ["id"], ["si"]), n("Cos", ["id"], ["co"]), n("Erf", ["id"], ["ef"]),
        n("Elu", ["id"], ["eu"]), n("Elu", ["id"], ["ea"], alpha=0.5),
        n("HardSigmoid", ["id"], ["hs"]), n("HardSwish", ["id"], ["hw"]),
    ]
    inits = [_init("fc.weight", 5, 6), _init("fc.bias", 5), _init("w2", 5, 3),
             _init("bias2", 3), _init("scale", 6),
             numpy_helper.from_array(np.array(-0.5, np.float32), "lo"),
             numpy_helper.from_array(np.array(0.7, np.float32), "hi"),
             numpy_helper.from_array(np.array([1.0], np.float32), "one"),
             numpy_helper.from_array(np.array([-1, 6], np.int64), "shape"),
             numpy_helper.from_array(np.array([1], np.int64), "last")]
    return _model(nodes, inits, {"img": ["N", 2, 3]}, {"y": ["N", 6], "z": ["N", 6],
                                                       "rl": ["N", 6], "sp": ["N", 6],
                                                       "nd": ["N", 6], "rx": ["N", 1],
                                                       **{k: ["N", 6] for k in NEW}})


def test_many_ops_match_onnxruntime() -> None:
    proto = _many_ops()
    result = import_model(proto)
    model = Model.from_equations(result.equations, result.weights)
    img = RNG.standard_normal((7, 2, 3)).astype(np.float32)
    want = ort_runner(proto)({"img": img})
    got, _ = model.step({"img": img})  # fed with its own axes: img ∈ ℝ^(2×3)
    for name in ("y", "z", "rl", "sp", "nd", "rx", *NEW):
        np.testing.assert_allclose(got[result.outputs[name][0]], want[name], atol=1e-5)
    text = result.equations
    assert "relu(" in text and "softmax(" in text and "log_softmax(" in text
    for func in ("softplus", "sin", "cos", "erf", "elu", "hardsigmoid", "hardswish", "sum",
                 "max"):
        assert f"{func}(" in text, func
    assert "flatten(img)" in text and "W₁ flat" in text and "[" in text  # weight names, stacking


def _activations(nodes: list, opset: int, **expected: str) -> None:
    """Per-example x → the nodes' outputs: imported equations (each output computed by the
    named function) against onnxruntime on the original graph."""
    proto = _model(nodes, [], {"x": ["N", 5]}, {k: ["N", 5] for k in expected}, opset=opset)
    result = import_model(proto)
    model = Model.from_equations(result.equations, result.weights)
    x = (RNG.standard_normal((9, 5)) * 3).astype(np.float32)
    want = ort_runner(proto)({"x": x})
    got, _ = model.step({"x": x})
    for name, func in expected.items():
        np.testing.assert_allclose(got[result.outputs[name][0]], want[name], atol=2e-5,
                                   rtol=1e-5)
        assert f"{func}(" in result.equations, (func, result.equations)


def test_gelu_imports_both_approximations_and_mish() -> None:
    n = helper.make_node
    _activations([n("Gelu", ["x"], ["a"]), n("Gelu", ["x"], ["b"], approximate="tanh"),
                  n("Mish", ["x"], ["c"])], 20, a="gelu", b="gelu_tanh", c="mish")
    bad = _model([n("Gelu", ["x"], ["a"], approximate="fast")], [], {"x": ["N", 5]},
                 {"a": ["N", 5]}, opset=20)
    with pytest.raises(OnnxError, match="Gelu with approximate='fast'"):
        import_model(bad)


def test_hard_sigmoid_with_other_parameters_is_a_clip() -> None:
    n = helper.make_node
    other = _model([n("HardSigmoid", ["x"], ["a"], alpha=0.5)], [], {"x": ["N", 5]},
                   {"a": ["N", 5]})
    assert "a = clip(0.5 ⊙ x + 0.5; min=0, max=1)" in import_model(other).equations


def test_names_from_onnx_are_kept_when_they_are_good_names() -> None:
    n = helper.make_node
    proto = _model([n("MatMul", ["x", "W"], ["hidden"]), n("Tanh", ["hidden"], ["y"])],
                   [_init("W", 3, 4)], {"x": ["N", 3]}, {"y": ["N", 4]})
    text = import_model(proto).equations
    assert "hidden = Wᵀ x" in text and "y = tanh(hidden)" in text


def test_every_unsupported_node_is_named_in_one_message() -> None:
    n = helper.make_node
    nodes = [n("Round", ["x"], ["c"], name="round1"), n("Relu", ["c"], ["r"]),
             n("MatMul", ["x", "x2"], ["m"], name="mm"), n("Floor", ["x2"], ["cs"], name="floor"),
             n("Add", ["m", "cs"], ["y"])]
    proto = _model(nodes, [], {"x": ["N", 1, 4], "x2": ["N", 1, 4]},
                   {"y": ["N", 1, 4], "r": ["N", 1, 4]})
    with pytest.raises(OnnxError) as err:
        import_model(proto, "bad.onnx")
    message = str(err.value)
    assert "\n" not in message and message.startswith("bad.onnx: cannot import")
    assert "op Round is not supported (node 'round1')" in message
    assert "op Floor is not supported (node 'floor')" in message
    assert "node 'mm'" in message and "MatMul" in message


def test_old_opsets_are_refused() -> None:
    proto = _model([helper.make_node("Relu", ["x"], ["y"])], [], {"x": ["N", 2]},
                   {"y": ["N", 2]}, opset=6)
    with pytest.raises(OnnxError, match="opset 6; nndk imports opsets 7 to"):
        import_model(proto)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nndk", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT),
                                        "SOURCE_DATE_EPOCH": "0"}, timeout=120)


def test_cli_import_then_export(tmp_path) -> None:
    onnx.save(_many_ops(), str(tmp_path / "m.onnx"))
    proc = _cli("import", "m.onnx", "-o", "m.bundle", "--name", "demo", "--version", "2.0.0",
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "softmax(" in proc.stdout and "imported m.bundle" in proc.stdout
    model = load(tmp_path / "m.bundle")
    assert model.metadata["name"] == "demo" and model.metadata["version"] == "2.0.0"
    assert model.metadata["extra"]["onnx.opset"] == "17"
    proc = _cli("export", "m.bundle", "-o", "back.onnx", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    onnx.checker.check_model(onnx.load(str(tmp_path / "back.onnx")), full_check=True)


@pytest.mark.parametrize("args", [
    ("import", "missing.onnx", "-o", "x.bundle"),
    ("import", "junk.onnx", "-o", "x.bundle"),
    ("export", "junk.onnx", "-o", "x.onnx"),
    ("export", "m.bundle", "-o", "x.onnx", "--opset", "3"),
])
def test_cli_errors_are_one_line(args: tuple[str, ...], tmp_path) -> None:
    (tmp_path / "junk.onnx").write_bytes(b"\x00not a model at all")
    proc = _cli(*args, cwd=tmp_path)
    assert proc.returncode != 0
    lines = proc.stderr.strip().split("\n")
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr


def test_node_tests_of_every_supported_op_pass_or_are_refused() -> None:
    """ONNX's backend node tests: none may give a wrong answer or crash."""
    passed = 0
    for op in SUPPORTED:
        for case in cases(op):
            status, detail = run_case(case)
            passed += status == "pass"
            assert status in ("pass", "refused"), f"{case.name}: {status}: {detail}"
    assert passed >= 575  # 575 of 965 with onnx 1.23; see nndk.onnx.conformance


def test_importing_twice_gives_the_same_bytes(tmp_path, monkeypatch) -> None:
    """Nothing time-dependent is added (bundle spec §6): ``created`` only when given."""
    from nndk.onnx.importer import import_file

    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    onnx.save(_many_ops(), str(tmp_path / "m.onnx"))
    first = import_file(tmp_path / "m.onnx", tmp_path / "a.bundle", name="m", version="1.0.0")
    time.sleep(1.1)  # a clock would now give a different `created`
    again = import_file(tmp_path / "m.onnx", tmp_path / "b.bundle", name="m", version="1.0.0")
    assert first[0] == again[0]
    assert (tmp_path / "a.bundle").read_bytes() == (tmp_path / "b.bundle").read_bytes()
    assert "created" not in load(tmp_path / "a.bundle").metadata


def test_onnx_names_that_look_alike_get_names_of_their_own() -> None:
    """``e1`` and ``el`` are both good ONNX names but look alike; the equations may not hold
    both (UTS #39), so the second is renamed and the model still imports and matches."""
    n = helper.make_node
    proto = _model([n("Exp", ["x"], ["e1"]), n("Tanh", ["x"], ["el"]),
                    n("Add", ["e1", "el"], ["y"])], [], {"x": ["N", 3]}, {"y": ["N", 3]})
    result = import_model(proto)
    model = Model.from_equations(result.equations, result.weights)
    x = RNG.standard_normal((4, 3)).astype(np.float32)
    got, _ = model.step({"x": x})
    np.testing.assert_allclose(got[result.outputs["y"][0]], np.exp(x) + np.tanh(x), rtol=1e-6)


def test_masks_max_min_and_where_import_and_match_onnxruntime() -> None:
    n = helper.make_node
    nodes = [n("Greater", ["x", "zero"], ["pos"]), n("Where", ["pos", "x", "small"], ["lr"]),
             n("Max", ["x", "lo", "x"], ["mx"]), n("Min", ["x", "hi"], ["mn"]),
             n("LessOrEqual", ["x", "hi"], ["le"]), n("Cast", ["le"], ["mask"], to=1)]
    inits = [numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
             numpy_helper.from_array(np.array([0.1, -0.2, 0.3], np.float32), "lo"),
             numpy_helper.from_array(np.array(0.5, np.float32), "hi")]
    proto = _model([*nodes, n("Mul", ["x", "x"], ["sq"]), n("Mul", ["sq", "mask"], ["y"])],
                   inits, {"x": ["N", 3], "small": ["N", 3]},
                   {"lr": ["N", 3], "mx": ["N", 3], "mn": ["N", 3], "y": ["N", 3]})
    result = import_model(proto)
    assert "where(" in result.equations and " > " in result.equations
    model = Model.from_equations(result.equations, result.weights)
    feeds = {"x": RNG.standard_normal((6, 3)).astype(np.float32),
             "small": RNG.standard_normal((6, 3)).astype(np.float32)}
    want = ort_runner(proto)(feeds)
    got, _ = model.step(feeds)  # x and small are good names: kept
    for name in ("lr", "mx", "mn", "y"):
        np.testing.assert_allclose(got[result.outputs[name][0]], want[name], atol=1e-6)


def test_every_onnx_node_test_passes_or_is_refused_never_wrong() -> None:
    """The whole node-test suite of the installed onnx (not only the listed ops): a wrong
    result or a crash fails; the pass count may only grow (575 of 1404 with onnx 1.23)."""
    from collections import Counter

    from nndk.onnx.conformance import every_case

    counts: Counter[str] = Counter(run_case(case)[0] for case in every_case())
    assert counts["wrong"] == 0 and counts["crash"] == 0, counts
    assert counts["pass"] >= 575, counts


def test_a_slice_of_the_per_example_vector_imports_as_entries() -> None:
    n = helper.make_node
    ints = [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in
            (("s", [1]), ("e", [-1]), ("ax", [1]), ("s2", [0]), ("e2", [2]))]
    proto = _model([n("Tanh", ["x"], ["t"]), n("Slice", ["t", "s", "e", "ax"], ["y"]),
                    n("Slice", ["x", "s2", "e2", "ax"], ["z"])], ints, {"x": ["N", 5]},
                   {"y": ["N", 3], "z": ["N", 2]})
    result = import_model(proto)
    assert "[1:4]" in result.equations and "[0:2]" in result.equations
    model = Model.from_equations(result.equations, result.weights)
    x = RNG.standard_normal((4, 5)).astype(np.float32)
    want, (got, _) = ort_runner(proto)({"x": x}), model.step({"x": x})
    for name in ("y", "z"):
        np.testing.assert_allclose(got[result.outputs[name][0]], want[name], atol=1e-6)
    batch = _model([n("Slice", ["x", "s2", "e2"], ["z"])], ints, {"x": ["N", 5]},
                   {"z": ["N", 5]})  # no axes: ONNX slices axis 0, the batch
    with pytest.raises(OnnxError, match="Slice of the batch axis"):
        import_model(batch)
