"""The allowlisted codecs, by id: user data ↔ a model's inputs and outputs.

A bundle names a codec per signature entry in ``metadata.codecs`` (``formats/bundle.md``
§3.5) by one of the ids of :data:`CODEC_TYPES`; nothing in a bundle can name a module or a
callable. ``char`` turns text into indices and one-hot rows, ``sample`` draws one character
from a distribution (temperature, top-k, top-p, greedy; seeded), ``argmax-label`` names the
largest output, ``tensor`` passes arrays through. NumPy only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnre.bundle.format import CODECS as CODEC_PARAMS
from nnre.bundle.format import UNKNOWN_CHAR
from nnre.errors import BundleError, FeedError, OutputError


class TensorCodec:
    """``tensor``: the array as is."""

    id = "tensor"

    def decode(self, values: np.ndarray) -> Any:
        return np.asarray(values).tolist()


class CharCodec:
    """``char``: text ↔ indices into ``vocab`` ↔ one-hot rows.

    A vocab holding U+FFFD (``UNKNOWN_CHAR``; a model trained with ``--min-count`` has it)
    reads any character outside it as that symbol, as the model was trained to."""

    id = "char"

    def __init__(self, vocab: Sequence[str]) -> None:
        self.vocab = list(vocab)
        self.index = {ch: i for i, ch in enumerate(self.vocab)}
        self.unknown = self.index.get(UNKNOWN_CHAR)

    def encode(self, text: str) -> list[int]:
        """Indices of the characters; any outside the vocabulary is the unknown symbol's, or
        (without one) a FeedError naming them all."""
        if self.unknown is not None:
            return [self.index.get(ch, self.unknown) for ch in text]
        missing = sorted({ch for ch in text if ch not in self.index})
        if missing:
            raise FeedError(f"{len(missing)} character(s) not in the model's vocabulary: "
                            + " ".join(_show(ch) for ch in missing)
                            + f" (the vocabulary has {len(self.vocab)}: "
                            + "".join(_show(ch, bare=True) for ch in self.vocab) + ")")
        return [self.index[ch] for ch in text]

    def one_hot(self, text: str, dtype: str = "float32") -> np.ndarray:
        codes = self.encode(text)
        out = np.zeros((len(codes), len(self.vocab)), dtype)
        out[np.arange(len(codes)), codes] = 1
        return out


class SampleCodec:
    """``sample``: a distribution over ``vocab`` → a character, drawn by a :class:`Sampler`."""

    id = "sample"

    def __init__(self, vocab: Sequence[str]) -> None:
        self.vocab = list(vocab)

    def decode(self, probs: np.ndarray, sampler: Sampler) -> str:
        return self.vocab[sampler(np.asarray(probs).reshape(-1))]


class LabelCodec:
    """``argmax-label``: the index of the largest value → its label (first one on ties)."""

    id = "argmax-label"

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = list(labels)

    def decode(self, values: np.ndarray) -> Any:
        arr = np.asarray(values)
        if arr.ndim == 1:
            return self.labels[int(arr.argmax())]
        return [self.decode(row) for row in arr]


#: The allowlist: id → the class implementing it. Same ids as the format's table.
CODEC_TYPES: dict[str, type] = {c.id: c for c in (TensorCodec, CharCodec, SampleCodec,
                                                  LabelCodec)}
assert set(CODEC_TYPES) == set(CODEC_PARAMS), "codec table and format table disagree"


def make_codec(entry: Mapping[str, Any]) -> Any:
    """A codec from its bundle entry ``{"id": …, param: …}``; unknown ids are refused."""
    cid = entry.get("id")
    if cid not in CODEC_TYPES:
        raise BundleError("unknown-codec",
                          f"unknown codec id {cid!r}; known ids: {', '.join(CODEC_TYPES)}")
    param = CODEC_PARAMS[cid][0]
    return CODEC_TYPES[cid](entry[param]) if param else CODEC_TYPES[cid]()


def codecs_of(metadata: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """The codec of each named input or output; ``tensor`` where the bundle names none."""
    table = metadata.get("codecs") or {}
    return {n: make_codec(table[n]) if n in table else TensorCodec() for n in names}


@dataclass(frozen=True)
class TextIO:
    """A text model's ends: the ``char`` input and the ``sample`` output over one vocab."""

    input: str
    output: str
    chars: CharCodec


def text_io(metadata: Mapping[str, Any], inputs: Sequence[str], outputs: Sequence[str]
            ) -> TextIO:
    ins = {n: c for n, c in codecs_of(metadata, inputs).items() if isinstance(c, CharCodec)}
    outs = {n: c for n, c in codecs_of(metadata, outputs).items()
            if isinstance(c, SampleCodec)}
    if len(inputs) != 1 or len(ins) != 1 or len(outs) != 1:
        raise FeedError("this model does not generate text: that needs exactly one input, "
                        "with a 'char' codec, and one output with a 'sample' codec (it has "
                        f"inputs {list(inputs)}, outputs {list(outputs)}); feed tensors instead")
    (iname, chars), (oname, sample) = next(iter(ins.items())), next(iter(outs.items()))
    if chars.vocab != sample.vocab:
        raise FeedError(f"the 'char' codec of '{iname}' and the 'sample' codec of '{oname}' "
                        "have different vocabularies")
    return TextIO(iname, oname, chars)


