"""Reductions: a vector in, one number out — sum (Σ), mean, max, min and the Euclidean norm ‖x‖.

Each block is the whole definition of one primitive (see ``nnre.ops.base.Op``). Per example
they reduce the last axis of the rows (``axis=-1``, kept as a column of ones); a constant
vector is reduced whole. The result broadcasts like a scalar (``x / ‖x‖``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from nnre.ops.base import Array, Op, Shape


def _reduced(a: Shape, axis: int = -1) -> Shape:
    if not -len(a) <= axis < len(a):
        raise ValueError(f"axis {axis} of a {len(a)}-axis value")
    out = list(a)
    out[axis] = 1
    return tuple(out)


def _onnx(op_type: str) -> Callable[..., None]:
    """ONNX's Reduce* over the one axis, keepdims; axes an input from opset 18 (13 for Sum)."""
    def rule(e: Any, ins: Any, args: list[str], out: str) -> None:
        axis = int(dict(ins.attrs).get("axis", -1))
        if e.opset >= (13 if op_type == "ReduceSum" else 18):
            axes = e.const(np.array([axis], np.int64), "axes")
            e.node(op_type, [args[0], axes], out, keepdims=1)
        else:
            e.node(op_type, args, out, axes=[axis], keepdims=1)
    return rule


def _spread(g: Array, x: Array) -> Array:
    return np.broadcast_to(g, x.shape)


SUM = Op(
    "sum", lambda x, out, axis=-1: np.add.reduce(x, axis=axis, keepdims=True, out=out),
    _reduced, attrs={"axis": int},
    spellings=("sum", "Σ"), vector=True, reduces=True, takes_axis=True, fold=lambda v: v,
    vjp=lambda g, out, args, attrs, i: _spread(g, args[0]),
    onnx=_onnx("ReduceSum"), onnx_import=("ReduceSum",),
)


def _mean(x: Array, out: Array, axis: int = -1) -> Array:
    np.add.reduce(x, axis=axis, keepdims=True, out=out)
    return np.divide(out, x.shape[axis], out=out)


MEAN = Op(
    "mean", _mean, _reduced, attrs={"axis": int},
    spellings=("mean",), vector=True, reduces=True, takes_axis=True, fold=lambda v: v,
    vjp=lambda g, out, args, attrs, i: _spread(g / args[0].shape[attrs.get("axis", -1)],
                                               args[0]),
    onnx=_onnx("ReduceMean"), onnx_import=("ReduceMean",),
)


def _extreme_vjp(g: Array, out: Array, args: list[Array], attrs: dict[str, Any], i: int
                 ) -> Array:
    # the gradient goes to the entries equal to the result (ties share it, a subgradient)
    return g * (args[0] == out)


def _extreme(name: str, ufunc: Any, onnx_type: str) -> Op:
    """max or min of the entries: the same rule with another ufunc."""
    return Op(
        name, lambda x, out, axis=-1: ufunc.reduce(x, axis=axis, keepdims=True, out=out),
        _reduced, attrs={"axis": int},
        spellings=(name,), vector=True, reduces=True, takes_axis=True, fold=lambda v: v,
        vjp=_extreme_vjp, reads=frozenset({"args", "out"}),
        onnx=_onnx(onnx_type), onnx_import=(onnx_type,),
    )


MAX = _extreme("max", np.maximum, "ReduceMax")
MIN = _extreme("min", np.minimum, "ReduceMin")


def _norm(x: Array, out: Array, axis: int = -1) -> Array:
    # scaled by the largest entry first, so squares neither overflow nor underflow
    big = np.maximum.reduce(np.abs(x), axis=axis, keepdims=True)
    safe = np.where(big > 0, big, 1)
    np.sqrt(np.add.reduce(np.square(x / safe), axis=axis, keepdims=True), out=out)
    return np.multiply(out, big, out=out)


def _norm_vjp(g: Array, out: Array, args: list[Array], attrs: dict[str, Any], i: int
              ) -> Array:
    return g * args[0] / np.where(out > 0, out, 1)  # at 0, the subgradient 0


NORM = Op(  # ‖x‖ = √(Σ xᵢ²)
    "norm", _norm, _reduced, attrs={"axis": int},
    spellings=("norm",), vector=True, reduces=True, takes_axis=True, fold=abs,
    vjp=_norm_vjp, reads=frozenset({"args", "out"}),
    onnx=_onnx("ReduceL2"), onnx_import=("ReduceL2",),
)

OPS = [SUM, MEAN, MAX, MIN, NORM]
