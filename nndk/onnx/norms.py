"""ONNX normalizations, Split, CumSum and Dropout's mask, written with reductions along axes.

Layer and RMS normalization average over the per-example axes from ``axis`` on (the batch
axis among them mixes examples: refused); batch normalization in inference mode and instance
normalization scale each channel, ONNX axis 1, which per example is the first axis, so their
per-channel constants become ``(C, 1, …)`` weights. A split is slices ``x[a:b]``; a running
sum is a product with a triangular 0/1 matrix (exact: each entry is a sum of the same terms).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from nndk.onnx import expr as ex
from nndk.onnx.axes import pick, reshaped, take
from nndk.onnx.graph import Importer
from nndk.onnx.ops import _axis, _dyn, const_operand, flat_expr
from nndk.onnx.values import Const, Dyn, Unsupported, Value

Args = list[Value | None]
Rule = Callable[[Importer, Any, Args, dict[str, Any]], list[Value]]


def _from(imp: Importer, node: Any, x: Dyn, axis: int) -> list[int]:
    """Per-example axes from ONNX ``axis`` to the last; the batch's among them is refused."""
    first = _axis(axis, imp.lead + len(x.shape)) - imp.lead
    if first < 0:
        raise Unsupported(f"{node.op_type} over the batch axis (it would mix examples)")
    return list(range(first, len(x.shape)))


def mean_over(x: Dyn, axes: list[int], e: ex.Expr, func: str = "mean") -> ex.Expr:
    """``func`` over these per-example axes of an expression of x's shape and form."""
    if len(axes) == len(x.shape) or all(x.shape[i] == 1 for i in range(len(x.shape))
                                        if i not in axes):
        return ex.Call(func, e)  # every entry
    if not x.tensor:
        raise Unsupported("a normalization over some axes of a reshaped value")
    for a in axes:
        e = ex.Call(func, e, (("axis", float(a)),))
    return e


def _kept(x: Dyn, axes: list[int]) -> tuple[int, ...]:
    return tuple(1 if i in axes else d for i, d in enumerate(x.shape))


def _scale(imp: Importer, node: Any, arg: Value | None, x: Dyn, stem: str) -> ex.Expr | None:
    if arg is None:
        return None
    if not isinstance(arg, Const):
        raise Unsupported(f"{node.op_type} with a scale or bias that varies per example")
    return const_operand(imp, arg, x, stem)


def _times(e: ex.Expr, k: ex.Expr | None) -> ex.Expr:
    return e if k is None else ex.Bin("⊙", e, k)


