"""The allowlisted codecs, by id: user data ↔ a model's inputs and outputs.

A bundle names a codec per signature entry in ``metadata.codecs`` (``formats/bundle.md``
§3.5) by one of the ids of :data:`CODEC_TYPES`; nothing in a bundle can name a module or a
callable. ``char`` turns text into indices and one-hot rows, ``sample`` draws one character
from a distribution (repeat penalty, min-p, temperature, top-k, top-p, greedy; seeded),
``argmax-label`` names the largest output, ``tensor`` passes arrays through. NumPy only.
"""

from __future__ import annotations

import math
from collections import deque
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
                            + " ".join(show_char(ch) for ch in missing)
                            + f" (the vocabulary has {len(self.vocab)}: "
                            + "".join(show_char(ch, bare=True) for ch in self.vocab) + ")")
        return [self.index[ch] for ch in text]

    def one_hot(self, text: str, dtype: str = "float32") -> np.ndarray:
        return rows(self.encode(text), len(self.vocab), dtype)


def rows(codes: Sequence[int] | np.ndarray, width: int, dtype: str) -> np.ndarray:
    """What a ``char`` input is fed for these character codes: one-hot rows over the
    vocabulary (width V), or, for an input of ids (``x ∈ ℕ``, width 1), the codes."""
    codes = np.asarray(codes, np.intp)
    if width == 1:
        return codes.reshape(-1, 1).astype(dtype)
    out = np.zeros((len(codes), width), dtype)
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


_accumulate = np.add.accumulate
_largest = np.maximum.reduce


class Sampler:
    """Draws an index from a distribution. The one place sampling is defined, in this order:

    1. ``repeat_penalty`` θ (llama.cpp's, from the CTRL paper): every index among the last
       ``repeat_last_n`` drawn or primed (``remember``) has its logit divided by θ when
       positive, multiplied by θ when ≤ 0. A ``sample`` output holds probabilities, not
       logits, so the logits are recovered as log-probabilities centred to mean 0 over the
       indices of non-zero probability: softmax is blind to a shift of its logits and the
       rule is not, and plain log-probabilities (all ≤ 0) would leave the most likely index
       untouched. On ``samples/lighthouse.bundle`` the read-out's own logits have mean −1.3 ±
       0.7 over the vocabulary (the most likely ≈ +13), so the centred ones differ from them
       by about 1.3 and fall in the same branch of the rule.
    2. ``min_p`` (llama.cpp's): keep the indices whose probability is ≥ min_p × the largest.
    3. ``temperature`` T: p^(1/T); T = 0 is greedy, as in llama.cpp.
    4. ``top_k``, then 5. ``top_p`` (nucleus), as in formats/bundle.md §3.5.
    6. One uniform number per draw from NumPy's PCG64 seeded with ``seed``, then the inverse
       CDF (the first index whose cumulative mass exceeds it), so a seed fixes the text.
       Greedy takes the largest value after step 1 and draws no number.

    Off: ``top_k`` 0/None, ``top_p`` 1/None, ``min_p`` 0/None, ``repeat_penalty`` 1,
    ``repeat_last_n`` 0. Ties keep the lower index.

    The rule for what can be drawn from: every value finite and ≥ 0, with a positive total
    (any scale; it need not sum to 1). Anything else (NaN, ±inf, a negative value, all
    zeros) raises :class:`~nnre.errors.OutputError` naming the draw (1-based step) and the
    first bad value, in every mode including greedy: there is no right character to pick,
    and guessing one would hide a broken model (the old inverse CDF ran off the end).
    """

    def __init__(self, size: int, *, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, greedy: bool = False, seed: int | None = None,
                 min_p: float | None = None, repeat_penalty: float = 1.0,
                 repeat_last_n: int = 64) -> None:
        _check_settings(temperature, top_k, top_p, seed, min_p, repeat_penalty, repeat_last_n)
        self.greedy = greedy or temperature == 0
        self.inv_t = 1.0 / temperature if temperature else 1.0
        self.top_k = top_k if top_k and top_k < size else None
        self.top_p = top_p if top_p is not None and top_p < 1 else None
        self.min_p = min_p or None
        self.penalty = float(repeat_penalty) if repeat_penalty != 1 and repeat_last_n else None
        self.recent: deque[int] = deque(maxlen=repeat_last_n if self.penalty else 0)
        self.seen = np.zeros(size, np.int64)  # how often each index is in ``recent``
        self.plain = not self.greedy and self.inv_t == 1.0 and self.top_k is None \
            and self.top_p is None and self.min_p is None and self.penalty is None
        #: what decides a draw besides the seed (``nnre.draws`` draws equal ones as one)
        self.settings = (self.greedy, self.inv_t, self.top_k, self.top_p, self.min_p,
                         self.penalty)
        self.rng = np.random.default_rng(seed)
        self.draws = 0
        self._cdf = np.empty(size, np.float64)

    def remember(self, codes: Sequence[int]) -> None:
        """Count ``codes`` (a prime) as recent, for the repeat penalty; draws count themselves."""
        if self.penalty is None:
            return
        for code in list(codes)[-(self.recent.maxlen or 1):]:  # a long prime: its tail
            if len(self.recent) == self.recent.maxlen:
                self.seen[self.recent[0]] -= 1
            self.recent.append(code)
            self.seen[code] += 1

    def __call__(self, probs: np.ndarray) -> int:
        """The drawn index; ``probs`` is 1-D, non-negative, any positive total."""
        self.draws += 1
        cdf = self._cdf
        if probs.dtype == np.float64:  # only a float64 output can overflow a float64 sum
            with np.errstate(over="ignore"):
                _accumulate(probs, dtype=np.float64, out=cdf)
        else:  # the ufunc itself, as np.cumsum calls it, without its ~1 µs of wrapping
            _accumulate(probs, dtype=np.float64, out=cdf)
        # NaN fails every comparison, so it lands here too; the checks cost ~1 µs a draw
        if not (probs.size and 0 < cdf[-1] < math.inf and np.minimum.reduce(probs) >= 0):
            raise OutputError(f"sampling step {self.draws}: {not_a_distribution(probs)}")
        if self.plain:
            return int(cdf.searchsorted(self.rng.random() * cdf[-1], side="right"))
        p = self._penalized(probs)
        if self.greedy:
            code = int(p.argmax())
        else:
            _accumulate(self._filtered(p), dtype=np.float64, out=cdf)
            code = int(cdf.searchsorted(self.rng.random() * cdf[-1], side="right"))
        if self.penalty is not None:
            self.remember((code,))
        return code

    def _penalized(self, probs: np.ndarray) -> np.ndarray:
        """Step 1: llama.cpp's repeat penalty on the centred log-probabilities."""
        p = np.asarray(probs, np.float64)
        if self.penalty is None:
            return p
        seen = np.flatnonzero(self.seen)
        if not len(seen):
            return p
        live = p > 0
        logit = np.full(p.shape, -np.inf)
        np.log(p, out=logit, where=live)
        logit[live] -= logit[live].mean()
        z = logit[seen]
        theta = self.penalty
        assert theta is not None
        logit[seen] = np.where(z > 0, z / theta, z * theta)
        return np.exp(logit - logit.max())

    def _filtered(self, p: np.ndarray) -> np.ndarray:
        """Steps 2–5 on the (penalized) float64 distribution."""
        if self.min_p is not None:
            p = np.where(p >= self.min_p * _largest(p), p, 0.0)
        if self.inv_t != 1.0:  # p^(1/T) after scaling the largest to 1: no underflow to 0/0
            p = p / _largest(p)  # a new array: p may be the caller's
            np.power(p, self.inv_t, out=p)
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


