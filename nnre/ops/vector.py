"""Functions of a whole vector (along one axis): softmax, log-softmax, layer norm and RMS norm.

Each block is the whole definition of one primitive (see ``nnre.ops.base.Op``).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from nnre.ops.base import Array, Call, Op, Shape


def _along(a: Shape, axis: int = -1, **_: Any) -> Shape:
    """Same shape; the axis is one of the value's own (per-example rows lead at run time)."""
    if not -len(a) - 1 <= axis <= len(a):
        raise ValueError(f"axis {axis} of a {len(a)}-axis value")
    return a


def _softmax(x: Array, out: Array, axis: int = -1) -> Array:
    np.subtract(x, np.max(x, axis=axis, keepdims=True), out=out)
    np.exp(out, out=out)
    return np.divide(out, np.add.reduce(out, axis=axis, keepdims=True), out=out)


def _softmax_unfold(x: Array, out: Array, axis: int = -1) -> list[Call]:
    """The exponentials are summed in x's memory order: for a batch-last x (a conv chain's
    read-out, ``nnre.layout``) into a rows-first output, the sums then run along rows of
    the batch instead of rows of a few entries (2 against 5 µs at (256, 10))."""
    p = functools.partial
    scratch = np.empty(np.max(x, axis=axis, keepdims=True).shape, out.dtype)
    work = out if _order(x) == _order(out) else np.empty_like(x, dtype=out.dtype)
    return [p(np.maximum.reduce, x, axis=axis, keepdims=True, out=scratch),
            p(np.subtract, x, scratch, out=work), p(np.exp, work, out=work),
            p(np.add.reduce, work, axis=axis, keepdims=True, out=scratch),
            p(np.divide, work, scratch, out=out)]


def _order(a: Array) -> list[int]:
    """a's axes from the largest stride to the smallest: its memory order."""
    return sorted(range(a.ndim), key=lambda i: -abs(a.strides[i]))


def _softmax_vjp(g: Array, out: Array, args: list[Array], attrs: dict[str, Any], i: int
                 ) -> Array:
    return out * (g - np.add.reduce(g * out, axis=attrs.get("axis", -1), keepdims=True))


SOFTMAX = Op(
    "softmax", _softmax, _along, attrs={"axis": int}, unfold=_softmax_unfold,
    spellings=("softmax",), vector=True, takes_axis=True, fold=lambda v: 1.0,
    vjp=_softmax_vjp, reads=frozenset({"out"}),
    onnx="Softmax", onnx_import=("Softmax",),
)


def _log_softmax(x: Array, out: Array, axis: int = -1) -> Array:
    np.subtract(x, np.max(x, axis=axis, keepdims=True), out=out)
    lse = np.log(np.add.reduce(np.exp(out), axis=axis, keepdims=True))
    return np.subtract(out, lse, out=out)


def _log_softmax_vjp(g: Array, out: Array, args: list[Array], attrs: dict[str, Any], i: int
                     ) -> Array:
    return g - np.exp(out) * np.add.reduce(g, axis=attrs.get("axis", -1), keepdims=True)


LOG_SOFTMAX = Op(
    "log_softmax", _log_softmax, _along, attrs={"axis": int},
    spellings=("log_softmax",), vector=True, takes_axis=True, fold=lambda v: 0.0,
    vjp=_log_softmax_vjp, reads=frozenset({"out"}),
    onnx="LogSoftmax", onnx_import=("LogSoftmax",),
)

def _mean(x: Array, axis: int) -> Array:
    return np.add.reduce(x, axis=axis, keepdims=True) / x.shape[axis]  # type: ignore


def _layer_norm(x: Array, out: Array, axis: int = -1, eps: float = 1e-5) -> Array:
    np.subtract(x, _mean(x, axis), out=out)
    return np.multiply(out, 1 / np.sqrt(_mean(out * out, axis) + eps), out=out)


