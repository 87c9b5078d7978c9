"""Initial weights: Xavier-uniform or orthogonal matrices, Xavier-uniform filters, zero biases,
forget-gate bias 1, norm gains 1; or GPT-2's N(0, 0.02) for every matrix and table."""

from __future__ import annotations

import numpy as np

# LSTM forget-gate biases start at 1 (Jozefowicz 2015)
FORGET_BIASES = {"b_f", "B_f", "Bf", "bf", "b1_f", "b2_f"}
# Layer-norm gains start at 1 (Ba et al. 2016): γ, γ_1, gamma, …; a zero gain blocks every
# gradient below it
GAINS = ("γ", "gamma")


def init_param(name: str, shape: tuple[int, ...], rng: np.random.Generator, scheme: str,
               dtype: str) -> np.ndarray:
    """One parameter's initial value, by its shape and, for a forget-gate bias, its name."""
    if len(shape) > 2:  # a convolution's filters (O, C, k…): Xavier over its fans, as Glorot
        receptive = int(np.prod(shape[2:]))
        bound = np.sqrt(6.0 / ((shape[0] + shape[1]) * receptive))
        return rng.uniform(-bound, bound, size=shape).astype(dtype)
    if len(shape) < 2 or min(shape) == 1:
        value = 1.0 if name in FORGET_BIASES or name.split("_")[0] in GAINS else 0.0
        return np.full(shape, value, dtype=dtype)
    rows, cols = shape
    if scheme == "normal":  # GPT-2 and nanoGPT: small logits through a tied read-out
        return rng.normal(0.0, GPT2_STD, size=shape).astype(dtype)
    if scheme == "orthogonal" or (scheme == "auto" and rows == cols):
        q, r = np.linalg.qr(rng.normal(size=(max(rows, cols), min(rows, cols))))
        q *= np.sign(np.diag(r))
        out = q if rows >= cols else q.T
        return np.ascontiguousarray(out[:rows, :cols]).astype(dtype)
    bound = np.sqrt(6.0 / (rows + cols))
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


INIT_SCHEMES = ("auto", "xavier", "orthogonal", "normal")
GPT2_STD = 0.02


def scheme_for(scheme: str, attention: bool) -> str:
    """``auto`` is GPT-2's normal init for attention (a text with histories, whose read-out
    is often tied to its embedding: Xavier there starts at a loss twice ln V and trains
    worse), Xavier/orthogonal otherwise."""
    return "normal" if scheme == "auto" and attention else scheme
