"""Read .bundle files: check every byte's place first, then map tensors zero-copy.

Order of checks (each before anything it guards is allocated or parsed): magic, version,
header length against the cap and the file size, header digest, bounded canonical msgpack,
the shared schema validator, the tensor layout against the file size, zero padding. Only then
are tensors exposed, as read-only ``np.frombuffer`` views over an ``mmap`` (or the bytes).
Tensor digests are checked here only with ``check_data=True`` (which reads every byte);
:func:`nnre.loader.load` decides when (every load, unless verified before or opted out).
Small files are read into memory, large ones mapped (``COPY_BELOW``). Nothing here knows
about models: :mod:`nnre.loader` builds a Model from a decoded bundle.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import mmap
import os
from dataclasses import dataclass, field
from typing import IO, Union

import numpy as np

from nnre.bundle.format import (
    DIGEST_SIZE,
    DTYPES,
    MAGIC,
    MAX_HEADER_BYTES,
    PREAMBLE,
    PREAMBLE_SIZE,
    VERSION_MAJOR,
    VERSION_MINOR,
)
from nnre.bundle.header import decode_header
from nnre.bundle.layout import check_layout, padding_ranges
from nnre.bundle.schema import Header, TensorEntry, validate_header
from nnre.bundle.sniff import describe
from nnre.errors import BundleError
from nnre.files import open_regular

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
    #: (device, inode, size, mtime ns, ctime ns) of the file read, or None for bytes/streams
    identity: tuple[int, ...] | None = None

    @property
    def mapped(self) -> bool:
        """Whether the tensors are views of the file's pages (which another process could
        truncate or overwrite; replace a model by renaming a new file over it)."""
        return isinstance(self.buffer, mmap.mmap)


#: Files up to this size are read into memory, so that nothing another process does to the
#: file (truncating it, ``cp``-ing over it) can reach a loaded model; larger ones are mapped.
COPY_BELOW = 64 << 20


def open_buffer(src: Source, mapped: bool | None = None
                ) -> tuple[Buffer, str, tuple[int, ...] | None]:
    """Bytes to read from (an mmap for large files, or with ``mapped=True``; else the bytes
    themselves), the source's label, and a file's identity."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src), "<bytes>", None
    if isinstance(src, (str, os.PathLike)):
        with open_regular(src, _not_a_file) as f:  # a FIFO or device would block forever
            return _file_buffer(f, mapped), os.fspath(src), _identity(f)
    try:
        src.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return bytes(src.read()), getattr(src, "name", "<stream>"), None
    return _file_buffer(src, mapped), str(getattr(src, "name", "<file>")), _identity(src)


def _identity(f: IO[bytes]) -> tuple[int, ...]:
    st = os.fstat(f.fileno())
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _file_buffer(f: IO[bytes], mapped: bool | None) -> Buffer:
    size = os.fstat(f.fileno()).st_size
    if mapped is False or (mapped is None and size <= COPY_BELOW):
        return f.read()
    return _map_file(f)


def _not_a_file(message: str) -> BundleError:
    return BundleError("not-a-file", message)


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
            raise BundleError("truncated", f"file ends after {size} bytes, inside the magic",
                                offset=size)
        raise BundleError("bad-magic", f"not a .bundle file: it looks like "
                            f"{describe(bytes(buf[:512]))} (expected the magic "
                            f"{MAGIC.hex(' ')})", offset=0)
    if size < PREAMBLE_SIZE:
        raise BundleError("truncated", f"file ends after {size} bytes, inside the "
                            f"{PREAMBLE_SIZE}-byte preamble", offset=size)
    _, major, minor, header_len = PREAMBLE.unpack(head)
    if major != VERSION_MAJOR:
        newer = "newer than" if major > VERSION_MAJOR else "not"
        raise BundleError("unsupported-version", f"bundle format {major}.{minor} is "
                            f"{newer} the version this reader supports "
                            f"({VERSION_MAJOR}.{VERSION_MINOR})", field="version", offset=8)
    if header_len > MAX_HEADER_BYTES:
        raise BundleError("header-too-large", f"header length {header_len} exceeds the "
                            f"cap of {MAX_HEADER_BYTES} bytes", field="header_length", offset=12)
    need = PREAMBLE_SIZE + header_len + DIGEST_SIZE
    if need > size:
        raise BundleError("truncated", f"header of {header_len} bytes and its digest need "
                            f"{need} bytes, the file has {size}", field="header_length",
                            offset=12)
    return minor, header_len


def _check_padding(buf: Buffer, header_len: int, tensors: tuple[TensorEntry, ...]) -> None:
    for lo, hi in padding_ranges(header_len, tensors):
        pad = bytes(buf[lo:hi])
        if pad.strip(b"\x00"):
            bad = lo + next(i for i, b in enumerate(pad) if b)
            raise BundleError("nonzero-padding", "padding bytes must be zero", offset=bad)


def decode(src: Source, *, check_data: bool = False, mapped: bool | None = None) -> Bundle:
    """Open and validate a bundle's structure; tensors are read-only views of the file's
    bytes, read into memory or mapped (``COPY_BELOW``, ``mapped``)."""
    buf, label, identity = open_buffer(src, mapped)
    try:
        return dataclasses.replace(_decode(buf, label, check_data), identity=identity)
    except BundleError as err:
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
        raise BundleError("header-digest", "header sha256 does not match the stored digest "
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


def check_tensor_digests(buf: Buffer, start: int, tensors: tuple[TensorEntry, ...],
                         source: str | None = None) -> None:
    """Hash every tensor's bytes and compare with the header (reads the whole file)."""
    for i, t in enumerate(tensors):
        got = _sha256(buf, start + t.offset, start + t.offset + t.nbytes).hex()
        if got != t.sha256:
            err = BundleError("tensor-digest", f"sha256 of tensor {t.name!r} is "
                              f"{got[:16]}…, the header says {t.sha256[:16]}…",
                              field=f"header.tensors[{i}]", offset=start + t.offset)
            raise err.at_source(source) if source and source != "<bytes>" else err
