"""ONNX ops along per-example axes: products, reductions, softmax, transposes and reshapes.

ONNX counts axes from the batch (axis 0, or time and batch); the equations count a value's
own axes without it, so ONNX axis ``a`` is the equations' ``a − lead``, and an op over the
batch axis mixes examples: it is refused, never imported. A per-example tensor keeps its axes
(``Σ(X; axis=1)``, ``X W``, ``Xᵀ``); a reshape the language cannot write leaves a *flat* value
(:class:`nndk.onnx.values.Dyn`), which only entry-by-entry ops, outputs and ``flatten`` read.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from nndk.onnx import expr as ex
from nndk.onnx.graph import Importer
from nndk.onnx.ops import _axis, _dyn, flat_expr, matrix, operand
from nndk.onnx.values import Const, Dyn, Final, SeqY, Unsupported, Value, lang_shape

Args = list[Value | None]
Rule = Callable[[Importer, Any, Args, dict[str, Any]], list[Value]]


def reshaped(imp: Importer, x: Dyn, shape: tuple[int, ...]) -> Dyn:
    """The same entries in row-major order with another per-example shape: kept as it is
    when the equations see both shapes alike, ``flatten(X)`` for a vector, else a declared
    ``R ∈ ℝ^(a×b)``, ``R = reshape(X)`` (flat, the entries as a vector, in a graph indexed by
    time, where a declaration would need the time index)."""
    shape = tuple(int(d) for d in shape)
    if shape == x.shape:
        return x
    if not x.flat and lang_shape(shape) == lang_shape(x.shape):
        return Dyn(x.expr, shape, False)  # (4,) and (4, 1): one column
    if len(shape) < 2 or imp.timed:
        return Dyn(flat_expr(x), shape, True)
    if isinstance(x.expr, ex.Name) and (x.expr.text, shape) in imp.views:
        return imp.views[(x.expr.text, shape)]  # reshaped before, or reshaped from that
    target = ex.Name(imp.names.numbered("r"))
    imp.declarations.append(f"{ex.show(target)} ∈ ℝ^({'×'.join(map(str, shape))})")
    imp.equations.append((target, ex.Call("reshape", x.expr)))
    out = Dyn(target, shape, False)
    imp.views[(target.text, x.shape)] = x
    if isinstance(x.expr, ex.Name):
        imp.views[(x.expr.text, shape)] = out
    return out


def _per_axes(imp: Importer, node: Any, x: Dyn, axes: list[int]) -> list[int]:
    """ONNX axes → the value's own (sorted); the batch axis among them is refused."""
    rank = imp.lead + len(x.shape)
    own = sorted({_axis(int(a), rank) - imp.lead for a in axes})
    if any(a < 0 for a in own):
        raise Unsupported(f"{node.op_type} over the batch axis (it would mix examples)")
    return own


