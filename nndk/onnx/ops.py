"""ONNX ops → equation expressions: one converter per op, looked up in the table ``RULES``.

A converter gets the node's input values (:mod:`nndk.onnx.values`) and returns its outputs.
Constants meeting per-example values become weights (vectors, matrices) or number literals;
ops without a function of their own in the equation language are written with those that
exist: a one-sided ``Clip(x) = x − relu(x − max)`` (two bounds are ``clip(x; min=…, max=…)``).
Reshapes, flattens and squeezes that keep the lead axes change nothing in the equations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from nndk.onnx import expr as ex
from nndk.onnx.folding import KEEPS_REFS, keep_ref, over_weights, use, vector_shape
from nndk.onnx.graph import RECURRENT, Importer
from nndk.onnx.spatial import SPATIAL
from nndk.onnx.values import WHAT, Const, Dyn, Final, SeqY, Unsupported, Value
from nnre.ops import BY_ONNX, OPS, Op

Args = list[Value | None]
RELU, ELU = OPS["relu"].spellings[0], OPS["elu"].spellings[0]
Rule = Callable[[Importer, Any, Args, dict[str, Any]], list[Value]]


def convert(imp: Importer, node: Any, args: Args) -> list[Value]:
    from nndk.onnx import shapes

    special = shapes.convert(imp, node, args, attributes(node))  # any domain: a Label's
    if special is not None:
        return special
    if node.domain not in ("", "ai.onnx"):
        raise Unsupported(f"op {node.domain}.{node.op_type} is not supported")
    if all(a is None or isinstance(a, Const) for a in args) and node.op_type not in RECURRENT:
        outs = imp.fold(node, args)
        if node.op_type in KEEPS_REFS and args and isinstance(args[0], Const):
            return [keep_ref(args[0], outs[0], node.op_type)]
        return over_weights(imp, node, args, outs)
    rule = RULES.get(node.op_type)
    if rule is None:
        raise Unsupported(f"op {node.op_type} is not supported")
    if imp.tensors and node.op_type not in TENSOR_SAFE:
        for a in args:
            if isinstance(a, Dyn) and len(a.shape) > 1:
                raise Unsupported(f"{node.op_type} of a per-example tensor {a.shape} (in a "
                                  "graph with convolutions, only entry-by-entry ops, Flatten "
                                  "and the convolutions themselves take one)")
    return rule(imp, node, args, attributes(node))


def attributes(node: Any) -> dict[str, Any]:
    from onnx.helper import get_attribute_value

    out = {}
    for a in node.attribute:
        value = get_attribute_value(a)
        if isinstance(value, list):  # STRINGS (LSTM's activations) come back as bytes too
            value = [v.decode() if isinstance(v, bytes) else v for v in value]
        out[a.name] = value.decode() if isinstance(value, bytes) else value
    return out


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _dyn(value: Value | None, what: str) -> Dyn:
    if not isinstance(value, Dyn):
        raise Unsupported(f"{what} must vary per example (it is {WHAT[type(value).__name__]})")
    return value


# -- constants meeting per-example values ------------------------------------------------
def per_example(imp: Importer, c: Const, dyn: Dyn) -> np.ndarray:
    """The constant as one example sees it, broadcast to the value's per-example shape."""
    rank = imp.lead + len(dyn.shape)
    v = np.asarray(c.value)
    if v.ndim > rank:
        raise Unsupported("a constant has more axes than the per-example value it meets")
    full: tuple[int, ...] = (1,) * (rank - v.ndim) + tuple(v.shape)
    v = v.reshape(full)
    if any(d != 1 for d in full[:imp.lead]):
        raise Unsupported("a constant varies along the batch (or time) axis")
    per = v.reshape(v.shape[imp.lead:])
    if np.broadcast_shapes(per.shape, dyn.shape) != dyn.shape:
        raise Unsupported("broadcasting a constant would widen a per-example value")
    return np.broadcast_to(per, dyn.shape)


