"""Import an ONNX graph as equations + weights: the driver that walks the nodes in order.

Each node goes through its converter in ``nndk.onnx.ops`` (or ``recurrent``); a node whose
inputs are all constant is folded with onnx's ReferenceEvaluator instead, which is how shape
arithmetic (Shape → Gather → Concat → Expand) becomes plain numbers. A node that cannot be
expressed does not stop the walk: every problem is collected and reported in one message
naming each unsupported op and node. Graph outputs become equations; a value read by several
nodes, or the operand of a matrix product, gets an equation (a name) of its own.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nndk.onnx import expr as ex
from nndk.onnx.common import (
    IMPORT_OPSET_MIN,
    META_STATE,
    NNRE_DTYPE,
    OnnxError,
    max_opset,
    require_onnx,
)
from nndk.onnx.values import BatchFirst, Const, Dyn, InitState, Unsupported, Value
from nnre.equations.roles import STEP

RECURRENT = ("LSTM", "GRU", "RNN")
BOOL = 9  # ONNX's boolean element type: an input of 0s and 1s
INTS = {2, 3, 4, 5, 6, 7, 12, 13}  # ONNX's integer element types
#: (op type, input) that read integers as class indices: compared with 0, 1, … and never
#: computed with, so as numbers they are exact (up to 2²⁴ in float32).
INDEX_SLOTS = {("SoftmaxCrossEntropyLoss", 1), ("NegativeLogLikelihoodLoss", 1), ("OneHot", 0)}


@dataclass
class ImportResult:
    """Equations, weights and how the ONNX graph's names map onto the nnre model's."""

    equations: str
    weights: dict[str, np.ndarray]
    dtype: str
    #: ONNX input → (nnre name, 'input' | 'state' | 'states': "h,h'" along its first axis)
    inputs: dict[str, tuple[str, str]]
    #: ONNX output → (nnre name, kind): 'output'; 'state' (the final state); 'states' (final
    #: states "h,h'" stacked along ONNX's first axis); 'directions' (a bidirectional op's Y
    #: [T, 2, N, H], which the model gives as [hₜ; h'ₜ], [T, N, 2·H]); 'last' (the output at
    #: the last step, [N, …]: the model gives it at every step, [T, N, …])
    outputs: dict[str, tuple[str, str]]
    sequence: bool  # ONNX inputs are whole sequences [T, N, …] (recurrent ops inside)
    opset: int
    producer: str = ""
    dropped: dict[str, str] = field(default_factory=dict)  # ONNX outputs left out, and why
    #: ONNX inputs and outputs whose first two axes the model has swapped: laid out
    #: [N, T, …] (batch_first) in a graph that transposes them to and from [T, N, …] around
    #: its recurrent ops (the model is time-major: it takes and gives them [T, N, …]), or
    #: [K, N] (an example per column, read by Gemm's transA; the model takes [N, K]).
    batch_first: tuple[str, ...] = ()


@dataclass
class Importer:
    """The state of one import: values by ONNX name, names taken, weights, equations."""

    proto: Any
    opset: int
    dtype: str
    timed: bool  # equations are indexed by time (recurrent ops, or an nnre step graph)
    lead: int  # leading ONNX axes of per-example values: 1 ([N, …]) or 2 ([T, N, …])
    names: ex.Names = field(default_factory=ex.Names)
    values: dict[str, Value] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    equations: list[tuple[ex.Name, ex.Expr]] = field(default_factory=list)
    declarations: list[str] = field(default_factory=list)
    inputs: dict[str, tuple[str, str]] = field(default_factory=dict)
    outputs: dict[str, tuple[str, str]] = field(default_factory=dict)
    problems: dict[str, list[str]] = field(default_factory=dict)
    lead_sizes: tuple[int | None, ...] = ()
    cache: dict[tuple[Any, ...], str] = field(default_factory=dict)
    uses: Counter[str] = field(default_factory=Counter)
    recurrent_count: int = 0
    dropped: dict[str, str] = field(default_factory=dict)
    indices: set[str] = field(default_factory=set)  # integer inputs read only as indices
    ids: set[str] = field(default_factory=set)  # integer inputs of token ids (nndk.onnx.ids)
    batch_first: list[str] = field(default_factory=list)  # see ImportResult.batch_first
    readers: dict[str, list[Any]] = field(default_factory=dict)  # ONNX value → nodes reading it
    #: (name, shape) → the same entries under that shape: a declared reshape and its source,
    #: both ways (so a rearrangement reads ``X`` rather than reshaping ``reshape(X)`` back)
    views: dict[tuple[str, tuple[int, ...]], Dyn] = field(default_factory=dict)
    made: dict[tuple[Any, ...], Dyn] = field(default_factory=dict)  # rearrangements written
    #: Recurrent ops' states by canonical name (a Final names them), and which run backward
    states: dict[str, ex.Name] = field(default_factory=dict)
    backward: set[str] = field(default_factory=set)
    #: keys of the graph's state inputs that are backward state (``gₜ₊₁`` is ``g_prev``):
    #: only nndk's own --sequence export of a model with backward state has them
    backward_keys: frozenset[str] = frozenset()

    # -- names and weights ---------------------------------------------------------------
    def time(self) -> int | None:
        return 0 if self.timed else None

    def weight(self, value: np.ndarray, stem: str, key: tuple[Any, ...] | None = None,
               prefer: str = "") -> str:
        """The name of a weight holding ``value``, registered once per ``key``."""
        if key is not None and key in self.cache:
            return self.cache[key]
        name = self.names.prefer(prefer, stem) if prefer else self.names.numbered(stem)
        self.weights[name] = np.ascontiguousarray(value, dtype=self.dtype)
        if key is not None:
            self.cache[key] = name
        return name

    def use_ref(self, ref: str, value: np.ndarray) -> str:
        """Register a weight kept under its ONNX name (one array per name)."""
        value = np.array(value, dtype=self.dtype, order="C")  # a scalar stays 0-d
        have = self.weights.setdefault(ref, value)
        if have.shape != value.shape or not np.array_equal(have, value):
            raise Unsupported(f"weight '{ref}' is used in two different shapes")
        return ref

    def num(self, value: float) -> ex.Expr:
        try:
            return ex.number(float(value), self.dtype)
        except ValueError as err:
            raise Unsupported(str(err)) from None

    def define(self, dyn: Dyn, hint: str = "", stem: str = "h") -> Dyn:
        """Give a per-example value an equation and a name of its own (unless it has one)."""
        if isinstance(dyn.expr, ex.Name):
            return dyn
        text = self.names.prefer(hint, stem, subscript=not self.timed) if hint else \
            self.names.numbered(stem, subscript=not self.timed)
        target = ex.Name(text, self.time())
        self.equations.append((target, dyn.expr))
        return dyn.like(target)

    def mark(self) -> tuple[Any, ...]:
        """What :meth:`rollback` restores: equations, declarations, weights, cached forms."""
        return (len(self.equations), len(self.declarations), set(self.weights),
                dict(self.cache), dict(self.views), dict(self.made))

    def rollback(self, mark: tuple[Any, ...]) -> None:
        """Forget what a converter wrote before it gave up (another one tries next)."""
        equations, declarations, weights, cache, views, made = mark
        del self.equations[equations:]
        del self.declarations[declarations:]
        for name in set(self.weights) - weights:
            del self.weights[name]
        self.cache, self.views, self.made = dict(cache), dict(views), dict(made)

    # -- the walk ------------------------------------------------------------------------
    def problem(self, reason: str, node: Any, index: int) -> None:
        first = next((o for o in node.output if o), node.op_type)
        label = node.name or f"#{index} → {first}"
        self.problems.setdefault(reason, []).append(label)

    def run(self) -> None:
        from nndk.onnx.ops import convert

        graph = self.proto.graph
        for node in graph.node:
            self.uses.update(n for n in node.input if n)
            for n in set(node.input):
                self.readers.setdefault(n, []).append(node)
        self.uses.update(o.name for o in graph.output)
        for index, node in enumerate(graph.node):
            if any(n and n not in self.values for n in node.input):
                continue  # downstream of a problem already reported
            args = [self.values[n] if n else None for n in node.input]
            try:
                outs = convert(self, node, args)
            except Unsupported as err:
                self.problem(str(err), node, index)
                continue
            missing = [i for i, n in enumerate(node.output[len(outs):], len(outs))
                       if self.uses[n]]
            if missing:
                self.problem(f"{node.op_type} output {missing[0]} is not supported", node, index)
            for name, value in zip(node.output, outs, strict=False):
                if name:
                    self.values[name] = self.shared(name, value)

    def shared(self, name: str, value: Value) -> Value:
        """A non-trivial value read by several nodes, or named by a word, gets an equation."""
        named = ex.good_name(name) and name not in self.outputs
        if isinstance(value, Dyn) and (self.uses[name] > 1 or named) and not _leaf(value.expr):
            return self.define(value, name)
        return value

    def fold(self, node: Any, args: list[Value | None]) -> list[Value]:
        """Evaluate a node over constants with onnx's reference implementation."""
        from onnx.reference import ReferenceEvaluator

        feeds = {n: a.value for n, a in zip(node.input, args, strict=True)
                 if n and isinstance(a, Const)}
        try:
            outs = ReferenceEvaluator(node, opsets={"": self.opset}).run(None, feeds)
        except Exception as err:  # the reference raises many types; all mean "cannot fold"
            raise Unsupported(f"{node.op_type} over constants could not be evaluated "
                              f"({type(err).__name__})") from None
        return [Const(np.asarray(o)) for o in outs]


