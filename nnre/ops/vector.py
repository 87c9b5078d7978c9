"""Functions of a whole vector (along one axis): softmax and log-softmax.

Each block is the whole definition of one primitive (see ``nnre.ops.base.Op``).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from nnre.ops.base import Array, Call, Op, Shape


def _along(a: Shape, axis: int = -1) -> Shape:
    """Same shape; the axis is one of the value's own (per-example rows lead at run time)."""
    if not -len(a) - 1 <= axis <= len(a):
        raise ValueError(f"axis {axis} of a {len(a)}-axis value")
    return a


def _softmax(x: Array, out: Array, axis: int = -1) -> Array:
    np.subtract(x, np.max(x, axis=axis, keepdims=True), out=out)
    np.exp(out, out=out)
    return np.divide(out, np.add.reduce(out, axis=axis, keepdims=True), out=out)


def _softmax_unfold(x: Array, out: Array, axis: int = -1) -> list[Call]:
    p = functools.partial
    scratch = np.empty(np.max(x, axis=axis, keepdims=True).shape, out.dtype)
    return [p(np.maximum.reduce, x, axis=axis, keepdims=True, out=scratch),
            p(np.subtract, x, scratch, out=out), p(np.exp, out, out=out),
            p(np.add.reduce, out, axis=axis, keepdims=True, out=scratch),
            p(np.divide, out, scratch, out=out)]


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

OPS = [SOFTMAX, LOG_SOFTMAX]