def _check_settings(temperature: Any, top_k: Any, top_p: Any, seed: Any, min_p: Any,
                    repeat_penalty: Any, repeat_last_n: Any) -> None:
    """Each setting in its range, or a FeedError naming it, the range and the value."""
    def real(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    def whole(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    rules = (
        ("temperature", temperature, real(temperature) and temperature >= 0,
         "a finite number ≥ 0 (0: greedy)"),
        ("top_k", top_k, top_k is None or (whole(top_k) and top_k >= 0),
         "an integer ≥ 0 (0: off)"),
        ("top_p", top_p, top_p is None or (real(top_p) and 0 < top_p <= 1), "in (0, 1]"),
        ("min_p", min_p, min_p is None or (real(min_p) and 0 <= min_p <= 1),
         "in [0, 1] (0: off)"),
        ("repeat_penalty", repeat_penalty, real(repeat_penalty) and repeat_penalty > 0,
         "a finite number > 0 (1: off)"),
        ("repeat_last_n", repeat_last_n, whole(repeat_last_n) and repeat_last_n >= 0,
         "an integer ≥ 0 (0: off)"),
        ("seed", seed, seed is None or (whole(seed) and seed >= 0), "an integer ≥ 0"),
    )
    for name, value, ok, want in rules:
        if not ok:
            raise FeedError(f"{name} must be {want}, got {value!r}")


def not_a_distribution(probs: np.ndarray) -> str:
    """Why ``probs`` cannot be drawn from, naming the first offending index and value."""
    what = "the output is not a probability distribution"
    bad = np.flatnonzero(~np.isfinite(probs) | (probs < 0))
    if bad.size:
        i = int(bad[0])
        return f"{what}: index {i} is {float(probs[i])!r} (values must be finite and ≥ 0)"
    if not probs.size or not probs.any():
        return f"{what}: every value is 0 (nothing to draw from)"
    return f"{what}: its total overflows to infinity"


def show_char(ch: str, bare: bool = False) -> str:
    """A character as a reader can see it: printable as is, else escaped."""
    if ch.isprintable() and not ch.isspace():
        return ch if bare else repr(ch)
    return repr(ch)[1:-1] if bare else repr(ch)
