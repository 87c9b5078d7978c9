"""Shared builders for bundle tests: a small LSTM's weights and header, and a hand re-sealer.

``forge`` assembles a bundle from a header map and a tensor section by following the spec
directly with struct/hashlib/msgpack, independently of nnre's writer, so tests can build
files the writer would refuse (and check the writer against it).
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import msgpack
import numpy as np

from nnre.bundle.schema import Spec
from nnre.bundle.write import BundleContent

LSTM = """iₜ = σ(W_i·xₜ + U_i·hₜ₋₁ + b_i)
fₜ = σ(W_f·xₜ + U_f·hₜ₋₁ + b_f)
oₜ = σ(W_o·xₜ + U_o·hₜ₋₁ + b_o)
c̃ₜ = tanh(W_c·xₜ + U_c·hₜ₋₁ + b_c)
cₜ = fₜ ⊙ cₜ₋₁ + iₜ ⊙ c̃ₜ
hₜ = oₜ ⊙ tanh(cₜ)
yₜ = softmax(W_y·hₜ + b_y)
"""

MAGIC = b"\x89NNRE\r\n\x1a"


def lstm_weights(h: int = 3, v: int = 4, seed: int = 0, dtype: str = "float32"
                 ) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for g in "ifoc":
        out[f"W_{g}"] = rng.standard_normal((h, v)).astype(dtype)
        out[f"U_{g}"] = rng.standard_normal((h, h)).astype(dtype)
        out[f"b_{g}"] = rng.standard_normal((h,)).astype(dtype)
    out["W_y"] = rng.standard_normal((v, h)).astype(dtype)
    out["b_y"] = rng.standard_normal((v,)).astype(dtype)
    return out


def lstm_content(h: int = 3, v: int = 4, dtype: str = "float32", **meta: Any) -> BundleContent:
    sig = {"inputs": {"x": Spec((v,), dtype)}, "outputs": {"y": Spec((v,), dtype)},
           "state": {"c": Spec((h,), dtype), "h": Spec((h,), dtype)}}
    metadata = {"name": "tiny-lstm", "version": "1.0.0", **meta}
    return BundleContent(LSTM, dtype, {"H": h, "V": v}, sig, metadata,
                         lstm_weights(h, v, dtype=dtype))


def canonical(value: Any) -> bytes:
    def srt(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: srt(x[k]) for k in sorted(x)}
        if isinstance(x, list):
            return [srt(i) for i in x]
        return x
    return msgpack.packb(srt(value), use_bin_type=True)


def forge(header: bytes | dict[str, Any], section: bytes, *, major: int = 1, minor: int = 0,
          header_len: int | None = None, digest: bytes | None = None) -> bytes:
    """A bundle built by hand: preamble, header, sha256 digest, zero pad to 64, section."""
    raw = canonical(header) if isinstance(header, dict) else header
    n = len(raw) if header_len is None else header_len
    body = MAGIC + struct.pack("<HHI", major, minor, n) + raw
    body += hashlib.sha256(body).digest() if digest is None else digest
    pad = -len(body) % 64
    return body + b"\0" * pad + section


def split(blob: bytes) -> tuple[dict[str, Any], bytes]:
    """A bundle's header map and tensor section, read by hand."""
    (n,) = struct.unpack_from("<I", blob, 12)
    header = msgpack.unpackb(blob[16:16 + n])
    start = -(-(16 + n + 32) // 64) * 64
    return header, blob[start:]


def reseal(blob: bytes, edit: Any) -> bytes:
    """Apply ``edit(header_map)`` (in place) and rebuild the file with a valid digest."""
    header, section = split(blob)
    edit(header)
    return forge(header, section)
