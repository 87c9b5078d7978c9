"""Write .bundle files: deterministic bytes, validated by the reader's own checks, atomically.

The writer builds the header, then runs it through the decoder, the validator and the layout
check that the reader runs, so it cannot produce a file the reader refuses. Tensors are
sorted by name, stored little-endian C order at 64-byte aligned offsets with zero padding;
the header is the canonical msgpack encoding. Same content, same bytes. Files appear by
``os.replace`` of a fsynced temporary file in the same directory, so a crash never leaves a
half-written bundle.
"""

from __future__ import annotations

import hashlib
import io
import operator
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

import numpy as np

from nnre.bundle.format import (
    DTYPES,
    MAGIC,
    MAX_HEADER_BYTES,
    PREAMBLE,
    VERSION_MAJOR,
    VERSION_MINOR,
    dtype_name,
)
from nnre.bundle.header import decode_header, encode_header
from nnre.bundle.layout import align, check_layout, data_start, file_size, offsets
from nnre.bundle.schema import validate_header
from nnre.errors import BundleError
from nnre.files import atomic_write


class SpecLike(Protocol):
    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def dtype(self) -> str: ...


@dataclass(frozen=True)
class BundleContent:
    """Everything a bundle holds. ``signature`` maps inputs/outputs/state to name -> spec."""

    equations: str
    dtype: str
    dims: Mapping[str, int]
    signature: Mapping[str, Mapping[str, SpecLike]]
    metadata: Mapping[str, Any]
    tensors: Mapping[str, np.ndarray] = field(repr=False)
    requires: tuple[str, ...] = ("equations/1",)


def _little_endian(name: str, arr: np.ndarray) -> np.ndarray:
    dt = dtype_name(np.asarray(arr).dtype)
    if dt is None:
        raise BundleError("bad-dtype", f"dtype {np.asarray(arr).dtype} is not allowed "
                            f"(allowed: {', '.join(DTYPES)})", field=f"tensor {name!r}")
    return np.ascontiguousarray(np.asarray(arr).astype(DTYPES[dt], copy=False))


def _header(content: BundleContent, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    places = offsets([arr.nbytes for arr in arrays.values()])
    entries = [{"name": name, "dtype": dtype_name(arr.dtype), "shape": list(arr.shape),
                "offset": at, "nbytes": arr.nbytes,
                "sha256": hashlib.sha256(_raw(arr)).hexdigest()}
               for (name, arr), at in zip(arrays.items(), places, strict=True)]
    sig = {side: {n: {"dtype": str(s.dtype), "shape": _ints(s.shape)} for n, s in specs.items()}
           for side, specs in content.signature.items()}
    return {
        "requires": list(content.requires),
        "model": {"equations": content.equations, "dtype": content.dtype,
                  "dims": {str(k): operator.index(v) for k, v in content.dims.items()},
                  "signature": sig},
        "metadata": dict(content.metadata),
        "tensors": entries,
    }


def _ints(shape: Any) -> list[int]:
    """Plain ints from any integer-like (numpy or SymPy integers); floats are refused."""
    return [operator.index(d) for d in shape]


def _raw(arr: np.ndarray) -> memoryview:
    return arr.reshape(-1).view(np.uint8).data


def plan(content: BundleContent) -> tuple[bytes, list[np.ndarray], str]:
    """The bytes before the tensor section, the tensors in file order, and the bundle id.

    The header goes through the reader's decoder, validator and layout check first."""
    arrays = {n: _little_endian(n, content.tensors[n]) for n in sorted(content.tensors)}
    try:
        raw = encode_header(_header(content, arrays))
    except (TypeError, ValueError, OverflowError) as err:
        raise BundleError("bad-field", f"cannot encode the header: {err}",
                            field="header") from err
    if len(raw) > MAX_HEADER_BYTES:
        raise BundleError("header-too-large", f"{len(raw)} bytes > cap {MAX_HEADER_BYTES}",
                            field="header")
    header = validate_header(decode_header(raw), VERSION_MINOR)
    check_layout(header.tensors, len(raw), file_size(len(raw), header.tensors))
    body = PREAMBLE.pack(MAGIC, VERSION_MAJOR, VERSION_MINOR, len(raw)) + raw
    digest = hashlib.sha256(body).digest()
    body += digest
    return body + bytes(data_start(len(raw)) - len(body)), list(arrays.values()), digest.hex()


def chunks(prefix: bytes, arrays: list[np.ndarray]) -> Iterator[bytes | memoryview]:
    """The file's bytes in pieces, from :func:`plan`'s output (tensors are not copied)."""
    yield prefix
    for i, arr in enumerate(arrays):
        yield _raw(arr)
        if i + 1 < len(arrays):
            yield bytes(align(arr.nbytes) - arr.nbytes)


def encode(content: BundleContent) -> bytes:
    """The whole bundle as bytes."""
    out = io.BytesIO()
    _write_to(out, content)
    return out.getvalue()


def _write_to(f: IO[bytes], content: BundleContent) -> str:
    prefix, arrays, bundle_id = plan(content)
    for piece in chunks(prefix, arrays):
        f.write(piece)
    return bundle_id


def write(path: str | os.PathLike[str], content: BundleContent) -> str:
    """Atomically write a bundle to ``path``; returns its bundle id."""
    return atomic_write(path, lambda f: _write_to(f, content))
