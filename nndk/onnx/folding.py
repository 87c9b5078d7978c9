"""Nodes over constants only: folded to numbers, but keeping the weights they were made from.

A node whose inputs are all constant is evaluated (``Importer.fold``). When its input is a
weight — an initializer the equations can name — or an expression over weights, the folded
value keeps that identity: a transpose or reshape of ``W_f`` is still ``W_f`` (``Const.ref``,
``Const.transposed``), and an elementwise function or operator of weights is kept as its
expression (``Const.expr``: ``σ(a)``, ``1 − exp(c)``, ``tanh(W)``) rather than becoming a new
constant ``k₁`` or ``W₁``. nndk's exporter computes such prologue values in the graph from
initializers under the parameters' own names, so a round trip reads as the equations did.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nndk.onnx import expr as ex
from nndk.onnx.graph import Importer
from nndk.onnx.values import Const, Unsupported, Value
from nnre.ops import BY_ONNX

# Ops whose constant results keep the identity of the weight they read (W_f → W_fᵀ → W_f).
KEEPS_REFS = {"Transpose", "Reshape", "Identity", "Squeeze", "Unsqueeze", "Flatten"}
Uses = tuple[tuple[str, np.ndarray], ...]


def vector_shape(value: np.ndarray) -> tuple[int, ...] | None:
    """The shape without its 1s when at most one axis is longer than 1, else None."""
    big: list[int] = [int(d) for d in value.shape if d != 1]
    return tuple(big) if len(big) <= 1 else None


def keep_ref(src: Const, out: Value, op: str) -> Value:
    """The result of a KEEPS_REFS op over ``src``, still naming the weight or expression."""
    if not isinstance(out, Const):
        return out
    a, b = np.asarray(src.value), np.asarray(out.value)
    flips = op == "Transpose" and a.ndim == 2
    if src.expr is not None:
        if flips and vector_shape(a) is None:
            return Const(out.value, expr=src.expr, uses=src.uses, transposed=not src.transposed)
        if vector_shape(a) is not None and vector_shape(a) == vector_shape(b) or \
                a.shape == b.shape and not flips:
            return Const(out.value, expr=src.expr, uses=src.uses, transposed=src.transposed)
        return out
    if src.ref is None:
        return out
    if flips:
        return Const(out.value, src.ref, not src.transposed, src.source)
    if vector_shape(a) == vector_shape(b):
        return Const(out.value, src.ref, src.transposed, src.source)
    if op == "Identity":
        return src
    return out


def over_weights(imp: Importer, node: Any, args: list[Value | None], outs: list[Value]
                 ) -> list[Value]:
    """``outs`` (the folded node), with the expression kept when the node is an elementwise
    function or operator of weights (vectors, scalars or matrices, as stored) or of such
    expressions, and otherwise of numbers; a scalar weight's broadcast (Expand) too."""
    out = outs[0] if len(outs) == 1 else None
    if node.attribute or not isinstance(out, Const):
        return outs
    matrix = vector_shape(np.asarray(out.value)) is None
    if matrix and (np.asarray(out.value).ndim != 2 or not all(
            a.value.shape == out.value.shape and not a.transposed
            for a in args if isinstance(a, Const) and weighted(a))):
        return outs  # a matrix expression only over matrices as stored, entry by entry
    src = args[0] if args else None
    if node.op_type == "Expand" and isinstance(src, Const) and src.value.size == 1:
        term = weight_term(imp, src, False) if weighted(src) else None  # a scalar
        return [Const(out.value, expr=term[0], uses=term[1])] if term else outs
    # a uniform constant beside an expression is a number (the literal 1 of 1 − σ(a)); alone,
    # a scalar weight is itself (σ(s))
    numbers = any(isinstance(a, Const) and (a.expr is not None or (weighted(a) and
                                                                  not _uniform(a)))
                  for a in args)
    try:
        terms = [weight_term(imp, a, numbers) for a in args]
    except Unsupported:  # a number the equations cannot write (−∞): the folded value
        return outs
    if any(t is None for t in terms) or not any(isinstance(a, Const) and weighted(a)
                                                for a in args):
        return outs
    exprs = [t[0] for t in terms if t is not None]
    uses = tuple(u for t in terms if t is not None for u in t[1])
    expr = _expression(node.op_type, exprs)
    return [Const(out.value, expr=expr, uses=uses)] if expr is not None else outs


def _expression(op_type: str, exprs: list[ex.Expr]) -> ex.Expr | None:
    """The equation expression of an elementwise ONNX op over ``exprs``, if it has one."""
    if op_type == "Neg" and len(exprs) == 1:
        return ex.Neg(exprs[0])
    op = BY_ONNX.get(op_type)
    if op is None or op.vector or op.reduces:
        return None
    if op.infix and len(exprs) == 2:
        return ex.combine(op.infix, exprs[0], exprs[1])
    if not op.infix and len(exprs) == 1:
        return ex.Call(op.spellings[0], exprs[0])
    return None


def weighted(c: Const) -> bool:
    """A whole weight as equations can name it (as stored, not transposed), or an
    expression over weights."""
    value = np.asarray(c.value)
    return c.expr is not None or (c.ref is not None and not c.transposed
                                  and (vector_shape(value) is not None or value.ndim == 2))


def _uniform(c: Const) -> bool:
    flat = np.asarray(c.value).reshape(-1)
    return bool(flat.size) and bool(np.all(flat == flat[0]))


def weight_term(imp: Importer, a: Value | None, numbers: bool) -> tuple[ex.Expr, Uses] | None:
    """A constant operand as an expression: over weights, or a number when uniform (and
    ``numbers`` says so, or it is no weight); with the weights it reads."""
    if not isinstance(a, Const):
        return None
    if a.expr is not None:
        return a.expr, a.uses
    value = np.asarray(a.value)
    if _uniform(a) and (numbers or not weighted(a)):
        return imp.num(value.reshape(-1)[0]), ()
    if a.ref is not None and weighted(a):
        if vector_shape(value) is not None:  # a scalar weight is (), a vector (n,)
            value = value.reshape(() if value.size == 1 else (-1,))
        return ex.Name(a.ref), ((a.ref, value),)
    return None


def use(imp: Importer, c: Const) -> ex.Expr:
    """``c``'s expression; the weights it reads join the model now that it is used."""
    assert c.expr is not None
    for ref, value in c.uses:
        imp.use_ref(ref, value)
    return c.expr
