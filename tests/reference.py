"""Hand-written NumPy references for the standard cells: the oracles the runtime is tested against.

Written independently of nnre: plain loops over time, weights in the papers' orientation
(``W`` is (hidden, input)), batch leading.
"""

from __future__ import annotations

import numpy as np


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def lstm(p: dict[str, np.ndarray], xs: np.ndarray, h: np.ndarray, c: np.ndarray
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keys: W_g, U_g, b_g for g in i, f, o, c; W_y, b_y."""
    ys = []
    for x in xs:
        i = sigmoid(x @ p["W_i"].T + h @ p["U_i"].T + p["b_i"])
        f = sigmoid(x @ p["W_f"].T + h @ p["U_f"].T + p["b_f"])
        o = sigmoid(x @ p["W_o"].T + h @ p["U_o"].T + p["b_o"])
        g = np.tanh(x @ p["W_c"].T + h @ p["U_c"].T + p["b_c"])
        c = f * c + i * g
        h = o * np.tanh(c)
        ys.append(softmax(h @ p["W_y"].T + p["b_y"]))
    return np.stack(ys), h, c


def gru(p: dict[str, np.ndarray], xs: np.ndarray, h: np.ndarray
        ) -> tuple[np.ndarray, np.ndarray]:
    ys = []
    for x in xs:
        z = sigmoid(x @ p["W_z"].T + h @ p["U_z"].T + p["b_z"])
        r = sigmoid(x @ p["W_r"].T + h @ p["U_r"].T + p["b_r"])
        cand = np.tanh(x @ p["W_h"].T + (r * h) @ p["U_h"].T + p["b_h"])
        h = (1 - z) * h + z * cand
        ys.append(softmax(h @ p["W_y"].T + p["b_y"]))
    return np.stack(ys), h


def rnn(p: dict[str, np.ndarray], xs: np.ndarray, h: np.ndarray
        ) -> tuple[np.ndarray, np.ndarray]:
    ys = []
    for x in xs:
        h = np.tanh(x @ p["W_h"].T + h @ p["U_h"].T + p["b_h"])
        ys.append(softmax(h @ p["W_y"].T + p["b_y"]))
    return np.stack(ys), h


def mlp(p: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    h = np.maximum(x @ p["W_1"].T + p["b_1"], 0)
    return softmax(h @ p["W_2"].T + p["b_2"])


def random_params(shapes: dict[str, tuple[int, ...]], seed: int = 0, scale: float = 0.5
                  ) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.normal(scale=scale, size=s) for k, s in shapes.items()}


def lstm_shapes(hidden: int, vocab: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for g in "ifoc":
        shapes |= {f"W_{g}": (hidden, vocab), f"U_{g}": (hidden, hidden), f"b_{g}": (hidden,)}
    return shapes | {"W_y": (vocab, hidden), "b_y": (vocab,)}


def gru_shapes(hidden: int, vocab: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for g in "zrh":
        shapes |= {f"W_{g}": (hidden, vocab), f"U_{g}": (hidden, hidden), f"b_{g}": (hidden,)}
    return shapes | {"W_y": (vocab, hidden), "b_y": (vocab,)}
