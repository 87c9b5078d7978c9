"""ONNX nodes over values whose batch axis was moved (:class:`~nndk.onnx.values.Lazy`).

:func:`convert` takes a node before the usual rules when it reads such a value: ops that
move entries follow the probe (:mod:`nndk.onnx.rearrange`); ``Shape`` reads the probe's
shape; anything else reads the value as an equation, written per example (with the batch
leading), or, with the batch still elsewhere, per example in its natural order when the op
works entry by entry or along an axis other than the batch's (a Linear on ``[T·N, E]``, a
softmax along the last axis). :func:`fallback` starts a Lazy value when a layout op's usual
rule refuses one (the batch axis moved, a transpose the equations cannot write directly).
Gemm's ``transA`` is a transpose of A first.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nndk.onnx import rearrange as ra
from nndk.onnx.graph import Importer
from nndk.onnx.values import WHAT, Const, Dims, Dyn, Lazy, Unsupported, Value

Args = list[Value | None]


def convert(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value] | None:
    """The node's outputs when it reads a Lazy value (or is Gemm with transA over a
    per-example A); None: the usual rules apply."""
    op = node.op_type
    if op == "Gemm" and int(at.get("transA", 0)) and isinstance(args[0], Dyn | Lazy):
        return _gemm_transposed(imp, node, args, at)
    lazies = [a for a in args if isinstance(a, Lazy)]
    if not lazies:
        return None
    if op == "Shape":
        return [_shape(lazies[0], at)]
    if op == "Cast" and isinstance(args[0], Lazy) and _keeps_type(imp, at):
        return [args[0]]
    if op in ra.LAYOUT and isinstance(args[0], Lazy) and len(lazies) == 1:
        return ra._layout(imp, node, args, at)
    if all(ra.leading(a) for a in lazies):  # each example as ONNX has it: an equation
        from nndk.onnx.ops import convert as convert_node

        return convert_node(imp, node, [ra.written(imp, a) if isinstance(a, Lazy) else a
                                        for a in args])
    return _natural(imp, node, args, at)


def fallback(imp: Importer, node: Any, args: Args, err: Unsupported) -> list[Value] | None:
    """A layout op the usual rule refused, over a per-example value: followed as a Lazy
    value (None when that does not apply either)."""
    if node.op_type not in ra.LAYOUT or imp.timed or imp.lead != 1:
        return None
    x = args[0]
    if not isinstance(x, Dyn) or x.flat or not all(a is None or isinstance(a, Const)
                                                   for a in args[1:]):
        return None
    label = node.name or next((o for o in node.output if o), node.op_type)
    lazy = ra.start(imp, x, f"{err} at node '{label}'")
    return ra._layout(imp, node, [lazy, *args[1:]], {})


def _keeps_type(imp: Importer, at: dict[str, Any]) -> bool:
    from nndk.onnx.common import ONNX_DTYPE

    return at.get("to") == ONNX_DTYPE[imp.dtype] or \
        (imp.dtype, at.get("to")) == ("float32", ONNX_DTYPE["float64"])


def _shape(x: Lazy, at: dict[str, Any]) -> Value:
    """The ONNX shape; the batch's share unknown unless the graph's batch size is fixed."""
    dims: list[int | None] = [int(d) for d in x.probe.shape]
    if not x.exact:
        j, _, _ = ra.placement(x)
        dims[j] = None
    start, end = int(at.get("start", 0)), at.get("end")
    dims = dims[start:end] if end is not None else dims[start:]
    if None in dims:
        return Dims(tuple(dims))
    return Const(np.array(dims, np.int64))


def _gemm_transposed(imp: Importer, node: Any, args: Args, at: dict[str, Any]
                     ) -> list[Value]:
    """Gemm(A, B, C; transA=1) is Gemm(Aᵀ, B, C): Aᵀ of A's layout (an input laid out
    [K, N] gives the model's [N, K])."""
    from nndk.onnx.ops import convert as convert_node

    a = args[0]
    if not isinstance(a, Lazy):
        raise Unsupported("Gemm with transA of a value laid out [N, K], an example per row "
                          "(Aᵀ B would add up the examples); only an input that Gemm alone "
                          "reads this way is taken as laid out [K, N]")
    flipped = Lazy(a.base, np.ascontiguousarray(a.probe.T), a.batch, a.exact, a.reason)
    plain = _Node(node, transA=0)
    return convert_node(imp, plain, [flipped, *args[1:]])


