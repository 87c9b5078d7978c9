"""Integer inputs of token ids (PyTorch's ``nn.Embedding``): ``x ∈ ℕ``, ``X ∈ ℕ^T`` and ``E[x]``.

An integer graph input that every node reads as the indices of a Gather along axis 0 (or only
for its shape) holds ids: one per example (``[N]``) or T of them (``[N, T]``). It is declared
as ids (formats/equations.md §6.1), and the Gather over a constant table is ``E[x]``: row x
of E, ``(1, d)``, or the T rows ``(T, d)``. At run time the model takes the ids as numbers
0 … V−1 and refuses anything else before it runs (``Model.run``/``step``); ONNX's negative
ids (counted from the end) are such a refusal too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nndk.onnx import expr as ex
from nndk.onnx.axes import reshaped
from nndk.onnx.graph import Importer
from nndk.onnx.values import WHAT, BatchFirst, Const, Dyn, Ids, Unsupported, Value

Args = list[Value | None]
INTS = {2, 3, 4, 5, 6, 7, 12, 13}  # ONNX's integer element types


def ids_inputs(graph: Any) -> set[str]:
    """Integer inputs of at most two axes read only as Gather's indices (or by Shape)."""
    out = set()
    for vi in graph.input:
        if int(vi.type.tensor_type.elem_type) not in INTS or \
                len(vi.type.tensor_type.shape.dim) > 2:
            continue
        nodes = [n for n in graph.node if vi.name in n.input]
        gathers = [n for n in nodes if n.op_type == "Gather" and n.input[0] != vi.name]
        if gathers and all(n in gathers or n.op_type == "Shape" for n in nodes):
            out.add(vi.name)
    return out


def batch_first_ids(graph: Any, ids: set[str]) -> set[str]:
    """A recurrent graph's ids inputs laid out [N, T]: the rows every Gather picks by them are
    read only through a Transpose that swaps the batch and time axes (or by Shape)."""
    from nndk.onnx.graph import lead_swap

    out = set()
    for name in ids:
        rows = [n.output[0] for n in graph.node if n.op_type == "Gather" and n.input[1] == name]
        readers = [n for n in graph.node if set(n.input) & set(rows)]
        swaps = [n for n in readers if n.op_type == "Transpose" and lead_swap(
                 [int(p) for a in n.attribute if a.name == "perm" for p in a.ints], 3)]
        if swaps and all(n in swaps or n.op_type == "Shape" for n in readers):
            out.add(name)
    return out


def declare(imp: Importer, vi: Any, dims: list[int | None], batch_first: bool = False) -> None:
    """The ids input: a name declared ``∈ ℕ`` (one id; one a step in a recurrent graph) or
    ``∈ ℕ^T``."""
    shape = tuple(int(d) for d in dims[imp.lead:] if d is not None)
    name = imp.names.prefer(vi.name, "x", subscript=not imp.timed)
    value = ex.Name(name, imp.time())
    imp.values[vi.name] = Ids(value, shape, batch_first)
    imp.inputs[vi.name] = (ex.canonical_name(name), "input")
    space = f"^{shape[0]}" if shape else ""
    imp.declarations.append(f"{ex.show(value)} ∈ ℕ{space}")


def convert(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value] | None:
    """Gather by ids, Shape of ids; None when no Ids value is read."""
    ids = [a for a in args if isinstance(a, Ids)]
    if not ids:
        return None
    if node.op_type == "Shape" and len(args) == 1:
        return [_shape(imp, ids[0], at)]
    table = args[0]
    if node.op_type != "Gather" or not isinstance(args[1], Ids) or isinstance(table, Ids):
        raise Unsupported(f"{node.op_type} of {WHAT['Ids']}")
    if not isinstance(table, Const):
        raise Unsupported(f"Gather by ids from {WHAT[type(table).__name__]} (the table must "
                          "be constant)")
    value = np.asarray(table.value)
    if value.ndim == 0 or int(at.get("axis", 0)) % value.ndim != 0:
        raise Unsupported("Gather by ids along an axis other than the table's first")
    rows = _rows(imp, _table(imp, table, value), args[1], value.shape)
    return [BatchFirst(rows) if args[1].batch_first else rows]


def _table(imp: Importer, table: Const, value: np.ndarray) -> ex.Name:
    if table.ref is not None and not table.transposed:
        return ex.Name(imp.use_ref(table.ref, value))
    key = (table.source, "table") if table.source else None
    return ex.Name(imp.weight(value, "E", key))


def _rows(imp: Importer, e: ex.Name, ids: Ids, table: tuple[int, ...]) -> Dyn:
    """``E[x]`` as ONNX lays out the rows: (d,) for one id and a (V, d) table (the language's
    (1, d) row, transposed to a column), ids.shape + table.shape[1:] otherwise."""
    take = ex.Take(e, ids.name)
    want = (*ids.shape, *table[1:])
    if ids.shape:
        return Dyn(take, want, False)  # (T, d…); a vector table's (T, 1) is the column (T,)
    if len(table) == 2:
        return Dyn(ex.Tr(take), want, False)  # one row (1, d) → the column (d,)
    if len(table) == 1:
        return Dyn(take, (), False)  # one number
    return reshaped(imp, Dyn(take, (1, *table[1:]), False), want)


def _shape(imp: Importer, x: Ids, at: dict[str, Any]) -> Value:
    from nndk.onnx.values import Dims

    dims = [*(imp.lead_sizes[::-1] if x.batch_first else imp.lead_sizes), *x.shape]
    start, end = int(at.get("start", 0)), at.get("end")
    dims = dims[start:end] if end is not None else dims[start:]
    return Dims(tuple(dims)) if None in dims else Const(np.array(dims, np.int64))