def _leaf(e: ex.Expr) -> bool:
    return isinstance(e, ex.Name | ex.Num) or (isinstance(e, ex.Neg) and _leaf(e.a))


# -- reading the model -------------------------------------------------------------------
def read_opset(proto: Any) -> int:
    versions = {o.domain: o.version for o in proto.opset_import}
    opset = versions.get("", versions.get("ai.onnx"))
    if opset is None:
        raise OnnxError("the model imports no version of the default ONNX opset")
    top = max_opset()
    if not IMPORT_OPSET_MIN <= opset <= top:
        raise OnnxError(f"the model uses ONNX opset {opset}; nndk imports opsets "
                        f"{IMPORT_OPSET_MIN} to {top}")
    return int(opset)


def _elem_type(vi: Any) -> int:
    return int(vi.type.tensor_type.elem_type)


def _dims(vi: Any) -> list[int | None]:
    shape = vi.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else None for d in shape.dim]


def graph_dtype(graph: Any) -> str:
    """float64 when the graph's float inputs or weights are doubles, else float32."""
    types = {_elem_type(vi) for vi in graph.input} | {t.data_type for t in graph.initializer}
    return "float64" if 11 in types and 1 not in types else "float32"


def state_meta(proto: Any) -> dict[str, tuple[str, str]]:
    """nnre's own step graphs name their state inputs and outputs in metadata; the state
    the graph has no input for is left out (a transformer's sequence form, all steps at once,
    carries none)."""
    inputs = {vi.name for vi in proto.graph.input}
    for prop in proto.metadata_props:
        if prop.key == META_STATE:
            try:
                pairs = {k: (v[0], v[1]) for k, v in json.loads(prop.value).items()}
            except (ValueError, TypeError, IndexError, AttributeError) as err:
                raise OnnxError(f"metadata {META_STATE} is not a map of name pairs") from err
            return {k: v for k, v in pairs.items() if v[0] in inputs}
    return {}


