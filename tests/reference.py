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


def _layer(p: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """Layer n's weights (W1_f → W_f) of a stacked template."""
    return {f"{k[0]}_{k.split('_')[1]}": v for k, v in p.items()
            if k.split("_")[0] == f"{k[0]}{n}"}


def lstm2(p: dict[str, np.ndarray], xs: np.ndarray, h1: np.ndarray, c1: np.ndarray,
          h2: np.ndarray, c2: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Two LSTM layers: keys W1_g, U1_g, b1_g, W2_g, … and the read-out W_y, b_y."""
    one, two = _layer(p, 1), _layer(p, 2)
    ys = []
    for x in xs:
        gates = [sigmoid(x @ one[f"W_{g}"].T + h1 @ one[f"U_{g}"].T + one[f"b_{g}"])
                 for g in "ifo"]
        c1 = gates[1] * c1 + gates[0] * np.tanh(x @ one["W_c"].T + h1 @ one["U_c"].T
                                                + one["b_c"])
        h1 = gates[2] * np.tanh(c1)
        gates = [sigmoid(h1 @ two[f"W_{g}"].T + h2 @ two[f"U_{g}"].T + two[f"b_{g}"])
                 for g in "ifo"]
        c2 = gates[1] * c2 + gates[0] * np.tanh(h1 @ two["W_c"].T + h2 @ two["U_c"].T
                                                + two["b_c"])
        h2 = gates[2] * np.tanh(c2)
        ys.append(softmax(h2 @ p["W_y"].T + p["b_y"]))
    return np.stack(ys), (h1, c1, h2, c2)


def gru2(p: dict[str, np.ndarray], xs: np.ndarray, h1: np.ndarray, h2: np.ndarray
         ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    one, two = _layer(p, 1), _layer(p, 2)
    ys = []
    for x in xs:
        for w, u, inp in ((one, "h1", x), (two, "h2", None)):
            h = h1 if u == "h1" else h2
            inp = x if inp is not None else h1
            z = sigmoid(inp @ w["W_z"].T + h @ w["U_z"].T + w["b_z"])
            r = sigmoid(inp @ w["W_r"].T + h @ w["U_r"].T + w["b_r"])
            cand = np.tanh(inp @ w["W_h"].T + (r * h) @ w["U_h"].T + w["b_h"])
            h = (1 - z) * h + z * cand
            h1, h2 = (h, h2) if u == "h1" else (h1, h)
        ys.append(softmax(h2 @ p["W_y"].T + p["b_y"]))
    return np.stack(ys), (h1, h2)


def mlp_ln(p: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    a = x @ p["W_1"].T + p["b_1"]
    mu, var = a.mean(-1, keepdims=True), a.var(-1, keepdims=True)
    h = np.maximum(p["γ"] * (a - mu) / np.sqrt(var + 1e-5) + p["β"], 0)
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
