"""Values around the per-example vectors: shapes that hold the batch size, zero fills, a
recurrent op's ``Y`` before its direction axis is gone, and stacked final states.

Exporters build a recurrent op's zero initial state from the input's shape
(``Shape → Gather → Concat → ConstantOfShape`` or ``… → Expand``); with a batch size known
only at run time those shapes are :class:`Dims` (unknown entries ``None``) and the fill is
:class:`Zeros`, which the recurrent op reads as its zero initial state. PyTorch's dynamo
exporter drops the direction axis of ``Y [T, 1, N, H]`` with ``Transpose(perm=[0, 2, 1, 3])``
and a Reshape instead of a Squeeze; with one direction that moves no number, so it is the same,
and with two it puts the directions side by side, ``[hₜ; h'ₜ]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nndk.onnx import expr as ex
from nndk.onnx.common import ONNX_DTYPE
from nndk.onnx.graph import RECURRENT, Importer, lead_swap
from nndk.onnx.values import (
    WHAT,
    BatchFirst,
    Const,
    Dims,
    Dyn,
    Final,
    Finals,
    Label,
    Last,
    Lazy,
    SeqY,
    Unsupported,
    Value,
    Zeros,
)

Args = list[Value | None]
#: Ops that work on each example at each step (entry by entry, a matrix product on the last
#: axis, a softmax or a normalization along the last axes, whose rules refuse the leading
#: ones): the same over batch-first and time-major values.
_PER_STEP = {"Abs", "Add", "Cos", "Div", "Dropout", "Elu", "Erf", "Exp", "Gelu",
             "HardSigmoid", "HardSwish", "Identity", "LayerNormalization", "LeakyRelu", "Log",
             "LogSoftmax", "MatMul", "Mish", "Mul", "Neg", "Pow", "RMSNormalization", "Relu",
             "Sigmoid", "Sin", "Softmax", "Softplus", "Sqrt", "Sub", "Tanh"}
#: Ops that keep a zero fill a zero fill (whatever they do to its shape).
_KEEP_ZEROS = {"Slice", "Squeeze", "Unsqueeze", "Identity", "Reshape", "Cast", "Expand",
               "Gather", "Transpose"}


def convert(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value] | None:
    """The node's outputs when it works on these values; None when the usual rules apply."""
    op = node.op_type
    if any(isinstance(a, Last) for a in args):
        return _at_last(imp, node, args)
    x = args[0] if args else None
    if op == "Gather" and isinstance(x, Dyn | BatchFirst) and _last_step(imp, args, at):
        return [Last(x.dyn if isinstance(x, BatchFirst) else x)]
    if op == "Transpose" and imp.lead == 2 and isinstance(args[0], Dyn | BatchFirst):
        x = args[0]
        inner = x.dyn if isinstance(x, BatchFirst) else x
        if lead_swap([int(p) for p in at.get("perm", [])], 2 + len(inner.shape)):
            return [inner if isinstance(x, BatchFirst) else BatchFirst(x)]
    if op == "Shape" and isinstance(args[0], BatchFirst):
        sizes = _shape(imp, args[0].dyn, at, swapped=True)
        return [sizes if None in sizes.dims else Const(np.array(sizes.dims, np.int64))]
    if any(isinstance(a, BatchFirst) for a in args):
        return _per_step(imp, node, args)
    if op == "Shape" and isinstance(args[0], Dyn) and None in imp.lead_sizes:
        return [_shape(imp, args[0], at)]
    if op == "Transpose" and isinstance(args[0], SeqY):
        return [_seq_transpose(args[0], at)]
    if op in ("Gather", "Squeeze") and isinstance(x, Final | Finals):
        return [_final_at_last(imp, node, args, at)]
    if op == "Concat" and any(isinstance(a, Final | Finals) for a in args):
        return [_finals(args, at)]
    if any(isinstance(a, Label) for a in args):
        return [Label(next(a.source for a in args if isinstance(a, Label)))] * len(node.output)
    if op == "ArgMax" and isinstance(args[0], Dyn) and \
            node.output[0] not in {o.name for o in imp.proto.graph.output}:
        return [Label(node.input[0])]  # a class index read further on (a label table)
    if op == "Cast" and isinstance(args[0], Dyn):
        if (imp.dtype, at.get("to")) == ("float32", ONNX_DTYPE["float64"]):
            return [args[0]]  # every float32 is a float64: widening changes no value
        if ONNX_DTYPE[imp.dtype] != at.get("to"):
            raise Unsupported(f"Cast of a per-example value to ONNX type {at.get('to')}; the "
                              f"model computes in {imp.dtype} only")
        return [args[0]]  # to the type it has: nothing to do
    if op in RECURRENT:
        return None  # it reads a zero fill as its zero initial state
    kinds = {type(a).__name__ for a in args if a is not None}
    if "Zeros" in kinds:
        if op in _KEEP_ZEROS and isinstance(args[0], Zeros):
            return [Zeros()]
        raise Unsupported(f"{op} of {WHAT['Zeros']}")
    if "Dims" not in kinds:
        return None
    if op in ("ConstantOfShape", "Expand"):
        return [_fill(op, args, at)]
    if op == "Reshape" and isinstance(args[0], Dyn) and isinstance(args[1], Dims):
        from nndk.onnx.ops import rule_for

        target = [_lead_copy(imp, i, d) for i, d in enumerate(args[1].dims)]
        reshape = rule_for("Reshape")
        assert reshape is not None
        return reshape(imp, node, [args[0], Const(np.array(target, np.int64))], {})
    dims = _dims_op(op, args, at)
    if None in dims or op not in ("Concat", "Slice"):  # (Gather's result may be 0-D)
        return [Dims(dims)]
    return [Const(np.array(dims, np.int64))]  # the batch's entry left out: a plain shape


