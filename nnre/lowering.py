"""Tensor equations → Program, without SymPy: each AST node becomes at most one instruction.

The tensor reading (``nnre.equations.tensors``) gives every node a shape; this module places
each value in the earliest stage it can run in (parameters only → prologue; inputs → pre;
state → the time pass of the latest state it reads: ``loop``, backward state's ``back``, and
``back2``, ``loop2``, … for stacked bidirectional layers, formats/equations.md §4, as
``nnre.compiler`` does), shares equal instructions (hash-consing on op, arguments and attributes)
and writes the same Program the vector compiler writes, so the VM, the optimizer, autodiff
and the ONNX exporter need nothing new. Per example a value of shape S is stored as
(rows, *S), except a vector (n, 1), stored as its entries (rows, n) as in version 1;
reshape views move between the two forms where an op needs the other, at no cost.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nnre import budget, histories
from nnre.equations import ast
from nnre.equations.roles import STEP, Roles
from nnre.equations.tensors import TensorShapes, api_shape
from nnre.equations.to_sympy import state_symbol_name
from nnre.errors import EquationError
from nnre.ops import OPS
from nnre.ops.arithmetic import COMPARISONS
from nnre.program import Instr, Program, Slot, pass_name, stage_rank
from nnre.value import Value, stored

_BINARY = {"+": "add", "-": "sub", "*": "mul", "/": "div"}


class Lowering:
    def __init__(self, module: ast.Module, roles: Roles, shapes: TensorShapes, dtype: str,
                 steps: int = 0) -> None:
        self.module = module
        self.roles = roles
        self.shapes = shapes
        self.prog = Program(dtype=dtype)
        self.names: dict[str, Value] = {}
        self.memo: dict[tuple[Any, ...], int] = {}
        self.writer: dict[int, Instr] = {}
        self.current = ""
        self.bytes = 0
        self.t = -1  # the slot of the step index, when the text has one
        #: The sequence form (``steps`` > 0): no time loop; a value of each step is stored
        #: with a leading axis of the steps, after the rows ("timed" slots).
        self.steps = steps
        self.timed: set[int] = set()
        self.in_timed = False  # the op being lowered has a timed argument

    # -- slots ---------------------------------------------------------------------------
    def stage(self, slot: int) -> str:
        return self.prog.slots[slot].stage

    def slot(self, kind: str, shape: tuple[int, ...], stage: str, name: str = "",
             counted: bool = True) -> int:
        """A new slot; what it will allocate counts against the memory budget first."""
        index = len(self.prog.slots)
        if kind != "param" and counted:
            need = budget.size(shape, np.dtype(self.prog.dtype).itemsize)
            self.bytes += need
            where = f"the equation for '{self.current}'" if self.current else f"'{name}'"
            budget.check(self.bytes, f"{where} makes a {'×'.join(map(str, shape))} value "
                         f"({budget.show(need)})",
                         lambda message: EquationError(message, expected="smaller dimensions"))
        self.prog.slots.append(Slot(name or f"%{index}", kind, shape, stage))
        return index

    def emit(self, op: str, args: tuple[int, ...], out_shape: tuple[int, ...],
             stage: str | None = None, shared: bool = True, timed: bool | None = None,
             **attrs: Any) -> int:
        """One instruction, or (``shared``) the slot of an equal one already emitted.

        ``out_shape`` is the shape per step: a timed result (one with a timed argument,
        unless ``timed`` says) gets the steps in front."""
        stage = stage or max((self.stage(a) for a in args), key=stage_rank,
                             default="prologue")
        items = tuple(sorted(attrs.items()))
        if timed is None:
            timed = any(a in self.timed for a in args)
        out_shape = (self.steps, *out_shape) if timed else tuple(out_shape)
        key = (op, args, items, stage, out_shape)  # a copy's shape is its target's
        if shared and key in self.memo:
            return self.memo[key]
        out = self.slot("temp", out_shape, stage, counted=not OPS[op].view)
        if timed:
            self.timed.add(out)
        self.writer[out] = Instr(op, out, args, items)
        self.prog.stage_list(stage).append(self.writer[out])
        if shared:
            self.memo[key] = out
        return out

    def literal(self, value: float) -> int:
        key = ("literal", value)
        if key not in self.memo:
            index = self.slot("const", (), "prologue", name=_number(value))
            self.prog.literals[index] = np.full((), value, dtype=self.prog.dtype)
            self.memo[key] = index
        return self.memo[key]

    # -- forms ---------------------------------------------------------------------------
    def per_example(self, v: Value) -> bool:
        return self.stage(v.slot) != "prologue"

    def reshaped(self, v: Value, shape: tuple[int, ...]) -> int:
        """v's entries in ``shape`` (its layout per step): after the steps when v is timed,
        after an axis of 1 when v is a value per sequence read by a timed op."""
        timed = v.slot in self.timed
        whole = (self.steps, *shape) if timed else (1, *shape) \
            if self.in_timed and self.per_example(v) else shape
        if self.prog.slots[v.slot].shape == whole:
            return v.slot
        lead = (-1,) if self.per_example(v) else ()
        return self.emit("reshape", (self.contiguous(v.slot),), shape if timed else whole,
                         timed=timed, shape=(*lead, *whole))

    def step_shape(self, slot: int) -> tuple[int, ...]:
        """A slot's shape per step (without the steps of a timed slot)."""
        shape = self.prog.slots[slot].shape
        return shape[1:] if slot in self.timed else shape

    def contiguous(self, slot: int) -> int:
        """The slot itself, or a copy of it when it is a strided view (a transpose, a slice):
        a reshape of one would be a copy made once at bind time, not a view."""
        ins = self.writer.get(slot)
        while ins is not None and ins.op == "reshape":
            ins = self.writer.get(ins.args[0])
        if ins is None or ins.op not in ("transpose", "slice", "permute"):
            return slot
        return self.emit("copy", (slot,), self.step_shape(slot))

    def full(self, v: Value, rank: int | None = None) -> int:
        """The value with all its axes (a per-example vector as (rows, n, 1)), with leading
        1s up to ``rank`` for a per-example value (constants broadcast from the right)."""
        shape = v.shape
        if rank is not None and (self.per_example(v) or v.slot in self.timed) and \
                rank > len(shape):
            shape = (1,) * (rank - len(shape)) + shape
        return self.reshaped(v, shape)

    def flat(self, v: Value) -> int:
        """A vector (n, 1) or a number (1, 1) as its entries (n,): how rows of vectors meet."""
        return self.reshaped(v, stored(v.shape)) if len(v.shape) == 2 else v.slot

    # -- leaves --------------------------------------------------------------------------
    def declare_leaves(self) -> None:
        of = self.shapes.of
        lead = (self.steps,) if self.steps else ()  # the sequence form: all steps at once
        for name in self.roles.inputs:
            index = self.slot("input", (*lead, *stored(of[name])), "pre", name)
            self.prog.inputs[name] = index
            self.names[name] = Value(index, of[name])
            if self.steps and name in self.roles.timed:
                self.timed.add(index)
        if self.steps:
            histories.sequence_leaves(self)
            return
        for name, lags in self.roles.state.items():
            stage = pass_name(self.roles.passes.get(name, 2))
            for lag in range(1, lags + 1):
                key = state_symbol_name(name, lag)
                index = self.slot("state", stored(of[name]), stage, key)
                self.prog.state_in[(name, lag)] = index
                grown = self.shapes.grown.get(name)
                self.names[key] = Value(index, of[name]) if grown is None else \
                    Value(index, of[name], grown - len(of[name]), history=True)
        for name, leads in self.roles.back.items():  # read at later steps (§4)
            stage = pass_name(self.roles.passes[name])
            for ahead in range(1, leads + 1):
                key = state_symbol_name(name, -ahead)
                index = self.slot("state", stored(of[name]), stage, key)
                self.prog.back_in[(name, ahead)] = index
                self.names[key] = Value(index, of[name])
        if self.roles.step_index or self.roles.appends:  # the steps so far: a state of its own
            self.t = self.slot("state", (1,), "loop", state_symbol_name(STEP, 1))
            self.prog.state_in[(STEP, 1)] = self.t
            self.names[STEP] = Value(self.t, (1, 1))
            self.prog.context = self.shapes.context or 0
        for name in self.roles.params:
            index = self.slot("param", of[name], "prologue", name)
            self.prog.params[name] = index
            self.names[name] = Value(index, of[name])

    # -- equations -----------------------------------------------------------------------
    def lower(self) -> Program:
        self.declare_leaves()
        self.prog.ids = dict(self.shapes.ids)
        for name in self.roles.order:
            self.current = name
            eq = self.roles.equations[name]
            if name in self.roles.appends:
                self.names[name] = histories.append(self, eq)
                continue
            value = self.expr(eq.expr)
            want = self.shapes.of[name]
            if value.shape != want:  # a number or a smaller value broadcast to the target
                value = self.elementwise("copy", [value], want)
            self.names[name] = value
        for name in self.roles.outputs:
            self.prog.outputs[name] = self.boundary(histories.whole(self, name))
        if self.steps:
            return self.prog
        self.own_state()
        if self.t >= 0:
            self.prog.state_out[STEP] = self.emit("add", (self.t, self.literal(1.0)), (1,),
                                                  stage="loop", shared=False)
        return self.prog

    # -- the entries present at a step ---------------------------------------------------
    def boundary(self, v: Value) -> int:
        return self.flat(v) if self.per_example(v) else v.slot

    def own_state(self) -> None:
        """Each next-state value gets a slot of its own in its time pass (the VM rotates
        these): ``loop`` for state, ``back`` for backward state (or a later pass, §4)."""
        seen: set[int] = set()
        for names, out, keys in ((self.roles.state, self.prog.state_out, self.prog.state_in),
                                 (self.roles.back, self.prog.back_out, self.prog.back_in)):
            for name in names:
                stage = self.stage(keys[(name, 1)])
                written = {ins.out: ins.op for ins in self.prog.stage_list(stage)}
                value = histories.whole(self, name)
                index = self.boundary(value)
                if index in seen or index not in written or \
                        self.prog.slots[index].kind != "temp" or OPS[written[index]].view:
                    index = self.emit("copy", (index,), stored(value.shape), stage=stage,
                                      shared=False)
                seen.add(index)
                out[name] = index

    def expr(self, root: ast.Expr) -> Value:
        values: dict[int, Value] = {}
        for node in ast.walk(root):
            values[id(node)] = self.node(node, values)
        return values[id(root)]

    def node(self, node: ast.Expr, values: dict[int, Value]) -> Value:
        shape = self.shapes.nodes[id(node)]
        kids = [values[id(k)] for k in ast.children(node)]
        self.in_timed = any(k.slot in self.timed for k in kids)
        if isinstance(node, ast.Number):
            return Value(self.literal(node.value), ())
        if isinstance(node, ast.Name) and node.name in self.roles.dims:
            return Value(self.literal(float(self.shapes.dims[node.name])), ())
        if isinstance(node, ast.Name):
            key = node.name if not node.time else state_symbol_name(node.name, -node.time)
            return self.names[key]
        if isinstance(node, ast.Unary):
            return self.elementwise("neg", kids, shape)
        if isinstance(node, ast.Power):
            if node.exponent == -1:
                return self.elementwise("div", [Value(self.literal(1.0), ()), kids[0]], shape)
            return self.elementwise("pow", kids, shape, exponent=node.exponent)
        if isinstance(node, ast.Transpose):
            return self.transpose(kids[0], shape)
        if isinstance(node, ast.Binary):
            if node.op == "@":
                return self.matmul(kids[0], kids[1], shape)
            return self.elementwise(COMPARISONS.get(node.op) or _BINARY[node.op], kids, shape)
        if isinstance(node, ast.Slice):
            return self.take(kids[0], node.start, node.stop, shape)
        if isinstance(node, ast.Gather):
            table, ids = kids
            if self.per_example(table):
                raise EquationError(f"the table of '{node.index.raw}' ids in the equation for "
                                    f"'{self.current}' varies per example",
                                    expected="a weight (a constant table)")
            slots = (self.reshaped(table, api_shape(table.shape)), self.flat(ids))
            return Value(self.emit("gather", slots, stored(shape)), shape)
        if isinstance(node, ast.Concat):
            return self.concat(kids, shape, node.across)
        assert isinstance(node, ast.Call)
        return self.call(node, kids, shape)

    # -- ops -----------------------------------------------------------------------------
    def elementwise(self, op: str, args: list[Value], shape: tuple[int, ...], **attrs: Any
                    ) -> Value:
        """Entry by entry with NumPy broadcasting: on rows of vectors when every operand is
        a vector or a number (version 1's layout), else on the full axes."""
        ragged = {a.ragged for a in args if a.ragged is not None}
        if len(ragged) > 1:
            raise EquationError(f"values in the equation for '{self.current}' have their "
                                "steps along different axes", expected="the same axis")
        axis = ragged.pop() if ragged else None
        vectors = all(len(a.shape) == 0 or (len(a.shape) == 2 and a.shape[1] == 1)
                      for a in [*args, Value(0, shape)])
        if vectors and any(self.per_example(a) for a in args):
            slots = tuple(self.flat(a) for a in args)
            return Value(self.emit(op, slots, stored(shape), **attrs), shape, axis)
        slots = tuple(self.full(a, len(shape)) for a in args)
        return Value(self.emit(op, slots, shape, **attrs), shape, axis)

    def transpose(self, v: Value, shape: tuple[int, ...]) -> Value:
        if len(v.shape) < 2:
            return v
        axis = {-1: -2, -2: -1}.get(v.ragged, v.ragged) if v.ragged is not None else None
        return Value(self.emit("transpose", (self.full(v),), shape), shape, axis, v.history)

    def matmul(self, a: Value, b: Value, shape: tuple[int, ...]) -> Value:
        if _scales(a.shape, b.shape):
            return self.elementwise("mul", [a, b], shape)
        value = self.product(*histories.summed(self, a, b), shape)
        lead = [r for r in (a.ragged, b.ragged) if r is not None and r <= -3]
        axis = -2 if a.ragged == -2 else -1 if b.ragged == -1 else lead[0] if lead else None
        return Value(value.slot, shape, axis)

    def product(self, a: Value, b: Value, shape: tuple[int, ...]) -> Value:
        ea, eb = self.per_example(a), self.per_example(b)
        if not ea and eb and len(a.shape) == 2 and b.shape[-1] == 1 and len(b.shape) == 2:
            w_t = self.emit("transpose", (a.slot,), (a.shape[1], a.shape[0]))
            return Value(self.emit("matmul", (self.flat(b), w_t), stored(shape)), shape)
        if ea and eb and a.shape[-2:-1] == (1,) and b.shape[-1:] == (1,) and \
                len(a.shape) == len(b.shape) == 2:  # aᵀ b of two vectors: one number a row
            a_row = self.reshaped(a, (a.shape[1],))
            return Value(self.emit("rowdot", (a_row, self.flat(b)), (1,)), shape)
        rank = len(shape)
        if self.steps and (a.slot in self.timed) != (b.slot in self.timed):
            folded = histories.fold_steps(self, a, b, shape)
            if folded is not None:
                return folded
        out = self.emit("matmul", (self.full(a, rank), self.full(b, rank)), shape)
        return Value(out, shape)

    def take(self, v: Value, start: int, stop: int, shape: tuple[int, ...]) -> Value:
        """Entries start … stop−1 along the first axis: a view."""
        histories.plain(self, v, "a slice")
        if not v.shape:  # a number is 1×1, as the shape check read it
            v = Value(self.reshaped(v, (1, 1)), (1, 1))
        if self.per_example(v) and len(v.shape) == 2 and v.shape[1] == 1:
            return Value(self.emit("slice", (self.flat(v),), (stop - start,), start=start,
                                   stop=stop, axis=-1), shape)
        axis = -len(v.shape)
        return Value(self.emit("slice", (self.full(v),), shape, start=start, stop=stop,
                               axis=axis), shape)

    def concat(self, parts: list[Value], shape: tuple[int, ...], across: bool) -> Value:
        per_example = any(histories.plain(self, p, "stacking").ragged for p in parts) or \
            any(self.per_example(p) for p in parts)
        ones = (1,) * len(shape)  # a number is a 1×…×1 part: concat's shape rule needs axes
        parts = [p if p.shape else Value(self.reshaped(p, ones), ones) for p in parts]
        if per_example and not across and len(shape) == 2 and shape[1] == 1:
            slots = tuple(self.flat(p) for p in parts)
            return Value(self.emit("concat", slots, (shape[0],), axis=-1), shape)
        slots = tuple(self.full(p) for p in parts)
        return Value(self.emit("concat", slots, shape, axis=-1 if across else -len(shape)),
                     shape)

    def call(self, node: ast.Call, args: list[Value], shape: tuple[int, ...]) -> Value:
        op = OPS[node.func]
        if (op.tensor and op.name != "permute") or op.name == "concat":
            for a in args:
                histories.plain(self, a, op.spellings[0])
        if op.name == "concat":  # along an axis of the values' own, counted from the end
            axis = int(self.shapes.attrs[id(node)]["axis"]) - len(shape)  # type: ignore
            slots = tuple(self.full(a) for a in args)
            return Value(self.emit("concat", slots, shape, axis=axis), shape)
        if op.tensor:
            return self.tensor_call(node, args, shape)
        axis = dict(node.params).get("axis")
        if axis is not None:
            return self.along_axis(op.name, args[0], shape, int(axis))
        if op.reduces:
            return self.reduce(op.name, args[0], shape)
        if op.vector:
            return self.along(op.name, args[0], shape, **dict(node.params))
        return self.elementwise(op.name, args, shape, **dict(node.params))

    def reduce(self, op: str, v: Value, shape: tuple[int, ...]) -> Value:
        """Over every entry: as one row of entries, then back to the kept axes."""
        histories.plain(self, v, OPS[op].spellings[0])
        size = int(np.prod(v.shape)) if v.shape else 1
        whole = self.reshaped(v, (size,) if self.per_example(v) else (1, size))
        one = (1,) if self.per_example(v) else (1, 1)
        out = Value(self.emit(op, (whole,), one, axis=-1), one)
        return Value(self.reshaped(out, shape if not self.per_example(v) else stored(shape)),
                     shape)

    def along(self, op: str, v: Value, shape: tuple[int, ...], **params: Any) -> Value:
        """softmax, log_softmax, the norms: along a vector's entries, else the last axis."""
        vector = len(shape) == 2 and shape[1] == 1
        if v.ragged is not None and v.ragged == (-2 if vector else -1):
            return histories.along_steps(self, op, v, shape, **params)
        if not shape:  # a number is one entry, as a 1×1 value is
            one = Value(self.reshaped(v, (1, 1)), (1, 1))
            out = Value(self.emit(op, (one.slot,), (1, 1), axis=-1, **params), (1, 1))
            return Value(self.reshaped(out, ()), ())
        if len(shape) == 2 and shape[1] == 1:
            if self.per_example(v):
                return Value(self.emit(op, (self.flat(v),), (shape[0],), axis=-1, **params),
                             shape, v.ragged)
            return Value(self.emit(op, (v.slot,), shape, axis=-2, **params), shape)
        return Value(self.emit(op, (self.full(v),), shape, axis=-1, **params), shape, v.ragged)

    def along_axis(self, op: str, v: Value, shape: tuple[int, ...], axis: int) -> Value:
        """``Σ(x; axis=k)``, ``softmax(x; axis=k)``: on the value with all its axes (a vector
        as (n, 1)), the axis counted from the end so that rows may lead."""
        rank = len(v.shape)
        axis = axis % rank - rank
        if v.ragged is not None and axis == v.ragged:
            whole = Value(self.full(v), v.shape, v.ragged, v.history)
            along = histories.along_steps(self, op, whole, shape)
            return Value(self.reshaped(along, shape), shape, along.ragged)
        out = self.emit(op, (self.full(v),), shape, axis=axis)
        return Value(out, shape, v.ragged)

    def tensor_call(self, node: ast.Call, args: list[Value], shape: tuple[int, ...]
                    ) -> Value:
        """conv, pooling, flatten: arguments with all their axes, a bias as its entries."""
        op = OPS[node.func]
        if op.name == "reshape":  # row-major entries, in the target's shape
            v = args[0]
            out = stored(shape) if self.per_example(v) else shape
            return Value(self.reshaped(Value(self.contiguous(self.full(v)), v.shape), out),
                         shape)
        if self.in_timed and op.name == "flatten":  # the entries of each step
            v = args[0]
            whole = Value(self.contiguous(self.full(v)), v.shape)
            return Value(self.reshaped(whole, (int(np.prod(v.shape)),)), shape)
        if self.in_timed and op.name != "permute":
            raise EquationError(f"{op.spellings[0]} in the equation for '{self.current}' has "
                                "no sequence form yet", expected="the step form (nnre run)")
        attrs: dict[str, Any] = dict(self.shapes.attrs[id(node)])
        if op.name == "permute":
            v, axes = args[0], tuple(attrs["axes"])
            ragged = None if v.ragged is None else \
                axes.index(v.ragged % len(v.shape)) - len(axes)
            return Value(self.emit("permute", (self.full(v),), shape, **attrs), shape, ragged)
        slots = []
        for i, a in enumerate(args):
            if i != op.tensor_input and self.per_example(a):  # the kernels take no rows there
                raise EquationError(f"the {_ordinal(i)} argument of {op.spellings[0]} in the "
                                    f"equation for '{self.current}' varies per example",
                                    expected="a weight (kernels and biases are constants)")
            if i == op.tensor_input:
                slots.append(self.contiguous(self.full(a)) if op.view else self.full(a))
            else:
                slots.append(self.reshaped(a, api_shape(a.shape)))
        x = args[op.tensor_input]
        if not self.per_example(x):
            raise EquationError(f"{op.spellings[0]} in the equation for '{self.current}' "
                                "needs a value that varies per example",
                                expected="an input or a value computed from one")
        out = op.shape(*[self.prog.slots[a].shape for a in slots], **attrs)  # (C, 1) stays
        return Value(self.emit(op.name, tuple(slots), tuple(out), **attrs), shape)


def _scales(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """A juxtaposition that scales: a number, or a 1×1 value beside a matrix it cannot
    multiply (``α x``, ``(xᵀ y) z``), as the shape checker decided."""
    if not a or not b:
        return True
    return (a == (1, 1) and b[-2] != 1) or (b == (1, 1) and a[-1] != 1)


def _number(value: float) -> str:
    return str(int(value)) if np.isfinite(value) and value == int(value) else f"{value:g}"


def lower(module: ast.Module, roles: Roles, shapes: TensorShapes, dtype: str = "float32",
          steps: int = 0) -> Program:
    """The Program of checked tensor equations (not yet optimized): one step of the time
    loop, or (``steps`` > 0) the sequence form, all that many steps at once per example."""
    return Lowering(module, roles, shapes, dtype, steps).lower()


def _ordinal(i: int) -> str:
    return ("first", "second", "third")[i] if i < 3 else f"{i + 1}th"
