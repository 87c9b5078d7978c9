"""Ops that move values without arithmetic: copy, concat, and the views slice, reshape, transpose,
flatten, dropout (the identity when a model runs).

Each block is the whole definition of one primitive (see ``nnre.ops.base.Op``). A view op's
gradient is the same view of its base's gradient, so views need no VJP.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nnre.ops.base import Array, Op, Shape, passing, same


def _copy(x: Array, out: Array) -> Array:
    np.copyto(out, x)
    return out


def _copy_onnx(e: Any, ins: Any, args: list[str], out: str) -> None:
    source, target = e.shape(ins.args[0]), e.shape(ins.out)
    if source == target:
        e.node("Identity", args, out)
    else:  # a broadcast: ONNX's Identity keeps the shape, Expand broadcasts like NumPy
        e.node("Expand", [args[0], e.const(np.array(target, np.int64), "shape")], out)


COPY = Op(  # a value into a buffer of its own (next state), broadcasting a scalar if need be
    "copy", _copy, same, passes=(1,), vjp=passing((1,)), onnx=_copy_onnx,
)


def _concat(*parts: Array, out: Array, axis: int = -1) -> Array:
    offset = 0
    index: list[Any] = [slice(None)] * out.ndim
    for part in parts:
        width = part.shape[axis] if part.ndim else 1
        index[axis] = slice(offset, offset + width)
        out[tuple(index)] = part
        offset += width
    return out


def _concat_shape(*parts: Shape, axis: int = -1) -> Shape:
    if not parts or not -len(parts[0]) <= axis < len(parts[0]):
        raise ValueError(f"concat along axis {axis}")
    first = list(parts[0])
    first[axis] = sum(p[axis] for p in parts)
    return tuple(first)


def _concat_vjp(g: Array, out: Array, args: list[Array], attrs: dict[str, Any], i: int
                ) -> Array:
    axis = attrs.get("axis", -1)
    start = sum(_width(a, axis) for a in args[:i])
    index: list[Any] = [slice(None)] * g.ndim
    index[axis] = slice(start, start + _width(args[i], axis))
    return g[tuple(index)]


def _width(a: Array, axis: int) -> int:
    return a.shape[axis] if a.ndim else 1


def _concat_onnx(e: Any, ins: Any, args: list[str], out: str) -> None:
    """Concat; a constant part beside per-example ones is first expanded to every row
    (ONNX's Concat does not broadcast, nnre's kernel does)."""
    axis = int(dict(ins.attrs).get("axis", -1))
    rows = next((a for a, i in zip(args, ins.args, strict=True) if e.per_example(i)), None)
    parts = list(args)
    if rows is not None:
        whole, count = e.fresh(out + ".shape"), e.fresh(out + ".rows")
        e.node("Shape", [rows], whole)
        e.node("Slice", [whole, e.const(np.array([0], np.int64), "start"),
                         e.const(np.array([1], np.int64), "stop")], count)
        inner = list(e.shape(ins.out)[1:])  # one row of the result
        for k, index in enumerate(ins.args):
            if e.per_example(index):
                continue
            part = e.shape(index)
            inner[axis] = part[axis] if part else 1  # the part's width, as the kernel reads it
            size = e.fresh(out + ".size")
            e.node("Concat", [count, e.const(np.array(inner, np.int64), "part")], size, axis=0)
            parts[k] = e.fresh(out + ".expanded")
            e.node("Expand", [args[k], size], parts[k])  # NumPy's broadcasting, as the kernel
    e.node("Concat", parts, out, axis=axis)


CONCAT = Op(  # [a; b], [a, b], concat(a, b; axis=k) (and the optimizer's stacked weights)
    "concat", _concat, _concat_shape, attrs={"axis": int},
    vjp=_concat_vjp, grad_views=True,
    onnx=_concat_onnx,
    spellings=("concat",), arity=2, takes_axis=True, tensor=True,
)


def _slice_onnx(e: Any, ins: Any, args: list[str], out: str) -> None:
    attrs = dict(ins.attrs)
    axis = attrs.get("axis", -1)
    bounds = [e.const(np.array([v], np.int64), hint)
              for v, hint in ((attrs["start"], "start"), (attrs["stop"], "stop"),
                              (axis, "axis"))]
    e.node("Slice", [args[0], *bounds], out)


def _slice(a: Array, start: int, stop: int, axis: int = -1) -> Array:
    index: tuple[Any, ...] = (Ellipsis, slice(start, stop), *(slice(None),) * (-axis - 1))
    return a[index]


def _slice_shape(a: Shape, start: int, stop: int, axis: int = -1) -> Shape:
    if not -len(a) <= axis < 0 or not 0 <= start <= stop <= a[axis]:
        raise ValueError(f"slice {start}:{stop} of axis {axis} of {a}")
    out = list(a)
    out[axis] = stop - start
    return tuple(out)


SLICE = Op(  # entries start:stop of one axis, counted from the end (rows lead at run time)
    "slice", _slice, _slice_shape,
    attrs={"start": int, "stop": int, "axis": int}, view=True, onnx=_slice_onnx,
)


def _reshape_onnx(e: Any, ins: Any, args: list[str], out: str) -> None:
    shape = tuple(dict(ins.attrs)["shape"])
    if e.per_example(ins.out) and shape[:1] != (-1,):
        shape = (-1, *shape)
    e.node("Reshape", [args[0], e.const(np.array(shape, np.int64), "shape")], out)


def _reshape_shape(a: Shape, shape: Shape) -> Shape:
    """A leading −1 keeps the rows of a per-example value (its shape rule sees the rest)."""
    shape = tuple(shape[1:]) if shape[:1] == (-1,) else tuple(shape)
    if any(d < 0 for d in shape) or math.prod(shape) != math.prod(a):
        raise ValueError(f"reshape of {a} to {shape}")
    return shape


RESHAPE = Op(  # in equations, reshape(x) takes the shape its declared target has
    "reshape", lambda a, shape: a.reshape(shape), _reshape_shape,
    attrs={"shape": tuple}, view=True, onnx=_reshape_onnx,
    spellings=("reshape",), tensor=True,
)


def _transpose_onnx(e: Any, ins: Any, args: list[str], out: str) -> None:
    rank = len(e.shape(ins.args[0]))  # rows included
    e.node("Transpose", args, out, perm=[*range(rank - 2), rank - 1, rank - 2])


def _swap_shape(a: Shape) -> Shape:
    return a if len(a) < 2 else (*a[:-2], a[-1], a[-2])


TRANSPOSE = Op(  # the last two axes swapped (a matrix's transpose; leading axes stay)
    "transpose", lambda a: a if a.ndim < 2 else a.swapaxes(-1, -2), _swap_shape, view=True,
    onnx=_transpose_onnx,
)


def _permute(a: Array, axes: Shape) -> Array:
    lead = a.ndim - len(axes)  # the rows of a per-example value stay first
    return a.transpose((*range(lead), *(lead + p for p in axes)))


def _permute_onnx(e: Any, ins: Any, args: list[str], out: str) -> None:
    axes = tuple(dict(ins.attrs)["axes"])
    lead = len(e.shape(ins.args[0])) - len(axes)
    e.node("Transpose", args, out, perm=[*range(lead), *(lead + p for p in axes)])


def _permute_shape(a: Shape, axes: Shape) -> Shape:
    if sorted(axes) != list(range(len(a))):
        raise ValueError(f"axes {axes} are not a permutation of the {len(a)} axes of {a}")
    return tuple(a[p] for p in axes)


PERMUTE = Op(  # in equations, permute(x) puts x's axes in its declared target's order
    "permute", _permute, _permute_shape, attrs={"axes": tuple}, view=True,
    spellings=("permute",), tensor=True, onnx=_permute_onnx,
)


def _flatten_shape(a: Shape) -> Shape:
    return (math.prod(a),)


FLATTEN = Op(  # a per-example tensor's entries as one vector, in row-major order
    "flatten", lambda a: a.reshape(a.shape[0], -1), _flatten_shape, view=True,
    spellings=("flatten",), tensor=True,
    onnx=lambda e, ins, args, out: e.node("Flatten", args, out, axis=1),
    onnx_import=("Flatten",),
)

DROPOUT = Op(  # dropout(x): x itself when a model runs; nndk's training masks it (--dropout)
    "dropout", lambda a: a, same, view=True, fusable=False,
    spellings=("dropout",), sympy=lambda sp, d: d, fold=lambda v: v,
    onnx="Identity",
)


def _gather(table: Array, ids: Array, out: Array) -> Array:
    return np.take(table, ids.astype(np.intp), axis=0, out=out)  # ids checked when fed


def _gather_vjp(g: Array, out: Array, args: list[Array], attrs: dict[str, Any], i: int
                ) -> Array:
    table, ids = args
    if i == 1:
        return np.zeros_like(ids)  # ids are whole numbers: nothing flows back into them
    grad = np.zeros(table.shape, g.dtype)
    np.add.at(grad, ids.astype(np.intp).reshape(-1), g.reshape(-1, *table.shape[1:]))
    return grad


def _gather_onnx(e: Any, ins: Any, args: list[str], out: str) -> None:
    index = e.fresh(out + ".ids")
    e.node("Cast", [args[1]], index, to=7)  # INT64: ONNX Gather indexes with integers
    e.node("Gather", [args[0], index], out, axis=0)


GATHER = Op(  # E[x]: the rows of a constant table picked by per-example ids
    "gather", _gather, lambda table, ids: (*ids, *table[1:]),
    vjp=_gather_vjp, reads=frozenset({"args"}), onnx=_gather_onnx,
)



def _append(history: Array, part: Array, t: Array, out: Array, axis: int) -> Array:
    """Each row's one-entry ``part`` written at that row's own step t along ``axis`` of its
    history (``Kₜ = [Kₜ₋₁; kₜᵀ]``); in place when ``out`` is the history buffer itself."""
    if out is not history:
        np.copyto(out, history)
    rows = np.arange(out.shape[0])
    at = t.reshape(-1).astype(np.intp)  # steps below the history's size: checked when fed
    np.moveaxis(out, axis, 1)[rows, at] = np.moveaxis(part, axis, 1)[:, 0]
    return out


def _append_vjp(g: Array, out: Array, args: list[Array], attrs: dict[str, Any], i: int
                ) -> Array:
    history, part, t = args
    if i == 2:
        return np.zeros_like(t)
    rows, at = np.arange(g.shape[0]), t.reshape(-1).astype(np.intp)
    axis = attrs["axis"]
    if i == 1:  # the entry written at step t
        return np.expand_dims(np.moveaxis(g, axis, 1)[rows, at], axis)
    grad = g.copy()  # the history's entries pass, but the one overwritten at t
    np.moveaxis(grad, axis, 1)[rows, at] = 0
    return grad


def _append_onnx(e: Any, ins: Any, args: list[str], out: str) -> None:
    """Where(step index = t, the part, the history): the entry at t replaced."""
    shape, axis = e.shape(ins.args[0]), dict(ins.attrs)["axis"]
    steps = np.arange(shape[axis], dtype=e.dtype).reshape(
        [shape[axis] if i == len(shape) + axis else 1 for i in range(len(shape))])
    t, hit = e.fresh(out + ".t"), e.fresh(out + ".at")
    e.node("Reshape", [args[2], e.const(np.array([-1] + [1] * (len(shape) - 1), np.int64),
                                          "shape")], t)
    e.node("Equal", [e.const(steps, "steps"), t], hit)
    e.node("Where", [hit, args[1], args[0]], out)


APPEND = Op(  # Kₜ = [Kₜ₋₁; kₜᵀ]: state that grows by one entry a step (attention's keys)
    "append", _append, lambda history, part, t, axis: history, attrs={"axis": int},
    vjp=_append_vjp, reads=frozenset({"args"}), onnx=_append_onnx,
)

OPS = [COPY, CONCAT, SLICE, RESHAPE, TRANSPOSE, PERMUTE, FLATTEN, DROPOUT, GATHER, APPEND]
