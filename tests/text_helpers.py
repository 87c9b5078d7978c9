"""Text-model fixtures and the independent oracle for generation: a plain-Python sampler
driven by the hand-written NumPy LSTM of ``reference.py``, with the same seed.

The oracle follows the sampling rules of formats/bundle.md §3.5 written out longhand (sorted
lists, running sums) rather than nnre's NumPy formulation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import reference
from bundle_helpers import lstm_content, lstm_weights

from nnre.bundle.write import write

VOCAB = list("abcde fgh\n")


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


def oracle_draw(probs: list[float], rng: np.random.Generator, temperature: float = 1.0,
                top_k: int | None = None, top_p: float | None = None,
                greedy: bool = False) -> int:
    n = len(probs)
    if greedy:
        return max(range(n), key=lambda i: (probs[i], -i))
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
                seed: int | None, **settings: Any) -> str:
    """What generation must produce: reference LSTM + longhand sampler, same seed."""
    p = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    hidden = p["U_i"].shape[0]
    h, c = np.zeros(hidden), np.zeros(hidden)
    eye = np.eye(len(vocab))
    rng = np.random.default_rng(seed)
    ys = None
    for ch in prime:
        ys, h, c = reference.lstm(p, eye[[vocab.index(ch)]], h, c)
    out = []
    for _ in range(length):
        assert ys is not None
        code = oracle_draw([float(q) for q in ys[-1]], rng, **settings)
        out.append(vocab[code])
        ys, h, c = reference.lstm(p, eye[[code]], h, c)
    return "".join(out)
