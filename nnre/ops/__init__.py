"""The op table: every primitive of a Program, each defined once in one block.

Shapes here are runtime shapes. A value that varies per example has a leading row axis
(batch, or time × batch when a stage is hoisted out of the time loop); its shape rule sees the
shape *without* that axis. Compute kernels write into a preallocated ``out``; view kernels
return a view and allocate nothing. Families: ``functions`` (σ, tanh, erf, …), ``activations``
(gelu, silu, …), ``arithmetic`` (+ − ⊙ /), ``linear`` (products), ``vector`` (softmax),
``reductions`` (Σ, mean, max, min, ‖·‖), ``structure`` (copy, concat, views), ``conv``
(convolution and pooling over 1 or 2 spatial axes); ``special`` computes erf for NumPy arrays.
Every consumer (parser, SymPy conversion, compiler, optimizer, VM, autodiff, ONNX) reads
these records; none keeps a table of its own.
"""

from __future__ import annotations

import dataclasses

from nnre.ops import (
    activations,
    arithmetic,
    conv,
    functions,
    linear,
    reductions,
    structure,
    vector,
)
from nnre.ops.base import Op, Shape

OPS: dict[str, Op] = {op.name: op for op in [
    *arithmetic.OPS, *linear.OPS, *functions.OPS, *activations.OPS, *vector.OPS,
    *reductions.OPS,
    *structure.OPS, *conv.OPS]}

#: The primitives of version 1 of the language; every later one has ``Op.since`` 2.
VERSION_1 = frozenset({"add", "sub", "mul", "div", "matmul", "rowdot", "neg", "tanh", "sigmoid",
                       "relu", "exp", "log", "sqrt", "abs", "softmax", "log_softmax", "pow",
                       "copy", "concat", "slice", "reshape", "transpose"})
OPS = {name: dataclasses.replace(op, since=1) if name in VERSION_1 else op
       for name, op in OPS.items()}

#: Spellings accepted in equations → the op that implements the function (with one
#: argument, where a spelling has several arities).
FUNCTIONS: dict[str, str] = {s: op.name for op in sorted(OPS.values(), key=lambda o: -o.arity)
                             for s in op.spellings}
#: (spelling, number of arguments) → op: ``max(x)`` is a reduction, ``max(a, b)`` is not.
BY_ARITY: dict[tuple[str, int], str] = {(s, op.arity): op.name for op in OPS.values()
                                        for s in op.spellings}

#: ONNX op types imported as one of our functions or operators.
BY_ONNX: dict[str, Op] = {t: op for op in OPS.values() for t in op.onnx_import}



def tensor_attrs(op: Op, spatial: int, params: dict[str, float]) -> dict[str, object]:
    """The attributes of an instruction of ``op`` written with these equation parameters, for
    an input with ``spatial`` axes after its channels. Raises ValueError on bad values."""
    if op.param_attrs is None:
        return dict(params)
    return op.param_attrs(spatial, **params)


__all__ = ["BY_ARITY", "BY_ONNX", "FUNCTIONS", "OPS", "Op", "Shape", "tensor_attrs"]
