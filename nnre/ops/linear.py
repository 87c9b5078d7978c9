"""Products that contract an axis: the matrix product, and the dot product of two rows.

Each block is the whole definition of one primitive (see ``nnre.ops.base.Op``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nnre.ops.base import Array, Op, Shape


def _matmul_shape(a: Shape, b: Shape, **_: Any) -> Shape:
    if len(b) != 2 or a[-1] != b[0]:
        raise ValueError(f"matmul of {a} and {b}")
    return (*a[:-1], b[-1])


def _matmul_vjp(g: Array, out: Array, args: list[Array], attrs: dict[str, Any], i: int
                ) -> Array:
    a, b = args
    if i == 0:
        return g @ b.T
    return a.reshape(-1, a.shape[-1]).T @ g.reshape(-1, g.shape[-1])


MATMUL = Op(  # per-example rows times a constant matrix: x @ Wᵀ for W·x
    "matmul", lambda a, b, out: np.matmul(a, b, out=out), _matmul_shape, ufunc=np.matmul,
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
