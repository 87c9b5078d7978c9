"""Read .bundle files: check every byte's place, then map tensors zero-copy; load and verify.

Order of checks (each before anything it guards is allocated or parsed): magic, version,
header length against the cap and the file size, header digest, bounded canonical msgpack,
the shared schema validator, the tensor layout against the file size, zero padding. Only then
are tensors exposed, as read-only ``np.frombuffer`` views over an ``mmap`` (or the bytes).
Tensor digests are checked by :func:`verify` (and ``load(check_data=True)``), which reads
every byte; :func:`load` otherwise stays O(header) so a 1 GB bundle opens in milliseconds.
"""

from __future__ import annotations

import hashlib
import io
import mmap
import os
from dataclasses import dataclass, field
from typing import IO, Any, Union

import numpy as np

from nnre import cache as compile_cache
from nnre.bundle_format import (
    DIGEST_SIZE,
    DTYPES,
    MAGIC,
    MAX_HEADER_BYTES,
    PREAMBLE,
    PREAMBLE_SIZE,
    VERSION_MAJOR,
    VERSION_MINOR,
    InvalidBundle,
    align,
    data_start,
)
from nnre.bundle_header import decode_header
from nnre.bundle_schema import Header, TensorEntry, validate_header
from nnre.bundle_sniff import describe
from nnre.model import Model, TensorSpec

Source = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes]]
Buffer = Union[bytes, mmap.mmap]  # noqa: UP007 (a runtime alias)


@dataclass(frozen=True)
class Bundle:
    """A structurally valid bundle: its checked header and zero-copy read-only tensors."""

    version: tuple[int, int]
    header: Header
    bundle_id: str
    size: int
    data_start: int
    tensors: dict[str, np.ndarray] = field(repr=False)
    source: str = "<bytes>"
    buffer: Buffer = field(default=b"", repr=False)


