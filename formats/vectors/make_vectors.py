"""Generate the .bundle v1 conformance vectors (deterministic: same code, same bytes).

    PYTHONPATH=. python formats/vectors/make_vectors.py [OUTDIR]

Writes ``valid/*.bundle`` with ``*.json`` (inputs and expected outputs, computed here by a
plain NumPy LSTM, independently of nnre's evaluator), ``invalid/*.bundle`` and
``manifest.json`` listing every file with its expected outcome. Invalid files are forged by
hand (struct, hashlib, msgpack) from a valid one, so each breaks exactly one rule.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from nnre.bundle.format import MAGIC
from nnre.bundle.schema import Spec
from nnre.bundle.write import BundleContent, encode

HERE = Path(__file__).resolve().parent
LSTM = (
    "iₜ = σ(W_i·xₜ + U_i·hₜ₋₁ + b_i)\n"
    "fₜ = σ(W_f·xₜ + U_f·hₜ₋₁ + b_f)\n"
    "oₜ = σ(W_o·xₜ + U_o·hₜ₋₁ + b_o)\n"
    "c̃ₜ = tanh(W_c·xₜ + U_c·hₜ₋₁ + b_c)\n"
    "cₜ = fₜ ⊙ cₜ₋₁ + iₜ ⊙ c̃ₜ\n"
    "hₜ = oₜ ⊙ tanh(cₜ)\n"
    "yₜ = softmax(W_y·hₜ + b_y)\n"
)
FULL_METADATA: dict[str, Any] = {
    "name": "tiny-char-lstm",
    "version": "1.2.3",
    "description": "A 3-unit LSTM over the alphabet abcd, for conformance tests.",
    "license": "CC0-1.0",
    "authors": ["nnre conformance"],
    "created": "2024-01-01T00:00:00Z",
    "producer": "make_vectors 1",
    "lineage": {"parent": "0" * 64},
    "provenance": {"data_sha256": hashlib.sha256(b"abcd" * 8).hexdigest(),
                   "hyperparameters": {"lr": 0.01, "optimizer": "adam", "clip": 5},
                   "steps": 100, "final_losses": {"train": 1.25, "valid": 1.5}, "seed": 42},
    "sampling": {"temperature": 0.8, "top_k": 3, "top_p": 0.9, "greedy": False},
    "codecs": {"x": {"id": "char", "vocab": list("abcd")},
               "y": {"id": "sample", "vocab": list("abcd")}},
    "extra": {"note": "free-form strings only"},
}


def weights(h: int, v: int, seed: int, dtype: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for g in "ifoc":
        out[f"W_{g}"] = rng.uniform(-1, 1, (h, v)).astype(dtype)
        out[f"U_{g}"] = rng.uniform(-1, 1, (h, h)).astype(dtype)
        out[f"b_{g}"] = rng.uniform(-1, 1, (h,)).astype(dtype)
    out["W_y"] = rng.uniform(-1, 1, (v, h)).astype(dtype)
    out["b_y"] = rng.uniform(-1, 1, (v,)).astype(dtype)
    return out


def reference_lstm(w: dict[str, np.ndarray], xs: np.ndarray) -> list[list[float]]:
    """The equations above, step by step in float64, from zero state."""
    p = {k: v.astype(np.float64) for k, v in w.items()}
    h = np.zeros(p["U_i"].shape[0])
    c = np.zeros_like(h)
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    ys = []
    for x in xs:
        i = sig(p["W_i"] @ x + p["U_i"] @ h + p["b_i"])
        f = sig(p["W_f"] @ x + p["U_f"] @ h + p["b_f"])
        o = sig(p["W_o"] @ x + p["U_o"] @ h + p["b_o"])
        cc = np.tanh(p["W_c"] @ x + p["U_c"] @ h + p["b_c"])
        c = f * c + i * cc
        h = o * np.tanh(c)
        z = p["W_y"] @ h + p["b_y"]
        e = np.exp(z - z.max())
        ys.append((e / e.sum()).tolist())
    return ys


def lstm_content(h: int, v: int, seed: int, dtype: str, metadata: dict[str, Any]
                 ) -> BundleContent:
    sig = {"inputs": {"x": Spec((v,), dtype)}, "outputs": {"y": Spec((v,), dtype)},
           "state": {"c": Spec((h,), dtype), "h": Spec((h,), dtype)}}
    return BundleContent(LSTM, dtype, {"H": h, "V": v}, sig, metadata,
                         weights(h, v, seed, dtype))


def primed_content() -> BundleContent:
    """The minimal float64 LSTM with primes in a state name (h'), the output (y') and a weight
    (b'): canonical equation names are bundle names."""
    base = lstm_content(2, 3, 2, "float64", {"name": "primes", "version": "0.1.0"})
    text = LSTM.replace("hₜ", "h'ₜ").replace("yₜ", "y'ₜ").replace("b_y", "b'")
    sig = {"inputs": base.signature["inputs"], "outputs": {"y'": base.signature["outputs"]["y"]},
           "state": {"c": base.signature["state"]["c"], "h'": base.signature["state"]["h"]}}
    tensors = {("b'" if k == "b_y" else k): v for k, v in base.tensors.items()}
    return BundleContent(text, "float64", base.dims, sig, base.metadata, tensors)


def dropout_content() -> BundleContent:
    """The minimal float64 LSTM with dropout(…) on its hidden state and its read-out's input
    (equations/2): a runtime computes x for dropout(x), so it runs as the plain LSTM."""
    base = lstm_content(2, 3, 4, "float64", {"name": "dropout", "version": "0.1.0"})
    text = LSTM.replace("hₜ = oₜ ⊙ tanh(cₜ)", "hₜ = dropout(oₜ ⊙ tanh(cₜ))")
    text = text.replace("W_y·hₜ", "W_y·dropout(hₜ)")
    return BundleContent(text, "float64", base.dims, base.signature, base.metadata,
                         base.tensors, requires=("equations/2",))


CNN = (
    "input x\n"
    "x ∈ ℝ^(1×4×4)\n"
    "W₁ ∈ ℝ^(2×1×3×3)\n"
    "b₁ ∈ ℝ^2\n"
    "h = relu(conv(W₁, x, b₁; pad=1))\n"
    "p = maxpool(h; size=2)\n"
    "y = softmax(W₂ flatten(p) + b₂)\n"
)


def cnn_content() -> BundleContent:
    """A tensor model (equations/2, spec §6.1): conv, max pooling, flatten, a read-out."""
    rng = np.random.default_rng(5)
    tensors = {"W_1": rng.uniform(-1, 1, (2, 1, 3, 3)), "b_1": rng.uniform(-1, 1, (2,)),
               "W_2": rng.uniform(-1, 1, (3, 8)), "b_2": rng.uniform(-1, 1, (3,))}
    sig = {"inputs": {"x": Spec((1, 4, 4), "float64")},
           "outputs": {"y": Spec((3,), "float64")}, "state": {}}
    return BundleContent(CNN, "float64", {}, sig, {"name": "cnn", "version": "0.1.0"},
                         tensors, requires=("equations/2",))


def reference_cnn(w: dict[str, np.ndarray], xs: np.ndarray) -> list[list[float]]:
    """The CNN above with plain loops over every index, one image at a time."""
    ys = []
    for x in xs:
        padded = np.zeros((6, 6))
        padded[1:5, 1:5] = x[0]
        h = np.zeros((2, 4, 4))
        for f in range(2):
            for i in range(4):
                for j in range(4):
                    h[f, i, j] = max(0.0, float((w["W_1"][f, 0] * padded[i:i + 3, j:j + 3])
                                                .sum() + w["b_1"][f]))
        p = np.array([[[h[f, 2 * i:2 * i + 2, 2 * j:2 * j + 2].max() for j in range(2)]
                       for i in range(2)] for f in range(2)])
        z = w["W_2"] @ p.reshape(-1) + w["b_2"]
        e = np.exp(z - z.max())
        ys.append((e / e.sum()).tolist())
    return ys


STACKED = (
    "# two LSTM layers written once (formats/equations.md §3.6)\n"
    "xₜ ∈ ℝ^V\n"
    "h^{(0)}ₜ = xₜ\n"
    "for l = 1…L:\n"
    "    iˡₜ = σ(W_i^{(l)} h^{(l-1)}ₜ + U_i^{(l)} hˡₜ₋₁ + b_i^{(l)})\n"
    "    fˡₜ = σ(W_f^{(l)} h^{(l-1)}ₜ + U_f^{(l)} hˡₜ₋₁ + b_f^{(l)})\n"
    "    oˡₜ = σ(W_o^{(l)} h^{(l-1)}ₜ + U_o^{(l)} hˡₜ₋₁ + b_o^{(l)})\n"
    "\n"
    "    c̃ˡₜ = tanh(W_c^{(l)} h^{(l-1)}ₜ + U_c^{(l)} hˡₜ₋₁ + b_c^{(l)})\n"
    "    cˡₜ = fˡₜ ⊙ cˡₜ₋₁ + iˡₜ ⊙ c̃ˡₜ\n"
    "    hˡₜ = oˡₜ ⊙ tanh(cˡₜ)\n"
    "yₜ = softmax(W_y h^{(L)}ₜ + b_y)\n"
)


def stacked_content() -> BundleContent:
    """A float64 two-layer LSTM (H=2, V=3) written with a block: the bundle stores the text
    with its block, the copies' weights under numbered names (W^{(2)}_i) and L in dims."""
    rng = np.random.default_rng(7)
    h, v = 2, 3
    tensors: dict[str, np.ndarray] = {}
    for n in (1, 2):
        for g in "ifoc":
            tensors[f"W^{{({n})}}_{g}"] = rng.uniform(-1, 1, (h, v if n == 1 else h))
            tensors[f"U^{{({n})}}_{g}"] = rng.uniform(-1, 1, (h, h))
            tensors[f"b^{{({n})}}_{g}"] = rng.uniform(-1, 1, (h,))
    tensors["W_y"] = rng.uniform(-1, 1, (v, h))
    tensors["b_y"] = rng.uniform(-1, 1, (v,))
    spec = Spec((h,), "float64")
    sig = {"inputs": {"x": Spec((v,), "float64")}, "outputs": {"y": Spec((v,), "float64")},
           "state": {"c^{(1)}": spec, "c^{(2)}": spec, "h^{(1)}": spec, "h^{(2)}": spec}}
    return BundleContent(STACKED, "float64", {"H": h, "L": 2, "V": v}, sig,
                         {"name": "stacked", "version": "0.1.0"}, tensors,
                         requires=("equations/2",))


def reference_stacked(w: dict[str, np.ndarray], xs: np.ndarray) -> list[list[float]]:
    """The two layers above, one after the other at each step, in float64 from zero state."""
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    h = {n: np.zeros(2) for n in (1, 2)}
    c = {n: np.zeros(2) for n in (1, 2)}
    ys = []
    for x in xs:
        below = x
        for n in (1, 2):
            z = {g: w[f"W^{{({n})}}_{g}"] @ below + w[f"U^{{({n})}}_{g}"] @ h[n]
                 + w[f"b^{{({n})}}_{g}"] for g in "ifoc"}
            c[n] = sig(z["f"]) * c[n] + sig(z["i"]) * np.tanh(z["c"])
            h[n] = sig(z["o"]) * np.tanh(c[n])
            below = h[n]
        y = w["W_y"] @ below + w["b_y"]
        e = np.exp(y - y.max())
        ys.append((e / e.sum()).tolist())
    return ys


ATTENTION = (
    "# causal self-attention, two heads (formats/equations.md §4.1): keys and values grow\n"
    "xₜ ∈ ℕ\n"
    "P ∈ ℝ^(N×d)\n"
    "eₜ = (E[xₜ] + P[t])ᵀ\n"
    "qₜ, kₜ, vₜ ∈ ℝ^d\n"
    "qₜ = W_q eₜ\n"
    "kₜ = W_k eₜ\n"
    "vₜ = W_v eₜ\n"
    "q̃ₜ, k̃ₜ, ṽₜ ∈ ℝ^(heads×1×d_h)\n"
    "q̃ₜ = reshape(qₜ)\n"
    "k̃ₜ = reshape(kₜ)\n"
    "ṽₜ = reshape(vₜ)\n"
    "Kₜ, Vₜ ∈ ℝ^(heads×N×d_h)\n"
    "Kₜ = concat(Kₜ₋₁, k̃ₜ; axis=1)\n"
    "Vₜ = concat(Vₜ₋₁, ṽₜ; axis=1)\n"
    "oₜ ∈ ℝ^d\n"
    "oₜ = reshape(softmax(q̃ₜ Kₜᵀ / √d_h) Vₜ)\n"
    "yₜ = softmax(E (eₜ + W_o oₜ))\n"
)


def attention_content() -> BundleContent:
    """Attention over the steps so far (version 2, §4.1): histories K, V and the step t."""
    rng = np.random.default_rng(9)
    d, n, vocab, heads = 4, 4, 3, 2
    tensors = {"E": rng.uniform(-1, 1, (vocab, d)), "P": rng.uniform(-1, 1, (n, d))}
    for name in ("W_q", "W_k", "W_v", "W_o"):
        tensors[name] = rng.uniform(-1, 1, (d, d))
    history = Spec((heads, n, d // heads), "float64")
    sig = {"inputs": {"x": Spec((1,), "float64")}, "outputs": {"y": Spec((vocab,), "float64")},
           "state": {"K": history, "V": history, "t": Spec((1,), "float64")}}
    return BundleContent(ATTENTION, "float64", {"N": n, "d": d, "d_h": d // heads,
                                                "heads": heads}, sig,
                         {"name": "attention", "version": "0.1.0"}, tensors,
                         requires=("equations/2",))


def reference_attention(w: dict[str, np.ndarray], ids: list[int]) -> list[list[float]]:
    """Step t attends to the keys of steps 0 … t, head by head, with plain loops."""
    heads, dh = 2, 2
    keys: list[np.ndarray] = []
    values: list[np.ndarray] = []
    ys = []
    for t, x in enumerate(ids):
        e = w["E"][x] + w["P"][t]
        q = w["W_q"] @ e
        keys.append(w["W_k"] @ e)
        values.append(w["W_v"] @ e)
        o = np.zeros(heads * dh)
        for h in range(heads):
            part = slice(h * dh, (h + 1) * dh)
            scores = np.array([q[part] @ k[part] / np.sqrt(dh) for k in keys])
            p = np.exp(scores - scores.max())
            p /= p.sum()
            o[part] = sum(pj * v[part] for pj, v in zip(p, values, strict=True))
        z = w["E"] @ (e + w["W_o"] @ o)
        z = np.exp(z - z.max())
        ys.append((z / z.sum()).tolist())
    return ys


BIRNN = (
    "xₜ ∈ ℝ^3\n"
    "hₜ, gₜ ∈ ℝ^2\n"
    "hₜ = tanh(W_h·xₜ + U_h·hₜ₋₁ + b_h)\n"
    "gₜ = tanh(W_g·xₜ + U_g·gₜ₊₁ + b_g)\n"
    "yₜ = softmax(W_y·[hₜ; gₜ] + b_y)\n"
)


def birnn_content() -> BundleContent:
    """A bidirectional RNN (equations/2, spec §4): forward state h, backward state g."""
    rng = np.random.default_rng(7)
    shapes = {"W_h": (2, 3), "U_h": (2, 2), "b_h": (2,), "W_g": (2, 3), "U_g": (2, 2),
              "b_g": (2,), "W_y": (3, 4), "b_y": (3,)}
    tensors = {k: rng.uniform(-1, 1, s) for k, s in shapes.items()}
    sig = {"inputs": {"x": Spec((3,), "float64")}, "outputs": {"y": Spec((3,), "float64")},
           "state": {"g": Spec((2,), "float64"), "h": Spec((2,), "float64")}}
    return BundleContent(BIRNN, "float64", {}, sig, {"name": "birnn", "version": "0.1.0"},
                         tensors, requires=("equations/2",))


def reference_birnn(w: dict[str, np.ndarray], xs: np.ndarray
                    ) -> tuple[list[list[float]], dict[str, list[float]]]:
    """The bidirectional RNN with plain loops: h from the first step, g from the last (zero
    after it), y at each step; the final state is h after the last step, g at the first."""
    steps = len(xs)
    h, g = np.zeros(2), np.zeros(2)
    hs, gs = [], [np.zeros(2)] * steps
    for t in range(steps):
        h = np.tanh(w["W_h"] @ xs[t] + w["U_h"] @ h + w["b_h"])
        hs.append(h)
    for t in range(steps - 1, -1, -1):
        g = np.tanh(w["W_g"] @ xs[t] + w["U_g"] @ g + w["b_g"])
        gs[t] = g
    ys = []
    for t in range(steps):
        z = w["W_y"] @ np.concatenate([hs[t], gs[t]]) + w["b_y"]
        e = np.exp(z - z.max())
        ys.append((e / e.sum()).tolist())
    return ys, {"h": h.tolist(), "g": g.tolist()}


BIRNN_IDS = (
    "xₜ ∈ ℕ\n"
    "hₜ, gₜ ∈ ℝ^2\n"
    "eₜ = E[xₜ]ᵀ\n"
    "hₜ = tanh(W_h·eₜ + U_h·hₜ₋₁ + b_h)\n"
    "gₜ = tanh(W_g·eₜ + U_g·gₜ₊₁ + b_g)\n"
    "yₜ = softmax(W_y·(γ ⊙ layer_norm([hₜ; gₜ])) + b_y)\n"
)


def birnn_ids_content() -> BundleContent:
    """The bidirectional RNN read with tensor shapes (ids, spec §6.1): an embedding, and a
    layer norm of both directions at each step."""
    rng = np.random.default_rng(10)
    shapes = {"E": (3, 3), "W_h": (2, 3), "U_h": (2, 2), "b_h": (2,), "W_g": (2, 3),
              "U_g": (2, 2), "b_g": (2,), "γ": (4,), "W_y": (3, 4), "b_y": (3,)}
    tensors = {k: rng.uniform(-1, 1, s) for k, s in shapes.items()}
    sig = {"inputs": {"x": Spec((1,), "float64")}, "outputs": {"y": Spec((3,), "float64")},
           "state": {"g": Spec((2,), "float64"), "h": Spec((2,), "float64")}}
    return BundleContent(BIRNN_IDS, "float64", {}, sig,
                         {"name": "birnn-ids", "version": "0.1.0"}, tensors,
                         requires=("equations/2",))


def reference_birnn_ids(w: dict[str, np.ndarray], ids: list[int]
                        ) -> tuple[list[list[float]], dict[str, list[float]]]:
    """Plain loops: the rows of E, h from the first step, g from the last, then at each step
    the layer norm (ε = 1e-5) of [hₜ; gₜ] scaled by γ and the softmax read-out."""
    es = [w["E"][i] for i in ids]
    h, g = np.zeros(2), np.zeros(2)
    hs, gs = [], [np.zeros(2)] * len(ids)
    for e in es:
        h = np.tanh(w["W_h"] @ e + w["U_h"] @ h + w["b_h"])
        hs.append(h)
    for t in range(len(ids) - 1, -1, -1):
        g = np.tanh(w["W_g"] @ es[t] + w["U_g"] @ g + w["b_g"])
        gs[t] = g
    ys = []
    for t in range(len(ids)):
        z = np.concatenate([hs[t], gs[t]])
        n = (z - z.mean()) / np.sqrt(((z - z.mean()) ** 2).mean() + 1e-5)
        a = w["W_y"] @ (w["γ"] * n) + w["b_y"]
        e = np.exp(a - a.max())
        ys.append((e / e.sum()).tolist())
    return ys, {"h": h.tolist(), "g": g.tolist()}


UNKNOWN = "\ufffd"  # the char codec's unknown symbol (spec §3.5)
UNKNOWN_METADATA: dict[str, Any] = {
    "name": "unknown-symbol", "version": "0.1.0",
    "codecs": {"x": {"id": "char", "vocab": ["a", "b", "c", UNKNOWN]},
               "y": {"id": "sample", "vocab": ["a", "b", "c", UNKNOWN]}},
}


def valid_vectors() -> list[tuple[str, BundleContent, str, float]]:
    """(name, content, input text, rtol). The text is over the vocabulary, except for the
    unknown-symbol vector, whose text holds characters outside it (read as U+FFFD)."""
    return [
        ("lstm_f32_full", lstm_content(3, 4, 1, "float32", FULL_METADATA), "abcdab", 1e-5),
        ("lstm_f64_minimal", lstm_content(2, 3, 2, "float64",
                                          {"name": "min", "version": "0.1.0"}), "abcab", 1e-12),
        ("lstm_f64_primes", primed_content(), "abcab", 1e-12),
        ("lstm_f64_dropout", dropout_content(), "abcab", 1e-12),
        ("lstm_f32_unknown", lstm_content(3, 4, 3, "float32", UNKNOWN_METADATA), "abzcé\ufffd",
         1e-5),
    ]


def encode_text(content: BundleContent, text: str) -> list[int]:
    """The spec's char codec written out: index in vocab, else the unknown symbol's."""
    codec = content.metadata.get("codecs", {}).get("x")
    vocab = codec["vocab"] if codec else list("abcd"[: content.dims["V"]])
    return [vocab.index(ch) if ch in vocab else vocab.index(UNKNOWN) for ch in text]


# --- hand forging, straight from the spec ------------------------------------------------

def canonical(value: Any) -> bytes:
    def srt(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: srt(x[k]) for k in sorted(x)}
        return [srt(i) for i in x] if isinstance(x, list) else x
    return msgpack.packb(srt(value), use_bin_type=True)


def forge(raw: bytes, section: bytes, major: int = 1, minor: int = 0,
          header_len: int | None = None) -> bytes:
    n = len(raw) if header_len is None else header_len
    body = MAGIC + struct.pack("<HHI", major, minor, n) + raw
    body += hashlib.sha256(body).digest()
    return body + b"\0" * (-len(body) % 64) + section


def split(blob: bytes) -> tuple[dict[str, Any], bytes, int]:
    (n,) = struct.unpack_from("<I", blob, 12)
    start = -(-(16 + n + 32) // 64) * 64
    return msgpack.unpackb(blob[16:16 + n], timestamp=0), blob[start:], start


def edited(base: bytes, edit: Callable[[dict[str, Any]], Any], **kw: Any) -> bytes:
    header, section, _ = split(base)
    edit(header)
    return forge(canonical(header), section, **kw)


def flip(blob: bytes, offset: int) -> bytes:
    return blob[:offset] + bytes([blob[offset] ^ 0x01]) + blob[offset + 1:]


def _npz() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        npy = io.BytesIO()
        np.save(npy, np.zeros((2, 2), np.float32), allow_pickle=False)
        z.writestr(zipfile.ZipInfo("W_i.npy", (1980, 1, 1, 0, 0, 0)), npy.getvalue())
    return out.getvalue()


def _safetensors() -> bytes:
    head = json.dumps({"W": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    return struct.pack("<Q", len(head)) + head + b"\0" * 4


def _duplicate_key(base: bytes) -> bytes:
    header, section, _ = split(base)
    items = sorted(header.items())
    raw = b"\x85" + b"".join(canonical({k: v})[1:] for k, v in items)
    raw += canonical({"metadata": header["metadata"]})[1:]
    return forge(raw, section)


def _unsorted_keys(base: bytes) -> bytes:
    header, section, _ = split(base)
    raw = msgpack.packb(dict(reversed(sorted(header.items()))), use_bin_type=True)
    return forge(raw, section)


def _tensor(i: int, **changes: Any) -> Callable[[dict[str, Any]], None]:
    return lambda h: h["tensors"][i].update(changes)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(h: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for p in parents:
            h = h[p]
        h[last] = value
    return edit


def _retranspose(name: str) -> Callable[[dict[str, Any]], None]:
    def edit(h: dict[str, Any]) -> None:
        entry = next(t for t in h["tensors"] if t["name"] == name)
        entry["shape"] = entry["shape"][::-1]
    return edit


Case = tuple[str, bytes, str, str, str, str]  # name, bytes, stage, code, message, why


def invalid_cases(base: bytes) -> list[Case]:
    """Each case breaks one rule of the spec; stage says when a reader must notice."""
    return [*_file_cases(base), *_header_cases(base), *_table_cases(base),
            *_data_model_cases(base)]


def _file_cases(base: bytes) -> list[Case]:
    """Not a bundle, or broken preamble, lengths, digest, padding, size."""
    header, section, start = split(base)
    s = "structure"
    return [
        ("empty", b"", s, "bad-magic", "an empty file", "zero bytes"),
        ("zip", b"PK\x03\x04" + b"\0" * 60, s, "bad-magic", "ZIP archive", "a ZIP renamed"),
        ("npz", _npz(), s, "bad-magic", "NumPy .npz", "an .npz renamed"),
        ("pickle", b"\x80\x04K\x01.", s, "bad-magic", "pickle", "a pickle renamed"),
        ("safetensors", _safetensors(), s, "bad-magic", "safetensors", "safetensors renamed"),
        ("gguf", b"GGUF\x03\0\0\0" + b"\0" * 16, s, "bad-magic", "GGUF", "a GGUF renamed"),
        ("onnx", b"\x08\x07\x12\x04nndk\x3a\x00", s, "bad-magic", "ONNX", "an ONNX renamed"),
        ("text_mode", base.replace(b"\r\n", b"\n", 1), s, "bad-magic", "text-mode",
         "CR LF in the magic turned into LF"),
        ("truncated_magic", base[:5], s, "truncated", "inside the magic", "5 bytes"),
        ("truncated_preamble", base[:12], s, "truncated", "preamble", "12 bytes"),
        ("truncated_header", base[:100], s, "truncated", "need", "cut inside the header"),
        ("truncated_data", base[:-1], s, "truncated", "past the end", "last byte missing"),
        ("trailing_bytes", base + b"\0", s, "trailing-bytes", "after the last tensor",
         "one byte too many"),
        ("newer_major", edited(base, lambda h: None, major=2), s, "unsupported-version",
         "2.0 is newer", "format 2.0"),
        ("header_too_large", base[:12] + b"\xff\xff\xff\xff" + base[16:], s,
         "header-too-large", "cap", "header length 4 GiB"),
        ("header_length_past_end", forge(canonical(header), section,
                                         header_len=len(base)), s, "truncated", "need",
         "header length beyond the file"),
        ("header_digest", flip(base, 40), s, "header-digest", "sha256",
         "one header bit flipped, digest not updated"),
        ("nonzero_padding", base[:start - 1] + b"\x01" + base[start:]
         if base[start - 1] == 0 else base, s, "nonzero-padding", "zero",
         "a padding byte before the tensor section is 1"),
    ]


def _header_cases(base: bytes) -> list[Case]:
    """The msgpack rules and the schema of the header."""
    header, section, start = split(base)
    s = "structure"
    return [
        ("duplicate_key", _duplicate_key(base), s, "duplicate-key", "duplicate map key",
         "the header map has 'metadata' twice"),
        ("non_canonical", _unsorted_keys(base), s, "non-canonical-header", "canonical",
         "header keys not sorted"),
        ("timestamp_ext", edited(base, _set("metadata.extra", {"t": msgpack.Timestamp(0)})),
         s, "forbidden-type", "not allowed", "a msgpack Timestamp (ext -1) in the header"),
        ("bin_in_header", edited(base, _set("metadata.extra", {"t": b"\0"})), s,
         "forbidden-type", "not allowed", "a msgpack bin value in the header"),
        ("too_deep", edited(base, lambda h: h.update(deep=nested(17))), s,
         "header-too-deep", "deeper", "arrays at container depths 1 to 17 (one past the "
         "limit; valid/future_minor holds 16, which is fine)"),
        ("non_finite_float", edited(base, _set("metadata.sampling.temperature",
                                               float("inf"))), s, "bad-value", "non-finite",
         "an infinite float (a value rule, checked before canonical form)"),
        ("temperature_zero", edited(base, _set("metadata.sampling.temperature", 0.0)), s,
         "bad-value", "outside", "temperature must be > 0 (greedy says 'most probable')"),
        ("top_p_above_one", edited(base, _set("metadata.sampling.top_p", 1.5)), s,
         "bad-value", "outside", "top_p must be in (0, 1]"),
        ("temperature_int", edited(base, _set("metadata.sampling.temperature", 1)), s,
         "bad-field", "expected a float", "an int where the spec says float (1 is not 1.0)"),
        ("created_not_a_date", edited(base, _set("metadata.created", "2023-02-29T12:00:00Z")),
         s, "bad-value", "real date", "29 February of a year that is not a leap year"),
        ("at_in_name", edited(base, _set("model.dims", {"H": 3, "V": 4, "V@": 4})), s,
         "bad-name", "V@", "'@' is not in any name ('name@t-K' is reserved for state)"),
        ("signature_dtype", edited(base, _set("model.signature.outputs.y",
                                              {"dtype": "float64", "shape": [4]})), s,
         "bad-value", "model computes in float32", "a signature dtype other than model.dtype"),
        ("requires_first", edited(base, lambda h: h.update(requires=["equations/1", "gpu/1"],
                                                           zzz=1)), s, "unsupported-feature",
         "gpu/1", "an unknown feature and an unknown key: requires is checked first"),
        ("header_not_map", forge(canonical([1, 2]), b""), s, "header-msgpack",
         "expected a msgpack map", "the header is an array"),
        ("missing_name", edited(base, lambda h: h["metadata"].pop("name")), s,
         "missing-field", "header.metadata.name", "no metadata.name"),
        ("bad_semver", edited(base, _set("metadata.version", "v1")), s, "bad-field",
         "semantic version", "version 'v1'"),
        ("unknown_requirement", edited(base, _set("requires", ["equations/1", "gpu/1"])),
         s, "unsupported-feature", "gpu/1", "requires a feature this reader lacks"),
        ("equations_v3", edited(base, _set("requires", ["equations/3"])), s,
         "unsupported-feature", "equations/3", "a newer equation language"),
        ("unknown_codec", edited(base, _set("metadata.codecs", {"x": {"id": "python"}})),
         s, "unknown-codec", "python", "a codec id outside the allowlist"),
        ("codec_vocab_size", edited(base, _set("metadata.codecs",
                                               {"x": {"id": "char", "vocab": ["a"]}})),
         s, "bad-codec", "1 entries", "vocabulary shorter than the input"),
    ]


def _table_cases(base: bytes) -> list[Case]:
    """The tensor table: dtypes, shapes, sizes, offsets, names."""
    header, section, start = split(base)
    t0, t1 = header["tensors"][0], header["tensors"][1]
    s = "structure"
    return [
        ("bad_dtype", edited(base, _tensor(0, dtype="float8")), s, "bad-field", "a dtype",
         "dtype float8"),
        ("negative_dim", edited(base, _tensor(0, shape=[-3])), s, "bad-value", "-3",
         "a negative dimension"),
        ("huge_dim", edited(base, _tensor(0, shape=[2**31])), s, "bad-value",
         str(2**31), "a dimension one above the cap of 2**31 - 1"),
        ("overflow_64", edited(base, _tensor(0, shape=[2**31 - 1] * 3)), s,
         "tensor-too-large", "more than", "shape product beyond 64 bits"),
        ("nbytes_mismatch", edited(base, _tensor(0, nbytes=t0["nbytes"] + 4)), s,
         "bad-nbytes", "needs", "nbytes disagrees with shape"),
        ("misaligned", edited(base, _tensor(1, offset=t1["offset"] + 4)), s, "bad-offset",
         "aligned", "tensor 1 at a non-multiple of 64"),
        ("overlapping", edited(base, _tensor(1, offset=0)), s, "bad-offset", "overlaps",
         "tensor 1 on top of tensor 0"),
        ("gap", edited(base, _tensor(1, offset=t1["offset"] + 64)), s, "bad-offset", "gap",
         "an unexplained gap before tensor 1"),
        ("offset_out_of_range", edited(base, _tensor(1, offset=2**40)), s, "bad-offset",
         "beyond the end", "offset far past the file"),
        ("duplicate_tensor", edited(base, lambda h: h["tensors"].__setitem__(
            1, dict(h["tensors"][1], name=t0["name"]))), s, "duplicate-name", "duplicate",
         "two tensors with one name"),
        ("unsorted_tensors", edited(base, lambda h: h["tensors"].__setitem__(
            1, dict(h["tensors"][1], name="A"))), s, "unsorted-tensors", "sorted",
         "tensor names out of order"),
    ]


def _data_model_cases(base: bytes) -> list[Case]:
    """Caught only by tensor digests, or by checking the equations."""
    header, section, start = split(base)
    return [
        ("tensor_digest", flip(base, start + 3), "data", "tensor-digest", "sha256",
         "one bit of tensor data flipped"),
        ("injection", edited(base, _set("model.equations",
                                        "yₜ = __import__('os').system('touch /tmp/pwned')\n")),
         "model", "equation-error", "", "code in the equations is never run"),
        ("deep_parens", edited(base, _set("model.equations",
                                          "yₜ = " + "(" * 5000 + "b_y" + ")" * 5000 + "\n")),
         "model", "equation-error", "", "5000 nested parentheses"),
        ("unused_tensor", _with_unused_tensor(), "model", "shape-error",
         "not a parameter", "a tensor the equations do not read"),
        ("huge_block", edited(base, _set("model.equations", LSTM.replace(
            "yₜ = softmax(W_y·hₜ + b_y)\n", "for l = 1…2147483647:\n    a^{(l)}ₜ = hₜ\n"
            "yₜ = softmax(W_y·hₜ + b_y)\n"))), "model", "equation-error",
         "equations are too large", "a block of 2147483647 layers (the copies are counted "
         "before any is made)"),
        ("huge_literal", edited(base, _set("model.equations",
                                           "yₜ = softmax(W_y·hₜ + 9" + "9" * 100000 + ")\n")),
         "model", "equation-error", "", "a 100001-digit number"),
        ("signature_mismatch", edited(base, _set("model.signature.state.h",
                                                 {"dtype": "float32", "shape": [5]})),
         "model", "signature-mismatch", "signature", "header signature disagrees"),
        ("weights_do_not_fit", edited(base, _retranspose("W_c")), "model", "shape-error",
         "W_c", "W_c stored as (V, H) instead of (H, V); same bytes, valid layout"),
        ("later_step_v1", edited(encode(birnn_content()), _set("requires", ["equations/1"])),
         "model", "signature-mismatch", "version 2 of the equation language",
         "backward state (a later step, gₜ₊₁) needs version 2 of the equations"),
    ]


def _with_unused_tensor() -> bytes:
    content = lstm_content(3, 4, 1, "float32", FULL_METADATA)
    tensors = dict(content.tensors, W_z=np.zeros((2, 2), np.float32))
    return encode(BundleContent(content.equations, content.dtype, content.dims,
                                content.signature, content.metadata, tensors))


def generate(out: Path) -> None:
    """Write every vector and the manifest under ``out``."""
    (out / "valid").mkdir(parents=True, exist_ok=True)
    (out / "invalid").mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {"format": "nnre .bundle", "version": "1.0", "valid": [],
                                "invalid": []}
    base = b""
    for name, content, text, rtol in valid_vectors():
        blob = encode(content)
        base = base or blob
        xs = np.eye(content.dims["V"])[encode_text(content, text)]
        weights = {("b_y" if k == "b'" else k): v for k, v in content.tensors.items()}
        (output,) = content.signature["outputs"]
        io_case: dict[str, Any] = {"inputs": {"x": xs.tolist()}, "initial_state": "zeros",
                                   "expected": {output: reference_lstm(weights, xs)},
                                   "rtol": rtol, "atol": rtol}
        if UNKNOWN in text:  # the inputs are this text through the char codec
            io_case["text"] = {"x": text}
        _write_json(out / "valid" / f"{name}.json", io_case)
        manifest["valid"].append(_valid_entry(out, name, blob, name))
        if name == "lstm_f32_full":  # the same model as a newer minor with unknown keys
            future = edited(blob, _future_keys, minor=7)
            manifest["valid"].append(_valid_entry(out, "future_minor", future, name))
    cnn = cnn_content()
    images = np.random.default_rng(6).uniform(-1, 1, (3, 1, 4, 4))
    _write_json(out / "valid" / "cnn_f64.json",
                {"inputs": {"x": images.tolist()}, "initial_state": "zeros",
                 "expected": {"y": reference_cnn(dict(cnn.tensors), images)},
                 "rtol": 1e-12, "atol": 1e-12})
    manifest["valid"].append(_valid_entry(out, "cnn_f64", encode(cnn), "cnn_f64"))
    stacked = stacked_content()
    xs = np.random.default_rng(8).uniform(-1, 1, (5, 3))
    _write_json(out / "valid" / "lstm2_block_f64.json",
                {"inputs": {"x": xs.tolist()}, "initial_state": "zeros",
                 "expected": {"y": reference_stacked(dict(stacked.tensors), xs)},
                 "rtol": 1e-12, "atol": 1e-12})
    manifest["valid"].append(_valid_entry(out, "lstm2_block_f64", encode(stacked),
                                          "lstm2_block_f64"))
    attention = attention_content()
    ids = [2, 0, 1, 1]
    _write_json(out / "valid" / "attention_f64.json",
                {"inputs": {"x": [[i] for i in ids]}, "initial_state": "zeros",
                 "expected": {"y": reference_attention(dict(attention.tensors), ids)},
                 "rtol": 1e-12, "atol": 1e-12})
    manifest["valid"].append(_valid_entry(out, "attention_f64", encode(attention),
                                          "attention_f64"))
    birnn = birnn_content()
    xs = np.random.default_rng(8).uniform(-1, 1, (5, 3))
    ys, final = reference_birnn(dict(birnn.tensors), xs)
    _write_json(out / "valid" / "birnn_f64.json",
                {"inputs": {"x": xs.tolist()}, "initial_state": "zeros", "expected": {"y": ys},
                 "final_state": final, "rtol": 1e-12, "atol": 1e-12})
    manifest["valid"].append(_valid_entry(out, "birnn_f64", encode(birnn), "birnn_f64"))
    birnn_ids = birnn_ids_content()
    ids = [2, 0, 1, 1, 2]
    ys, final = reference_birnn_ids(dict(birnn_ids.tensors), ids)
    _write_json(out / "valid" / "birnn_ids_f64.json",
                {"inputs": {"x": [[i] for i in ids]}, "initial_state": "zeros",
                 "expected": {"y": ys}, "final_state": final, "rtol": 1e-12, "atol": 1e-12})
    manifest["valid"].append(_valid_entry(out, "birnn_ids_f64", encode(birnn_ids),
                                          "birnn_ids_f64"))
    for name, blob, stage, code, message, why in invalid_cases(base):
        (out / "invalid" / f"{name}.bundle").write_bytes(blob)
        manifest["invalid"].append({"file": f"invalid/{name}.bundle", "stage": stage,
                                    "code": code, "message": message, "why": why})
    _write_json(out / "manifest.json", manifest)


def nested(depth: int) -> Any:
    """Arrays around a string; at the top level of the header, the innermost array sits at
    container depth ``depth`` (the header map is 0; scalars do not count)."""
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


def _future_keys(header: dict[str, Any]) -> None:
    header["nested"] = nested(16)  # unknown, so ignored, but still within the decoding limits
    header["signing"] = {"scheme": "none-yet"}
    header["metadata"]["homepage"] = "https://example.org"
    header["tensors"][0]["quantization"] = None


def _valid_entry(out: Path, name: str, blob: bytes, io_name: str) -> dict[str, Any]:
    (out / "valid" / f"{name}.bundle").write_bytes(blob)
    n = int.from_bytes(blob[12:16], "little")
    return {"file": f"valid/{name}.bundle", "io": f"valid/{io_name}.json",
            "bundle_id": hashlib.sha256(blob[: 16 + n]).hexdigest(),
            "file_sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob)}


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
