"""Where every byte of a .bundle goes: offsets, padding and file size, computed and checked.

The v1 layout is fully determined by the header, so the writer computes it here and the
reader checks a file against the same computation (``formats/bundle.md`` §1 and §4).
"""

from __future__ import annotations

from collections.abc import Sequence

from nnre.bundle.format import ALIGNMENT, DIGEST_SIZE, PREAMBLE_SIZE
from nnre.bundle.schema import TensorEntry
from nnre.errors import BundleError


def align(n: int) -> int:
    """The smallest multiple of ALIGNMENT that is >= n."""
    return -(-n // ALIGNMENT) * ALIGNMENT


def data_start(header_len: int) -> int:
    """Absolute offset of the tensor section for a header of ``header_len`` bytes."""
    return align(PREAMBLE_SIZE + header_len + DIGEST_SIZE)


def offsets(sizes: Sequence[int]) -> list[int]:
    """Section-relative offsets of tensors of these byte sizes, in file order."""
    out, at = [], 0
    for n in sizes:
        out.append(at)
        at = align(at + n)
    return out


def file_size(header_len: int, tensors: Sequence[TensorEntry]) -> int:
    """The exact size of a file with this header length and tensor table."""
    last = tensors[-1] if tensors else None
    return data_start(header_len) + (last.offset + last.nbytes if last else 0)


def check_layout(tensors: Sequence[TensorEntry], header_len: int, size: int) -> int:
    """Tensors packed in order at aligned offsets, file ending at the last; returns start."""
    start = data_start(header_len)
    want = offsets([t.nbytes for t in tensors])
    for i, t in enumerate(tensors):
        where = f"header.tensors[{i}] ({t.name!r})"
        if t.offset != want[i]:
            why = _offset_fault(t.offset, want[i], size - start)
            raise BundleError("bad-offset", f"offset {t.offset} is {why}; v1 places it at "
                              f"{want[i]}", field=f"{where}.offset", offset=start + t.offset)
        if start + t.offset + t.nbytes > size:
            raise BundleError("truncated", f"{t.nbytes} bytes at {start + t.offset} run "
                              f"past the end of the file ({size} bytes)",
                              field=where, offset=size)
    end = file_size(header_len, tensors)
    if end > size:
        raise BundleError("truncated", f"tensor section starts at {start}, past the end "
                          f"of the file ({size} bytes)", offset=size)
    if end < size:
        raise BundleError("trailing-bytes", f"{size - end} bytes after the last tensor; "
                          f"the file must end at byte {end}", offset=end)
    return start


def _offset_fault(offset: int, want: int, section: int) -> str:
    if offset > section:
        return f"beyond the end of the tensor section ({section} bytes)"
    if offset % ALIGNMENT:
        return f"not {ALIGNMENT}-byte aligned"
    return "overlaps the previous tensor" if offset < want else "leaves a gap after it"


def padding_ranges(header_len: int, tensors: Sequence[TensorEntry]) -> list[tuple[int, int]]:
    """The absolute [lo, hi) byte ranges that must be zero."""
    start = data_start(header_len)
    gaps = [(PREAMBLE_SIZE + header_len + DIGEST_SIZE, start)]
    for prev, nxt in zip(tensors, tensors[1:], strict=False):
        gaps.append((start + prev.offset + prev.nbytes, start + nxt.offset))
    return gaps