def open_buffer(src: Source) -> tuple[Buffer, str]:
    """Bytes to read from: an mmap for paths and real files, else the bytes themselves."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src), "<bytes>"
    if isinstance(src, (str, os.PathLike)):
        with open(src, "rb") as f:
            return _map_file(f), os.fspath(src)
    try:
        src.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return bytes(src.read()), getattr(src, "name", "<stream>")
    return _map_file(src), str(getattr(src, "name", "<file>"))


def _map_file(f: IO[bytes]) -> Buffer:
    size = os.fstat(f.fileno()).st_size
    if size == 0:  # mmap refuses empty files; there is nothing to map anyway
        return b""
    return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def read_preamble(buf: Buffer) -> tuple[int, int]:
    """Check magic and version; return (minor, header length)."""
    size = len(buf)
    head = bytes(buf[:PREAMBLE_SIZE])
    if not head.startswith(MAGIC):
        if MAGIC.startswith(head) and head:
            raise InvalidBundle("truncated", f"file ends after {size} bytes, inside the magic",
                                offset=size)
        raise InvalidBundle("bad-magic", f"not a .bundle file: it looks like "
                            f"{describe(bytes(buf[:512]))} (expected the magic "
                            f"{MAGIC.hex(' ')})", offset=0)
    if size < PREAMBLE_SIZE:
        raise InvalidBundle("truncated", f"file ends after {size} bytes, inside the "
                            f"{PREAMBLE_SIZE}-byte preamble", offset=size)
    _, major, minor, header_len = PREAMBLE.unpack(head)
    if major != VERSION_MAJOR:
        newer = "newer than" if major > VERSION_MAJOR else "not"
        raise InvalidBundle("unsupported-version", f"bundle format {major}.{minor} is "
                            f"{newer} the version this reader supports "
                            f"({VERSION_MAJOR}.{VERSION_MINOR})", field="version", offset=8)
    if header_len > MAX_HEADER_BYTES:
        raise InvalidBundle("header-too-large", f"header length {header_len} exceeds the "
                            f"cap of {MAX_HEADER_BYTES} bytes", field="header_length", offset=12)
    need = PREAMBLE_SIZE + header_len + DIGEST_SIZE
    if need > size:
        raise InvalidBundle("truncated", f"header of {header_len} bytes and its digest need "
                            f"{need} bytes, the file has {size}", field="header_length",
                            offset=12)
    return minor, header_len


def check_layout(tensors: tuple[TensorEntry, ...], header_len: int, size: int) -> int:
    """Tensors packed in order at aligned offsets, file ending at the last; returns start."""
    start = data_start(header_len)
    want = 0
    for i, t in enumerate(tensors):
        where = f"header.tensors[{i}] ({t.name!r})"
        if t.offset != want:
            why = _offset_fault(t.offset, want, size - start)
            raise InvalidBundle("bad-offset", f"offset {t.offset} is {why}; v1 places it at "
                                f"{want}", field=f"{where}.offset", offset=start + t.offset)
        if start + t.offset + t.nbytes > size:
            raise InvalidBundle("truncated", f"{t.nbytes} bytes at {start + t.offset} run "
                                f"past the end of the file ({size} bytes)",
                                field=where, offset=size)
        want = align(t.offset + t.nbytes)
    end = start + (tensors[-1].offset + tensors[-1].nbytes if tensors else 0)
    if end > size:
        raise InvalidBundle("truncated", f"tensor section starts at {start}, past the end "
                            f"of the file ({size} bytes)", offset=size)
    if end < size:
        raise InvalidBundle("trailing-bytes", f"{size - end} bytes after the last tensor; "
                            f"the file must end at byte {end}", offset=end)
    return start


def _offset_fault(offset: int, want: int, section: int) -> str:
    if offset > section:
        return f"beyond the end of the tensor section ({section} bytes)"
    if offset % 64:
        return "not 64-byte aligned"
    return "overlaps the previous tensor" if offset < want else "leaves a gap after it"


def _check_padding(buf: Buffer, header_len: int, tensors: tuple[TensorEntry, ...]) -> None:
    start = data_start(header_len)
    gaps = [(PREAMBLE_SIZE + header_len + DIGEST_SIZE, start)]
    for prev, nxt in zip(tensors, tensors[1:], strict=False):
        gaps.append((start + prev.offset + prev.nbytes, start + nxt.offset))
    for lo, hi in gaps:
        pad = bytes(buf[lo:hi])
        if pad.strip(b"\x00"):
            bad = lo + next(i for i, b in enumerate(pad) if b)
            raise InvalidBundle("nonzero-padding", "padding bytes must be zero", offset=bad)


def decode(src: Source, *, check_data: bool = False) -> Bundle:
    """Open and validate a bundle's structure; tensors are zero-copy read-only views."""
    buf, label = open_buffer(src)
    try:
        return _decode(buf, label, check_data)
    except InvalidBundle as err:
        if isinstance(buf, mmap.mmap):
            buf.close()  # no views exist yet: they are made only after every check
        if label != "<bytes>":
            raise err.at_source(label) from None
        raise


def _decode(buf: Buffer, label: str, check_data: bool) -> Bundle:
    minor, header_len = read_preamble(buf)
    end = PREAMBLE_SIZE + header_len
    digest = _sha256(buf, 0, end)
    if digest != bytes(buf[end:end + DIGEST_SIZE]):
        raise InvalidBundle("header-digest", "header sha256 does not match the stored digest "
                            "(the header or preamble is corrupt)", offset=end)
    raw = decode_header(bytes(buf[PREAMBLE_SIZE:end]))
    header = validate_header(raw, minor)
    start = check_layout(header.tensors, header_len, len(buf))
    _check_padding(buf, header_len, header.tensors)
    if check_data:
        check_tensor_digests(buf, start, header.tensors)
    tensors = {t.name: _view(buf, start, t) for t in header.tensors}
    return Bundle((VERSION_MAJOR, minor), header, digest.hex(), len(buf), start, tensors,
                  label, buf)


def _sha256(buf: Buffer, lo: int, hi: int) -> bytes:
    with memoryview(buf) as whole, whole[lo:hi] as part:
        return hashlib.sha256(part).digest()


