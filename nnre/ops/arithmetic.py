"""Entry-by-entry arithmetic of broadcast arguments: +, −, ⊙, /, max(a, b), min(a, b), where.

Each block is the whole definition of one primitive (see ``nnre.ops.base.Op``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nnre.ops.base import Array, Op, binary, calls, passing

ADD = binary(
    "add", np.add, infix="+", passes=(1, 1), vjp=passing((1, 1)),
    onnx="Add", onnx_import=("Add",),
)

SUB = binary(
    "sub", np.subtract, infix="−", passes=(1, -1), vjp=passing((1, -1)),
    onnx="Sub", onnx_import=("Sub",),
)

MUL = binary(
    "mul", np.multiply, infix="⊙",
    vjp=lambda g, out, args, attrs, i: g * args[1 - i], reads=frozenset({"args"}),
    vjp_calls=lambda i, g, out, args, d: calls((np.multiply, (g, args[1 - i], d))),
    onnx="Mul", onnx_import=("Mul",),
)

DIV = binary(
    "div", np.divide, infix="/",
    vjp=lambda g, out, args, attrs, i: g / args[1] if i == 0 else -g * out / args[1],
    reads=frozenset({"args", "out"}),
    onnx="Div", onnx_import=("Div",),
)

OPS = [ADD, SUB, MUL, DIV]


def _ties_first(g: Array, out: Array, args: list[Array], attrs: dict[str, Any], i: int
                ) -> Array:
    """The gradient goes to the argument that gave the result (the first on a tie)."""
    first = args[0] == out
    return g * (first if i == 0 else ~first)


MAXIMUM = binary(  # max(a, b): the larger of two entries (max(x) with one argument reduces)
    "maximum", np.maximum, spellings=("max",), arity=2, fold=max,
    vjp=_ties_first, reads=frozenset({"args", "out"}),
    onnx="Max",
)

MINIMUM = binary(  # min(a, b): the smaller of two entries
    "minimum", np.minimum, spellings=("min",), arity=2, fold=min,
    vjp=_ties_first, reads=frozenset({"args", "out"}),
    onnx="Min",
)


def _where(c: Array, a: Array, b: Array, out: Array) -> Array:
    np.copyto(out, b)
    np.copyto(out, a, where=np.broadcast_to(c != 0, out.shape))
    return out


def _where_vjp(g: Array, out: Array, args: list[Array], attrs: dict[str, Any], i: int
               ) -> Array:
    if i == 0:  # a mask: piecewise constant
        return np.zeros_like(g)
    chosen = args[0] != 0
    return g * (chosen if i == 1 else ~chosen)


def _where_onnx(e: Any, ins: Any, args: list[str], out: str) -> None:
    zero = e.const(np.zeros((), dtype=e.dtype), "zero")
    is_zero, mask = e.fresh(out + ".zero"), e.fresh(out + ".mask")
    e.node("Equal", [args[0], zero], is_zero)
    e.node("Not", [is_zero], mask)
    e.node("Where", [mask, args[1], args[2]], out)


WHERE = Op(  # where(c, a, b): a where c is not 0, else b (a mask chooses)
    "where", _where, lambda c, a, b, **_: tuple(np.broadcast_shapes(c, a, b)), fusable=False,
    spellings=("where",), arity=3, fold=lambda c, a, b: a if c != 0 else b,
    vjp=_where_vjp, reads=frozenset({"args"}),
    onnx=_where_onnx,
)

def _compare(name: str, ufunc: Any, infix: str, onnx_type: str, fold: Any) -> Op:
    """``a < b`` and its kin: 1 where it holds, else 0 (a mask for ``where`` or ``⊙``); its
    gradient is 0 everywhere it exists."""
    def rule(e: Any, ins: Any, args: list[str], out: str) -> None:
        truth = e.fresh(out + ".bool")
        e.node(onnx_type, args, truth)
        e.node("Cast", [truth], out, to=e.float_type)
    return binary(name, ufunc, infix=infix, fold=lambda a, b: float(fold(a, b)),
                  vjp=lambda g, out, args, attrs, i: np.zeros_like(g), onnx=rule)


LESS = _compare("less", np.less, "<", "Less", lambda a, b: a < b)
GREATER = _compare("greater", np.greater, ">", "Greater", lambda a, b: a > b)
LESS_EQUAL = _compare("less_equal", np.less_equal, "≤", "LessOrEqual", lambda a, b: a <= b)
GREATER_EQUAL = _compare("greater_equal", np.greater_equal, "≥", "GreaterOrEqual",
                         lambda a, b: a >= b)
COMPARISONS = {op.infix: op.name for op in (LESS, GREATER, LESS_EQUAL, GREATER_EQUAL)}

OPS += [MAXIMUM, MINIMUM, WHERE, LESS, GREATER, LESS_EQUAL, GREATER_EQUAL]