def _layer_norm_vjp(g: Array, out: Array, args: list[Array], attrs: dict[str, Any], i: int
                    ) -> Array:
    axis, eps = attrs.get("axis", -1), attrs.get("eps", 1e-5)
    x = args[0]
    centred = x - _mean(x, axis)
    r = 1 / np.sqrt(_mean(centred * centred, axis) + eps)
    return r * (g - _mean(g, axis) - out * _mean(g * out, axis))  # type: ignore[no-any-return]


def _norm_onnx(kind: str) -> Any:
    """LayerNormalization with a unit scale from opset 17; before it, and for RMS norm,
    written out: x (− mean) / √(mean of squares + eps)."""
    def mean(e: Any, value: str, axis: int, hint: str) -> str:
        out = e.fresh(hint)
        if e.opset >= 18:  # axes an input from opset 18
            e.node("ReduceMean", [value, e.const(np.array([axis], np.int64), "axes")], out,
                   keepdims=1)
        else:
            e.node("ReduceMean", [value], out, axes=[axis], keepdims=1)
        return out

    def rule(e: Any, ins: Any, args: list[str], out: str) -> None:
        attrs = dict(ins.attrs)
        axis, eps = int(attrs.get("axis", -1)), float(attrs.get("eps", 1e-5))
        dtype = np.dtype(e.dtype)
        x = args[0]
        if kind == "layer" and e.opset >= 17:
            ones = e.const(np.ones(e.shape(ins.args[0])[axis], dtype), "scale")
            e.node("LayerNormalization", [x, ones], out, axis=axis, epsilon=eps)
            return
        if kind == "layer":
            centred = e.fresh(out + ".centred")
            e.node("Sub", [x, mean(e, x, axis, out + ".mean")], centred)
            x = centred
        square, shifted, root = (e.fresh(out + hint) for hint in (".square", ".shifted",
                                                                   ".root"))
        e.node("Mul", [x, x], square)
        e.node("Add", [mean(e, square, axis, out + ".variance"),
                       e.const(np.array(eps, dtype), "eps")], shifted)
        e.node("Sqrt", [shifted], root)
        e.node("Div", [x, root], out)
    return rule


LAYER_NORM = Op(  # (x − mean(x)) / √(var(x) + eps): Ba et al. 2016, without gain and bias
    "layer_norm", _layer_norm, _along, attrs={"axis": int, "eps": float},
    spellings=("layer_norm",), vector=True, params={"eps": 1e-5}, fold=lambda v, eps=0: 0.0,
    vjp=_layer_norm_vjp, reads=frozenset({"args", "out"}),
    onnx=_norm_onnx("layer"),
)


def _rms_norm(x: Array, out: Array, axis: int = -1, eps: float = 1e-5) -> Array:
    return np.multiply(x, 1 / np.sqrt(_mean(x * x, axis) + eps), out=out)


def _rms_norm_vjp(g: Array, out: Array, args: list[Array], attrs: dict[str, Any], i: int
                  ) -> Array:
    axis, eps = attrs.get("axis", -1), attrs.get("eps", 1e-5)
    x = args[0]
    r = 1 / np.sqrt(_mean(x * x, axis) + eps)
    return r * (g - out * _mean(g * out, axis))  # type: ignore[no-any-return]


RMS_NORM = Op(  # x / √(mean(x²) + eps): Zhang & Sennrich 2019, without gain
    "rms_norm", _rms_norm, _along, attrs={"axis": int, "eps": float},
    spellings=("rms_norm",), vector=True, params={"eps": 1e-5},
    fold=lambda v, eps=1e-5: v / (v * v + eps) ** 0.5,
    vjp=_rms_norm_vjp, reads=frozenset({"args", "out"}),
    onnx=_norm_onnx("rms"),
)

OPS = [SOFTMAX, LOG_SOFTMAX, LAYER_NORM, RMS_NORM]
