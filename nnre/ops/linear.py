"""Products that contract an axis: the matrix product, and the dot product of two rows.

Each block is the whole definition of one primitive (see ``nnre.ops.base.Op``).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from nnre.ops.base import Array, Call, Op, Shape


def _matmul_shape(a: Shape, b: Shape, **_: Any) -> Shape:
    """NumPy's matmul on shapes: the last two axes multiply, leading axes broadcast; a
    one-axis left operand is a row (per-example vectors are rows at run time)."""
    if len(b) < 2 or a[-1] != b[-2]:
        raise ValueError(f"matmul of {a} and {b}")
    if len(a) == 1:
        return (*b[:-2], b[-1])
    lead = tuple(np.broadcast_shapes(a[:-2], b[:-2]))
    return (*lead, a[-2], b[-1])


def _matmul_vjp(g: Array, out: Array, args: list[Array], attrs: dict[str, Any], i: int
                ) -> Array:
    a, b = args
    if i == 0 and b.ndim == 2 and g.ndim > 2:  # one product of all the rows (as the kernel)
        return (g.reshape(-1, g.shape[-1]) @ b.T).reshape(*g.shape[:-1], b.shape[0])
    if i == 0:
        return g @ b.T if b.ndim == 2 else np.matmul(g, np.swapaxes(b, -1, -2))
    if b.ndim == 2:  # a constant matrix: the sum over every row at once
        return a.reshape(-1, a.shape[-1]).T @ g.reshape(-1, g.shape[-1])
    return np.matmul(np.swapaxes(a, -1, -2), g)


def _matmul(a: Array, b: Array, out: Array) -> Array:
    for call in _matmul_calls(a, b, out=out):
        call()
    return out


def _matmul_calls(a: Array, b: Array, out: Array) -> list[Call]:
    """NumPy's matmul as one bound call; a stack of rows times one matrix (a sequence's
    steps × W) as one product of all the rows, so BLAS sees one large product instead of
    one per example."""
    if b.ndim == 2 and a.ndim > 2 and a.flags.c_contiguous and out.flags.c_contiguous:
        a, out = a.reshape(-1, a.shape[-1]), out.reshape(-1, out.shape[-1])
    return [functools.partial(np.matmul, a, b, out=out)]


MATMUL = Op(  # NumPy's matmul: per-example rows times Wᵀ for W·x, batched matrices
    "matmul", _matmul, _matmul_shape, unfold=_matmul_calls,
    products=True, follows_batch_last=True,
    vjp=_matmul_vjp, reads=frozenset({"args"}),
    onnx="MatMul",
)


def _rowdot(a: Array, b: Array, out: Array) -> Array:
    return np.add.reduce(a * b, axis=-1, keepdims=True, out=out)


def _rowdot_onnx(e: Any, ins: Any, args: list[str], out: str) -> None:
    product = e.fresh(out + ".product")
    e.node("Mul", args, product)
    e.node("ReduceSum", [product, e.const(np.array([-1], np.int64), "axes")], out, keepdims=1)


ROWDOT = Op(  # aᵀ b of two per-example vectors: one number per row
    "rowdot", _rowdot, lambda a, b: (1,),
    vjp=lambda g, out, args, attrs, i: g * args[1 - i], reads=frozenset({"args"}),
    onnx=_rowdot_onnx,
)

OPS = [MATMUL, ROWDOT]
