"""Shared pieces of nndk's ONNX bridge: its error, the onnx import guard, dtype and opset tables.

nnre never imports onnx; everything ONNX lives under ``nndk.onnx`` and needs the ``onnx``
extra (``pip install 'nnre[onnx]'``). The guard turns a missing package into an OnnxError
with that advice instead of an ImportError traceback.
"""

from __future__ import annotations

import importlib
from typing import Any

from nnre.errors import NnreError

# Opsets the exporter writes: 13 is the first with axis-as-input ReduceSum and per-axis Softmax.
EXPORT_OPSET_MIN = 13
DEFAULT_EXPORT_OPSET = 17
# Opsets the importer reads: 7 is the first whose LSTM/GRU/RNN and broadcasting it knows.
IMPORT_OPSET_MIN = 7

# nnre dtype → ONNX TensorProto element type, and back.
ONNX_DTYPE = {"float32": 1, "float64": 11}
NNRE_DTYPE = {v: k for k, v in ONNX_DTYPE.items()}

# metadata_props keys the exporter writes and the importer reads.
META_STATE = "nnre.state"  # JSON {state key: [input name, output name]}
META_BUNDLE = "nnre.bundle"  # JSON: the bundle's metadata map (codecs, sampling, provenance…)


class OnnxError(NnreError):
    """An ONNX model that cannot be exported, read or imported (names the node or value)."""


def require_onnx() -> Any:
    """The onnx module, or an OnnxError saying how to install it."""
    try:
        return importlib.import_module("onnx")
    except ImportError as err:
        raise OnnxError("ONNX support needs the onnx package: pip install 'nnre[onnx]'"
                        ) from err


def max_opset() -> int:
    """The newest default-domain opset the installed onnx package knows."""
    onnx = require_onnx()
    return int(onnx.defs.onnx_opset_version())


def check_export_opset(opset: int) -> None:
    top = max_opset()
    if not EXPORT_OPSET_MIN <= opset <= top:
        raise OnnxError(f"--opset {opset} is not supported (expected {EXPORT_OPSET_MIN} to "
                        f"{top}, the newest the installed onnx knows)")
