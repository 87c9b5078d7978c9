"""Functions of the equation language applied entry by entry: σ, tanh, relu, exp, erf, ….

Each block is the whole definition of one primitive (see ``nnre.ops.base.Op``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nnre.ops import special
from nnre.ops.base import Array, Call, Op, Shape, calls, elementwise, passing, same


def _sigmoid(x: Array, out: Array) -> Array:
    # 0.5·tanh(x/2)+0.5 is exact, overflow-free and three ufunc calls.
    np.multiply(x, 0.5, out=out)
    np.tanh(out, out=out)
    np.multiply(out, 0.5, out=out)
    return np.add(out, 0.5, out=out)


def _sigmoid_unfold(x: Array, out: Array) -> list[Call]:
    return calls((np.multiply, (x, 0.5, out)), (np.tanh, (out, out)),
                 (np.multiply, (out, 0.5, out)), (np.add, (out, 0.5, out)))


SIGMOID = Op(
    "sigmoid", _sigmoid, same, unfold=_sigmoid_unfold, fusable=True,
    spellings=("σ", "sigmoid", "σ_g"),
    sympy=lambda sp, d: 1 / (1 + sp.exp(-d)),
    fold=lambda v: 0.5 * math.tanh(0.5 * v) + 0.5,
    vjp=lambda g, out, args, attrs, i: g * out * (1 - out), reads=frozenset({"out"}),
    vjp_calls=lambda i, g, out, args, d: calls(  # g y (1 − y)
        (np.subtract, (1, out, d)), (np.multiply, (d, out, d)), (np.multiply, (d, g, d))),
    onnx="Sigmoid", onnx_import=("Sigmoid",),
)

TANH = elementwise(
    "tanh", np.tanh,
    spellings=("tanh", "σ_c", "σ_h"),
    sympy=lambda sp, d: sp.tanh(d), fold=math.tanh,
    vjp=lambda g, out, args, attrs, i: g * (1 - out * out), reads=frozenset({"out"}),
    vjp_calls=lambda i, g, out, args, d: calls(  # g (1 − y²)
        (np.multiply, (out, out, d)), (np.subtract, (1, d, d)), (np.multiply, (d, g, d))),
    onnx="Tanh", onnx_import=("Tanh",),
)


def _relu(x: Array, out: Array) -> Array:
    return np.maximum(x, 0, out=out)


ZEROS = 1 << 14  # entries at most in the zeros a bound ReLU keeps (64 KiB of float32)


def _relu_unfold(x: Array, out: Array) -> list[Call]:
    """max(x, 0) against zeros laid out like ``out`` along its innermost axes: NumPy's
    maximum has a SIMD loop for two strided arrays but not for an array and a number, which
    runs ~3× slower (83 against 24 µs for a 1 MiB conv output, ``nnre.layout``)."""
    keep, entries = set(), 1
    for axis in sorted(range(out.ndim), key=lambda a: abs(out.strides[a])):
        if out.shape[axis] > 1 and entries * out.shape[axis] <= ZEROS:
            keep.add(axis)
            entries *= out.shape[axis]
    zeros = np.zeros_like(out[tuple(slice(None) if a in keep else slice(0, 1)
                                    for a in range(out.ndim))])
    return calls((np.maximum, (x, zeros, out)))


RELU = Op(
    "relu", _relu, same, unfold=_relu_unfold, fusable=True,
    spellings=("relu", "ReLU"),
    sympy=lambda sp, d: sp.Max(0, d), fold=lambda v: max(v, 0.0),
    vjp=lambda g, out, args, attrs, i: g * (out > 0), reads=frozenset({"out"}),
    onnx="Relu", onnx_import=("Relu",),
)

EXP = elementwise(
    "exp", np.exp,
    spellings=("exp",), sympy=lambda sp, d: sp.exp(d), fold=math.exp,
    vjp=lambda g, out, args, attrs, i: g * out, reads=frozenset({"out"}),
    onnx="Exp", onnx_import=("Exp",),
)

LOG = elementwise(
    "log", np.log,
    spellings=("log",), sympy=lambda sp, d: sp.log(d), fold=math.log,
    vjp=lambda g, out, args, attrs, i: g / args[0], reads=frozenset({"args"}),
    onnx="Log", onnx_import=("Log",),
)

SQRT = elementwise(
    "sqrt", np.sqrt,
    spellings=("sqrt",), sympy=lambda sp, d: sp.sqrt(d), fold=math.sqrt,
    vjp=lambda g, out, args, attrs, i: g / (2 * out), reads=frozenset({"out"}),
    onnx="Sqrt", onnx_import=("Sqrt",),
)

ABS = elementwise(
    "abs", np.abs,
    spellings=("abs",), sympy=lambda sp, d: sp.Abs(d), fold=abs,
    vjp=lambda g, out, args, attrs, i: g * np.sign(args[0]), reads=frozenset({"args"}),
    onnx="Abs", onnx_import=("Abs",),
)

SOFTPLUS = Op(  # log(1 + eˣ), as logaddexp(0, x): no overflow for large x
    "softplus", lambda x, out: np.logaddexp(0, x, out=out), same, fusable=True,
    spellings=("softplus",),
    sympy=lambda sp, d: sp.log(1 + sp.exp(d)),
    fold=lambda v: max(v, 0.0) + math.log1p(math.exp(-abs(v))),
    # σ(x) = 1 − e^(−softplus(x)): read from the output, which is never negative
    vjp=lambda g, out, args, attrs, i: g * -np.expm1(-out), reads=frozenset({"out"}),
    onnx="Softplus", onnx_import=("Softplus",),
)

def _leaky_relu(x: Array, out: Array, slope: float = 0.01) -> Array:
    np.multiply(x, slope, out=out)
    return np.maximum(x, out, out=out) if slope <= 1 else np.minimum(x, out, out=out)


LEAKY_RELU = Op(  # x for x > 0, slope·x otherwise
    "leaky_relu", _leaky_relu, same, attrs={"slope": float}, fusable=True,
    spellings=("leaky_relu",), params={"slope": 0.01},
    sympy=lambda sp, d, slope: sp.Piecewise((d, d > 0), (slope * d, True)),
    fold=lambda v, slope: v if v > 0 else slope * v,
    vjp=lambda g, out, args, attrs, i: g * np.where(args[0] > 0, 1.0, attrs["slope"]),
    reads=frozenset({"args"}),
    onnx=lambda e, ins, args, out: e.node("LeakyRelu", args, out,
                                          alpha=float(dict(ins.attrs)["slope"])),
)


def _clip_onnx(e: Any, ins: Any, args: list[str], out: str) -> None:
    attrs = dict(ins.attrs)
    bounds = [e.const(np.array(attrs[k], dtype=e.dtype), k) for k in ("min", "max")]
    e.node("Clip", [args[0], *bounds], out)


CLIP = Op(  # x limited to [min, max] (ONNX's Clip; with min > max, everything is max)
    "clip", lambda x, out, min, max: np.minimum(np.maximum(x, min, out=out), max, out=out),
    same, attrs={"min": float, "max": float}, fusable=True,
    spellings=("clip",), params={"min": -1.0, "max": 1.0},
    sympy=lambda sp, d, min, max: sp.Min(sp.Max(d, min), max),
    fold=lambda v, min, max: float(np.minimum(np.maximum(v, min), max)),
    vjp=lambda g, out, args, attrs, i: g * ((args[0] > attrs["min"])
                                            & (args[0] < attrs["max"])),
    reads=frozenset({"args"}),
    onnx=_clip_onnx,
)

SIN = elementwise(
    "sin", np.sin,
    spellings=("sin",), sympy=lambda sp, d: sp.sin(d), fold=math.sin,
    vjp=lambda g, out, args, attrs, i: g * np.cos(args[0]), reads=frozenset({"args"}),
    vjp_calls=lambda i, g, out, args, d: calls(  # g cos x
        (np.cos, (args[0], d)), (np.multiply, (d, g, d))),
    onnx="Sin", onnx_import=("Sin",),
)

COS = elementwise(
    "cos", np.cos,
    spellings=("cos",), sympy=lambda sp, d: sp.cos(d), fold=math.cos,
    vjp=lambda g, out, args, attrs, i: -g * np.sin(args[0]), reads=frozenset({"args"}),
    vjp_calls=lambda i, g, out, args, d: calls(  # −g sin x
        (np.sin, (args[0], d)), (np.multiply, (d, g, d)), (np.negative, (d, d))),
    onnx="Cos", onnx_import=("Cos",),
)

TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)


def _erf(x: Array, out: Array) -> Array:
    return special.erf(x, out=out)  # exact to out's dtype (nnre.ops.special)


ERF = Op(  # the error function, 2/√π ∫₀ˣ e^(−t²) dt
    "erf", _erf, same, unfold=special.erf_calls, fusable=True,
    spellings=("erf",), sympy=lambda sp, d: sp.erf(d), fold=math.erf,
    vjp=lambda g, out, args, attrs, i: g * TWO_OVER_SQRT_PI * np.exp(-args[0] * args[0]),
    reads=frozenset({"args"}),
    vjp_calls=lambda i, g, out, args, d: calls(  # g · 2/√π · e^(−x²)
        (np.multiply, (args[0], args[0], d)), (np.negative, (d, d)), (np.exp, (d, d)),
        (np.multiply, (d, TWO_OVER_SQRT_PI, d)), (np.multiply, (d, g, d))),
    onnx="Erf", onnx_import=("Erf",),
)

NEG = elementwise(
    "neg", np.negative, passes=(-1,), vjp=passing((-1,)), onnx="Neg",
)


def _power(x: Array, out: Array, exponent: float) -> Array:
    if exponent == 2.0:
        return np.multiply(x, x, out=out)
    return np.power(x, exponent, out=out)


def _pow_onnx(e: Any, ins: Any, args: list[str], out: str) -> None:
    exponent = np.array(dict(ins.attrs)["exponent"], dtype=e.dtype)
    e.node("Pow", [args[0], e.const(exponent, "exponent")], out)


def _pow_shape(a: Shape, exponent: float) -> Shape:
    if not math.isfinite(exponent):
        raise ValueError(f"exponent {exponent}")
    return a


POW = Op(  # x^k for a number k, written x², x³ or x^k
    "pow", _power, _pow_shape, attrs={"exponent": float}, fusable=True,
    vjp=lambda g, out, args, attrs, i: g * attrs["exponent"] * np.power(
        args[0], attrs["exponent"] - 1),
    reads=frozenset({"args"}),
    onnx=_pow_onnx,
)

OPS = [SIGMOID, TANH, RELU, EXP, LOG, SQRT, ABS, SOFTPLUS, SIN, COS, ERF, LEAKY_RELU, CLIP,
       NEG, POW]
