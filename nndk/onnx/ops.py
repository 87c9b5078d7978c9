"""ONNX ops → equation expressions: one converter per op, looked up in the table ``RULES``.

A converter gets the node's input values (:mod:`nndk.onnx.values`) and returns its outputs.
Constants meeting per-example values become weights (vectors, matrices) or number literals;
ops without a function of their own in the equation language are written with those that
exist: a one-sided ``Clip(x) = x − relu(x − max)`` (two bounds are ``clip(x; min=…, max=…)``).
Ops along per-example axes (products, reductions, softmax, reshapes) are in
:mod:`nndk.onnx.axes`; ops written with other functions in :mod:`nndk.onnx.compose`.
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
    from nndk.onnx import ids, moved, shapes

    if node.domain in ("", "ai.onnx"):
        done = ids.convert(imp, node, args, attributes(node))  # E[x]: rows by token ids
        if done is None:
            done = moved.convert(imp, node, args, attributes(node))  # batch moved, transA
        if done is not None:
            return done
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
    rule = rule_for(node.op_type)
    if rule is None:
        raise Unsupported(f"op {node.op_type} is not supported")
    from nndk.onnx import linear, masks, moved

    args = masks.finite(imp, node, args)  # −∞ in a mask only a softmax reads

    fallback = linear.RULES.get(node.op_type)
    mark = imp.mark()
    try:
        return rule(imp, node, args, attributes(node))
    except Unsupported as err:
        imp.rollback(mark)  # whatever the first try named
        followed = moved.fallback(imp, node, args, err)  # entries moved: followed, exact
        if followed is not None:
            return followed
        if fallback is None or fallback is rule:
            raise
        try:  # a conv or pool 'conv' cannot write may be a linear map
            return fallback(imp, node, args, attributes(node))
        except Unsupported:
            raise err from None


def rule_for(op_type: str) -> Rule | None:
    """The converter of an ONNX op type: this module's table, then those of the modules
    that write ops along axes, normalizations, compositions, attention, selections and
    linear maps (the more specific first)."""
    from nndk.onnx import attention, axes, compose, linear, norms, select

    tables = (RULES, axes.RULES, norms.RULES, compose.RULES, attention.RULES, select.RULES,
              linear.RULES)
    return next((table[op_type] for table in tables if op_type in table), None)


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
def per_example(imp: Importer, c: Const, dyn: Dyn, spread: bool = True) -> np.ndarray:
    """The constant as one example sees it: with the value's number of axes (leading 1s
    added), broadcast to its per-example shape when ``spread``. It may not vary along the
    batch axis, nor widen the value."""
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
    return np.broadcast_to(per, dyn.shape) if spread else per


def const_operand(imp: Importer, c: Const, dyn: Dyn, stem: str) -> ex.Expr:
    """A number when the constant is uniform; else a weight (named once): beside a tensor,
    with its own axes, which broadcast in the equations as in ONNX (a bias (5,) beside
    (4, 5) is a (1, 5) weight); beside a vector or a flat value, the vector of its entries."""
    per = per_example(imp, c, dyn, spread=not dyn.tensor)
    flat = per.reshape(-1)
    if c.expr is not None and np.asarray(c.value).size in (flat.size, 1):
        return use(imp, c)
    if flat.size == 0 or np.all(flat == flat[0]):
        return imp.num(flat[0] if flat.size else 0.0)
    if dyn.tensor:
        if c.ref is not None and per.shape == np.asarray(c.value).shape:
            return ex.Name(imp.use_ref(c.ref, per))
        key = (c.source, "tensor", per.shape) if c.source else None
        return ex.Name(imp.weight(per, stem, key))
    if c.ref is not None and vector_shape(np.asarray(c.value)) == (flat.size,):
        return ex.Name(imp.use_ref(c.ref, np.asarray(c.value).reshape(-1)))
    key = (c.source, "vector", dyn.shape) if c.source else None
    return ex.Name(imp.weight(flat, stem, key))


def flat_expr(dyn: Dyn) -> ex.Expr:
    """The value as the vector of its entries in row-major order: ``flatten(X)`` of a tensor."""
    return ex.Call("flatten", dyn.expr) if dyn.tensor else dyn.expr


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
def operands(imp: Importer, node: Any, args: Args, stem: str) -> tuple[list[ex.Expr], Dyn]:
    """The arguments of an entry-by-entry op as expressions that broadcast in the equations
    as ONNX broadcasts them, and a value of the result's shape and form (its expr unused).
    Per-example values have the same number of axes; a flat one meets only its own shape."""
    dyns = [a for a in args if isinstance(a, Dyn)]
    if not dyns:
        raise Unsupported(f"{node.op_type} without a per-example value among its inputs")
    odd = next((a for a in args if not isinstance(a, Dyn | Const)), dyns[0])
    if not isinstance(odd, Dyn | Const):
        raise Unsupported(f"{node.op_type} of {WHAT[type(odd).__name__]}")
    _same_rank(node, dyns)
    shape = tuple(int(d) for d in np.broadcast_shapes(*(d.shape for d in dyns)))
    flat = any(d.flat for d in dyns)
    if flat and any(d.shape != shape for d in dyns):
        raise Unsupported(f"{node.op_type} broadcasts a reshaped value (the equations have "
                          "no reshape of it to broadcast along)")
    form = Dyn(dyns[0].expr, shape, flat)
    if len(shape) <= 1 and any(d.size not in (1, form.size) for d in dyns):
        raise Unsupported(f"{node.op_type} broadcasts one per-example value over another")
    exprs = [(flat_expr(a) if flat else a.expr) if isinstance(a, Dyn)
             else const_operand(imp, a, form, stem) for a in args]  # type: ignore[arg-type]
    return exprs, form


def _binary(op: str, stem: str) -> Rule:
    def rule(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
        (left, right), form = operands(imp, node, args[:2], stem)
        if op == "⊙" and isinstance(right, ex.Num | ex.Neg) and not isinstance(args[1], Dyn):
            left, right = right, left  # 2 ⊙ x
        return [form.like(ex.combine(op, left, right))]
    return rule


def _same_rank(node: Any, dyns: list[Dyn]) -> None:
    """ONNX aligns axes from the right, the batch axis too: two per-example values of
    different ranks would pair one's examples with the other's entries."""
    if len({len(d.shape) for d in dyns}) > 1:
        raise Unsupported(f"{node.op_type} of per-example values with different numbers of "
                          "axes (ONNX would broadcast one's batch axis over the other's "
                          "entries)")


def _function(func: str) -> Rule:
    def rule(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
        x = _dyn(args[0], f"the input of {node.op_type}")
        return [x.like(ex.Call(func, x.expr))]
    return rule


def _neg(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    x = _dyn(args[0], "the input of Neg")
    return [x.like(ex.Neg(x.expr))]


def _identity(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    if not isinstance(args[0], Dyn | Final | SeqY):
        raise Unsupported(f"{node.op_type} of {type(args[0]).__name__}")
    return [args[0]]


def _param(imp: Importer, value: float) -> float:
    """A parameter in the shortest text that reads back as the same value in the model's
    dtype (ONNX stores float32 attributes: 0.2, not 0.20000000298023224)."""
    num = imp.num(value)
    return -float(num.a.text) if isinstance(num, ex.Neg) else float(num.text)  # type: ignore


def _leaky_relu(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    x = _dyn(args[0], "the input of LeakyRelu")
    slope = _param(imp, float(at.get("alpha", 0.01)))
    return [x.like(ex.Call("leaky_relu", x.expr, (("slope", slope),)))]


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
        return [x.like(ex.Call(ELU, x.expr))]
    x = imp.define(x, stem="u")
    scaled = ex.Bin("⊙", imp.num(alpha), ex.Call(ELU, x.expr))
    rest = ex.Bin("⊙", imp.num(1.0 - alpha), ex.Call(RELU, x.expr))
    return [x.like(ex.add(scaled, rest))]


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
        return [x.like(ex.Call(RELU, x.expr))]
    if low is not None and high is not None:  # clip follows ONNX when low > high too
        bounds_ = (("min", _param(imp, low)), ("max", _param(imp, high)))
        return [x.like(ex.Call("clip", x.expr, bounds_))]
    if low is not None or high is not None:  # one bound: relu written out
        x = imp.define(x, stem="u")
    out = x.expr
    if high is not None:
        out = ex.sub(out, ex.Call(RELU, ex.sub(x.expr, imp.num(high))))
    if low is not None:
        out = ex.add(out, ex.Call(RELU, ex.sub(imp.num(low), x.expr)))
    return [x.like(out)]


def _entrywise(func: str, stem: str = "k") -> Rule:
    """Max, Min (one input or more, nested) and Where: a function of several arguments,
    each a per-example value or a constant, broadcast as ``+`` is. ONNX's booleans (from
    Less, Greater, …) are the language's 0/1 masks."""
    def rule(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
        if len(args) == 1 and func != "where" and isinstance(args[0], Dyn):
            return [args[0]]  # Max(x) = x
        if len(args) < 2 or any(a is None for a in args):
            raise Unsupported(f"{node.op_type} without a per-example value among its inputs")
        (first, *rest), form = operands(imp, node, args, stem)
        if func == "where":
            return [form.like(ex.Call(func, first, more=tuple(rest)))]
        out = first
        for e in rest:  # Max(a, b, c) = max(max(a, b), c)
            out = ex.Call(func, out, more=(e,))
        return [form.like(out)]
    return rule


def _gemm(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    a, b = args[0], args[1]
    c = args[2] if len(args) > 2 else None
    if at.get("transA", 0) or not isinstance(a, Dyn) or not isinstance(b, Const):
        raise Unsupported("Gemm of anything but a per-example A times a constant B")
    if imp.lead != 1 or len(a.shape) > 2 or (len(a.shape) == 2 and not a.tensor):
        raise Unsupported("Gemm of a per-example matrix")
    k = b if not at.get("transB", 0) else Const(b.value.T, b.ref, not b.transposed, b.source,
                                                b.expr, b.uses)
    alpha, beta = float(at.get("alpha", 1.0)), float(at.get("beta", 1.0))
    if alpha != 1.0:
        key = f"{b.source}×{alpha}" if b.source else None
        k = Const(np.asarray(k.value) * alpha, source=key)
    if len(a.shape) == 2:  # the rows of each example's matrix ([T·N, E]: nndk.onnx.moved)
        from nndk.onnx.axes import _matmul

        (product,) = _matmul(imp, node, [a, k], {})
        assert isinstance(product, Dyn)
        out, out_shape = product.expr, product.shape
    else:
        out_shape = (np.asarray(k.value).shape[1],)
        out = ex.Bin("·", matrix(imp, k), operand(imp, a))
    if isinstance(c, Const) and np.any(np.asarray(c.value) != 0) and beta != 0:
        scaled = Const(np.asarray(c.value) * beta, c.ref if beta == 1 else None,
                       source=c.source if beta == 1 else None)
        out = ex.add(out, const_operand(imp, scaled, Dyn(out, out_shape, False), "b"))
    elif isinstance(c, Dyn) and beta != 0:
        if len(c.shape) != 1 or len(out_shape) != 1 or c.shape[0] not in (1, out_shape[0]):
            raise Unsupported("Gemm with a per-example C that is not a vector like A·B's rows")
        term = c.expr if beta == 1 else ex.Bin("⊙", imp.num(beta), c.expr)
        out = ex.add(out, term)
    elif c is not None and not isinstance(c, Const | Dyn):
        raise Unsupported(f"Gemm with C a {type(c).__name__}")
    return [Dyn(out, out_shape, False)]


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


def _from_op(op: Op) -> Rule | None:
    """The converter of an ONNX op that is one of ours (``Op.onnx_import``): its operator or
    its function, with its first spelling; constants added are named b, multipliers k.
    Ops along axes (softmax, the reductions, flatten) are :mod:`nndk.onnx.axes`'s."""
    if op.infix:
        return _binary(op.infix, "b" if op.infix in "+−" else "k")
    return None if op.vector or op.tensor else _function(op.spellings[0])


RULES: dict[str, Rule] = {
    **{t: rule for t, op in BY_ONNX.items()
       if op.param_attrs is None and (rule := _from_op(op)) is not None},
    **{op_type: SPATIAL[op.name] for op_type, op in BY_ONNX.items()
       if op.param_attrs is not None},  # conv, pools: nndk/onnx/spatial.py
    "Max": _entrywise("max"), "Min": _entrywise("min"),
    "Where": _entrywise("where"),
    **{op_type: _binary(symbol, "k") for op_type, symbol in (
        ("Less", "<"), ("Greater", ">"), ("LessOrEqual", "≤"), ("GreaterOrEqual", "≥"))},
    "Neg": _neg, "LeakyRelu": _leaky_relu, "Gelu": _gelu,
    "Elu": _elu,
    "Clip": _clip, "Identity": _identity,
    "Gemm": _gemm, "Shape": _shape, "LSTM": _recurrent, "GRU": _recurrent,
    "RNN": _recurrent,
}
