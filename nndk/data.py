"""Training data: a text file as character streams, or arrays from .npz / CSV files.

Text follows char-rnn: the corpus is split into training and validation parts, each part is
cut into ``batch`` parallel streams, and a batch is the next ``seq_length`` characters of
every stream, so the state carried from one batch continues the same text.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnre import budget
from nnre.bundle.format import UNKNOWN_CHAR
from nnre.errors import NnreError
from nnre.files import open_regular
from nnre.npz import read_npz


class DataError(NnreError):
    """Training data that cannot be used: empty, too short, unreadable, mismatched."""

    code = "bad-data"


@dataclass
class TextData:
    """A character corpus: vocabulary, encoded splits, and the file's sha256."""

    vocab: str
    train: np.ndarray  # int32 character indices
    val: np.ndarray
    sha256: str
    folded: tuple[int, int] = (0, 0)  # characters read as U+FFFD: (distinct, occurrences)

    @property
    def size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> np.ndarray:
        return encode(text, self.vocab, "the text")


def vocabulary(text: str, min_count: int = 1) -> str:
    """The sorted characters of ``text`` seen at least ``min_count`` times, plus the unknown
    symbol U+FFFD if any is left out: rare characters then read as it (and so do characters
    a prime brings at run time, by the bundle's char codec)."""
    counts = Counter(text)
    kept = {ch for ch, n in counts.items() if n >= min_count}
    if not kept:
        raise DataError(f"--min-count {min_count} leaves no character: the most frequent one "
                        f"appears {max(counts.values())} times")
    if len(kept) < len(counts):
        kept.add(UNKNOWN_CHAR)
    return "".join(sorted(kept))


def encode(text: str, vocab: str, what: str) -> np.ndarray:
    """Indices into ``vocab``; a character outside it is the unknown symbol's if ``vocab``
    has one (U+FFFD), else a DataError naming the first few."""
    index = {ch: i for i, ch in enumerate(vocab)}
    unknown = index.get(UNKNOWN_CHAR, -1)
    if unknown < 0:
        outside = sorted({ch for ch in text if ch not in index})
        if outside:
            raise DataError(f"{what}: characters not in the model's vocabulary: "
                            f"{outside[:10]!r}")
    return np.fromiter((index.get(ch, unknown) for ch in text), dtype=np.int32,
                       count=len(text))


def split_at(count: int, val_frac: float, rule: str = "tail") -> int:
    """Where the training part of ``count`` items ends and the held-out part begins.

    "tail" holds out the last ⌊count·val_frac⌋; "nanogpt" keeps the first
    ⌊count·(1 − val_frac)⌋ for training, as nanoGPT's ``data[:int(n*0.9)]`` does (for
    tiny Shakespeare at 0.1, 1,003,854 characters where "tail" keeps 1,003,855)."""
    if rule == "nanogpt":
        return int(count * (1 - val_frac))
    return count - int(count * val_frac)


def load_text(path: str | Path, val_frac: float = 0.1, vocab: str | None = None,
              min_count: int = 1, split: str = "tail") -> TextData:
    """Read a UTF-8 text file; the vocabulary is its sorted set of characters (those seen at
    least ``min_count`` times, and U+FFFD for the rest), or ``vocab`` when given; the last
    part is held out for validation as ``split`` says (``split_at``)."""
    with open_regular(path, DataError) as f:  # a FIFO or device would block forever
        raw = f.read()
    text = _decode(Path(path), raw, "the text")
    if len(text) < 2:
        raise DataError(f"{path}: needs at least 2 characters of text, has {len(text)}")
    if not 0 <= val_frac < 1:
        raise DataError(f"--val-frac must be in [0, 1), got {val_frac}")
    vocab = vocab if vocab is not None else vocabulary(text, min_count)
    codes = encode(text, vocab, str(path))
    cut = split_at(len(codes), val_frac, split)
    known = set(vocab)
    outside = Counter(ch for ch in text if ch not in known)
    return TextData(vocab, codes[:cut], codes[cut:], hashlib.sha256(raw).hexdigest(),
                    (len(outside), sum(outside.values())))


class Streams:
    """``batch`` contiguous streams over one split, read ``seq_length`` characters at a time."""

    def __init__(self, codes: np.ndarray, batch: int, seq_length: int, what: str) -> None:
        per_stream = (len(codes) - 1) // batch
        if per_stream < seq_length:
            raise DataError(f"{what} split has {len(codes)} characters: too few for "
                            f"{batch} streams of {seq_length} (+1) characters; lower "
                            "--batch-size or --seq-length")
        self.inputs = codes[: per_stream * batch].reshape(batch, per_stream)
        self.targets = codes[1: per_stream * batch + 1].reshape(batch, per_stream)
        self.seq_length = seq_length
        self.batches = per_stream // seq_length

    def batch(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) of batch ``index``, each (seq_length, batch) int32."""
        s = (index % self.batches) * self.seq_length
        e = s + self.seq_length
        return self.inputs[:, s:e].T, self.targets[:, s:e].T


def one_hot(codes: np.ndarray, size: int, dtype: str) -> np.ndarray:
    out = np.zeros((*codes.shape, size), dtype=dtype)
    np.put_along_axis(out, codes[..., None], 1, axis=-1)
    return out


def _decode(path: Path, raw: bytes, what: str) -> str:
    """``raw`` as UTF-8, or a DataError naming the line, column and byte that is not."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise DataError(f"{path}:{line}:{column}: {what} is not UTF-8 (byte {err.start}: "
                        f"{raw[err.start]:#04x})") from None