def const_operand(imp: Importer, c: Const, dyn: Dyn, stem: str) -> ex.Expr:
    """A number when the constant is uniform, else a weight vector (named once)."""
    per = per_example(imp, c, dyn)
    flat = per.reshape(-1)
    if c.expr is not None and np.asarray(c.value).size in (flat.size, 1):
        return use(imp, c)
    if flat.size == 0 or np.all(flat == flat[0]):
        return imp.num(flat[0] if flat.size else 0.0)
    if c.ref is not None and vector_shape(np.asarray(c.value)) == (flat.size,):
        return ex.Name(imp.use_ref(c.ref, np.asarray(c.value).reshape(-1)))
    key = (c.source, "vector", dyn.shape) if c.source else None
    return ex.Name(imp.weight(flat, stem, key))


def tensor_operand(imp: Importer, c: Const, dyn: Dyn, stem: str) -> ex.Expr:
    """A number when uniform, else a weight of the constant's own per-example shape, which
    equations broadcast against the tensor as ONNX does (a bias (C, 1, 1) over (C, H, W))."""
    per = per_example(imp, c, dyn)
    flat = per.reshape(-1)
    if flat.size == 0 or np.all(flat == flat[0]):
        return imp.num(flat[0] if flat.size else 0.0)
    value = np.asarray(c.value)
    own = value.reshape(value.shape[max(value.ndim - len(dyn.shape), 0):])
    key = (c.source, "tensor", dyn.shape) if c.source else None
    return ex.Name(imp.weight(own, stem, key))


def matrix(imp: Importer, k: Const) -> ex.Expr:
    """M with ``M x`` = ``x @ K`` for a row x: the weight in the orientation equations read."""
    value = np.asarray(k.value)
    if value.ndim == 1:
        value = value.reshape(-1, 1)
    elif value.ndim != 2:
        raise Unsupported(f"a matrix product with a {value.ndim}-D constant")
    if k.expr is not None and np.asarray(k.value).ndim == 2:  # tanh(W), as the prologue had it
        return use(imp, k) if k.transposed else ex.Tr(use(imp, k))
    if k.ref is not None:
        original = value.T if k.transposed else value
        name = ex.Name(imp.use_ref(k.ref, original))
        return name if k.transposed else ex.Tr(name)
    key = (k.source, "matrix") if k.source else None
    return ex.Name(imp.weight(value.T, "W", key))


def operand(imp: Importer, dyn: Dyn) -> ex.Expr:
    """A per-example value as the right operand of a matrix product: named unless a leaf."""
    return imp.define(dyn).expr if not isinstance(dyn.expr, ex.Name) else dyn.expr


