"""nndk's ``gpt`` template written in PyTorch, nanoGPT's way: the oracle and the reference of
tests/test_gpt.py and benchmarks/bench_gpt.py.

The same network as nndk/templates/gpt.eqn (nanoGPT's ``GPT`` with ``bias=False``): token and
position embeddings, pre-norm blocks of causal self-attention and a GELU MLP, a final layer
norm, the read-out tied to the token embedding. It takes nndk's weights by their canonical
names, so both start from the same numbers. ``generate_cached`` steps one character at a time
with a key/value cache of its own, as a PyTorch user would write it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F


def layer(name: str, index: int) -> str:
    """``W_q`` of layer 2 → ``W^{(2)}_q`` (nnre's canonical layer names)."""
    base, _, sub = name.partition("_")
    return f"{base}^{{({index})}}" + (f"_{sub}" if sub else "")


class GPT(torch.nn.Module):
    def __init__(self, weights: Mapping[str, np.ndarray], layers: int, heads: int) -> None:
        super().__init__()
        self.layers, self.heads = layers, heads
        for key, value in weights.items():
            self.register_parameter(_safe(key), torch.nn.Parameter(
                torch.tensor(np.array(value))))

    def w(self, name: str, index: int | None = None) -> torch.Tensor:
        return getattr(self, _safe(name if index is None else layer(name, index)))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) of every position, each reading positions up to its own."""
        steps = idx.shape[1]
        x = self.w("E")[idx] + self.w("P")[:steps]
        for i in range(1, self.layers + 1):
            x = x + self.attention(i, self.norm(x, "γ_a", i))
            x = x + self.mlp(i, self.norm(x, "γ_m", i))
        return self.norm(x, "γ_y") @ self.w("E").T

    def norm(self, x: torch.Tensor, gain: str, index: int | None = None) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], eps=1e-5) * self.w(gain, index)

    def mlp(self, i: int, a: torch.Tensor) -> torch.Tensor:
        return F.gelu(a @ self.w("W_1", i).T) @ self.w("W_2", i).T

    def split(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d) → (B, heads, T, d_h)
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)

    def attention(self, i: int, a: torch.Tensor) -> torch.Tensor:
        q, k, v = (self.split(a @ self.w(n, i).T) for n in ("W_q", "W_k", "W_v"))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        b, _, t, _ = y.shape
        return y.transpose(1, 2).reshape(b, t, -1) @ self.w("W_o", i).T

    @torch.no_grad()
    def generate_cached(self, prime: list[int], length: int) -> list[int]:
        """Greedy characters, one step at a time with a key/value cache per layer."""
        cache: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * self.layers
        out, ids = [], list(prime)
        logits = None
        for t, code in enumerate(ids + [0] * length):
            if t >= len(ids):
                code = int(torch.argmax(logits))
                out.append(code)
                if len(out) == length:
                    break
            logits = self.step(code, t, cache)
        return out

    def step(self, code: int, t: int, cache: list[tuple[torch.Tensor, torch.Tensor] | None]
             ) -> torch.Tensor:
        x = (self.w("E")[code] + self.w("P")[t]).view(1, 1, -1)
        for i in range(1, self.layers + 1):
            a = self.norm(x, "γ_a", i)
            q, k, v = (self.split(a @ self.w(n, i).T) for n in ("W_q", "W_k", "W_v"))
            old = cache[i - 1]
            if old is not None:
                k, v = torch.cat([old[0], k], 2), torch.cat([old[1], v], 2)
            cache[i - 1] = (k, v)
            weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1)
            x = x + (weights @ v).transpose(1, 2).reshape(1, 1, -1) @ self.w("W_o", i).T
            x = x + self.mlp(i, self.norm(x, "γ_m", i))
        return (self.norm(x, "γ_y") @ self.w("E").T).view(-1)


def _safe(name: str) -> str:
    """A parameter name PyTorch accepts (no dots); distinct names stay distinct."""
    return "p_" + name.encode("utf-8").hex()