def load_arrays(path: str | Path, names: Collection[str] = ()) -> dict[str, np.ndarray]:
    """Arrays from an .npz (no pickles) or a CSV whose header names the columns.

    Every value is checked here, before any training: a non-numeric array or a NaN/Inf is
    reported with its array, row and column rather than surfacing later as a diverging loss.
    ``names`` are the arrays wanted: a CSV column named exactly so is that array (see
    :func:`column_groups`).
    """
    path = Path(path)
    if path.suffix == ".npz":
        arrays = _read_npz(path)
        for name, array in arrays.items():
            _check_numeric(path, name, array)
        return arrays
    if path.suffix == ".csv":
        return _read_csv(path, names)
    raise DataError(f"{path}: numeric data must be .npz or .csv")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz, read within the memory budget (declared sizes and compression
    ratios checked before anything is inflated; object arrays never unpickled)."""
    with open_regular(path, DataError) as f:
        return read_npz(f, str(path), budget.limit(), DataError)


def _check_numeric(path: Path, name: str, array: np.ndarray) -> None:
    """Refuse a non-numeric array, or one holding NaN/Inf, naming the first bad element."""
    if array.dtype.kind not in "biuf":
        raise DataError(f"{path}: array {name!r} has dtype {array.dtype}; numbers are needed")
    if array.dtype.kind == "f":
        bad = np.argwhere(~np.isfinite(array))
        if len(bad):
            where = tuple(int(i) for i in bad[0])
            raise DataError(f"{path}: array {name!r} holds {len(bad)} NaN/Inf value(s), the "
                            f"first {array[where]} at index {list(where)} (row {where[0]})")


def _read_csv(path: Path, names: Collection[str]) -> dict[str, np.ndarray]:
    """Columns of a CSV grouped into arrays by header name (:func:`column_groups`); every cell
    must be a finite number, and a bad one is reported by line and column name."""
    with open_regular(path, DataError) as f:
        text = _decode(path, f.read(), "the CSV")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if len(rows) < 2:
        raise DataError(f"{path}: a header line and at least one row are needed")
    header, body = rows[0], rows[1:]
    groups = column_groups(path, header, names)
    table = np.empty((len(body), len(header)))
    for r, row in enumerate(body):
        line = r + 2
        if len(row) != len(header):
            raise DataError(f"{path}:{line}: {len(row)} values, the header has {len(header)}")
        for c, cell in enumerate(row):
            table[r, c] = _cell(path, line, header[c], cell)
    return {k: table[:, cols] for k, cols in groups.items()}


NUMBERED = (re.compile(r"(?P<base>.+)\.(?P<index>[0-9]+)"),  # x.0, x.1, …
            re.compile(r"(?P<base>[A-Za-z_]*[A-Za-z])(?P<index>[0-9]+)"))  # x0, x1, …


def column_groups(path: Path, header: list[str], names: Collection[str] = ()
                  ) -> dict[str, list[int]]:
    """Which columns make each array: ``x.0, x.1, …`` and ``x0, x1, …`` (numbered from 0 or
    from 1, in any order) are array ``x`` in index order; ``x.a, x.b`` are array ``x`` in
    header order; any other name is an array of one column. A column named exactly like a
    wanted array (``names``: a model input ``x1``) is that array."""
    members: dict[str, list[tuple[int | None, int, str]]] = {}
    for col, raw in enumerate(header):
        name = raw.strip()
        base, index = name, None
        if name not in names:
            match = next((m for m in (r.fullmatch(name) for r in NUMBERED) if m), None)
            if match:
                base, index = match["base"], int(match["index"])
            elif "." in name:
                base = name.split(".")[0].strip()
        members.setdefault(base, []).append((index, col, name))
    groups = {}
    for base, cols in members.items():
        spelled = ", ".join(repr(name) for _, _, name in cols)
        if len(cols) > 1 and any(name == base for _, _, name in cols):
            raise DataError(f"{path}: columns {spelled} all name array {base!r}; number them "
                            f"({base}.0, {base}.1, …) or rename one")
        indices = [i for i, _, _ in cols]
        if None not in indices:
            first = min(i for i in indices if i is not None)
            want = list(range(first, first + len(cols)))
            if first > 1 or sorted(i for i in indices if i is not None) != want:
                raise DataError(f"{path}: the columns of array {base!r} ({spelled}) must be "
                                f"numbered 0, 1, 2, … or 1, 2, 3, … without gaps or repeats")
            cols = sorted(cols, key=lambda c: c[0] if c[0] is not None else -1)
        groups[base] = [col for _, col, _ in cols]
    return groups


def _cell(path: Path, line: int, column: str, cell: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise DataError(f"{path}:{line}: column {column!r}: {cell!r} is not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{path}:{line}: column {column!r}: {cell!r} is not finite; "
                        "NaN/Inf cannot be trained on")
    return value
