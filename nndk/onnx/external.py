"""Tensors an ONNX model keeps in external data files, read into the model defensively.

Exporters write large weights beside the model (PyTorch's default export writes
``m.onnx.data``); each such tensor names a ``location`` and optionally an ``offset`` and
``length``. A model file is untrusted input, and onnx's own loader has followed locations out
of the model's directory (CVE-2022-25882: ``../`` in the location; CVE-2024-27318: a symlink
or a path that escapes once resolved). Here a location must be a relative path to a regular
file inside the model's directory *after* every symlink is resolved; offset and length are
checked against the file's size, and the tensor's declared shape, before a byte is read; the
total is held to the memory budget (:func:`nnre.budget.limit`); and files are opened with
:func:`nnre.files.open_regular`, so a FIFO planted as the data file never blocks the import.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from nndk.onnx.common import OnnxError, require_onnx
from nnre import budget
from nnre.files import open_regular

_KEYS = {"location", "offset", "length", "checksum", "basepath"}


def inline(proto: Any, model_path: str | Path, used: int = 0) -> None:
    """Replace every external tensor of ``proto`` by its bytes, read from beside the model;
    ``used`` bytes (the model file's) count against the budget too."""
    onnx = require_onnx()
    from onnx.external_data_helper import _get_all_tensors

    external = [t for t in _get_all_tensors(proto)
                if t.data_location == onnx.TensorProto.EXTERNAL]
    if not external:
        return
    folder = Path(os.path.realpath(Path(model_path).parent))
    total = used
    for tensor in external:
        where = dict((e.key, e.value) for e in tensor.external_data)
        expected = _nbytes(tensor)
        total += expected
        if total > budget.limit():
            raise OnnxError(f"{model_path}: external tensors of {total} bytes exceed the "
                            f"memory budget of {budget.limit()} bytes")
        raw = _read(folder, where, tensor.name, expected)
        tensor.raw_data = raw
        tensor.data_location = onnx.TensorProto.DEFAULT
        del tensor.external_data[:]


def _nbytes(tensor: Any) -> int:
    """The size the tensor's type and shape call for (Python ints: no overflow)."""
    from onnx.helper import tensor_dtype_to_np_dtype

    try:
        itemsize = np.dtype(tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except (KeyError, TypeError, ValueError):
        raise OnnxError(f"tensor '{tensor.name}' is stored externally with an element type "
                        "nndk cannot read from a file") from None
    if any(d < 0 for d in tensor.dims) or tensor.data_type in (8, 16, 17, 18, 19, 20, 21, 22):
        raise OnnxError(f"tensor '{tensor.name}' is stored externally with an element type "
                        "or shape nndk cannot read from a file")
    n = 1
    for d in tensor.dims:
        n *= int(d)
    return n * itemsize


def _number(where: dict[str, str], key: str, name: str) -> int | None:
    text = where.get(key)
    if text is None:
        return None
    if not text.isdigit():
        raise OnnxError(f"tensor '{name}': external data {key} {text!r} is not a "
                        "non-negative whole number")
    return int(text)


def _resolve(folder: Path, location: str, name: str) -> Path:
    """The data file, which must stay inside the model's directory once resolved."""
    parts = PurePosixPath(location.replace("\\", "/")).parts
    bad = (not location or "\0" in location or PurePosixPath(location).is_absolute()
           or PureWindowsPath(location).is_absolute() or PureWindowsPath(location).drive
           or ".." in parts)
    if bad:
        raise OnnxError(f"tensor '{name}': external data location {location!r} is not a "
                        "relative path inside the model's directory")
    path = Path(os.path.realpath(folder / location))
    if os.path.commonpath([path, folder]) != str(folder):
        raise OnnxError(f"tensor '{name}': external data location {location!r} leads "
                        "outside the model's directory (through a symbolic link)")
    return path


def _read(folder: Path, where: dict[str, str], name: str, expected: int) -> bytes:
    unknown = sorted(set(where) - _KEYS)
    if unknown:
        raise OnnxError(f"tensor '{name}': unknown external data field '{unknown[0]}'")
    path = _resolve(folder, where.get("location", ""), name)
    offset = _number(where, "offset", name) or 0
    length = _number(where, "length", name)
    try:
        f = open_regular(path, OnnxError)
    except FileNotFoundError:
        raise OnnxError(f"tensor '{name}': external data file "
                        f"{where.get('location')!r} does not exist") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        length = size - offset if length is None else length
        if offset > size or length > size - offset:
            raise OnnxError(f"tensor '{name}': external data at offset {offset}, length "
                            f"{length} runs past the end of {where['location']!r} "
                            f"({size} bytes)")
        if length != expected:
            raise OnnxError(f"tensor '{name}': external data holds {length} bytes; its type "
                            f"and shape call for {expected}")
        f.seek(offset)
        raw = f.read(length)
    if len(raw) != length:  # the file shrank while it was read
        raise OnnxError(f"tensor '{name}': external data file {where['location']!r} is "
                        "shorter than it was a moment ago")
    return raw
