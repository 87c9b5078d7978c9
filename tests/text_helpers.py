"""Text-model fixtures and the independent oracle for generation: a plain-Python sampler
driven by the hand-written NumPy LSTM of ``reference.py``, with the same seed.

The oracle follows the sampling rules of formats/bundle.md §3.5 written out longhand (sorted
lists, running sums) rather than nnre's NumPy formulation.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import reference
from bundle_helpers import lstm_content, lstm_weights

from nnre.bundle.write import write

VOCAB = list("abcde fgh\n")
WORDS = "the quick brown fox jumps over a lazy dog and the cat naps".split()


def word_corpus(folder: Path, words: int = 3000) -> Path:
    """A training text of ``words`` words drawn (seed 0) from a dozen: small, with repeats."""
    rng = random.Random(0)
    path = folder / "corpus.txt"
    path.write_text(" ".join(rng.choice(WORDS) for _ in range(words)), encoding="utf-8")
    return path


def text_bundle(path: Path, *, hidden: int = 6, vocab: list[str] | None = None,
                dtype: str = "float64", seed: int = 0, **meta: Any) -> Path:
    """A char-LSTM bundle with ``char``/``sample`` codecs (and any extra metadata)."""
    vocab = vocab or VOCAB
    content = lstm_content(hidden, len(vocab), dtype, codecs={
        "x": {"id": "char", "vocab": vocab}, "y": {"id": "sample", "vocab": vocab}}, **meta)
    if seed:
        content = content.__class__(content.equations, content.dtype, content.dims,
                                    content.signature, content.metadata,
                                    lstm_weights(hidden, len(vocab), seed, dtype))
    write(path, content)
    return path


def oracle_penalized(probs: list[float], recent: list[int], penalty: float) -> list[float]:
    """llama.cpp's repeat penalty (divide a positive logit by the penalty, multiply one ≤ 0)
    on log-probabilities centred to mean 0 over the non-zero entries, longhand."""
    live = [i for i, q in enumerate(probs) if q > 0]
    logit = {i: math.log(probs[i]) for i in live}
    mean = sum(logit.values()) / len(live)
    z = {i: v - mean for i, v in logit.items()}
    for i in set(recent) & set(live):
        z[i] = z[i] / penalty if z[i] > 0 else z[i] * penalty
    top = max(z.values())
    return [math.exp(z[i] - top) if i in z else 0.0 for i in range(len(probs))]


def oracle_draw(probs: list[float], rng: np.random.Generator, temperature: float = 1.0,
                top_k: int | None = None, top_p: float | None = None,
                greedy: bool = False, min_p: float | None = None,
                repeat_penalty: float = 1.0, recent: list[int] | None = None) -> int:
    n = len(probs)
    if repeat_penalty != 1.0 and recent:
        probs = oracle_penalized(probs, recent, repeat_penalty)
    if greedy or temperature == 0:
        return max(range(n), key=lambda i: (probs[i], -i))
    if min_p:
        top = max(probs)
        probs = [q if q >= min_p * top else 0.0 for q in probs]
    if temperature != 1.0:
        top = max(probs)
        w = [(q / top) ** (1.0 / temperature) for q in probs]
    else:
        w = list(probs)
    keep = sorted(range(n), key=lambda i: (-w[i], i))
    if top_k:
        keep = keep[:top_k]
    if top_p is not None and top_p < 1:
        total = 0.0
        for i in keep:
            total += w[i]
        chosen, acc = [], 0.0
        for i in keep:
            chosen.append(i)
            acc += w[i]
            if acc >= top_p * total:
                break
        keep = chosen
    kept = set(keep)
    w = [w[i] if i in kept else 0.0 for i in range(n)]
    total = 0.0
    for q in w:
        total += q
    u = rng.random() * total
    acc = 0.0
    for i, q in enumerate(w):
        acc += q
        if acc > u:
            return i
    raise AssertionError("no index drawn")


def oracle_text(weights: dict[str, np.ndarray], vocab: list[str], prime: str, length: int,
                seed: int | None, repeat_last_n: int = 64, **settings: Any) -> str:
    """What generation must produce: reference LSTM + longhand sampler, same seed. The
    repeat penalty looks at the last ``repeat_last_n`` characters, the prime's included."""
    p = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    hidden = p["U_i"].shape[0]
    h, c = np.zeros(hidden), np.zeros(hidden)
    eye = np.eye(len(vocab))
    rng = np.random.default_rng(seed)
    ys = None
    history = [vocab.index(ch) for ch in prime]
    for code in history:
        ys, h, c = reference.lstm(p, eye[[code]], h, c)
    out = []
    for _ in range(length):
        assert ys is not None
        recent = history[-repeat_last_n:] if repeat_last_n else []
        code = oracle_draw([float(q) for q in ys[-1]], rng, recent=recent, **settings)
        out.append(vocab[code])
        history.append(code)
        ys, h, c = reference.lstm(p, eye[[code]], h, c)
    return "".join(out)
