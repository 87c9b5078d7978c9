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
from nnre.ops.base import Array, Call, Op, calls, same

SQRT_HALF = math.sqrt(0.5)
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
def _gelu_vjp(g: Array, out: Array, args: list[Array], attrs: Any, i: int) -> Array:
    x = args[0]  # g·(Φ(x) + x·φ(x)), with the forward's own Φ (nnre.ops.special)
    return special.gelu_grad(x, g, np.empty(np.broadcast_shapes(x.shape, g.shape),
                                            np.result_type(x, g)))


def _gelu_onnx(e: Any, ins: Any, args: list[str], out: str) -> None:
    if e.opset >= 20:
        e.node("Gelu", args, out)
    else:  # ½·x·(1 + erf(x/√2))
        _nodes(e, args[0], out, [("Mul", SQRT_HALF), ("Erf", None), ("Add", 1.0),
                                 ("Mul", "x"), ("Mul", 0.5)])


GELU = Op(  # x·Φ(x), exact to the dtype: float32 within 0.61 ulp (nnre.ops.special32)
    "gelu", special.gelu, same, unfold=special.gelu_calls, fusable=True,
    spellings=("gelu",),
    sympy=lambda sp, d: d / 2 * (1 + sp.erf(d / sp.sqrt(2))),
    fold=lambda v: 0.5 * v * math.erfc(-SQRT_HALF * v),
    vjp=_gelu_vjp, reads=frozenset({"args"}),
    vjp_calls=lambda i, g, out, args, d: special.gelu_grad_calls(args[0], g, d),
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


# -- silu, mish: x times a smooth gate ------------------------------------------------
def _silu_vjp(g: Array, out: Array, args: list[Array], attrs: Any, i: int) -> Array:
    s = _logistic(args[0])  # σ(x)·(1 + x·(1 − σ(x)))
    return g * s * (1 + args[0] * (1 - s))


SILU = Op(  # x·σ(x), also called swish
    "silu", lambda x, out: np.multiply(x, _logistic(x), out=out), same, fusable=True,
    spellings=("silu", "swish"),
    sympy=lambda sp, d: d / (1 + sp.exp(-d)),
    fold=lambda v: v * _logistic1(v),
    vjp=_silu_vjp, reads=frozenset({"args"}),
    onnx=lambda e, ins, args, out: _nodes(e, args[0], out, [("Sigmoid", None), ("Mul", "x")]),
)


def _mish_vjp(g: Array, out: Array, args: list[Array], attrs: Any, i: int) -> Array:
    x = args[0]  # tanh(sp) + x·(1 − tanh²(sp))·σ(x), sp = softplus(x), σ(x) = 1 − e^(−sp)
    sp = np.logaddexp(0, x)
    t = np.tanh(sp)
    return g * (t + x * (1 - t * t) * -np.expm1(-sp))


def _mish_onnx(e: Any, ins: Any, args: list[str], out: str) -> None:
    if e.opset >= 18:
        e.node("Mish", args, out)
    else:
        _nodes(e, args[0], out, [("Softplus", None), ("Tanh", None), ("Mul", "x")])


MISH = Op(  # x·tanh(softplus(x)); softplus as logaddexp(0, x) never overflows
    "mish", lambda x, out: np.multiply(x, np.tanh(np.logaddexp(0, x)), out=out), same,
    fusable=True,
    spellings=("mish",),
    sympy=lambda sp, d: d * sp.tanh(sp.log(1 + sp.exp(d))),
    fold=lambda v: v * math.tanh(max(v, 0.0) + math.log1p(math.exp(-abs(v)))),
    vjp=_mish_vjp, reads=frozenset({"args"}),
    onnx=_mish_onnx, onnx_import=("Mish",),
)


# -- elu, hardsigmoid, hardswish: piecewise ------------------------------------------
def _elu_unfold(x: Array, out: Array) -> list[Call]:
    # max(x, eˣ − 1 on min(x, 0)): for x > 0 that is max(x, 0), else eˣ − 1 ≥ x
    return calls((np.minimum, (x, 0, out)), (np.expm1, (out, out)),
                 (np.maximum, (out, x, out)))


def _elu(x: Array, out: Array) -> Array:
    for call in _elu_unfold(x, out):
        call()
    return out


ELU = Op(  # x for x > 0, eˣ − 1 otherwise (α = 1)
    "elu", _elu, same, unfold=_elu_unfold, fusable=True,
    spellings=("elu",),
    sympy=lambda sp, d: sp.Piecewise((d, d > 0), (sp.exp(d) - 1, True)),
    fold=lambda v: v if v > 0 else math.expm1(v),
    # 1 for x > 0, else eˣ = y + 1: min(y, 0) + 1, read from the output
    vjp=lambda g, out, args, attrs, i: g * (np.minimum(out, 0) + 1), reads=frozenset({"out"}),
    vjp_calls=lambda i, g, out, args, d: calls(
        (np.minimum, (out, 0, d)), (np.add, (d, 1, d)), (np.multiply, (d, g, d))),
    onnx="Elu",  # imported by the Elu rule in nndk.onnx.ops (any alpha)
)

HARD_ALPHA = 0.2  # ONNX HardSigmoid's defaults: max(0, min(1, αx + β))


def _hardsigmoid_unfold(x: Array, out: Array) -> list[Call]:
    return calls((np.multiply, (x, HARD_ALPHA, out)), (np.add, (out, 0.5, out)),
                 (np.minimum, (out, 1, out)), (np.maximum, (out, 0, out)))


def _hardsigmoid(x: Array, out: Array) -> Array:
    for call in _hardsigmoid_unfold(x, out):
        call()
    return out


HARDSIGMOID = Op(
    "hardsigmoid", _hardsigmoid, same, unfold=_hardsigmoid_unfold, fusable=True,
    spellings=("hardsigmoid",),
    sympy=lambda sp, d: sp.Max(0, sp.Min(1, d / 5 + sp.Rational(1, 2))),
    fold=lambda v: max(0.0, min(1.0, HARD_ALPHA * v + 0.5)),
    # α inside the ramp, 0 where clipped: read from the output
    vjp=lambda g, out, args, attrs, i: g * (HARD_ALPHA * ((out > 0) & (out < 1))),
    reads=frozenset({"out"}),
    onnx="HardSigmoid",  # its default α, β; imported by the HardSigmoid rule (defaults only)
)


def _hardswish(x: Array, out: Array) -> Array:
    gate = np.clip(x * (1 / 6) + 0.5, 0, 1)  # x·max(0, min(1, x/6 + ½))
    return np.multiply(x, gate, out=out)


def _hardswish_onnx(e: Any, ins: Any, args: list[str], out: str) -> None:
    if e.opset >= 14:
        e.node("HardSwish", args, out)
    else:  # opset 13: x·HardSigmoid(x) with α = 1/6
        gate = e.fresh(f"{out}.gate")
        e.node("HardSigmoid", args, gate, alpha=1 / 6)
        e.node("Mul", [args[0], gate], out)


HARDSWISH = Op(
    "hardswish", _hardswish, same, fusable=True,
    spellings=("hardswish",),
    sympy=lambda sp, d: d * sp.Max(0, sp.Min(1, d / 6 + sp.Rational(1, 2))),
    fold=lambda v: v * max(0.0, min(1.0, v / 6 + 0.5)),
    # 0 below −3, x/3 + ½ on the ramp (up to 1.5), 1 above 3
    vjp=lambda g, out, args, attrs, i: g * np.where(
        args[0] < -3, 0.0, np.where(args[0] > 3, 1.0, args[0] * (1 / 3) + 0.5)),
    reads=frozenset({"args"}),
    onnx=_hardswish_onnx, onnx_import=("HardSwish",),
)

OPS = [GELU, GELU_TANH, SILU, MISH, ELU, HARDSIGMOID, HARDSWISH]