class Sampler:
    """Draws an index from a distribution: temperature, then top-k, then top-p, or greedy.

    One uniform number per draw from NumPy's PCG64 seeded with ``seed``, then the inverse
    CDF (the first index whose cumulative mass exceeds it), so a seed fixes the text.
    ``top_k`` 0/None and ``top_p`` 1/None mean off. Ties keep the lower index.

    The rule for what can be drawn from: every value finite and ≥ 0, with a positive total
    (any scale; it need not sum to 1). Anything else (NaN, ±inf, a negative value, all
    zeros) raises :class:`~nnre.errors.OutputError` naming the draw (1-based step) and the
    first bad value, in every mode including greedy: there is no right character to pick,
    and guessing one would hide a broken model (the old inverse CDF ran off the end).
    """

    def __init__(self, size: int, *, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, greedy: bool = False, seed: int | None = None
                 ) -> None:
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)
                and temperature > 0):
            raise FeedError(f"temperature must be a finite number > 0, got {temperature!r}")
        if top_k is not None and (not isinstance(top_k, int) or top_k < 0):
            raise FeedError(f"top_k must be an integer ≥ 0 (0: off), got {top_k!r}")
        if top_p is not None and not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
            raise FeedError(f"top_p must be in (0, 1], got {top_p!r}")
        if seed is not None and (not isinstance(seed, int) or seed < 0):
            raise FeedError(f"seed must be an integer ≥ 0, got {seed!r}")
        self.greedy = greedy
        self.inv_t = 1.0 / temperature
        self.top_k = top_k if top_k and top_k < size else None
        self.top_p = top_p if top_p is not None and top_p < 1 else None
        self.plain = self.inv_t == 1.0 and self.top_k is None and self.top_p is None
        self.rng = np.random.default_rng(seed)
        self.draws = 0
        self._cdf = np.empty(size, np.float64)

    def __call__(self, probs: np.ndarray) -> int:
        """The drawn index; ``probs`` is 1-D, non-negative, any positive total."""
        self.draws += 1
        cdf = self._cdf
        if probs.dtype == np.float64:  # only a float64 output can overflow a float64 sum
            with np.errstate(over="ignore"):
                np.cumsum(probs, dtype=np.float64, out=cdf)
        else:
            np.cumsum(probs, dtype=np.float64, out=cdf)
        # NaN fails every comparison, so it lands here too; the checks cost ~1 µs a draw
        if not (probs.size and 0 < cdf[-1] < math.inf and np.minimum.reduce(probs) >= 0):
            raise OutputError(f"sampling step {self.draws}: {_not_a_distribution(probs)}")
        if self.greedy:
            return int(probs.argmax())
        if not self.plain:
            np.cumsum(self._filtered(probs), dtype=np.float64, out=cdf)
        return int(cdf.searchsorted(self.rng.random() * cdf[-1], side="right"))

    def _filtered(self, probs: np.ndarray) -> np.ndarray:
        p = np.asarray(probs, np.float64)
        if self.inv_t != 1.0:  # p^(1/T) after scaling the largest to 1: no underflow to 0/0
            p = np.power(p / p.max(), self.inv_t)
        if self.top_k is None and self.top_p is None:
            return p
        order = np.argsort(-p, kind="stable")
        keep = len(p) if self.top_k is None else self.top_k
        if self.top_p is not None:
            mass = np.cumsum(p[order[:keep]])
            keep = min(keep, int(mass.searchsorted(self.top_p * mass[-1], side="left")) + 1)
        out = np.zeros_like(p)
        out[order[:keep]] = p[order[:keep]]
        return out


def _not_a_distribution(probs: np.ndarray) -> str:
    """Why ``probs`` cannot be drawn from, naming the first offending index and value."""
    what = "the output is not a probability distribution"
    bad = np.flatnonzero(~np.isfinite(probs) | (probs < 0))
    if bad.size:
        i = int(bad[0])
        return f"{what}: index {i} is {float(probs[i])!r} (values must be finite and ≥ 0)"
    if not probs.size or not probs.any():
        return f"{what}: every value is 0 (nothing to draw from)"
    return f"{what}: its total overflows to infinity"


def _show(ch: str, bare: bool = False) -> str:
    """A character as a reader can see it: printable as is, else escaped."""
    if ch.isprintable() and not ch.isspace():
        return ch if bare else repr(ch)
    return repr(ch)[1:-1] if bare else repr(ch)