# -- softmax -----------------------------------------------------------------------------
def _softmax(func: str) -> Rule:
    """Softmax along one per-example axis (opset 13 on), or over the axes from ``axis`` on
    as one vector (before 13): a vector's entries, a tensor's axis, or a flat value whole."""
    def rule(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
        x = _dyn(args[0], f"the input of {node.op_type}")
        (axis,) = _per_axes(imp, node, x, [int(at.get("axis", 1 if imp.opset < 13 else -1))])
        last = len(x.shape) - 1
        if imp.opset < 13 and axis < last:
            if int(np.prod(x.shape[:axis], dtype=np.int64)) != 1:
                raise Unsupported(f"{node.op_type} (opset {imp.opset}) over the axes from "
                                  f"{axis + imp.lead} on: several vectors per example")
            whole = Dyn(ex.Call(func, flat_expr(x)), (x.size,), False)
            return [reshaped(imp, whole, x.shape)]
        if x.tensor:
            params = () if axis == last else (("axis", float(axis)),)
            return [x.like(ex.Call(func, x.expr, params))]
        if x.size != x.shape[axis]:
            raise Unsupported(f"{node.op_type} along one axis of a reshaped value")
        return [x.like(ex.Call(func, x.expr))]  # a vector, or the only axis longer than 1
    return rule


# -- reductions --------------------------------------------------------------------------
#: ONNX Reduce* → (the equations' reduction, what it reduces, what is done to the result).
_PRE: dict[str, Callable[[ex.Expr], ex.Expr]] = {
    "ReduceL1": lambda e: ex.Call("abs", e), "ReduceSumSquare": lambda e: ex.Pow(e, 2.0),
    "ReduceLogSumExp": lambda e: ex.Call("exp", e)}
_POST: dict[str, Callable[[ex.Expr], ex.Expr]] = {
    "ReduceLogSum": lambda e: ex.Call("log", e), "ReduceLogSumExp": lambda e: ex.Call("log", e)}
_FUNC = {"ReduceSum": "Σ", "ReduceMean": "mean", "ReduceMax": "max", "ReduceMin": "min",
         "ReduceL2": "norm", "ReduceL1": "Σ", "ReduceSumSquare": "Σ", "ReduceLogSum": "Σ",
         "ReduceLogSumExp": "Σ"}


def _reduce_axes(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[int] | None:
    """The ONNX axes reduced; None: none (noop_with_empty_axes), [] : every axis."""
    axes_input = node.op_type == "ReduceSum" and imp.opset >= 13 or imp.opset >= 18
    given = args[1] if axes_input and len(args) > 1 else None
    if given is not None and not isinstance(given, Const):
        raise Unsupported(f"{node.op_type} with axes computed per example")
    axes = [int(a) for a in np.asarray(given.value).reshape(-1)] if given is not None \
        else [int(a) for a in at.get("axes", [])]
    if not axes and int(at.get("noop_with_empty_axes", 0)):
        return None
    return axes


def _reduce(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    """Reduce* over per-example axes: the whole value (``Σ(x)``), or axis by axis
    (``Σ(Σ(X; axis=2); axis=0)``: sums of sums, maxima of maxima, norms of norms)."""
    x = _dyn(args[0], f"the input of {node.op_type}")
    axes = _reduce_axes(imp, node, args, at)
    op = node.op_type
    if axes is None:
        return [x]
    if not axes:
        raise Unsupported(f"{op} over every axis, the batch's too (it would mix examples)")
    own = _per_axes(imp, node, x, axes)
    pre, post = _PRE.get(op, lambda e: e), _POST.get(op, lambda e: e)
    kept = tuple(1 if i in own else d for i, d in enumerate(x.shape))
    if len(own) == len(x.shape) or all(x.shape[i] == 1 for i in range(len(x.shape))
                                       if i not in own):
        out = Dyn(post(ex.Call(_FUNC[op], pre(x.expr))), kept, x.flat)  # every entry
    elif not x.tensor:
        raise Unsupported(f"{op} over some axes of a reshaped value")
    else:
        body = pre(x.expr)
        for a in own:
            body = ex.Call(_FUNC[op], body, (("axis", float(a)),))
        out = Dyn(post(body), kept, False)
    if int(at.get("keepdims", 1)):
        return [out]
    return [reshaped(imp, out, tuple(d for i, d in enumerate(x.shape) if i not in own))]


# -- products ----------------------------------------------------------------------------
def _right(imp: Importer, k: Const, stem: str = "W") -> ex.Expr:
    """K itself for ``X K`` (a weight of its own axes; a vector as a column)."""
    value = np.asarray(k.value)
    if k.ref is not None and value.ndim == 2:
        original = value.T if k.transposed else value
        name = ex.Name(imp.use_ref(k.ref, original))
        return ex.Tr(name) if k.transposed else name
    key = (k.source, "right") if k.source else None
    return ex.Name(imp.weight(value, stem, key))


def _const_axes(k: Const, own: int) -> Const:
    """A constant operand of a product beside per-example values of ``own`` axes: the axes
    it has beyond those align with the batch in ONNX, and must be 1 (they are dropped)."""
    value = np.asarray(k.value)
    if value.ndim <= own:
        return k
    extra = value.ndim - own
    if any(d != 1 for d in value.shape[:extra]):
        raise Unsupported("MatMul with a constant that varies along the batch axis")
    return Const(value.reshape(value.shape[extra:]), k.ref, k.transposed, k.source)


def _matmul(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    a, b = args[0], args[1]
    if isinstance(a, Dyn) and isinstance(b, Const) and len(a.shape) == 1:
        if np.asarray(b.value).ndim > 2:
            raise Unsupported("MatMul of per-example vectors by a stack of matrices")
        w = matrix(imp, b)
        shape = (np.asarray(b.value).shape[1],) if np.asarray(b.value).ndim == 2 else ()
        return [Dyn(ex.Bin("·", w, operand(imp, a)), shape, False)]
    if any(isinstance(v, Dyn) and (len(v.shape) < 2 or v.flat) for v in (a, b)):
        raise Unsupported("MatMul of a reshaped or vector value by a per-example matrix "
                          "(ONNX would pair the batch axis with another)")
    if not all(isinstance(v, Dyn | Const) for v in (a, b)) or not any(
            isinstance(v, Dyn) for v in (a, b)):
        raise Unsupported("MatMul of anything but per-example values and constants")
    rank = max(len(v.shape) for v in (a, b) if isinstance(v, Dyn))
    if isinstance(a, Dyn) and isinstance(b, Dyn) and len(a.shape) != len(b.shape):
        raise Unsupported("MatMul of per-example values with different numbers of axes")
    shapes, exprs = [], []
    for v in (a, b):
        if isinstance(v, Dyn):
            shapes.append(v.shape)
            exprs.append(v.expr if isinstance(v.expr, ex.Name) else imp.define(v).expr)
        else:
            k = _const_axes(v, rank)  # type: ignore[arg-type]
            shapes.append(np.asarray(k.value).shape)
            exprs.append(_right(imp, k))
    left, right = shapes
    vec_left, vec_right = len(left) == 1, len(right) == 1
    if left[-1] != right[0 if vec_right else -2]:
        raise Unsupported(f"MatMul of per-example shapes {left} and {right} that do not fit")
    if vec_left:  # ONNX: (n,) @ (…, n, k) → (…, k): a row times each matrix
        exprs[0] = ex.Tr(exprs[0])
    lead = np.broadcast_shapes(left[:-2], right[:-2])
    rows = () if vec_left else (left[-2],)
    cols = () if vec_right else (right[-1],)
    out = tuple(int(d) for d in (*lead, *rows, *cols))
    got = (*lead, left[-2] if not vec_left else 1, right[-1] if not vec_right else 1)
    product = ex.Bin("·", exprs[0], exprs[1])
    if tuple(got) == lang_shape(out):
        return [Dyn(product, out, False)]
    if len(out) == 1:  # (1, k) rows of a vector → the column (k, 1)
        return [Dyn(ex.Tr(product), out, False)]
    return [reshaped(imp, Dyn(product, tuple(int(d) for d in got), False), out)]


# -- moving entries ----------------------------------------------------------------------
def _transpose(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    x = _dyn(args[0], "the input of Transpose")
    rank = imp.lead + len(x.shape)
    perm = [int(p) for p in at.get("perm", range(rank - 1, -1, -1))]
    if perm[:imp.lead] != list(range(imp.lead)):
        raise Unsupported("Transpose that moves the batch axis (it would mix examples)")
    own = [p - imp.lead for p in perm[imp.lead:]]
    shape = tuple(x.shape[p] for p in own)
    swap = list(range(len(own) - 2)) + [len(own) - 1, len(own) - 2]
    if len(own) >= 2 and own == swap and x.tensor:
        return [Dyn(ex.Tr(x.expr), shape, False)]
    moved = [p for p in own if x.shape[p] != 1]
    if moved == sorted(moved):
        return [reshaped(imp, x, shape)]  # only axes of size 1 move: entries keep their order
    if x.tensor and len(set(x.shape)) == len(x.shape) and not imp.timed:
        # permute finds each axis by its size, which here only one axis has
        target = ex.Name(imp.names.numbered("p"))
        imp.declarations.append(f"{ex.show(target)} ∈ ℝ^({'×'.join(map(str, shape))})")
        imp.equations.append((target, ex.Call("permute", x.expr)))
        return [Dyn(target, shape, False)]
    raise Unsupported("Transpose that reorders per-example axes of equal sizes other than "
                      "the last two")


def _flatten(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    x = _dyn(args[0], "the input of Flatten")
    axis = _axis(int(at.get("axis", 1)), imp.lead + len(x.shape)) - imp.lead
    if imp.lead != 1 or axis < 0 or int(np.prod(x.shape[:axis], dtype=np.int64)) != 1:
        raise Unsupported("Flatten that merges the batch axis with others")
    return [reshaped(imp, x, (x.size,))]


def _reshape(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    x = _dyn(args[0], "the input of Reshape")
    if not isinstance(args[1], Const):
        raise Unsupported("Reshape to a shape that is not constant")
    target = [int(d) for d in np.asarray(args[1].value).reshape(-1)]
    if at.get("allowzero", 0) and 0 in target:
        raise Unsupported("Reshape with allowzero")
    lead, rest = target[:imp.lead], target[imp.lead:]
    rest = [x.shape[i] if d == 0 and i < len(x.shape) else d for i, d in enumerate(rest)]
    copies = all(d == 0 or (d == s and s is not None) for d, s in
                 zip(lead, imp.lead_sizes, strict=True))
    keeps_lead = copies or (lead.count(-1) == 1 and -1 not in rest and all(
        d in (-1, 0, s) or s is None for d, s in zip(lead, imp.lead_sizes, strict=True)))
    if rest.count(-1) == 1 and copies:
        known = int(np.prod([d for d in rest if d != -1], dtype=np.int64))
        rest = [x.size // max(known, 1) if d == -1 else d for d in rest]
    if not keeps_lead or -1 in rest or int(np.prod(rest, dtype=np.int64)) != x.size:
        raise Unsupported("Reshape that moves values across the batch axis")
    return [reshaped(imp, x, tuple(rest))]


def _squeeze_axes(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[int] | None:
    if "axes" in at:
        return [int(a) for a in at["axes"]]
    if len(args) > 1 and args[1] is not None:
        if not isinstance(args[1], Const):
            raise Unsupported(f"{node.op_type} with axes that are not constant")
        return [int(a) for a in np.asarray(args[1].value).reshape(-1)]
    return None


def _squeeze(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    x = args[0]
    axes = _squeeze_axes(imp, node, args, at)
    if isinstance(x, SeqY) and axes is not None and [_axis(a, 4) for a in axes] == [1]:
        if len(x.exprs) != 1:
            raise Unsupported("Squeeze of the direction axis of a bidirectional op's Y (it "
                              "holds two directions)")
        return [Dyn(x.exprs[0], (x.hidden,), False)]
    if isinstance(x, Final) and axes is not None and [_axis(a, 3) for a in axes] == [0]:
        return [x]
    x = _dyn(x, "the input of Squeeze")
    rank = imp.lead + len(x.shape)
    if axes is None:
        if any(s is None or s == 1 for s in imp.lead_sizes):
            raise Unsupported("Squeeze without axes where the batch size may be 1")
        return [reshaped(imp, x, tuple(d for d in x.shape if d != 1))]
    per = sorted(_axis(a, rank) - imp.lead for a in axes)
    if any(a < 0 or x.shape[a] != 1 for a in per):
        raise Unsupported("Squeeze of the batch axis or of an axis longer than 1")
    return [reshaped(imp, x, tuple(d for i, d in enumerate(x.shape) if i not in per))]


def _unsqueeze(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    x = _dyn(args[0], "the input of Unsqueeze")
    axes = _squeeze_axes(imp, node, args, at) or []
    rank = imp.lead + len(x.shape) + len(axes)
    per = sorted(_axis(a, rank) - imp.lead for a in axes)
    if any(a < 0 for a in per):
        raise Unsupported("Unsqueeze in front of the batch axis")
    shape = list(x.shape)
    for a in per:
        shape.insert(a, 1)
    return [reshaped(imp, x, tuple(shape))]


def _concat(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    """Along the first per-example axis: ``[a; b]``; along a later one whose leading axes
    are all 1, the same entries stacked as flat vectors."""
    parts = [_dyn(a, "every part of Concat") for a in args if a is not None]
    rank = imp.lead + len(parts[0].shape)
    axis = _axis(int(at["axis"]), rank) - imp.lead
    if axis < 0:
        raise Unsupported("Concat along the batch axis (it would stack examples)")
    if len({len(p.shape) for p in parts}) > 1:
        raise Unsupported("Concat of values with different numbers of axes")
    shape = list(parts[0].shape)
    shape[axis] = sum(p.shape[axis] for p in parts)
    if len(parts) == 1:
        return [parts[0]]
    if int(np.prod(parts[0].shape[:axis], dtype=np.int64)) != 1:
        if not all(p.tensor for p in parts) or axis < len(shape) - 2:
            raise Unsupported("Concat along an inner axis other than the last two")
        return [_placed(imp, parts, axis, tuple(shape))]
    if axis == 0 and all(p.tensor or len(p.shape) == 1 for p in parts):
        return [Dyn(ex.Stack(tuple(p.expr for p in parts)), tuple(shape), False)]
    stacked = Dyn(ex.Stack(tuple(flat_expr(p) for p in parts)), (math.prod(shape),), False)
    return [reshaped(imp, stacked, tuple(shape))]


def _placed(imp: Importer, parts: list[Dyn], axis: int, shape: tuple[int, ...]) -> Dyn:
    """Side by side along one of the last two axes: Σ of each part times a 0/1 matrix
    that places it (``A P₁ + B P₂``; every entry is one product with 1, so exact)."""
    total = shape[axis]
    out: ex.Expr | None = None
    offset = 0
    for p in parts:
        width = p.shape[axis]
        place = np.zeros((width, total), imp.dtype)
        place[np.arange(width), offset + np.arange(width)] = 1.0
        offset += width
        name = operand(imp, p)
        term = ex.Bin("·", name, ex.Name(imp.weight(place, "P"))) if axis == len(shape) - 1 \
            else ex.Bin("·", ex.Name(imp.weight(place.T, "P")), name)
        out = term if out is None else ex.add(out, term)
    assert out is not None
    return Dyn(out, shape, False)


def _slice(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    """Slice with constant bounds along per-example axes, one after the other (the batch
    axis only whole): a run ``x[a:b]`` along the first, or picked entries (any step) along
    the last two with a 0/1 matrix."""
    x = _dyn(args[0], "the input of Slice")
    if imp.opset < 10:
        bounds = [at.get("starts"), at.get("ends"), at.get("axes"), None]
    else:
        bounds = [None, None, None, None]
        for i, arg in enumerate(args[1:5]):
            if arg is not None and not isinstance(arg, Const):
                raise Unsupported("Slice with bounds computed per example")
            bounds[i] = None if arg is None else list(np.asarray(arg.value).reshape(-1))
    starts, ends, axes, steps = bounds
    if starts is None or ends is None:
        raise Unsupported("Slice without bounds")
    rank = imp.lead + len(x.shape)
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    for a, start, stop, step in zip(axes, starts, ends, steps, strict=True):
        axis = _axis(int(a), rank) - imp.lead
        if axis < 0:
            size = imp.lead_sizes[0] if imp.lead_sizes else None
            if size is None or range(*slice(int(start), int(stop), int(step)).indices(size)) \
                    != range(size):
                raise Unsupported("Slice of the batch axis (it would drop examples)")
            continue
        picked = range(*slice(int(start), int(stop), int(step)).indices(x.shape[axis]))
        if not picked:
            raise Unsupported("Slice that takes no entries")
        x = pick(imp, x, axis, list(picked))
    return [x]


def pick(imp: Importer, x: Dyn, axis: int, index: list[int]) -> Dyn:
    """Entries ``index`` along a per-example axis: a run along a tensor's first axis or a
    vector as ``x[a:b]``; any others along the last two axes as a product with a 0/1
    matrix S (``X S``, ``Sᵀ X``)."""
    n = x.shape[axis]
    if index == list(range(index[0], index[-1] + 1)) and \
            (x.tensor and axis == 0 or not x.tensor and x.size == n):
        return take(imp, x, axis, index[0], index[-1] + 1)
    if not x.tensor or axis < len(x.shape) - 2:
        raise Unsupported("picking entries along an axis other than the first or the last "
                          "two per example")
    s = np.zeros((n, len(index)), imp.dtype)
    s[index, np.arange(len(index))] = 1.0
    shape = tuple(len(index) if i == axis else d for i, d in enumerate(x.shape))
    name = operand(imp, x)
    if axis == len(x.shape) - 1:
        return Dyn(ex.Bin("·", name, ex.Name(imp.weight(s, "S"))), shape, False)
    return Dyn(ex.Bin("·", ex.Name(imp.weight(s.T, "S")), name), shape, False)


def take(imp: Importer, x: Dyn, axis: int, start: int, stop: int) -> Dyn:
    """Entries start … stop−1 along a per-example axis: ``X[a:b]`` along a tensor's first
    axis; a run of entries ``x[a:b]`` when every other axis is 1 (a vector)."""
    first = x.tensor and axis == 0
    if not first and (axis != len(x.shape) - 1 or x.size != x.shape[-1]):
        raise Unsupported("a slice along an axis other than the first per-example one")
    if (start, stop) == (0, x.shape[axis]):
        return x
    if first:
        return Dyn(ex.Part(operand(imp, x), start, stop), (stop - start, *x.shape[1:]), False)
    entries = imp.define(Dyn(flat_expr(x), x.shape, True)) if x.tensor else x
    shape = (*x.shape[:-1], stop - start)  # the last axis, all others 1: a run of entries
    return reshaped(imp, Dyn(ex.Part(operand(imp, entries), start, stop), (stop - start,),
                             False), shape)


RULES: dict[str, Rule] = {
    "Softmax": _softmax("softmax"), "LogSoftmax": _softmax("log_softmax"),
    **{op: _reduce for op in _FUNC},
    "MatMul": _matmul, "Transpose": _transpose, "Flatten": _flatten, "Reshape": _reshape,
    "Squeeze": _squeeze, "Unsqueeze": _unsqueeze, "Concat": _concat, "Slice": _slice,
}