def state_offset(key: str, backward: bool) -> tuple[str, int]:
    """A state's name and the step its input holds: ``h`` → (h, −1), ``h@t-2`` → (h, −2);
    backward state ``g`` → (g, 1), ``g@t+2`` → (g, 2)."""
    name, sep, lead = key.partition("@t+" if backward else "@t-")
    return name, (1 if backward else -1) * int(lead or 1)


def start(proto: Any, backward: frozenset[str] = frozenset()) -> Importer:
    """An Importer with the graph's constants and inputs in place; ``backward`` names the
    state inputs' keys that are backward state."""
    graph = proto.graph
    states = state_meta(proto)
    recurrent = any(n.op_type in RECURRENT for n in graph.node)
    imp = Importer(proto, read_opset(proto), graph_dtype(graph), timed=bool(states or recurrent),
                   lead=2 if recurrent else 1, backward_keys=backward)
    onnx = require_onnx()
    for init in graph.initializer:
        value = onnx.numpy_helper.to_array(init)
        ref = init.name if value.dtype.kind == "f" and ex.good_name(init.name) and \
            imp.names.take(init.name) else None
        imp.values[init.name] = Const(value, ref=ref, source=init.name)
    imp.indices = _index_inputs(graph)
    from nndk.onnx.ids import batch_first_ids, ids_inputs

    imp.ids = ids_inputs(graph, imp.lead) - imp.indices
    swapped = _batch_first_inputs(graph) | batch_first_ids(graph, imp.ids) \
        if imp.lead == 2 else _columns_inputs(graph)
    initial = {n.input[i] for n in graph.node if n.op_type in RECURRENT
               for i in (5, 6) if len(n.input) > i and n.input[i]}
    prev = {names[0]: key for key, names in states.items()}
    for vi in graph.input:
        if vi.name in imp.values:
            continue
        if vi.name in initial:
            imp.values[vi.name] = InitState(vi.name)
        elif vi.name in prev:
            _state_input(imp, vi, prev[vi.name])
        else:
            _input(imp, vi, vi.name in swapped)
    return imp


