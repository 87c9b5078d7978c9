"""Other formats renamed to .bundle: refused before parsing, with what the file looks like."""

from __future__ import annotations

import io
import json
import struct
import zipfile

import numpy as np
import pytest
from bundle_helpers import lstm_content

from nnre import bundle
from nnre.bundle.write import encode
from nnre.errors import BundleError


def _npz() -> bytes:
    out = io.BytesIO()
    np.savez(out, W_i=np.ones((2, 2), np.float32))
    return out.getvalue()


def _torch_like() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    return out.getvalue()


def _onnx() -> bytes:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    return bytes(onnx.helper.make_model(graph, producer_name="test").SerializeToString())


def _safetensors() -> bytes:
    head = json.dumps({"W": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    return struct.pack("<Q", len(head)) + head + bytes(8)


CASES = [
    (_npz, "NumPy .npz archive"),
    (_torch_like, "PyTorch checkpoint"),
    (lambda: b"\x80\x02}q\x00.", "Python pickle (protocol 2)"),
    (lambda: b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01.", "pickle (protocol 4)"),
    (_onnx, "ONNX model"),
    (_safetensors, "safetensors"),
    (lambda: b"GGUF\x03\x00\x00\x00" + bytes(16), "GGUF"),
    (lambda: b"\x93NUMPY\x01\x00" + bytes(8), ".npy array"),
    (lambda: b"\x89HDF\r\n\x1a\n" + bytes(8), "HDF5"),
    (lambda: b"\x1f\x8b\x08\x00", "gzip"),
    (lambda: "hₜ = tanh(W·xₜ)\n".encode(), "equations text file"),
    (lambda: b"h_t = tanh(W x_t + U h_{t-1})\n", "equations text file"),
    (lambda: "# a model\nxₜ ∈ ℝ^V\n".encode(), "equations text file"),
    (lambda: b'"""A module."""\nx = 1\n', "Python source code"),
    (lambda: b"import numpy as np\nW = np.eye(3)\n", "Python source code"),
    (lambda: b"#!/usr/bin/env python3\nprint(1)\n", "Python source code"),
    (lambda: b"total = 3\nname = lighthouse\n", "a text file"),
    (lambda: "ₜ".encode() * 170 + b"\xe2", "a text file"),  # a character cut at byte 512
    (lambda: b'{"a": 1}', "JSON"),
    (lambda: b"", "an empty file"),
    (lambda: encode(lstm_content()).replace(b"\r\n", b"\n", 1), "text-mode transfer"),
    (lambda: bytes(range(200, 256)), "unknown binary data"),
]


@pytest.mark.parametrize("make, looks_like", CASES, ids=[c[1] for c in CASES])
def test_renamed_formats_are_named(make, looks_like, tmp_path) -> None:
    path = tmp_path / "model.bundle"
    path.write_bytes(make())
    with pytest.raises(BundleError) as info:
        bundle.decode(path)
    assert info.value.code == "bad-magic"
    assert looks_like in str(info.value)
    assert str(info.value).startswith(f"{path}: not a .bundle file: it looks like")


def test_python_source_is_not_called_equations(tmp_path) -> None:
    """The issue's case: `nnre run file.py` named an equations file (any '=' matched)."""
    from pathlib import Path

    from nnre.bundle.sniff import describe

    source = Path(__file__).read_bytes()[:512]
    assert describe(source) == "Python source code"
    assert describe(b"x = 1\ny = x + 1\n") == "a text file"
