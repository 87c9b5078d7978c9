"""The entry-by-entry arithmetic of two broadcast arguments: +, −, ⊙ and /.

Each block is the whole definition of one primitive (see ``nnre.ops.base.Op``).
"""

from __future__ import annotations

import numpy as np

from nnre.ops.base import binary, calls, passing

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
