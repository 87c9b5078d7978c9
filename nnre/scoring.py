"""Bits per character of a text under a text model: ``nnre score`` and ``Model.score``.

The text is read through the model's ``char`` codec from the zero state, after a prime that
is not scored (by default a newline when the vocabulary has one: a text starts after a line
break, as generation's default prime does), and each character costs −log₂ of the share the
``sample`` output gave it one step before. ``context`` cuts the text into chunks, each read
from the zero state after the prime, as ``llama-perplexity -c`` does. Sequences (the chunks,
or the texts of :func:`score_batch`) run as the rows of one batch, padded to the longest (a
step reads only earlier steps, so what follows a row's end changes none of its bits),
through ``Model.run`` in pieces with the state carried, so memory follows the piece, not the
text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnre import budget
from nnre.codecs import CharCodec, not_a_distribution, rows, show_char, text_io
from nnre.errors import FeedError, OutputError

PIECE = 4096  # rows × steps per Model.run call: one-hot rows and outputs of this many
ROWS = 256  # sequences run as one batch at most
BYTES_PER_CHAR = 48  # code points, codes, positions, bits and masks kept per character


@dataclass(frozen=True)
class Score:
    """``bits[k]`` is −log₂ p of ``text[positions[k]]``; ``skipped`` characters were outside
    the vocabulary and left out (``skip_unknown``)."""

    bits: np.ndarray
    positions: np.ndarray
    skipped: int = 0

    @property
    def chars(self) -> int:
        return int(self.bits.size)

    @property
    def bits_per_char(self) -> float:
        return float(self.bits.mean()) if self.bits.size else math.nan

    @property
    def perplexity(self) -> float:
        """Per character: 2 ** bits_per_char (what llama-perplexity reports per token)."""
        return float(2.0 ** self.bits_per_char)


def score(model: Any, text: str, *, prime: str | None = None, context: int | None = None,
          skip_unknown: bool = False, source: str = "<text>") -> Score:
    """Score ``text`` (see the module). ``prime=""`` reads the first character of each chunk
    without scoring it; a character outside the vocabulary is a FeedError naming ``source``,
    its line and column, unless ``skip_unknown``."""
    io = text_io(model.metadata, list(model.inputs), list(model.outputs))
    if not isinstance(text, str):
        raise FeedError(f"score takes a str, got {type(text).__name__}")
    if context is not None and (isinstance(context, bool) or not isinstance(context, int)
                                or context < 1):
        raise FeedError(f"context must be an integer ≥ 1, got {context!r}")
    if prime is None:
        prime = "\n" if "\n" in io.chars.index else ""
    head = np.array(io.chars.encode(prime), np.int64)
    budget.check(BYTES_PER_CHAR * len(text), f"scoring {len(text):,} characters", FeedError)
    codes, positions, skipped = _codes(io.chars, text, skip_unknown, source)
    step = context or max(len(codes), 1)
    starts = range(0, len(codes), step)
    seqs = [np.concatenate([head, codes[a:a + step]]) for a in starts]
    wheres = [positions[a:a + step] for a in starts]
    bits = _rows_bits(model, io.input, io.output, head.size, seqs,
                      [(text, source, w) for w in wheres])
    if not bits:
        return Score(np.zeros(0), np.zeros(0, np.int64), skipped)
    kept = [w[len(w) - b.size:] for w, b in zip(wheres, bits, strict=True)]
    return Score(np.concatenate(bits), np.concatenate(kept), skipped)


def score_batch(model: Any, texts: Sequence[str], *, prime: str | None = None,
                skip_unknown: bool = False, source: str = "<texts>") -> list[Score]:
    """:func:`score` of each text (no ``context``), run as one batch: the same bits, fewer
    and wider NumPy calls (what batch inference, e.g. :mod:`nnre.ray`, runs). Errors name
    ``source[i]`` and the line and column in text i."""
    io = text_io(model.metadata, list(model.inputs), list(model.outputs))
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise FeedError("score_batch takes a sequence of str")
    if prime is None:
        prime = "\n" if "\n" in io.chars.index else ""
    head = np.array(io.chars.encode(prime), np.int64)
    budget.check(BYTES_PER_CHAR * (len(head) + max(map(len, texts), default=0)) * len(texts),
                 f"scoring {len(texts):,} texts as one batch", FeedError)
    coded = [_codes(io.chars, t, skip_unknown, f"{source}[{i}]") for i, t in enumerate(texts)]
    seqs = [np.concatenate([head, codes]) for codes, _, _ in coded]
    bits = _rows_bits(model, io.input, io.output, head.size, seqs,
                      [(t, f"{source}[{i}]", c[1]) for i, (t, c) in enumerate(zip(texts, coded,
                                                                                    strict=True))])
    return [Score(b, where[len(where) - b.size:], skipped)
            for b, (_, where, skipped) in zip(bits, coded, strict=True)]


def _codes(chars: CharCodec, text: str, skip_unknown: bool, source: str
           ) -> tuple[np.ndarray, np.ndarray, int]:
    """Vocabulary indices of the text's characters and their positions, vectorized over code
    points (a Python loop would cost ~0.1 s per MB)."""
    points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), "<u4")
    vocab = np.array([ord(ch) for ch in chars.vocab], np.uint32)
    order = np.argsort(vocab)
    at = np.minimum(np.searchsorted(vocab[order], points), len(vocab) - 1)
    known = vocab[order][at] == points
    unknown = np.flatnonzero(~known)
    if unknown.size and not skip_unknown:
        i = int(unknown[0])
        raise FeedError(f"{source}:{_line_col(text, i)}: {show_char(text[i])} "
                        f"(U+{ord(text[i]):04X}) is not in the model's vocabulary "
                        f"({unknown.size:,} character(s) of the text are not; --skip-unknown / "
                        "skip_unknown=True leaves them out)")
    return order[at[known]], np.flatnonzero(known), int(unknown.size)


def _line_col(text: str, i: int) -> str:
    line = text.count("\n", 0, i) + 1
    return f"{line}:{i - (text.rfind(chr(10), 0, i) + 1) + 1}"


def _rows_bits(model: Any, input_name: str, output_name: str, head: int,
               seqs: list[np.ndarray], places: list[tuple[str, str, np.ndarray]]
               ) -> list[np.ndarray]:
    """Bits of each sequence's characters after its first ``head`` ones, each read from the
    zero state (all but the first when ``head`` is 0), ``ROWS`` sequences at a time.
    ``places[i]`` (text, source, positions) locates sequence i's characters for errors."""
    out: list[np.ndarray] = []
    for lo in range(0, len(seqs), ROWS):
        out += _group_bits(model, input_name, output_name, head, seqs[lo:lo + ROWS],
                           places[lo:lo + ROWS])
    return out