def _view(buf: Buffer, start: int, t: TensorEntry) -> np.ndarray:
    count = t.nbytes // DTYPES[t.dtype].itemsize
    arr = np.frombuffer(buf, dtype=DTYPES[t.dtype], count=count, offset=start + t.offset)
    arr = arr.reshape(t.shape)
    arr.flags.writeable = False
    return arr


def check_tensor_digests(buf: Buffer, start: int, tensors: tuple[TensorEntry, ...]) -> None:
    """Hash every tensor's bytes and compare with the header (reads the whole file)."""
    for i, t in enumerate(tensors):
        got = _sha256(buf, start + t.offset, start + t.offset + t.nbytes).hex()
        if got != t.sha256:
            raise InvalidBundle("tensor-digest", f"sha256 of tensor {t.name!r} is "
                                f"{got[:16]}…, the header says {t.sha256[:16]}…",
                                field=f"header.tensors[{i}]", offset=start + t.offset)


def load(src: Source, *, check_data: bool = False, cache: bool = True) -> Model:
    """Open a bundle as a runnable Model: structure, header digest, equations and weights
    checked; tensor digests too when ``check_data`` (see :func:`verify`).

    The compiled Program is taken from the compile cache when an exact entry exists (no
    SymPy import then) and stored there after a compile; ``cache=False`` or
    ``NNRE_NO_CACHE=1`` bypasses it (see :mod:`nnre.cache`).
    """
    return model_of(decode(src, check_data=check_data), cache=cache)


def verify(src: Source) -> Bundle:
    """Check everything without running the model: structure, every digest, equations
    (always compiled afresh, never from the cache)."""
    bundle = decode(src, check_data=True)
    model_of(bundle, cache=False)
    return bundle


def model_of(bundle: Bundle, *, cache: bool = False) -> Model:
    """Build the Model from the equations and weights; its signature must match the header."""
    h = bundle.header
    use_cache = cache and compile_cache.enabled()
    model = _from_cache(bundle) if use_cache else None
    if model is not None:
        _check_signature(model, h)
        return model
    model = Model.from_equations(h.equations, dict(bundle.tensors), dict(h.dims), h.dtype,
                                 metadata=h.metadata, bundle_id=bundle.bundle_id,
                                 filename=f"{bundle.source}[model.equations]")
    _check_signature(model, h)
    if use_cache:
        shapes = {n: s.shape for n, s in model.params.items()}
        compile_cache.store(bundle.bundle_id,
                            compile_cache.Compiled(model.program, model.dims, shapes))
    return model


def _from_cache(bundle: Bundle) -> Model | None:
    """The Model from a cached Program, if the entry exists and fits these weights exactly
    (anything unusual, e.g. non-canonical weight names, takes the full path instead)."""
    compiled = compile_cache.load(bundle.bundle_id)
    h = bundle.header
    if compiled is None or compiled.program.dtype != h.dtype or compiled.dims != h.dims:
        return None
    shapes = {n: tuple(a.shape) for n, a in bundle.tensors.items()}
    if shapes != compiled.param_shapes:
        return None
    weights = {n: a.astype(h.dtype, copy=False) for n, a in bundle.tensors.items()}
    specs = {n: TensorSpec(s, h.dtype) for n, s in shapes.items()}
    return Model(compiled.program, weights, equations=h.equations, dims=compiled.dims,
                 param_specs=specs, metadata=h.metadata, bundle_id=bundle.bundle_id)


def _check_signature(model: Any, h: Header) -> None:
    if dict(model.dims) != h.dims:
        raise InvalidBundle("signature-mismatch", f"header dims {h.dims} but the equations "
                            f"and weights give {dict(model.dims)}", field="header.model.dims")
    for side in ("inputs", "outputs", "state"):
        got = {n: (tuple(s.shape), s.dtype) for n, s in getattr(model, side).items()}
        want = {n: (s.shape, s.dtype) for n, s in h.signature[side].items()}
        if got != want:
            raise InvalidBundle("signature-mismatch", f"header says {want} but the equations "
                                f"give {got}", field=f"header.model.signature.{side}")