# -- the converters ----------------------------------------------------------------------
def _binary(op: str, stem: str) -> Rule:
    def rule(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
        a, b = args[0], args[1]
        if isinstance(a, Dyn) and isinstance(b, Dyn):
            if imp.tensors and a.shape != b.shape and max(len(a.shape), len(b.shape)) > 1:
                raise Unsupported(f"{node.op_type} of per-example tensors {a.shape} and "
                                  f"{b.shape}")
            shape = tuple(np.broadcast_shapes(a.shape, b.shape))
            size = int(np.prod(shape, dtype=np.int64))
            if a.size == b.size == size:
                return [Dyn(ex.combine(op, a.expr, b.expr), a.shape)]
            if 1 in (a.size, b.size) and size == max(a.size, b.size) and len(shape) <= 1:
                # one number per example over a vector: the language broadcasts it as NumPy
                return [Dyn(ex.combine(op, a.expr, b.expr), a.shape if a.size > 1 else b.shape)]
            raise Unsupported(f"{node.op_type} broadcasts one per-example value over another")
        dyn = _dyn(a if isinstance(a, Dyn) else b, f"an operand of {node.op_type}")
        other = b if dyn is a else a
        if not isinstance(other, Const):
            raise Unsupported(f"{node.op_type} of {type(other).__name__}")
        c = tensor_operand(imp, other, dyn, stem) if imp.tensors and len(dyn.shape) > 1 \
            else const_operand(imp, other, dyn, stem)
        left, right = (dyn.expr, c) if dyn is a else (c, dyn.expr)
        if op == "⊙" and isinstance(c, ex.Num | ex.Neg):
            left, right = c, dyn.expr
        return [Dyn(ex.combine(op, left, right), dyn.shape)]
    return rule


def _function(func: str) -> Rule:
    def rule(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
        x = _dyn(args[0], f"the input of {node.op_type}")
        return [Dyn(ex.Call(func, x.expr), x.shape)]
    return rule


def _neg(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    x = _dyn(args[0], "the input of Neg")
    return [Dyn(ex.Neg(x.expr), x.shape)]


def _identity(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    if not isinstance(args[0], Dyn | Final | SeqY):
        raise Unsupported(f"{node.op_type} of {type(args[0]).__name__}")
    return [args[0]]


def _dropout(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    training = args[2] if len(args) > 2 else None
    if training is not None and (not isinstance(training, Const) or bool(training.value)):
        raise Unsupported("Dropout in training mode")
    if at.get("is_test", 1) == 0 and imp.opset < 7:
        raise Unsupported("Dropout in training mode")
    return _identity(imp, node, args[:1], at)


def _param(imp: Importer, value: float) -> float:
    """A parameter in the shortest text that reads back as the same value in the model's
    dtype (ONNX stores float32 attributes: 0.2, not 0.20000000298023224)."""
    num = imp.num(value)
    return -float(num.a.text) if isinstance(num, ex.Neg) else float(num.text)  # type: ignore


def _leaky_relu(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    x = _dyn(args[0], "the input of LeakyRelu")
    slope = _param(imp, float(at.get("alpha", 0.01)))
    return [Dyn(ex.Call("leaky_relu", x.expr, (("slope", slope),)), x.shape)]


GELU = {"none": _function(OPS["gelu"].spellings[0]),
        "tanh": _function(OPS["gelu_tanh"].spellings[0])}


def _gelu(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    if imp.opset < 20:
        raise Unsupported(f"Gelu is an op of opset 20 (the model imports opset {imp.opset})")
    approximate = at.get("approximate", "none")
    if approximate not in GELU:
        raise Unsupported(f"Gelu with approximate='{approximate}' (expected 'none' or 'tanh')")
    return GELU[approximate](imp, node, args, at)


def _elu(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    """ELU with α: α ⊙ elu(x) + (1 − α) ⊙ relu(x) (x for x > 0, α(eˣ − 1) otherwise)."""
    alpha = float(np.float32(at.get("alpha", 1.0)))
    x = _dyn(args[0], "the input of Elu")
    if alpha == 1.0:
        return [Dyn(ex.Call(ELU, x.expr), x.shape)]
    x = imp.define(x, stem="u")
    scaled = ex.Bin("⊙", imp.num(alpha), ex.Call(ELU, x.expr))
    rest = ex.Bin("⊙", imp.num(1.0 - alpha), ex.Call(RELU, x.expr))
    return [Dyn(ex.add(scaled, rest), x.shape)]


def _hard_sigmoid(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    alpha, beta = (np.float32(at.get(k, d)) for k, d in (("alpha", 0.2), ("beta", 0.5)))
    if alpha != np.float32(0.2) or beta != np.float32(0.5):
        raise Unsupported(f"HardSigmoid with alpha={float(alpha):g}, beta={float(beta):g} "
                          "(only the defaults 0.2, 0.5 are the function hardsigmoid)")
    return _function(OPS["hardsigmoid"].spellings[0])(imp, node, args, at)


def _clip(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    x = _dyn(args[0], "the input of Clip")
    bounds: list[float | None] = [at.get("min"), at.get("max")] if imp.opset < 11 \
        else [None, None]
    for i, arg in enumerate(args[1:3]):
        if arg is not None:
            if not isinstance(arg, Const) or np.asarray(arg.value).size != 1:
                raise Unsupported("Clip with bounds that are not constant numbers")
            bounds[i] = float(np.asarray(arg.value).reshape(()))
    low, high = (b if b is not None and np.isfinite(b) else None for b in bounds)
    if low == 0.0 and high is None:
        return [Dyn(ex.Call(RELU, x.expr), x.shape)]
    if low is not None and high is not None:  # clip follows ONNX when low > high too
        bounds_ = (("min", _param(imp, low)), ("max", _param(imp, high)))
        return [Dyn(ex.Call("clip", x.expr, bounds_), x.shape)]
    if low is not None or high is not None:  # one bound: relu written out

        x = imp.define(x, stem="u")
    out = x.expr
    if high is not None:
        out = ex.sub(out, ex.Call(RELU, ex.sub(x.expr, imp.num(high))))
    if low is not None:
        out = ex.add(out, ex.Call(RELU, ex.sub(imp.num(low), x.expr)))
    return [Dyn(out, x.shape)]


def _softmax(func: str) -> Rule:
    def rule(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
        x = _dyn(args[0], f"the input of {node.op_type}")
        rank = imp.lead + len(x.shape)
        axis = _axis(int(at.get("axis", 1 if imp.opset < 13 else -1)), rank) - imp.lead
        if imp.opset < 13:
            fits = axis >= 0 and int(np.prod(x.shape[:axis], dtype=np.int64)) == 1
        else:
            fits = axis >= 0 and x.size == x.shape[axis]
        if not fits:
            raise Unsupported(f"{node.op_type} over an axis other than the per-example one")
        return [Dyn(ex.Call(func, x.expr), x.shape)]
    return rule


def _entrywise(func: str, stem: str = "k") -> Rule:
    """Max, Min (two inputs or more, nested) and Where: a function of several arguments,
    each a per-example value or a constant, broadcast as ``+`` is. ONNX's booleans (from
    Less, Greater, …) are the language's 0/1 masks."""
    def rule(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
        dyns = [a for a in args if isinstance(a, Dyn)]
        if not dyns or len(args) < 2 or any(a is None for a in args):
            raise Unsupported(f"{node.op_type} without a per-example value among two or "
                              "more inputs")
        wide = max(dyns, key=lambda d: d.size)
        if any(d.size not in (1, wide.size) for d in dyns) or len(wide.shape) > 1:
            raise Unsupported(f"{node.op_type} broadcasts one per-example value over another")
        exprs = [a.expr if isinstance(a, Dyn) else
                 const_operand(imp, a, wide, stem) if isinstance(a, Const) else None
                 for a in args]
        if any(e is None for e in exprs):
            raise Unsupported(f"{node.op_type} of {type(args[0]).__name__}")
        first, *rest = exprs
        if func == "where":
            return [Dyn(ex.Call(func, first, more=tuple(rest)), wide.shape)]  # type: ignore
        out = first
        for e in rest:  # Max(a, b, c) = max(max(a, b), c)
            out = ex.Call(func, out, more=(e,))  # type: ignore[arg-type]
        return [Dyn(out, wide.shape)]  # type: ignore[arg-type]
    return rule


def _slice(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    """Slice of the per-example vector with constant bounds and step 1: ``x[a:b]``."""
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
    if starts is None or ends is None or len(starts) != 1 or len(ends) != 1:
        raise Unsupported("Slice over more than one axis")
    rank = imp.lead + len(x.shape)
    axis = _axis(int(axes[0]), rank) - imp.lead if axes else -imp.lead  # default: axis 0
    if steps and int(steps[0]) != 1:
        raise Unsupported(f"Slice with step {int(steps[0])} (the language takes runs of "
                          "entries)")
    if axis != len(x.shape) - 1 or x.size != x.shape[-1]:
        raise Unsupported("Slice of an axis other than the per-example vector")
    n = x.shape[-1]
    start, stop = (min(max(int(v) + n if int(v) < 0 else int(v), 0), n)
                   for v in (starts[0], ends[0]))
    if stop <= start:
        raise Unsupported("Slice that takes no entries")
    if (start, stop) == (0, n):
        return [x]
    return [Dyn(ex.Part(imp.define(x).expr if not isinstance(x.expr, ex.Name) else x.expr,
                        start, stop), (stop - start,))]


def _reduce(func: str) -> Rule:
    """ReduceSum/Mean/Max/Min/L2 over the per-example vector, keeping its axis."""
    def rule(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
        x = _dyn(args[0], f"the input of {node.op_type}")
        rank = imp.lead + len(x.shape)
        axes_input = node.op_type == "ReduceSum" and imp.opset >= 13 or imp.opset >= 18
        given = args[1] if axes_input and len(args) > 1 else None
        if given is not None and not isinstance(given, Const):
            raise Unsupported(f"{node.op_type} with axes computed per example")
        axes = list(np.asarray(given.value).reshape(-1)) if given is not None \
            else list(at.get("axes", []))
        if not axes:
            raise Unsupported(f"{node.op_type} over every axis, the batch's too")
        if int(at.get("keepdims", 1)) != 1:
            raise Unsupported(f"{node.op_type} with keepdims=0 (a per-example result without "
                              "its axis; nnre keeps reduced values as vectors of one)")
        wanted = {_axis(int(a), rank) - imp.lead for a in axes}
        vector = len(x.shape) >= 1 and x.size == x.shape[-1]
        if not vector or wanted != {len(x.shape) - 1}:
            raise Unsupported(f"{node.op_type} over an axis other than the per-example vector")
        return [Dyn(ex.Call(func, x.expr), (*x.shape[:-1], 1))]
    return rule


def _matmul(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    a, b = args[0], args[1]
    if not isinstance(a, Dyn) or not isinstance(b, Const):
        raise Unsupported("MatMul of anything but a per-example value times a constant matrix")
    if len(a.shape) != 1 or np.asarray(b.value).ndim > 2:
        raise Unsupported("MatMul of a per-example matrix (a batched product)")
    w = matrix(imp, b)
    shape = (np.asarray(b.value).shape[1],) if np.asarray(b.value).ndim == 2 else ()
    return [Dyn(ex.Bin("·", w, operand(imp, a)), shape)]


def _gemm(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    a, b = args[0], args[1]
    c = args[2] if len(args) > 2 else None
    if at.get("transA", 0) or not isinstance(a, Dyn) or not isinstance(b, Const):
        raise Unsupported("Gemm of anything but a per-example A times a constant B")
    if imp.lead != 1 or len(a.shape) != 1:
        raise Unsupported("Gemm of a per-example matrix")
    k = b if not at.get("transB", 0) else Const(b.value.T, b.ref, not b.transposed, b.source,
                                                b.expr, b.uses)
    alpha, beta = float(at.get("alpha", 1.0)), float(at.get("beta", 1.0))
    if alpha != 1.0:
        key = f"{b.source}×{alpha}" if b.source else None
        k = Const(np.asarray(k.value) * alpha, source=key)
    out_shape = (np.asarray(k.value).shape[1],)
    out: ex.Expr = ex.Bin("·", matrix(imp, k), operand(imp, a))
    if isinstance(c, Const) and np.any(np.asarray(c.value) != 0) and beta != 0:
        scaled = Const(np.asarray(c.value) * beta, c.ref if beta == 1 else None,
                       source=c.source if beta == 1 else None)
        out = ex.add(out, const_operand(imp, scaled, Dyn(out, out_shape), "b"))
    elif isinstance(c, Dyn) and beta != 0:
        term = c.expr if beta == 1 else ex.Bin("⊙", imp.num(beta), c.expr)
        out = ex.add(out, term)
    elif c is not None and not isinstance(c, Const | Dyn):
        raise Unsupported(f"Gemm with C a {type(c).__name__}")
    return [Dyn(out, out_shape)]


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
        return [Dyn(x.expr, (x.hidden,))]
    if isinstance(x, Final) and axes is not None and [_axis(a, 3) for a in axes] == [0]:
        return [x]
    x = _dyn(x, "the input of Squeeze")
    rank = imp.lead + len(x.shape)
    if axes is None:
        if any(s is None or s == 1 for s in imp.lead_sizes):
            raise Unsupported("Squeeze without axes where the batch size may be 1")
        keep = [d for d in x.shape if d != 1]
        return [Dyn(x.expr, tuple(keep))]
    per = sorted(_axis(a, rank) - imp.lead for a in axes)
    if any(a < 0 or x.shape[a] != 1 for a in per):
        raise Unsupported("Squeeze of the batch axis or of an axis longer than 1")
    return [Dyn(x.expr, tuple(d for i, d in enumerate(x.shape) if i not in per))]


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
    return [Dyn(x.expr, tuple(shape))]


def _flatten(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    x = _dyn(args[0], "the input of Flatten")
    axis = _axis(int(at.get("axis", 1)), imp.lead + len(x.shape)) - imp.lead
    if imp.lead != 1 or axis < 0 or int(np.prod(x.shape[:axis], dtype=np.int64)) != 1:
        raise Unsupported("Flatten that merges the batch axis with others")
    return [_as_vector(imp, x)]


def _as_vector(imp: Importer, x: Dyn) -> Dyn:
    """A per-example value as the vector of its entries: free where equations hold values
    as vectors, ``flatten(x)`` where they keep a tensor's axes (``Importer.tensors``)."""
    if imp.tensors and len(x.shape) > 1:
        return Dyn(ex.Call(OPS["flatten"].spellings[0], x.expr), (x.size,))
    return Dyn(x.expr, (x.size,))


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
    if imp.tensors and len(x.shape) > 1 and tuple(rest) != x.shape:
        if len(rest) != 1:
            raise Unsupported(f"Reshape of a per-example tensor {x.shape} to {tuple(rest)}")
        return [_as_vector(imp, x)]
    return [Dyn(x.expr, tuple(rest))]


def _transpose(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    x = _dyn(args[0], "the input of Transpose")
    rank = imp.lead + len(x.shape)
    perm = list(at.get("perm", range(rank - 1, -1, -1)))
    full = [None] * imp.lead + list(x.shape)
    moved = [p for p in perm[imp.lead:] if full[p] != 1]
    if perm[:imp.lead] != list(range(imp.lead)) or moved != sorted(moved):
        raise Unsupported("Transpose that moves the batch axis or reorders per-example values")
    return [Dyn(x.expr, tuple(full[p] for p in perm[imp.lead:]))]  # type: ignore[misc]


def _concat(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    parts = [_dyn(a, "every part of Concat") for a in args if a is not None]
    rank = imp.lead + len(parts[0].shape)
    axis = _axis(int(at["axis"]), rank) - imp.lead
    if axis < 0 or int(np.prod(parts[0].shape[:axis], dtype=np.int64)) != 1:
        raise Unsupported("Concat along the batch axis or an inner axis")
    shape = list(parts[0].shape)
    shape[axis] = sum(p.shape[axis] for p in parts)
    if len(parts) == 1:
        return [parts[0]]
    return [Dyn(ex.Stack(tuple(p.expr for p in parts)), tuple(shape))]


def _shape(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    x = _dyn(args[0], "the input of Shape")
    full = [*imp.lead_sizes, *x.shape]
    if any(d is None for d in full):
        raise Unsupported("Shape of a value whose batch size is not fixed")
    dims = np.array(full, np.int64)
    start, end = int(at.get("start", 0)), at.get("end")
    return [Const(dims[start:end] if end is not None else dims[start:])]


def _recurrent(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    from nndk.onnx.recurrent import convert_recurrent

    return convert_recurrent(imp, node, args, at)


def _from_op(op: Op) -> Rule:
    """The converter of an ONNX op that is one of ours (``Op.onnx_import``): its operator or
    its function, with its first spelling; constants added are named b, multipliers k."""
    if op.infix:
        return _binary(op.infix, "b" if op.infix in "+−" else "k")
    return (_softmax if op.vector else _function)(op.spellings[0])


#: ONNX ops whose converters keep a per-example tensor as it is in a graph with convolutions
#: (entry by entry, or the spatial ops) or turn it into a vector as equations do (Flatten);
#: the others refuse one there rather than read it as the vector of its entries.
TENSOR_SAFE = frozenset({
    *(t for t, op in BY_ONNX.items() if not op.vector and not op.reduces),
    "Neg", "LeakyRelu", "Gelu", "Elu", "HardSigmoid", "Clip", "Identity", "Dropout",
    "Flatten", "Reshape"})

RULES: dict[str, Rule] = {
    **{op_type: _from_op(op) for op_type, op in BY_ONNX.items()
       if not op.reduces and op.param_attrs is None},
    **{op_type: _reduce(op.spellings[0]) for op_type, op in BY_ONNX.items() if op.reduces},
    **{op_type: SPATIAL[op.name] for op_type, op in BY_ONNX.items()
       if op.param_attrs is not None},  # conv, pools: nndk/onnx/spatial.py
    "Slice": _slice, "Max": _entrywise("max"), "Min": _entrywise("min"),
    "Where": _entrywise("where"),
    **{op_type: _binary(symbol, "k") for op_type, symbol in (
        ("Less", "<"), ("Greater", ">"), ("LessOrEqual", "≤"), ("GreaterOrEqual", "≥"))},
    "Neg": _neg, "LeakyRelu": _leaky_relu, "Gelu": _gelu,
    "Elu": _elu,
    "HardSigmoid": _hard_sigmoid, "Clip": _clip, "Identity": _identity,
    "Dropout": _dropout,
    "MatMul": _matmul, "Gemm": _gemm, "Flatten": _flatten, "Reshape": _reshape,
    "Squeeze": _squeeze, "Unsqueeze": _unsqueeze, "Transpose": _transpose,
    "Concat": _concat, "Shape": _shape, "LSTM": _recurrent, "GRU": _recurrent,
    "RNN": _recurrent,
}