class _Node:
    """A node with some attributes replaced (what the converters read of it)."""

    def __init__(self, node: Any, **changes: Any) -> None:
        from onnx import helper

        self.op_type, self.domain, self.name = node.op_type, node.domain, node.name
        self.input, self.output = list(node.input), list(node.output)
        kept = [a for a in node.attribute if a.name not in changes]
        self.attribute = kept + [helper.make_attribute(k, v) for k, v in changes.items()]


# -- ops over each example's entries in their natural order ------------------------------
def _natural(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    """An op over Lazy values whose batch is not first: per example in natural order."""
    op = node.op_type
    lazies = [a for a in args if isinstance(a, Lazy)]
    first = lazies[0]
    where = f"{op} of {WHAT['Lazy']} ({first.reason})"
    place = ra.placement(first)
    rank = first.probe.ndim
    j = place[0]
    if any(isinstance(a, Dyn) for a in args) or any(
            a.batch != first.batch or ra.placement(a) != place or a.probe.shape !=
            first.probe.shape for a in lazies):
        raise Unsupported(f"{where}, beside a value laid out otherwise")
    changes: dict[str, Any] = {}
    if op in ra.ALONG:
        softmax = op != "LayerNormalization"
        axis = int(at.get("axis", -1 if not softmax or imp.opset >= 13 else 1)) % rank
        onward = not softmax or imp.opset < 13  # over the axes from ``axis`` on
        if axis == j or (onward and axis < j):
            raise Unsupported(f"{where}, along the axis that holds the batch")
        changes["axis"] = _own(axis, place) + 1
    elif op in ("MatMul", "Gemm"):
        if j == rank - 1 or not _by_matrix(args, at):
            raise Unsupported(f"{where}, not a product by a constant matrix on the right")
    elif op not in ra.ENTRYWISE:
        raise Unsupported(f"{where} (it reads the examples' entries in their ONNX order, "
                          "with the batch axis where the graph moved it)")
    values = [ra.natural(a, place) for a in lazies]
    mine: Args = []
    for a in args:
        if isinstance(a, Lazy):
            index = values[lazies.index(a)]
            mine.append(ra.build(imp, a.base, index))
        elif isinstance(a, Const) and op not in ("MatMul", "Gemm"):
            mine.append(_const(a, rank, place, where))
        else:
            mine.append(a)
    outs = _apply(imp, node, mine, changes)
    return [ra.relaid(imp, first, o, place) if isinstance(o, Dyn) else o for o in outs]


def _by_matrix(args: Args, at: dict[str, Any]) -> bool:
    """A product of rows by a constant matrix (and Gemm's C the same for every row): the
    same for each example's rows, wherever the batch is among them."""
    b = args[1]
    c = args[2] if len(args) > 2 else None
    return isinstance(args[0], Lazy) and isinstance(b, Const) and np.ndim(b.value) <= 2 \
        and not int(at.get("transA", 0)) and (c is None or isinstance(c, Const) and (
            np.ndim(c.value) < 2 or np.shape(c.value)[0] == 1))


def _own(axis: int, place: tuple[int, int, bool]) -> int:
    """An ONNX axis of the moved layout as an axis of the natural per-example value."""
    j, m, _ = place
    return axis - 1 if m == 1 and axis > j else axis


def _const(c: Const, rank: int, place: tuple[int, int, bool], where: str) -> Const:
    """A constant beside a moved value, as beside its natural per-example value: it must not
    vary along the axis that holds the batch."""
    j, m, _ = place
    value = np.asarray(c.value)
    if value.ndim <= rank - 1 - j:
        return c  # only axes after the batch's: it lines up the same way
    full = value.reshape((1,) * (rank - value.ndim) + value.shape)
    if full.shape[j] != 1:
        raise Unsupported(f"{where}, with a constant that varies along the batch's axis")
    per = np.squeeze(full, axis=j) if m == 1 else full
    return Const(per[None], source=c.source)


def _apply(imp: Importer, node: Any, args: Args, changes: dict[str, Any]) -> list[Value]:
    from nndk.onnx.ops import convert as convert_node

    return convert_node(imp, _Node(node, **changes) if changes else node, args)