def _group_bits(model: Any, input_name: str, output_name: str, head: int,
                seqs: list[np.ndarray], places: list[tuple[str, str, np.ndarray]]
                ) -> list[np.ndarray]:
    lengths = np.array([s.size for s in seqs])
    batch, steps = len(seqs), max(int(lengths.max()) - 1, 0)
    codes = np.zeros((steps + 1, batch), np.intp)
    for b, seq in enumerate(seqs):
        codes[:seq.size, b] = seq
    width = model.inputs[input_name].shape[0]
    bits = np.zeros((steps, batch))
    state, piece = None, max(1, PIECE // batch)
    for a in range(0, steps, piece):
        e = min(a + piece, steps)
        xs = rows(codes[a:e].reshape(-1), width, model.dtype).reshape(e - a, batch, -1)
        ys, state = model.run({input_name: xs}, state)
        probs = np.asarray(ys[output_name], np.float64).reshape(e - a, batch, -1)
        total = probs.sum(axis=2)
        live = np.arange(a + 1, e + 1)[:, None] < lengths[None, :]  # predicts a character
        bad = live & ((~(np.isfinite(total) & (total > 0))) | (probs < 0).any(axis=2))
        if bad.any():
            t, b = (int(i) for i in np.argwhere(bad)[0])
            raise OutputError(f"scoring {_place(places[b], t + 1 - head)}: "
                              f"{not_a_distribution(probs[t - a, b])}")
        picked = np.take_along_axis(probs, codes[a + 1:e + 1, :, None], axis=2)[..., 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            bits[a:e] = np.where(live, -np.log2(picked / total), 0.0)
    first = max(head - 1, 0)
    return [bits[first:max(n - 1, first), b].copy() for b, n in enumerate(lengths)]


def _place(place: tuple[str, str, np.ndarray], k: int) -> str:
    """Where the character a step predicts is: ``source:line:column``, or the prime."""
    text, source, where = place
    return f"{source}:{_line_col(text, int(where[k]))}" if k >= 0 else "the prime"