def _last_step(imp: Importer, args: Args, at: dict[str, Any]) -> bool:
    """The Gather picks a sequence's last step: index −1 (or T − 1 when T is fixed), a
    scalar, along the time axis (axis 1 of a batch-first sequence, 0 of a time-major one)."""
    x, index = args[0], args[1]
    if imp.lead != 2 or not isinstance(x, Dyn | BatchFirst) or not isinstance(index, Const):
        return False
    rank = 2 + len((x.dyn if isinstance(x, BatchFirst) else x).shape)
    axis = int(at.get("axis", 0)) % rank
    if axis != (1 if isinstance(x, BatchFirst) else 0) or np.ndim(index.value) != 0:
        return False
    steps = imp.lead_sizes[0] if imp.lead_sizes else None
    i = int(index.value)
    return i == -1 or (steps is not None and i == steps - 1)


def _final_at_last(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> Last:
    """One layer's final state picked from ``[layers·directions, N, H]`` (``h_n[-1]``, or a
    Squeeze of one layer's): a forward state's value at the last step."""
    x = args[0]
    assert isinstance(x, Final | Finals)
    states = (x.state,) if isinstance(x, Final) else x.states
    index = args[1] if len(args) > 1 else None
    if node.op_type == "Gather":
        if int(at.get("axis", 0)) % 3 != 0 or not isinstance(index, Const) or \
                np.ndim(index.value) != 0:
            raise Unsupported("Gather of final states other than one layer's (one index "
                              "along the first axis)")
        i = int(index.value)
        if not -len(states) <= i < len(states):
            raise Unsupported(f"Gather of final state {i} of {len(states)}")
        name = states[i]
    else:
        axes = index.value if isinstance(index, Const) else at.get("axes", [0])
        if len(states) != 1 or [int(a) % 3 for a in np.ravel(axes)] != [0]:
            raise Unsupported("Squeeze of final states other than one layer's first axis")
        name = states[0]
    if name in imp.backward:
        raise Unsupported(f"{node.op_type} of a reverse direction's final state (its value at "
                          "the first step) read beside the sequence")
    return Last(Dyn(imp.states[name], (x.hidden,), False))


def _at_last(imp: Importer, node: Any, args: Args) -> list[Value]:
    """An op on values at the last step (and constants): converted as over one example
    laid out [N, …] (one leading axis), at every step; its results stay at the last step."""
    from nndk.onnx.ops import convert as convert_node

    if any(a is not None and not isinstance(a, Last | Const) for a in args):
        other = next(a for a in args if a is not None and not isinstance(a, Last | Const))
        raise Unsupported(f"{node.op_type} of a sequence's last step with "
                          f"{WHAT[type(other).__name__]}")
    saved = imp.lead, imp.lead_sizes
    imp.lead, imp.lead_sizes = 1, saved[1][1:]
    try:
        outs = convert_node(imp, node, [a.dyn if isinstance(a, Last) else a for a in args])
    finally:
        imp.lead, imp.lead_sizes = saved
    if any(isinstance(o, Lazy) for o in outs):
        raise Unsupported(f"{node.op_type} that moves the batch axis of a sequence's last step")
    return [Last(o) if isinstance(o, Dyn) else o for o in outs]


def _per_step(imp: Importer, node: Any, args: Args) -> list[Value]:
    """An op that works on each example at each step, over batch-first values: the same as
    over the time-major values inside them (its rule refuses to touch either leading axis),
    so it is converted over those and its result stays batch-first. Constants must not
    broadcast along the leading axes (sizes 1 there), and every per-example operand must be
    batch-first: one laid out [T, N, …] beside it would be mixed up."""
    from nndk.onnx.ops import attributes
    from nndk.onnx.ops import convert as convert_node

    op = node.op_type
    refused = Unsupported(f"{op} of {WHAT['BatchFirst']}")
    inner = next(a.dyn for a in args if isinstance(a, BatchFirst))
    rank = 2 + len(inner.shape)
    if op not in _PER_STEP or any(isinstance(a, Dyn) for a in args):
        raise refused
    axis = attributes(node).get("axis")
    if axis is not None and int(axis) % rank < 2:  # the rules would read [N, T] as [T, N]
        raise Unsupported(
            f"{op} along the batch axis of a batch-first sequence (it would mix examples)"
            if int(axis) % rank == 0 else
            f"{op} along the time axis of a batch-first sequence [N, T, …]: the model "
            "computes one step at a time, and a value over every step at once (attention "
            "pooling over a recurrent output) is not imported")
    for a in args:
        if isinstance(a, Const):
            shape = np.shape(a.value)
            lead = shape[:max(0, 2 - (rank - len(shape)))]  # the entries on N and T
            if len(shape) > (2 if op == "MatMul" else rank) or \
                    (op != "MatMul" and any(d != 1 for d in lead)):
                raise refused
        elif a is not None and not isinstance(a, BatchFirst):
            raise refused
    outs = convert_node(imp, node, [a.dyn if isinstance(a, BatchFirst) else a for a in args])
    return [BatchFirst(o) if isinstance(o, Dyn) else o for o in outs]


def _shape(imp: Importer, x: Dyn, at: dict[str, Any], swapped: bool = False) -> Dims:
    lead = imp.lead_sizes[::-1] if swapped else imp.lead_sizes
    full = [*lead, *x.shape]
    start, end = int(at.get("start", 0)), at.get("end")
    return Dims(tuple(full[start:end] if end is not None else full[start:]))


def _seq_transpose(y: SeqY, at: dict[str, Any]) -> Value:
    """Y [T, D, N, H] → [T, N, D, H]: per example, the directions' hidden states one after
    the other, ``[hₜ; h'ₜ]`` (what PyTorch reshapes to its output [T, N, D·H])."""
    perm = list(at.get("perm", []))
    if perm != [0, 2, 1, 3]:
        raise Unsupported(f"Transpose(perm={perm}) of {WHAT['SeqY']}; the importer reads "
                          "the perm [0, 2, 1, 3] that moves the direction axis next to H")
    expr = y.exprs[0] if len(y.exprs) == 1 else ex.Stack(y.exprs)
    return Dyn(expr, (len(y.exprs), y.hidden), flat=True)


def _finals(args: Args, at: dict[str, Any]) -> Finals:
    if int(at.get("axis", 0)) != 0:
        raise Unsupported("Concat of final states along an axis other than the layer axis")
    states: list[str] = []
    hidden = {a.hidden for a in args if isinstance(a, Final | Finals)}
    for a in args:
        if isinstance(a, Final):
            states.append(a.state)
        elif isinstance(a, Finals):
            states.extend(a.states)
        else:
            raise Unsupported(f"Concat of final states with {WHAT[type(a).__name__]}")
    if len(hidden) != 1:
        raise Unsupported("Concat of final states of different sizes")
    return Finals(tuple(states), hidden.pop())


def _fill(op: str, args: Args, at: dict[str, Any]) -> Zeros:
    if op == "ConstantOfShape":
        value = at.get("value")
        from onnx.numpy_helper import to_array

        fill = 0.0 if value is None else float(np.asarray(to_array(value)).reshape(-1)[0])
    else:
        src = args[0]
        fill = 1.0 if not isinstance(src, Const) or np.any(np.asarray(src.value) != 0) else 0.0
    if fill != 0.0:
        raise Unsupported(f"{op} to {WHAT['Dims']} with a value other than zero")
    return Zeros()


def _lead_copy(imp: Importer, i: int, d: int | None) -> int:
    if d is not None:
        return d
    if i >= imp.lead:
        raise Unsupported("Reshape to a per-example shape that is not fixed")
    return 0  # "as the input has it": the lead axis stays


def _dims_op(op: str, args: Args, at: dict[str, Any]) -> tuple[int | None, ...]:
    """Shape arithmetic with unknown entries: indexing, slicing, concatenating, casting."""
    def entries(v: Value | None) -> list[int | None]:
        if isinstance(v, Dims):
            return list(v.dims)
        if isinstance(v, Const) and np.asarray(v.value).dtype.kind in "iu":
            return [int(d) for d in np.asarray(v.value).reshape(-1)]
        raise Unsupported(f"{op} of a shape with {WHAT[type(v).__name__]}")

    dims = entries(args[0])
    if op in ("Unsqueeze", "Squeeze", "Cast", "Identity"):
        return tuple(dims)
    if op == "Reshape" and isinstance(args[1], Const) and np.asarray(args[1].value).size == 1:
        return tuple(dims)  # to one axis, as a shape is
    if op == "Concat":
        return tuple(d for a in args if a is not None for d in entries(a))
    if op == "Gather" and int(at.get("axis", 0)) == 0:
        index = entries(args[1])
        if None in index:
            raise Unsupported(f"Gather of {WHAT['Dims']} at indices known only at run time")
        return tuple(dims[i] for i in index if i is not None)
    arithmetic = {"Mul": np.multiply, "Add": np.add, "Sub": np.subtract}
    if op in arithmetic:  # of entries known now (the dynamo exporter's H × directions)
        other = entries(args[1])
        if None in dims or None in other:
            raise Unsupported(f"{op} of the batch or time size")
        return tuple(int(d) for d in arithmetic[op](np.array(dims), np.array(other)))
    if op == "Slice" and all(isinstance(a, Const) for a in args[1:] if a is not None):
        starts, ends = entries(args[1]), entries(args[2])
        steps = entries(args[4]) if len(args) > 4 and args[4] is not None else [1]
        return tuple(dims[slice(starts[0], ends[0], steps[0])])  # type: ignore[index]
    raise Unsupported(f"{op} of {WHAT['Dims']}")

