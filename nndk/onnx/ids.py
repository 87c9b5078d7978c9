"""Integer inputs of token ids (PyTorch's ``nn.Embedding``): ``x ∈ ℕ``, ``X ∈ ℕ^T`` and ``E[x]``.

An integer graph input that every node reads as the indices of a Gather along axis 0 (or only
for its shape) holds ids: one per example (``[N]``) or T of them (``[N, T]``). It is declared
as ids (formats/equations.md §6.1), and the Gather over a constant table is ``E[x]``: row x
of E, ``(1, d)``, or the T rows ``(T, d)``. In a recurrent graph the ids are ``[T, N]``, one
per example at each step (``xₜ ∈ ℕ``, ``E[xₜ]``), or ``[N, T]`` when a Transpose swaps the
rows they pick to ``[T, N, d]`` (PyTorch's ``batch_first``). An input fed as numbers that a
Cast to an integer type turns into the indices (nndk's own exports) holds ids too, and
``[N, T, 1]`` holds T of them. At run time the model takes the ids as numbers 0 … V−1 and
refuses anything else before it runs (``Model.run``/``step``); ONNX's negative ids (counted
from the end) are such a refusal too.
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


FLOATS = {1, 10, 11}  # float32, float16, float64: ids that a Cast to an integer type reads


def ids_inputs(graph: Any, lead: int = 1) -> set[str]:
    """Inputs read only as Gather's indices (or by Shape), directly or through a Cast to an
    integer type (nndk's own exports feed ids as numbers): one id per example, or T of them
    (``[N, T]``, or ``[N, T, 1]``); in a recurrent graph (``lead`` 2), one at each step
    (``[T, N]``)."""
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in set(node.input):
            readers.setdefault(name, []).append(node)

    def indexes(name: str, cast: bool) -> bool:
        nodes = readers.get(name, [])
        ok = [n for n in nodes if n.op_type == "Shape" or (
            n.op_type == "Gather" and n.input[0] != name) or (
            cast and n.op_type == "Cast" and _cast_to(n) in INTS
            and indexes(n.output[0], False))]
        return bool(nodes) and len(ok) == len(nodes) and any(n.op_type != "Shape" for n in ok)

    out = set()
    for vi in graph.input:
        dims = [d.dim_value if d.HasField("dim_value") else None
                for d in vi.type.tensor_type.shape.dim]
        kind = int(vi.type.tensor_type.elem_type)
        if kind not in INTS | FLOATS or len(dims) < lead or \
                (lead == 2 and len(dims) != 2) or any(d != 1 for d in dims[2:]):
            continue
        if indexes(vi.name, cast=kind in FLOATS) and \
                (kind in INTS or any(n.op_type == "Cast" for n in readers[vi.name])):
            out.add(vi.name)
    return out


def _cast_to(node: Any) -> int:
    return next((int(a.i) for a in node.attribute if a.name == "to"), 0)


def ids_shape(layout: tuple[int, ...], timed: bool) -> tuple[int, ...]:
    """The ids' shape as declared (``ℕ^T`` or none) from their shape per example in ONNX:
    ``(T, 1)`` holds T ids, and a step graph's ``(1,)`` one id at that step."""
    if timed and layout == (1,):
        return ()
    return layout[:1]


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


def declare(imp: Importer, vi: Any, dims: list[int | None], batch_first: bool = False
            ) -> None:
    """The ids input: a name declared ``∈ ℕ`` (one id) or ``∈ ℕ^T``; in a recurrent graph,
    ``xₜ ∈ ℕ``, one id at each step."""
    layout = tuple(int(d) for d in dims[imp.lead:] if d is not None)
    shape = ids_shape(layout, imp.timed)
    name = imp.names.prefer(vi.name, "x", subscript=not imp.timed)
    ref = ex.Name(name, imp.time())
    imp.values[vi.name] = Ids(ref, shape, batch_first, layout)
    imp.inputs[vi.name] = (ex.canonical_name(name), "input")
    space = f"^{shape[0]}" if shape else ""
    imp.declarations.append(f"{ex.show(ref)} ∈ ℕ{space}")


def convert(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value] | None:
    """Gather by ids, Shape of ids; None when no Ids value is read."""
    ids = [a for a in args if isinstance(a, Ids)]
    if not ids:
        return None
    if node.op_type == "Shape" and len(args) == 1:
        return [_shape(imp, ids[0], at)]
    if node.op_type == "Cast" and int(at.get("to", 0)) in INTS:
        return [ids[0]]  # the same whole numbers (a non-whole one is refused at run time)
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
        rows = Dyn(take, want, False)  # (T, d…); a vector table's (T, 1) is the column (T,)
    elif len(table) == 2:
        rows = Dyn(ex.Tr(take), want, False)  # one row (1, d) → the column (d,)
    elif len(table) == 1:
        rows = Dyn(take, (), False)  # one number
    else:
        rows = reshaped(imp, Dyn(take, (1, *table[1:]), False), want)
    layout = (*ids.layout, *table[1:]) if ids.layout is not None else want
    return rows if layout == want else reshaped(imp, rows, layout)


def _shape(imp: Importer, x: Ids, at: dict[str, Any]) -> Value:
    from nndk.onnx.values import Dims

    layout = x.shape if x.layout is None else x.layout
    dims = [*(imp.lead_sizes[::-1] if x.batch_first else imp.lead_sizes), *layout]
    start, end = int(at.get("start", 0)), at.get("end")
    dims = dims[start:end] if end is not None else dims[start:]
    return Dims(tuple(dims)) if None in dims else Const(np.array(dims, np.int64))
