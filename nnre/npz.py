"""``.npz`` in and out: feeds read within limits, outputs written atomically.

``np.load`` trusts the archive: a 200-byte file may declare a 12 TiB array, and a zip bomb
inflates a few kilobytes into gigabytes. Here each member's declared uncompressed size, its
compression ratio and its ``.npy`` header (read with ``numpy.lib.format`` without loading the
data) are checked against caps first; object dtypes are refused, so nothing is ever unpickled.
Only then are exactly the declared bytes read and viewed as the array.

Outputs are written to exactly the path given (``np.savez`` would append ``.npz`` to a name
without it, silently writing somewhere else) through :func:`nnre.files.atomic_write`, so a
failed write leaves the previous file as it was.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from typing import IO, Any

import numpy as np
from numpy.lib import format as npy

from nnre.errors import FeedError, NnreError, OutputError
from nnre.files import atomic_write

MAX_FEED_BYTES = 1 << 30  # all arrays of one .npz together, uncompressed
MAX_ARRAYS = 1024
MAX_RATIO = 1100  # deflate tops out near 1032:1; anything beyond is not honest data
MAX_NPY_HEADER = 10_000  # numpy's own default for untrusted files
_HEADER_READERS = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}


def read_npz(stream: IO[bytes], where: str, max_bytes: int | None = None,
             error: type[NnreError] = FeedError) -> dict[str, np.ndarray]:
    """Named arrays from an .npz; every problem is an ``error`` (a FeedError for a feed)
    naming the member. ``max_bytes`` caps all arrays together, uncompressed (weights and
    training data pass the memory budget here)."""
    try:
        with zipfile.ZipFile(stream) as zf:
            infos = _checked_members(zf.infolist(), where, max_bytes or MAX_FEED_BYTES)
            return {info.filename[:-4]: _read_member(zf, info, f"{where}: {info.filename}")
                    for info in infos}
    except FeedError as err:
        raise err if error is FeedError else error(str(err)) from None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, NotImplementedError,
            RuntimeError) as err:
        raise error(f"{where}: not a readable .npz of numeric arrays ({err})") from None


def _checked_members(infos: list[zipfile.ZipInfo], where: str, max_bytes: int
                     ) -> list[zipfile.ZipInfo]:
    if len(infos) > MAX_ARRAYS:
        raise FeedError(f"{where}: {len(infos)} arrays, more than the cap of {MAX_ARRAYS}")
    names, total = set(), 0
    for info in infos:
        at = f"{where}: {info.filename}"
        if not info.filename.endswith(".npy") or info.filename in names:
            raise FeedError(f"{at}: every member of an .npz must be one distinct NAME.npy")
        names.add(info.filename)
        total += info.file_size
        if total > max_bytes:
            raise FeedError(f"{at}: the arrays declare more than {max_bytes:,} bytes "
                            "uncompressed, the cap for this file")
        if info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise FeedError(f"{at}: compressed {info.compress_size:,} bytes, declared "
                            f"{info.file_size:,} uncompressed: a ratio above {MAX_RATIO}:1 "
                            "(a zip bomb?)")
    return infos


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, at: str) -> np.ndarray:
    with zf.open(info) as f:
        shape, fortran, dtype = _header(f, at)
        nbytes = dtype.itemsize
        for d in shape:  # Python ints: exact, no overflow
            nbytes *= d
        left = info.file_size - f.tell()  # the data after the .npy header
        if nbytes != left:
            raise FeedError(f"{at}: declares {dtype} {list(shape)} ({nbytes:,} bytes) but "
                            f"the member holds {left:,} bytes of data")
        data = f.read(nbytes)
    if len(data) != nbytes:
        raise FeedError(f"{at}: ends after {len(data):,} of {nbytes:,} bytes of data")
    return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C")


def _header(f: IO[bytes], at: str) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    version = npy.read_magic(f)
    if version not in _HEADER_READERS:
        raise FeedError(f"{at}: .npy format version {version} is not supported (1.0, 2.0)")
    shape, fortran, dtype = _HEADER_READERS[version](f, max_header_size=MAX_NPY_HEADER)
    if dtype.hasobject or dtype.fields is not None or dtype.kind not in "biuf":
        raise FeedError(f"{at}: holds {dtype} values; only plain numbers (bool, int, "
                        "float) are read, and object arrays are never unpickled")
    return tuple(int(d) for d in shape), bool(fortran), dtype


def write_npz(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` as an .npz at exactly ``path``, all or nothing, never pickling.

    Written member by member like ``np.savez`` (``NAME.npy`` each), but any name works (an
    output called ``file`` would collide with ``np.savez``'s own parameter)."""
    def fill(f: IO[bytes]) -> None:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, arr in arrays.items():
                with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                    try:
                        npy.write_array(member, np.asanyarray(arr), allow_pickle=False)
                    except ValueError as err:
                        raise OutputError(f"{os.fspath(path)}: cannot write output "
                                          f"{name!r} as .npy ({err})") from None
    atomic_write(path, fill)