def lead_swap(perm: list[int], rank: int) -> bool:
    """The Transpose swaps the two leading axes (batch and time) and keeps the others."""
    return rank >= 2 and perm == [1, 0, *range(2, rank)]


def _batch_first_inputs(graph: Any) -> set[str]:
    """Inputs every node reads through a Transpose that swaps their first two axes (or reads
    only their shape): laid out [N, T, …] (PyTorch's ``batch_first``), made [T, N, …] for
    the recurrent ops."""
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in set(node.input):
            readers.setdefault(name, []).append(node)
    out = set()
    for vi in graph.input:
        rank = len(vi.type.tensor_type.shape.dim)
        nodes = readers.get(vi.name, [])
        swaps = [n for n in nodes if n.op_type == "Transpose" and lead_swap(
                 [int(p) for a in n.attribute if a.name == "perm" for p in a.ints], rank)]
        if swaps and all(n in swaps or n.op_type == "Shape" for n in nodes):  # sizes only
            out.add(vi.name)
    return out


def _columns_inputs(graph: Any) -> set[str]:
    """Matrix inputs that only Gemm reads as a transposed A (``transA``), or Shape: laid out
    [K, N], an example per column; the model takes them [N, K]."""
    out = set()
    for vi in graph.input:
        nodes = [n for n in graph.node if vi.name in n.input]
        gemms = [n for n in nodes if n.op_type == "Gemm" and list(n.input).index(vi.name) == 0
                 and vi.name not in n.input[1:] and any(a.name == "transA" and a.i
                                                       for a in n.attribute)]
        if len(vi.type.tensor_type.shape.dim) == 2 and gemms and \
                all(n in gemms or n.op_type == "Shape" for n in nodes):
            out.add(vi.name)
    return out


def _index_inputs(graph: Any) -> set[str]:
    """Integer graph inputs that every node reading them reads as class indices."""
    uses: dict[str, set[tuple[str, int]]] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            uses.setdefault(name, set()).add((node.op_type, i))
    return {vi.name for vi in graph.input if _elem_type(vi) in INTS
            and uses.get(vi.name) and uses[vi.name] <= INDEX_SLOTS}


