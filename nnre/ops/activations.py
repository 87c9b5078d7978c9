"""Activation functions of the equation language built on others: gelu, silu, mish, elu, ….

Each block is the whole definition of one primitive (see ``nnre.ops.base.Op``). Kernels are
written so that nothing overflows and nothing cancels: the logistic function from e^(−|z|),
gelu from erfc, mish from softplus. Where ONNX has no node of the same meaning at the opset
being exported, the export rule writes the definition out in a few nodes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nnre.ops import special
from nnre.ops.base import Array, Op, same

SQRT_HALF = math.sqrt(0.5)
INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
TANH_K, TANH_C = math.sqrt(2 / math.pi), 0.044715  # gelu's tanh approximation


def _logistic(z: Array) -> Array:
    """σ(z) = 1/(1 + e^(−z)) with full relative accuracy for z ≪ 0, and no overflow."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0, e) / (1.0 + e)


def _logistic1(v: float) -> float:
    e = math.exp(-abs(v))
    return (1.0 if v >= 0 else e) / (1.0 + e)


def _const(e: Any, value: float, hint: str) -> str:
    return e.const(np.array(value, dtype=e.dtype), hint)


def _nodes(e: Any, x: str, out: str, steps: list[tuple[str, str | float | None]],
           **last: Any) -> None:
    """A chain of ONNX nodes from ``x`` to ``out``: (op, second operand) per step, where the
    second operand is ``"x"`` (the input again), a number, or None (a one-input op)."""
    cur = x
    for k, (op, arg) in enumerate(steps):
        ins = [cur] if arg is None else [cur, x if arg == "x" else _const(e, float(arg), "c")]
        nxt = out if k == len(steps) - 1 else e.fresh(f"{out}.{op.lower()}")
        e.node(op, ins, nxt, **(last if k == len(steps) - 1 else {}))
        cur = nxt


# -- gelu: x·Φ(x), exact and with tanh ---------------------------------------------------
def _gelu(x: Array, out: Array) -> Array:
    # x·Φ(x) = ½·x·erfc(−x/√2): erfc keeps its relative accuracy where Φ is tiny
    out[...] = 0.5 * x * special.erfc(-SQRT_HALF * np.asarray(x, np.float64))
    return out


def _gelu_vjp(g: Array, out: Array, args: list[Array], attrs: Any, i: int) -> Array:
    x = args[0]  # Φ(x) + x·φ(x)
    phi = special.erfc(-SQRT_HALF * np.asarray(x, np.float64)) * 0.5
    return g * (phi + x * INV_SQRT_2PI * np.exp(-0.5 * x * x))


def _gelu_onnx(e: Any, ins: Any, args: list[str], out: str) -> None:
    if e.opset >= 20:
        e.node("Gelu", args, out)
    else:  # ½·x·(1 + erf(x/√2))
        _nodes(e, args[0], out, [("Mul", SQRT_HALF), ("Erf", None), ("Add", 1.0),
                                 ("Mul", "x"), ("Mul", 0.5)])


GELU = Op(
    "gelu", _gelu, same, fusable=True,
    spellings=("gelu",),
    sympy=lambda sp, d: d / 2 * (1 + sp.erf(d / sp.sqrt(2))),
    fold=lambda v: 0.5 * v * math.erfc(-SQRT_HALF * v),
    vjp=_gelu_vjp, reads=frozenset({"args"}),
    onnx=_gelu_onnx,  # imported by the Gelu rule in nndk.onnx.ops (it reads `approximate`)
)


def _tanh_arg(x: Array) -> Array:
    # u = k·(x + c·x³); beyond |x| = 1e4, x·σ(2u) is x or 0 exactly, so x³ never overflows
    xc = np.clip(x, -1e4, 1e4)
    return TANH_K * xc * (1 + TANH_C * xc * xc)


def _gelu_tanh(x: Array, out: Array) -> Array:
    # ½·x·(1 + tanh u) = x·σ(2u): the logistic keeps its accuracy where 1 + tanh u cancels
    return np.multiply(x, _logistic(2 * _tanh_arg(x)), out=out)


def _gelu_tanh_vjp(g: Array, out: Array, args: list[Array], attrs: Any, i: int) -> Array:
    x = args[0]  # s + x·2s(1 − s)·u′, s = σ(2u), u′ = k(1 + 3c·x²)
    s = _logistic(2 * _tanh_arg(x))
    du = TANH_K * (1 + 3 * TANH_C * np.clip(x, -1e4, 1e4) ** 2)
    return g * (s + x * 2 * s * (1 - s) * du)


def _gelu_tanh_fold(v: float) -> float:
    c = max(-1e4, min(v, 1e4))
    return v * _logistic1(2 * TANH_K * c * (1 + TANH_C * c * c))


def _gelu_tanh_onnx(e: Any, ins: Any, args: list[str], out: str) -> None:
    if e.opset >= 20:
        e.node("Gelu", args, out, approximate="tanh")
    else:  # ½·x·(1 + tanh(k·x·(1 + c·x²)))
        _nodes(e, args[0], out, [("Mul", "x"), ("Mul", TANH_C), ("Add", 1.0), ("Mul", "x"),
                                 ("Mul", TANH_K), ("Tanh", None), ("Add", 1.0),
                                 ("Mul", "x"), ("Mul", 0.5)])


GELU_TANH = Op(
    "gelu_tanh", _gelu_tanh, same, fusable=True,
    spellings=("gelu_tanh",),
    sympy=lambda sp, d: d / 2 * (1 + sp.tanh(sp.sqrt(2 / sp.pi) * (
        d + sp.Rational(44715, 1000000) * d**3))),
    fold=_gelu_tanh_fold,
    vjp=_gelu_tanh_vjp, reads=frozenset({"args"}),
    onnx=_gelu_tanh_onnx,
)

OPS = [GELU, GELU_TANH]
