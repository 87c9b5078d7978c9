"""−∞ in a constant mask that only a softmax reads: the dtype's most negative number instead.

A bundle holds finite weights and the equations have no literal for −∞, yet exporters mask
attention scores with it (``masked_fill`` as ``Where(mask, −inf, scores)``, a causal mask
added as ``scores + M``). When the masked value is read only by a Softmax along the last axis
(through further Adds and Wheres), the most negative finite number of the model's dtype gives
the same probabilities: ``e^(min − max)`` underflows to 0 as ``e^−∞`` is 0. A row that the
mask covers entirely (NaN in ONNX) is refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nndk.onnx.graph import Importer
from nndk.onnx.values import Const, Unsupported, Value

Args = list[Value | None]
MASKING = ("Add", "Where")
_DEPTH = 8  # Adds and Wheres between a mask and the softmax


def finite(imp: Importer, node: Any, args: Args) -> Args:
    """``args`` with −∞ in constants replaced, when the node masks scores for a softmax."""
    op = node.op_type
    slots = range(len(args)) if op == "Add" else (1, 2)
    hit = [i for i in slots if i < len(args) and isinstance(args[i], Const)
           and np.isneginf(np.asarray(args[i].value)).any()]  # type: ignore[union-attr]
    if op not in MASKING or not hit or not _softmax_only(imp, node.output[0], 0):
        return args
    _whole_rows(node, args)
    low = float(np.finfo(imp.dtype).min)
    out = list(args)
    for i in hit:
        c = args[i]
        assert isinstance(c, Const)
        value = np.asarray(c.value)
        out[i] = Const(np.where(np.isneginf(value), low, value).astype(value.dtype),
                       source=f"{c.source}(finite)" if c.source else None)
    return out


def _softmax_only(imp: Importer, name: str, depth: int) -> bool:
    """Every reader of ``name`` is a softmax along the last axis, or an Add or Where (as a
    value, not a condition) whose result is read that way."""
    if depth > _DEPTH or name in {o.name for o in imp.proto.graph.output}:
        return False
    readers = imp.readers.get(name, [])
    for r in readers:
        if r.op_type in ("Softmax", "LogSoftmax"):
            axis = next((a.i for a in r.attribute if a.name == "axis"), -1)
            if imp.opset < 13 or axis != -1 or r.input[0] != name:
                return False
        elif r.op_type == "Add" or (r.op_type == "Where" and r.input[0] != name):
            if not _softmax_only(imp, r.output[0], depth + 1):
                return False
        else:
            return False
    return bool(readers)


def _whole_rows(node: Any, args: Args) -> None:
    """Refuse a mask that covers a whole row of the last axis (ONNX's softmax gives NaN)."""
    consts = [np.asarray(a.value) for a in args if isinstance(a, Const)]
    if node.op_type == "Add":
        masked = np.zeros((), bool)
        for c in consts:
            masked = masked | np.isneginf(c)
    else:
        cond, a, b = args[0], args[1], args[2]
        if not isinstance(cond, Const):
            return  # which entries are masked varies per example: the op's rule decides
        c = np.asarray(cond.value).astype(bool)
        masked = (c & _neginf(a)) | (~c & _neginf(b))
    if masked.ndim and np.any(np.all(masked, axis=-1)):
        raise Unsupported(f"{node.op_type} that masks a whole row of a softmax's input with "
                          "−∞ (ONNX gives NaN there)")


def _neginf(a: Value | None) -> np.ndarray:
    return np.isneginf(np.asarray(a.value)) if isinstance(a, Const) else np.zeros((), bool)