def _layer_norm(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    """(x − μ) / √(σ² + ε) ⊙ W + B over the axes from ``axis`` on; Mean and InvStdDev too."""
    x = imp.define(_dyn(args[0], "the input of LayerNormalization"), stem="u")
    axes = _from(imp, node, x, int(at.get("axis", -1)))
    eps = imp.num(float(np.float32(at.get("epsilon", 1e-5))))
    kept = _kept(x, axes)
    mu = imp.define(Dyn(mean_over(x, axes, x.expr), kept, x.flat), stem="μ")
    d = imp.define(x.like(ex.sub(x.expr, mu.expr)), stem="d")
    var = mean_over(x, axes, ex.Pow(d.expr, 2.0))
    inv = imp.define(Dyn(ex.Bin("/", imp.num(1.0), ex.Call("sqrt", ex.add(var, eps))), kept,
                         x.flat), stem="s")
    y = _times(ex.Bin("⊙", d.expr, inv.expr), _scale(imp, node, args[1], x, "γ"))
    bias = _scale(imp, node, args[2] if len(args) > 2 else None, x, "β")
    return [x.like(y if bias is None else ex.add(y, bias)), mu, inv]


def _rms_norm(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    """x / √(mean(x²) + ε) ⊙ W over the axes from ``axis`` on."""
    x = imp.define(_dyn(args[0], "the input of RMSNormalization"), stem="u")
    axes = _from(imp, node, x, int(at.get("axis", -1)))
    eps = imp.num(float(np.float32(at.get("epsilon", 1e-5))))
    rms = ex.Call("sqrt", ex.add(mean_over(x, axes, ex.Pow(x.expr, 2.0)), eps))
    return [x.like(_times(ex.Bin("/", x.expr, rms), _scale(imp, node, args[1], x, "γ")))]


def _lp_norm(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    x = imp.define(_dyn(args[0], "the input of LpNormalization"), stem="u")
    p = int(at.get("p", 2))
    if p not in (1, 2):
        raise Unsupported(f"LpNormalization with p={p} (ONNX allows 1 or 2)")
    axes = _from(imp, node, x, int(at.get("axis", -1)))[:1]
    norm = imp.define(Dyn(mean_over(x, axes, x.expr, "norm") if p == 2 else
                          mean_over(x, axes, ex.Call("abs", x.expr), "Σ"),
                          tuple(1 if i in axes else d for i, d in enumerate(x.shape)), x.flat),
                      stem="n")
    # a zero norm gives 0, as onnx's reference has it, not 0/0: divide by 1 there
    safe = ex.add(norm.expr, ex.Bin("≤", norm.expr, imp.num(0.0)))
    return [x.like(ex.Bin("/", x.expr, safe))]


def _per_channel(imp: Importer, node: Any, x: Dyn, arg: Value | None, stem: str,
                 add: float = 0.0) -> ex.Expr:
    """A per-channel constant (C,) as a (C, 1, …) weight beside x, whose first axis is C."""
    if not isinstance(arg, Const) or np.asarray(arg.value).shape != x.shape[:1]:
        raise Unsupported(f"{node.op_type} with per-channel values that are not constants "
                          "of one entry per channel")
    value = np.asarray(arg.value) + np.asarray(add, np.asarray(arg.value).dtype)
    per = value.reshape(value.shape + (1,) * (len(x.shape) - 1))
    return const_operand(imp, Const(per), x, stem)


def _batch_norm(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    """Inference mode: (x − mean) / √(var + ε) ⊙ scale + bias, channel by channel."""
    if int(at.get("training_mode", 0)) or len(node.output) > 1 and any(node.output[1:]):
        raise Unsupported("BatchNormalization in training mode (statistics of the batch)")
    x = _dyn(args[0], "the input of BatchNormalization")
    if not x.shape or imp.lead != 1 or x.flat:
        raise Unsupported("BatchNormalization of a value without its channel axis")
    eps = float(np.float32(at.get("epsilon", 1e-5)))
    scale, bias, mean = (_per_channel(imp, node, x, a, s) for a, s in
                         ((args[1], "γ"), (args[2], "β"), (args[3], "μ")))
    var = _per_channel(imp, node, x, args[4], "v", add=eps)
    y = ex.Bin("⊙", ex.Bin("/", ex.sub(x.expr, mean), ex.Call("sqrt", var)), scale)
    return [x.like(ex.add(y, bias))]


def _instance_norm(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    """Each example's channels normalized over their own entries (axes 1… per example)."""
    x = imp.define(_dyn(args[0], "the input of InstanceNormalization"), stem="u")
    if not x.tensor:
        raise Unsupported("InstanceNormalization of a value without spatial axes")
    axes = list(range(1, len(x.shape)))
    eps = imp.num(float(np.float32(at.get("epsilon", 1e-5))))
    mu = mean_over(x, axes, x.expr)
    d = imp.define(x.like(ex.sub(x.expr, mu)), stem="d")
    sd = ex.Call("sqrt", ex.add(mean_over(x, axes, ex.Pow(d.expr, 2.0)), eps))
    y = ex.Bin("⊙", ex.Bin("/", d.expr, sd), _per_channel(imp, node, x, args[1], "γ"))
    return [x.like(ex.add(y, _per_channel(imp, node, x, args[2], "β")))]


def _split(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    x = _dyn(args[0], "the input of Split")
    rank = imp.lead + len(x.shape)
    axis = _axis(int(at.get("axis", 0)), rank) - imp.lead
    if axis < 0:
        raise Unsupported("Split of the batch axis (it would split the examples)")
    given = args[1] if len(args) > 1 else None
    n = x.shape[axis]
    if given is not None:
        if not isinstance(given, Const):
            raise Unsupported("Split with sizes computed per example")
        sizes = [int(s) for s in np.asarray(given.value).reshape(-1)]
    elif "split" in at:
        sizes = [int(s) for s in at["split"]]
    else:
        parts = int(at.get("num_outputs", len(node.output)))
        step = -(-n // parts)
        sizes = [min(step, n - i * step) for i in range(parts)]
    if sum(sizes) != n or min(sizes) <= 0:
        raise Unsupported(f"Split into sizes {sizes} of an axis of {n} entries")
    starts = np.cumsum([0, *sizes[:-1]])
    if x.tensor and axis >= len(x.shape) - 2 and axis > 0:  # columns: X S, with a 0/1 S
        return [pick(imp, x, axis, list(range(int(a), int(a) + s)))
                for a, s in zip(starts, sizes, strict=True)]
    return [take(imp, x, axis, int(a), int(a) + s) for a, s in zip(starts, sizes, strict=True)]


def _cumsum(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    """A running sum along a vector's entries or a matrix's last or first axis: a product
    with the triangular 0/1 matrix that ``exclusive`` and ``reverse`` choose."""
    x = _dyn(args[0], "the input of CumSum")
    if not isinstance(args[1], Const):
        raise Unsupported("CumSum along an axis computed per example")
    axis = _axis(int(np.asarray(args[1].value).reshape(())), imp.lead + len(x.shape)) - imp.lead
    if axis < 0:
        raise Unsupported("CumSum along the batch axis (it would mix examples)")
    n = x.shape[axis]
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    strict = bool(at.get("exclusive", 0))
    before = (i > j) if int(at.get("reverse", 0)) else (i < j)
    upper = (before | ((i == j) & (not strict))).astype(imp.dtype)  # y[j] = Σᵢ x[i] U[i, j]
    key = ("cumsum", n, strict, int(at.get("reverse", 0)))
    if len(x.shape) == 1:
        w = ex.Name(imp.weight(upper.T, "C", key))
        return [x.like(ex.Bin("·", w, x.expr if isinstance(x.expr, ex.Name)
                              else imp.define(x).expr))]
    if not x.tensor or axis not in (len(x.shape) - 1, len(x.shape) - 2):
        raise Unsupported("CumSum along an axis other than the last two of a per-example value")
    x = imp.define(x)
    if axis == len(x.shape) - 1:
        return [x.like(ex.Bin("·", x.expr, ex.Name(imp.weight(upper, "C", key))))]
    return [x.like(ex.Bin("·", ex.Name(imp.weight(upper.T, "C", key)), x.expr))]


def _dropout(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    """Dropout as inference runs it (or with ratio 0): the input, and a mask of ones."""
    x = _dyn(args[0], "the input of Dropout")
    ratio, training = (args[i] if len(args) > i else None for i in (1, 2))
    zero = isinstance(ratio, Const) and float(np.asarray(ratio.value).reshape(())) == 0.0
    if training is not None and (not isinstance(training, Const) or bool(training.value)) \
            and not zero:
        raise Unsupported("Dropout in training mode")
    if at.get("is_test", 1) == 0 and imp.opset < 7:
        raise Unsupported("Dropout in training mode")
    ones = x.like(ex.Call("where", x.expr, more=(imp.num(1.0), imp.num(1.0))))
    return [x, ones]


def _lrn(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    """x / (bias + α/size · Σ x² over neighbouring channels)^β: the window sum is a band
    matrix over the channels (axis 0 per example), applied to the flattened squares."""
    from nndk.onnx.linear import MAX_ENTRIES

    x = _dyn(args[0], "the input of LRN")
    if not x.tensor:
        raise Unsupported("LRN of a value without spatial axes")
    size = int(at["size"])
    alpha, beta, bias = (float(np.float32(at.get(k, d))) for k, d in
                         (("alpha", 1e-4), ("beta", 0.75), ("bias", 1.0)))
    channels, rest = x.shape[0], int(np.prod(x.shape[1:]))
    if (x.size ** 2) > MAX_ENTRIES:
        raise Unsupported(f"LRN of {x.size} entries per example (a {x.size}² band matrix)")
    c, d = np.arange(channels)[:, None], np.arange(channels)[None, :]
    band = ((d >= c - (size - 1) // 2) & (d <= c + (size - 1) // 2 + (size - 1) % 2))
    window = np.kron(band.astype(imp.dtype), np.eye(rest, dtype=imp.dtype))
    flat = imp.define(Dyn(flat_expr(x), x.shape, True), stem="v")
    total = ex.Bin("·", ex.Name(imp.weight(window, "S")), ex.Pow(flat.expr, 2.0))
    scale = ex.add(imp.num(bias), ex.Bin("⊙", imp.num(alpha / size), total))
    out = Dyn(ex.Bin("⊙", flat.expr, ex.Pow(scale, -beta)), (x.size,), False)
    return [reshaped(imp, out, x.shape)]


RULES: dict[str, Rule] = {
    "LRN": _lrn,
    "LayerNormalization": _layer_norm, "RMSNormalization": _rms_norm,
    "LpNormalization": _lp_norm, "BatchNormalization": _batch_norm,
    "InstanceNormalization": _instance_norm, "Split": _split, "CumSum": _cumsum,
    "Dropout": _dropout,
}
