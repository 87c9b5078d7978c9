"""The op table: every primitive of a Program once, with its NumPy kernel and its shape rule.

Shapes here are runtime shapes. A value that varies per example has a leading row axis
(batch, or time × batch when a stage is hoisted out of the time loop); its shape rule sees the
shape *without* that axis. Compute kernels write into a preallocated ``out``; view kernels
return a view and allocate nothing. nndk keeps the VJP of each op in its own table keyed by
these same names.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Shape = tuple[int, ...]

# Spellings accepted in equations → the op that implements the function.
FUNCTIONS = {
    "σ": "sigmoid", "sigmoid": "sigmoid", "σ_g": "sigmoid",
    "tanh": "tanh", "σ_c": "tanh", "σ_h": "tanh",
    "softmax": "softmax", "log_softmax": "log_softmax",
    "relu": "relu", "ReLU": "relu",
    "exp": "exp", "log": "log", "sqrt": "sqrt", "abs": "abs",
}


@dataclass(frozen=True)
class OpDef:
    name: str
    arity: int
    kernel: Callable[..., Any]
    shape: Callable[..., Shape]
    view: bool = False  # True: returns a view of its input, writes nothing
    ufunc: Callable[..., Any] | None = None  # same as kernel, callable without a wrapper
    #: The kernel as bound ufunc calls over its ``out`` (and scratch made once), for the
    #: per-step tapes: one Python frame less per call and no allocation per step.
    unfold: Callable[..., list[Callable[[], Any]]] | None = None


def _same(a: Shape, *rest: Shape, **_: Any) -> Shape:
    return a


def _broadcast(a: Shape, b: Shape, **_: Any) -> Shape:
    return tuple(np.broadcast_shapes(a, b))


def _sigmoid(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    # 0.5·tanh(x/2)+0.5 is exact, overflow-free and three ufunc calls.
    np.multiply(x, 0.5, out=out)
    np.tanh(out, out=out)
    np.multiply(out, 0.5, out=out)
    return np.add(out, 0.5, out=out)


def _sigmoid_unfold(x: np.ndarray, out: np.ndarray) -> list[Callable[[], Any]]:
    p = functools.partial
    return [p(np.multiply, x, 0.5, out=out), p(np.tanh, out, out=out),
            p(np.multiply, out, 0.5, out=out), p(np.add, out, 0.5, out=out)]


def _softmax_unfold(x: np.ndarray, out: np.ndarray, axis: int = -1
                    ) -> list[Callable[[], Any]]:
    p = functools.partial
    scratch = np.empty(np.max(x, axis=axis, keepdims=True).shape, out.dtype)
    return [p(np.maximum.reduce, x, axis=axis, keepdims=True, out=scratch),
            p(np.subtract, x, scratch, out=out), p(np.exp, out, out=out),
            p(np.add.reduce, out, axis=axis, keepdims=True, out=scratch),
            p(np.divide, out, scratch, out=out)]


def _relu(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0, out=out)


def _softmax(x: np.ndarray, out: np.ndarray, axis: int = -1) -> np.ndarray:
    np.subtract(x, np.max(x, axis=axis, keepdims=True), out=out)
    np.exp(out, out=out)
    return np.divide(out, np.add.reduce(out, axis=axis, keepdims=True), out=out)


def _log_softmax(x: np.ndarray, out: np.ndarray, axis: int = -1) -> np.ndarray:
    np.subtract(x, np.max(x, axis=axis, keepdims=True), out=out)
    lse = np.log(np.add.reduce(np.exp(out), axis=axis, keepdims=True))
    return np.subtract(out, lse, out=out)


def _power(x: np.ndarray, out: np.ndarray, exponent: float) -> np.ndarray:
    if exponent == 2.0:
        return np.multiply(x, x, out=out)
    return np.power(x, exponent, out=out)


def _rowdot(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    return np.add.reduce(a * b, axis=-1, keepdims=True, out=out)


def _concat(*parts: np.ndarray, out: np.ndarray, axis: int = -1) -> np.ndarray:
    offset = 0
    index: list[Any] = [slice(None)] * out.ndim
    for part in parts:
        width = part.shape[axis] if part.ndim else 1
        index[axis] = slice(offset, offset + width)
        out[tuple(index)] = part
        offset += width
    return out


def _copy(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    np.copyto(out, x)
    return out


def _matmul_shape(a: Shape, b: Shape, **_: Any) -> Shape:
    if len(b) != 2 or a[-1] != b[0]:
        raise ValueError(f"matmul of {a} and {b}")
    return (*a[:-1], b[-1])


def _concat_shape(*parts: Shape, axis: int = -1) -> Shape:
    first = list(parts[0])
    first[axis] = sum(p[axis] for p in parts)
    return tuple(first)


def _slice_shape(a: Shape, start: int, stop: int) -> Shape:
    return (*a[:-1], stop - start)


def _rowdot_shape(a: Shape, b: Shape) -> Shape:
    return (1,)


def _reshape_shape(a: Shape, shape: Shape) -> Shape:
    return tuple(shape)


def _transpose_shape(a: Shape) -> Shape:
    return tuple(reversed(a))


def _elementwise(name: str, ufunc: Callable[..., Any]) -> OpDef:
    return OpDef(name, 1, lambda x, out: ufunc(x, out=out), _same, ufunc=ufunc)


def _binary(name: str, ufunc: Callable[..., Any]) -> OpDef:
    return OpDef(name, 2, lambda a, b, out: ufunc(a, b, out=out), _broadcast, ufunc=ufunc)


OPS: dict[str, OpDef] = {op.name: op for op in [
    _binary("add", np.add),
    _binary("sub", np.subtract),
    _binary("mul", np.multiply),
    _binary("div", np.divide),
    OpDef("matmul", 2, lambda a, b, out: np.matmul(a, b, out=out), _matmul_shape,
          ufunc=np.matmul),
    OpDef("rowdot", 2, _rowdot, _rowdot_shape),
    _elementwise("neg", np.negative),
    _elementwise("tanh", np.tanh),
    _elementwise("exp", np.exp),
    _elementwise("log", np.log),
    _elementwise("sqrt", np.sqrt),
    _elementwise("abs", np.abs),
    OpDef("sigmoid", 1, _sigmoid, _same, unfold=_sigmoid_unfold),
    OpDef("relu", 1, _relu, _same),
    OpDef("softmax", 1, _softmax, _same, unfold=_softmax_unfold),
    OpDef("log_softmax", 1, _log_softmax, _same),
    OpDef("pow", 1, _power, _same),
    OpDef("copy", 1, _copy, _same),
    OpDef("concat", -1, _concat, _concat_shape),
    OpDef("slice", 1, lambda a, start, stop: a[..., start:stop], _slice_shape, view=True),
    OpDef("reshape", 1, lambda a, shape: a.reshape(shape), _reshape_shape, view=True),
    OpDef("transpose", 1, lambda a: a.T, _transpose_shape, view=True),
]}
