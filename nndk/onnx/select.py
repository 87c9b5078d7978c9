"""ArgMax, ArgMin, Hardmax and ReduceProd, written with comparisons, running sums and logs.

The first largest entry along an axis is where ``x ≥ max(x)`` and no earlier entry is: the
count of earlier maxima is a product with a strictly triangular 0/1 matrix (exact), so the
one-hot (Hardmax) and the index (ArgMax, a product with 0, 1, …, n−1) need no new op and
break ties as ONNX does (first index, or last with ``select_last_index``). The product of
entries is ``exp(Σ log|x|)`` with the sign ``cos(π · #negatives)``; a zero gives log 0 = −∞
and so 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nndk.onnx import expr as ex
from nndk.onnx.axes import _per_axes, _reduce_axes, reshaped
from nndk.onnx.graph import Importer
from nndk.onnx.norms import mean_over
from nndk.onnx.ops import _dyn
from nndk.onnx.values import Const, Dyn, Unsupported, Value

Args = list[Value | None]


def _along(imp: Importer, x: Dyn, axis: int, w: np.ndarray, stem: str) -> ex.Expr:
    """``w`` applied along ``axis``: W x for a vector, X W on the last axis, Wᵀ X on the one
    before (w maps the axis' n entries to its columns)."""
    if len(x.shape) == 1:
        return ex.Bin("·", ex.Name(imp.weight(w.T, stem)), imp.define(x).expr)
    if not x.tensor or axis not in (len(x.shape) - 1, len(x.shape) - 2):
        raise Unsupported("an arg-max along an axis other than the last two per example")
    if axis == len(x.shape) - 1:
        return ex.Bin("·", imp.define(x).expr, ex.Name(imp.weight(w, stem)))
    return ex.Bin("·", ex.Name(imp.weight(w.T, stem)), imp.define(x).expr)


def _one_hot(imp: Importer, node: Any, x: Dyn, axis: int, smallest: bool, last: bool) -> Dyn:
    """1 at the first (or last) extreme entry along the axis, 0 elsewhere."""
    if x.flat:
        raise Unsupported(f"{node.op_type} of a reshaped value")
    x = imp.define(x, stem="u")
    func = "min" if smallest else "max"
    extreme = ex.Call(func, x.expr) if len(x.shape) == 1 else \
        ex.Call(func, x.expr, (("axis", float(axis)),))
    hit = imp.define(x.like(ex.Bin("≤" if smallest else "≥", x.expr, extreme)), stem="e")
    n = x.shape[axis]
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    before = ((i > j) if last else (i < j)).astype(imp.dtype)  # count[j] = Σ_i hit[i] B[i, j]
    count = _along(imp, hit, axis, before, "B")
    return hit.like(ex.Bin("⊙", hit.expr, ex.Bin("<", count, imp.num(0.5))))


def _axis(imp: Importer, node: Any, x: Dyn, at: dict[str, Any], default: int) -> int:
    (axis,) = _per_axes(imp, node, x, [int(at.get("axis", default))])
    return axis


def _hardmax(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    x = _dyn(args[0], "the input of Hardmax")
    if imp.opset < 13:
        raise Unsupported(f"Hardmax of opset {imp.opset} (over the flattened axes from axis)")
    return [_one_hot(imp, node, x, _axis(imp, node, x, at, -1), False, False)]


def _arg(smallest: bool) -> Any:
    def rule(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
        x = _dyn(args[0], f"the input of {node.op_type}")
        axis = _axis(imp, node, x, at, 0)
        hot = imp.define(_one_hot(imp, node, x, axis, smallest,
                                  bool(at.get("select_last_index", 0))), stem="o")
        index = _along(imp, hot, axis, np.arange(x.shape[axis], dtype=imp.dtype)[:, None], "J")
        out = Dyn(index, tuple(1 if i == axis else d for i, d in enumerate(x.shape)), False)
        if int(at.get("keepdims", 1)):
            return [out]
        return [reshaped(imp, out, tuple(d for i, d in enumerate(x.shape) if i != axis))]
    return rule


def _prod(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    """exp(Σ log|x|) ⊙ cos(π Σ(x < 0)) over the axes: the magnitude and the sign."""
    x = imp.define(_dyn(args[0], "the input of ReduceProd"), stem="u")
    axes = _reduce_axes(imp, node, args, at)
    if axes is None:
        return [x]
    if not axes:
        raise Unsupported("ReduceProd over every axis, the batch's too (it would mix examples)")
    own = _per_axes(imp, node, x, axes)
    size = mean_over(x, own, ex.Call("log", ex.Call("abs", x.expr)), "Σ")
    negatives = mean_over(x, own, ex.Bin("<", x.expr, imp.num(0.0)), "Σ")
    sign = ex.Call("cos", ex.Bin("⊙", imp.num(float(np.pi)), negatives))
    kept = tuple(1 if i in own else d for i, d in enumerate(x.shape))
    out = Dyn(ex.Bin("⊙", ex.Call("exp", size), sign), kept, x.flat)
    if int(at.get("keepdims", 1)):
        return [out]
    return [reshaped(imp, out, tuple(d for i, d in enumerate(x.shape) if i not in own))]


def _global_max(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    """The largest entry of each channel (axis 0 per example) over the other axes."""
    x = _dyn(args[0], "the input of GlobalMaxPool")
    if not x.tensor:
        raise Unsupported("GlobalMaxPool of a value without spatial axes")
    axes = list(range(1, len(x.shape)))
    kept = (x.shape[0],) + (1,) * len(axes)
    return [Dyn(mean_over(x, axes, x.expr, "max"), kept, False)]


def _cumprod(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    """exp of a running sum of log|x|, the sign cos(π · running #negatives), and 0 once a
    zero has been met (a running count of zeros): three triangular products."""
    x = imp.define(_dyn(args[0], "the input of CumProd"), stem="u")
    if not isinstance(args[1], Const):
        raise Unsupported("CumProd along an axis computed per example")
    (axis,) = _per_axes(imp, node, x, [int(np.asarray(args[1].value).reshape(()))])
    n = x.shape[axis]
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    strict = bool(at.get("exclusive", 0))
    before = (i > j) if int(at.get("reverse", 0)) else (i < j)
    upper = (before | ((i == j) & (not strict))).astype(imp.dtype)
    zero = ex.Bin("⊙", ex.Bin("≤", x.expr, imp.num(0.0)), ex.Bin("≥", x.expr, imp.num(0.0)))
    run = [imp.define(x.like(e), stem="r") for e in (
        ex.Call("log", ex.add(ex.Call("abs", x.expr), zero)), ex.Bin("<", x.expr, imp.num(0.0)),
        zero)]
    size, negatives, zeros = (_along(imp, r, axis, upper, "U") for r in run)
    sign = ex.Call("cos", ex.Bin("⊙", imp.num(float(np.pi)), negatives))
    body = ex.Bin("⊙", ex.Bin("⊙", ex.Call("exp", size), sign), ex.Bin("<", zeros, imp.num(0.5)))
    return [x.like(body)]


RULES = {"Hardmax": _hardmax, "ArgMax": _arg(False), "ArgMin": _arg(True),
         "ReduceProd": _prod, "GlobalMaxPool": _global_max, "CumProd": _cumprod}


def _loss(softmax: bool) -> Any:
    """SoftmaxCrossEntropyLoss and NegativeLogLikelihoodLoss with reduction 'none': per
    example −w[y]·logp[y] at each position, the class picked by comparing the label with
    0 … C−1 along the class axis (axis 0 per example); an ignored label gives 0."""
    def rule(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
        if at.get("reduction", "mean") != "none":
            raise Unsupported(f"{node.op_type} with reduction '{at.get('reduction', 'mean')}' "
                              "(a mean or sum over the batch)")
        x = _dyn(args[0], f"the scores of {node.op_type}")
        y = _dyn(args[1], f"the labels of {node.op_type}")
        if x.flat or y.flat or y.shape != x.shape[1:]:
            raise Unsupported(f"{node.op_type} of labels that do not fit the scores")
        rank, classes = len(x.shape), x.shape[0]
        if softmax:
            params = (("axis", 0.0),) if rank > 1 else ()
            x = imp.define(x.like(ex.Call("log_softmax", x.expr, params)), stem="logp")
        label = imp.define(y).expr
        label = ex.Tr(label) if rank == 2 else label  # (d,) beside (C, d): a row
        per = (classes,) + (1,) * (rank - 1)
        c = ex.Name(imp.weight(np.arange(classes, dtype=imp.dtype).reshape(per), "c",
                               ("iota", per)))
        hot = imp.define(x.like(ex.Bin("⊙", ex.Bin("≥", label, c), ex.Bin("≤", label, c))),
                         stem="o")
        axis = (("axis", 0.0),) if rank > 1 else ()
        picked: ex.Expr = ex.Call("Σ", ex.Bin("⊙", hot.expr, x.expr), axis)
        weights = args[2] if len(args) > 2 else None
        if weights is not None:
            if not isinstance(weights, Const):
                raise Unsupported(f"{node.op_type} with class weights computed per example")
            w = ex.Name(imp.weight(np.asarray(weights.value).reshape(per), "w"))
            picked = ex.Bin("⊙", picked, ex.Call("Σ", ex.Bin("⊙", hot.expr, w), axis))
        loss: ex.Expr = ex.Neg(picked)
        if "ignore_index" in at:
            ii = imp.num(float(at["ignore_index"]))
            kept = ex.sub(imp.num(1.0), ex.Bin("⊙", ex.Bin("≥", label, ii), ex.Bin("≤", label, ii)))
            loss = ex.Bin("⊙", loss, kept)
        kept_shape = (1, *x.shape[1:])
        out = reshaped(imp, Dyn(loss, kept_shape if rank > 1 else (1,), False), y.shape)
        return [out, x] if softmax else [out]
    return rule


RULES.update({"SoftmaxCrossEntropyLoss": _loss(True), "NegativeLogLikelihoodLoss": _loss(False)})