def _input(imp: Importer, vi: Any, batch_first: bool = False) -> None:
    dims = _dims(vi)
    if batch_first:  # [N, T, …]: the model reads it time-major
        dims = [dims[1], dims[0], *dims[2:]]
    if _elem_type(vi) not in NNRE_DTYPE and _elem_type(vi) != BOOL and \
            vi.name not in imp.indices | imp.ids:
        raise OnnxError(f"input '{vi.name}' is not a float or boolean tensor; nnre inputs are "
                        "numbers (float32 or float64; booleans are fed as 0 and 1), or token "
                        "ids that only Gather reads")
    if len(dims) < imp.lead or any(d is None for d in dims[imp.lead:]):
        axes = "time and batch axes" if imp.lead == 2 else "a batch axis"
        raise OnnxError(f"input '{vi.name}' has shape {_show_dims(dims)}; expected {axes} "
                        "first and fixed sizes after them")
    if 0 in dims[imp.lead:]:
        raise OnnxError(f"input '{vi.name}' has shape {_show_dims(dims)}: a value with no "
                        "entries per example")
    lead = tuple(dims[:imp.lead])
    clash = [(a, b) for a, b in zip(lead, imp.lead_sizes, strict=False)
             if None not in (a, b) and a != b]
    if clash:
        raise OnnxError(f"input '{vi.name}' has {clash[0][0]} examples where the inputs before "
                        f"it have {clash[0][1]}; inputs share their leading (batch) axis")
    if imp.lead_sizes and lead != imp.lead_sizes:
        lead = tuple(a if a == b else None for a, b in zip(lead, imp.lead_sizes, strict=True))
    imp.lead_sizes = lead
    if vi.name in imp.ids:
        from nndk.onnx.ids import declare

        if batch_first:
            imp.batch_first.append(vi.name)
        return declare(imp, vi, dims, batch_first)
    shape = tuple(int(d) for d in dims[imp.lead:] if d is not None)
    name = imp.names.prefer(vi.name, "x", subscript=not imp.timed)
    dyn = Dyn(ex.Name(name, imp.time()), shape, flat=False)
    if batch_first and imp.lead == 1:  # [K, N]: the batch on axis 1 (nndk.onnx.rearrange)
        from nndk.onnx.rearrange import start as lazy

        imp.values[vi.name] = lazy(imp, dyn, f"input '{vi.name}' laid out [K, N] (an "
                                   "example per column)", axis=1)
    else:
        imp.values[vi.name] = BatchFirst(dyn) if batch_first else dyn
    if batch_first:
        imp.batch_first.append(vi.name)
    imp.inputs[vi.name] = (ex.canonical_name(name), "input")
    space = f"({'×'.join(map(str, shape))})" if len(shape) >= 2 else str(dyn.size)
    imp.declarations.append(f"{ex.show(dyn.expr)} ∈ ℝ^{space}")


def _state_input(imp: Importer, vi: Any, key: str) -> None:
    dims = _dims(vi)
    name, step = state_offset(key, key in imp.backward_keys)
    readers = [n for n in imp.proto.graph.node if vi.name in n.input]
    by = f", read by {readers[0].op_type} node '{readers[0].name or readers[0].output[0]}'" \
        if readers else ""
    if len(dims) > 2 and None not in dims[1:]:  # nndk's step export of a history
        raise OnnxError(
            f"state '{name}' (input '{vi.name}'{by}) holds a "
            f"{'×'.join(str(d) for d in dims[1:])} tensor per example, a history that grows "
            "a step at a time (attention's keys or values): the import reads state that is "
            "a vector only; import the --sequence export (nndk export --sequence: every "
            "step at once) or use the bundle it was exported from")
    if name == STEP:
        raise OnnxError(
            f"state '{name}' (input '{vi.name}'{by}) is the step index t, the steps each "
            "stream has taken (read as P[t]): the import does not read the step index back; "
            "use the bundle it was exported from")
    if len(dims) != 2 or dims[1] is None or not ex.good_name(name):
        raise OnnxError(f"state input '{vi.name}' has shape {_show_dims(dims)}; expected "
                        "[batch, size]")
    imp.names.take(name)
    imp.values[vi.name] = Dyn(ex.Name(name, step), (int(dims[1]),), flat=False)
    imp.inputs[vi.name] = (key, "state")


def _show_dims(dims: list[int | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"
