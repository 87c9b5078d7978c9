"""Bits per character of a text under a text model: ``nnre score`` and ``Model.score``.

The text is read through the model's ``char`` codec from the zero state, after a prime that
is not scored (by default a newline when the vocabulary has one: a text starts after a line
break, as generation's default prime does), and each character costs −log₂ of the share the
``sample`` output gave it one step before. ``context`` cuts the text into chunks, each read
from the zero state after the prime, as ``llama-perplexity -c`` does; a model with a context
of its own (a transformer) is scored in chunks that fit it. The sequence runs
through ``Model.run`` in pieces with the state carried, so memory follows the piece, not the
text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnre import budget
from nnre.codecs import CharCodec, not_a_distribution, rows, show_char, text_io
from nnre.errors import FeedError, OutputError

PIECE = 4096  # steps per Model.run call: one-hot rows and outputs of this many characters
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
    if model.program.back_out:
        name = next(iter(model.program.back_out))
        raise FeedError(f"'{name}' is backward state: the model reads later characters of the "
                        "text before it gives the share of one, so its bits are not a score")
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
    limit = getattr(model, "context", None)  # a transformer reads at most this many steps
    if limit:
        room = limit - max(len(head), 1) + 1
        if room < 1:
            raise FeedError(f"the prime has {len(head)} characters; the model's context holds "
                            f"{limit}")
        step = min(step, room)
    bits, kept = [], []
    for start in range(0, len(codes), step):
        chunk = codes[start:start + step]
        where = positions[start:start + step]
        got = _chunk_bits(model, io.input, io.output, head, chunk, where, text, source)
        bits.append(got)
        kept.append(where[len(where) - got.size:])
    if not bits:
        return Score(np.zeros(0), np.zeros(0, np.int64), skipped)
    return Score(np.concatenate(bits), np.concatenate(kept), skipped)


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


def _chunk_bits(model: Any, input_name: str, output_name: str, head: np.ndarray,
                chunk: np.ndarray, where: np.ndarray, text: str, source: str) -> np.ndarray:
    """Bits of each character of ``chunk`` read after ``head`` from the zero state (all of
    them when there is a head, else all but the first)."""
    seq = np.concatenate([head, chunk])
    vocab_size = model.inputs[input_name].shape[0]
    bits = np.empty(max(seq.size - 1, 0))
    state = None
    for a in range(0, bits.size, PIECE):
        b = min(a + PIECE, bits.size)
        xs = rows(seq[a:b], vocab_size, model.dtype)
        ys, state = model.run({input_name: xs}, state)
        probs = np.asarray(ys[output_name], np.float64)
        total = probs.sum(axis=1)
        bad = ~(np.isfinite(total) & (total > 0)) | (probs < 0).any(axis=1)
        if bad.any():
            t = a + int(np.flatnonzero(bad)[0])
            k = t + 1 - head.size  # the character this step predicts, within the chunk
            at = f"{source}:{_line_col(text, int(where[k]))}" if k >= 0 else "the prime"
            raise OutputError(f"scoring {at}: {not_a_distribution(probs[t - a])}")
        with np.errstate(divide="ignore"):
            bits[a:b] = -np.log2(probs[np.arange(b - a), seq[a + 1:b + 1]] / total)
    return bits[max(head.size - 1, 0):]
