"""Bits per character of a text under a text model: ``nnre score`` and ``Model.score``.

The text is read through the model's ``char`` codec from the zero state, after a prime that
is not scored (by default a newline when the vocabulary has one: a text starts after a line
break, as generation's default prime does), and each character costs −log₂ of the share the
``sample`` output gave it one step before. ``context`` cuts the text into chunks, each read
from the zero state after the prime, as ``llama-perplexity -c`` does; a model with a context
of its own (a transformer) is scored in chunks that fit it. Sequences (the chunks, or those
of every text of :func:`score_batch`) run as the rows of one batch, padded to the longest (a
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
    if not isinstance(text, str):
        raise FeedError(f"score takes a str, got {type(text).__name__}")
    if context is not None and (isinstance(context, bool) or not isinstance(context, int)
                                or context < 1):
        raise FeedError(f"context must be an integer ≥ 1, got {context!r}")
    return _score_texts(model, [text], [source], prime, context, skip_unknown)[0]


def score_batch(model: Any, texts: Sequence[str], *, prime: str | None = None,
                skip_unknown: bool = False, source: str = "<texts>") -> list[Score]:
    """:func:`score` of each text (no ``context``), run as one batch: the same bits, fewer
    and wider NumPy calls (what batch inference, e.g. :mod:`nnre.ray`, runs). Errors name
    ``source[i]`` and the line and column in text i."""
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise FeedError("score_batch takes a sequence of str")
    return _score_texts(model, list(texts), [f"{source}[{i}]" for i in range(len(texts))],
                        prime, None, skip_unknown)


def _score_texts(model: Any, texts: list[str], sources: list[str], prime: str | None,
                 context: int | None, skip_unknown: bool) -> list[Score]:
    """Each text cut into its chunks (``context``, and the model's own context), every chunk
    of every text a row of one batch, the bits put back together per text."""
    io = text_io(model.metadata, list(model.inputs), list(model.outputs))
    if prime is None:
        prime = "\n" if "\n" in io.chars.index else ""
    head = np.array(io.chars.encode(prime), np.int64)
    budget.check(BYTES_PER_CHAR * sum(len(head) + len(t) for t in texts),
                 f"scoring {sum(map(len, texts)):,} characters", FeedError)
    coded = [_codes(io.chars, t, skip_unknown, src) for t, src in zip(texts, sources,
                                                                      strict=True)]
    seqs, places, owner = [], [], []
    for i, (codes, positions, _) in enumerate(coded):
        step = _step(model, head, context or max(len(codes), 1))
        for a in range(0, len(codes), step):
            seqs.append(np.concatenate([head, codes[a:a + step]]))
            places.append((texts[i], sources[i], positions[a:a + step]))
            owner.append(i)
    bits = _rows_bits(model, io.input, io.output, head.size, seqs, places)
    rows: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in texts]
    for b, place, i in zip(bits, places, owner, strict=True):
        rows[i].append((b, place[2]))
    out = []
    for mine, (_, _, skipped) in zip(rows, coded, strict=True):
        if not mine:
            out.append(Score(np.zeros(0), np.zeros(0, np.int64), skipped))
            continue
        out.append(Score(np.concatenate([b for b, _ in mine]),
                         np.concatenate([w[len(w) - b.size:] for b, w in mine]), skipped))
    return out


def _step(model: Any, head: np.ndarray, step: int) -> int:
    """Characters per chunk: ``step``, or fewer when the model has a context of its own (a
    transformer reads at most that many steps, the prime's included)."""
    limit = getattr(model, "context", None)
    if not limit:
        return step
    room = limit - max(len(head), 1) + 1
    if room < 1:
        raise FeedError(f"the prime has {len(head)} characters; the model's context holds "
                        f"{limit}")
    return min(step, room)


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
    zero state (all but the first when ``head`` is 0), ``ROWS`` sequences of similar length
    at a time.
    ``places[i]`` (text, source, positions) locates sequence i's characters for errors."""
    order = sorted(range(len(seqs)), key=lambda i: seqs[i].size)  # little padding
    out: list[np.ndarray] = [np.zeros(0)] * len(seqs)
    for lo in range(0, len(order), ROWS):
        group = order[lo:lo + ROWS]
        got = _group_bits(model, input_name, output_name, head, [seqs[i] for i in group],
                          [places[i] for i in group])
        for i, bits in zip(group, got, strict=True):
            out[i] = bits
    return out


def _group_bits(model: Any, input_name: str, output_name: str, head: int,
                seqs: list[np.ndarray], places: list[tuple[str, str, np.ndarray]]
                ) -> list[np.ndarray]:
    lengths = np.array([s.size for s in seqs])
    batch, steps = len(seqs), max(int(lengths.max()) - 1, 0)
    budget.check(16 * (steps + 1) * batch, f"scoring {batch} sequences of up to "
                 f"{steps + 1:,} characters as one batch", FeedError)
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
