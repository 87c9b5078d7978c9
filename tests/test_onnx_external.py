"""External data: PyTorch's default export imports, and hostile locations are refused.

The hostile models follow CVE-2022-25882 (``../`` in a location) and CVE-2024-27318 (a path
that escapes through a symlink), plus absolute paths, lengths past the end of the file, a
length that does not fit the tensor, and a FIFO planted as the data file (which must be
refused at once, never waited on)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from nndk.onnx.common import OnnxError  # noqa: E402
from nndk.onnx.importer import import_model, read  # noqa: E402
from nnre import budget  # noqa: E402
from nnre.model import Model  # noqa: E402

W = np.arange(12, dtype=np.float32).reshape(3, 4) / 7


def _model(folder: Path, where: dict[str, str], data: bytes | None = b"") -> Path:
    """y = x W, with W stored externally as ``where`` says; ``data`` written to w.bin."""
    init = numpy_helper.from_array(W, "W")
    init.ClearField("raw_data")
    init.data_location = TensorProto.EXTERNAL
    for k, v in where.items():
        init.external_data.add(key=k, value=v)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [init])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "m.onnx").write_bytes(model.SerializeToString())
    if data is not None:
        (folder / "w.bin").write_bytes(data)
    return folder / "m.onnx"


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    result = import_model(read(path))
    model = Model.from_equations(result.equations, result.weights)
    got, _ = model.step({result.inputs["x"][0]: x})
    return got[result.outputs["y"][0]]


def test_hand_made_external_data_with_an_offset(tmp_path) -> None:
    path = _model(tmp_path, {"location": "w.bin", "offset": "8", "length": "48"},
                  b"\xff" * 8 + W.tobytes() + b"\xff" * 5)
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_allclose(_run(path, x), x @ W, rtol=1e-6)


def test_pytorch_default_export_writes_external_data_and_imports(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")  # torch's default (dynamo) exporter needs it
    import onnxruntime as ort

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(),
                              torch.nn.Linear(16, 4)).eval()
    x = torch.randn(5, 6)
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), str(path))  # the default call, as users write it
    assert (tmp_path / "m.onnx.data").exists()
    result = import_model(read(path))
    model = Model.from_equations(result.equations, result.weights)
    (name, _), = result.inputs.values()
    got, _ = model.step({name: x.numpy()})
    (out, _), = result.outputs.values()
    np.testing.assert_allclose(got[out], net(x).detach().numpy(), rtol=0, atol=1e-5)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got[out], want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("where, message", [
    ({"location": "../w.bin"}, "not a relative path inside the model's directory"),
    ({"location": "sub/../../w.bin"}, "not a relative path inside the model's directory"),
    ({"location": "/etc/passwd"}, "not a relative path inside the model's directory"),
    ({"location": "C:\\w.bin"}, "not a relative path inside the model's directory"),
    ({"location": "w.bin", "length": "4096"}, "runs past the end"),
    ({"location": "w.bin", "offset": "40", "length": "48"}, "runs past the end"),
    ({"location": "w.bin", "offset": "99999999999999999999"}, "runs past the end"),
    ({"location": "w.bin", "length": "16"}, "type and shape call for 48"),
    ({"location": "w.bin", "offset": "-8"}, "not a non-negative whole number"),
    ({"location": "missing.bin"}, "does not exist"),
])
def test_hostile_locations_are_refused(where: dict[str, str], message: str, tmp_path) -> None:
    (tmp_path / "w.bin").write_bytes(W.tobytes())  # the escape target, one level up
    path = _model(tmp_path / "model", where, W.tobytes())
    with pytest.raises(OnnxError, match=message):
        read(path)


def test_a_symlink_out_of_the_directory_is_refused(tmp_path) -> None:
    (tmp_path / "secret.bin").write_bytes(W.tobytes())
    path = _model(tmp_path / "model", {"location": "w.bin"}, data=None)
    os.symlink(tmp_path / "secret.bin", tmp_path / "model" / "w.bin")
    with pytest.raises(OnnxError, match="outside the model's directory"):
        read(path)


def test_a_symlink_inside_the_directory_is_followed(tmp_path) -> None:
    path = _model(tmp_path, {"location": "link.bin"}, W.tobytes())
    os.symlink("w.bin", tmp_path / "link.bin")
    x = np.ones((1, 3), np.float32)
    np.testing.assert_allclose(_run(path, x), x @ W, rtol=1e-6)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_refused_without_blocking(tmp_path) -> None:
    path = _model(tmp_path, {"location": "w.bin"}, data=None)
    os.mkfifo(tmp_path / "w.bin")
    with pytest.raises(OnnxError, match="FIFO"):
        read(path)
    os.mkfifo(tmp_path / "fifo.onnx")
    with pytest.raises(OnnxError, match="FIFO"):
        read(tmp_path / "fifo.onnx")


def test_external_data_is_held_to_the_memory_budget(tmp_path) -> None:
    path = _model(tmp_path, {"location": "w.bin"}, W.tobytes())
    budget.set_limit(path.stat().st_size + 47)  # the model fits; its 48-byte W does not
    try:
        with pytest.raises(OnnxError, match="memory budget"):
            read(path)
    finally:
        budget.set_limit(None)
