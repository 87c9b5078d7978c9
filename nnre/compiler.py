"""SymPy expressions → Program: topological order, shared subexpressions once, stages.

Each SymPy node becomes at most one instruction (SymPy's structural equality makes equal
subexpressions one slot). Every value is placed in the earliest stage it can run in: parameters
only → prologue; inputs but no state → pre (hoisted out of the time loops); state → the
time pass of the latest state it reads (``loop``; backward state's ``back``, and for stacked
bidirectional layers ``back2``, ``loop2``, …, formats/equations.md §4).
Per-example values are vectors stored as rows, so ``W·x`` compiles to ``x @ Wᵀ``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction

from nnre import budget
from nnre.equations import Checked
from nnre.equations.roles import Roles
from nnre.equations.to_sympy import (
    OP_OF_LAMBDA,
    Apply,
    Broadcast,
    SympyModel,
    VectorFunction,
    state_symbol_name,
)
from nnre.errors import EquationError
from nnre.ops import OPS
from nnre.optimize import optimize as optimize_program
from nnre.program import Instr, Program, Slot, pass_name, stage_rank


class Compiler:
    def __init__(self, sym: SympyModel, roles: Roles, dtype: str,
                 contiguous: bool = False) -> None:
        self.sym = sym
        self.roles = roles
        self.contiguous = contiguous
        self.prog = Program(dtype=dtype)
        self.memo: dict[sp.Basic, int] = {}
        self.views: dict[tuple[int, str], int] = {}
        self.current = ""
        self.bytes = 0  # what the program allocates at one row, checked as it grows

    # -- slots ---------------------------------------------------------------------------
    def slot(self, kind: str, shape: tuple[int, int], stage: str, name: str = "") -> int:
        index = len(self.prog.slots)
        shape = (int(shape[0]), int(shape[1]))
        if stage != "prologue":
            if shape[0] != 1 and shape[1] != 1:
                raise EquationError(
                    f"in the equation for '{self.current}': a value that varies per example is "
                    f"a {shape[0]}×{shape[1]} matrix; nnre runs one vector per example",
                    expected="vectors for everything that depends on inputs or state")
            shape = (shape[0] * shape[1],)  # type: ignore[assignment]
        if kind != "param":  # weights are given (mapped from a file), not made here
            self.grow(shape, name)
        self.prog.slots.append(Slot(name or f"%{index}", kind, shape, stage))
        return index

    def grow(self, shape: tuple[int, ...], name: str) -> None:
        """Count a new value against the memory budget before anything allocates it."""
        need = budget.size(shape, np.dtype(self.prog.dtype).itemsize)
        self.bytes += need
        where = f"the equation for '{self.current}'" if self.current else f"'{name}'"
        dims = "×".join(str(d) for d in shape)
        budget.check(self.bytes, f"{where} makes a {dims} value ({budget.show(need)})",
                     lambda message: EquationError(message, expected="smaller dimensions"))

    def stage(self, index: int) -> str:
        return self.prog.slots[index].stage

    def literal(self, value: float, shape: tuple[int, int] = (1, 1)) -> int:
        key = sp.Float(value) if shape == (1, 1) else sp.MatMul(sp.Float(value),
                                                                  sp.OneMatrix(*shape))
        if key not in self.memo:
            index = self.slot("prologue", shape, "prologue", name=_number(value))
            self.prog.literals[index] = np.full(shape, value, dtype=self.prog.dtype)
            self.memo[key] = index
        return self.memo[key]

    def emit(self, op: str, args: tuple[int, ...], shape: tuple[int, int], stage: str | None = None,
             **attrs: Any) -> int:
        stage = stage or max((self.stage(a) for a in args), key=stage_rank,
                             default="prologue")
        if stage != "prologue" and op != "matmul":
            args = tuple(self.as_row(a) for a in args)
        out = self.slot("temp", shape, stage)
        self.prog.stage_list(stage).append(Instr(op, out, args, tuple(sorted(attrs.items()))))
        return out

    def as_row(self, index: int) -> int:
        """A constant vector used with per-example rows is viewed as one row, shape (n,)."""
        slot = self.prog.slots[index]
        if slot.stage != "prologue" or slot.shape == (1, 1) or len(slot.shape) == 1:
            return index
        key = (index, "row")
        if key not in self.views:
            r, c = slot.shape
            if r != 1 and c != 1:
                return index
            view = len(self.prog.slots)
            self.prog.slots.append(Slot(f"{slot.name}⃗", "temp", (r * c,), "prologue"))
            self.prog.prologue.append(Instr("reshape", view, (index,), (("shape", (r * c,)),)))
            self.views[key] = view
        return self.views[key]

    def transposed(self, index: int) -> int:
        key = (index, "T")
        if key not in self.views:
            r, c = self.prog.slots[index].shape
            view = len(self.prog.slots)
            self.prog.slots.append(Slot(f"{self.prog.slots[index].name}ᵀ", "temp", (c, r),
                                        "prologue"))
            self.prog.prologue.append(Instr("transpose", view, (index,)))
            self.views[key] = view
        return self.views[key]

    def row_weights(self, index: int) -> int:
        """Wᵀ for ``x @ Wᵀ``: a view (zero-copy), or a contiguous copy made in the prologue.

        OpenBLAS multiplies by a contiguous right operand up to ~1.7× faster than by a
        transposed view at batch 32; the copy doubles the weight's memory, so it is chosen
        by the caller (the trainer does, the runtime keeps views of mmapped weights).
        """
        view = self.transposed(index)
        if not self.contiguous:
            return view
        key = (index, "Tc")
        if key not in self.views:
            copy = len(self.prog.slots)
            slot = self.prog.slots[view]
            self.prog.slots.append(Slot(slot.name, "temp", slot.shape, "prologue"))
            self.prog.prologue.append(Instr("copy", copy, (view,)))
            self.views[key] = copy
        return self.views[key]

    # -- leaves --------------------------------------------------------------------------
    def declare_leaves(self) -> None:
        syms = self.sym.symbols
        for name in self.roles.inputs:
            sym = syms.get(name)
            if sym is not None:
                self.prog.inputs[name] = self.memo[sym] = self.slot("input", sym.shape, "pre",
                                                                    name)
        for name, lags in self.roles.state.items():
            stage = pass_name(self.roles.passes.get(name, 2))
            for lag in range(1, lags + 1):
                self.prog.state_in[(name, lag)] = self.state_slot(name, lag, stage)
        for name, leads in self.roles.back.items():
            stage = pass_name(self.roles.passes[name])
            for lead in range(1, leads + 1):
                self.prog.back_in[(name, lead)] = self.state_slot(name, -lead, stage)
        for name in self.roles.params:
            sym = syms.get(name)
            if sym is not None:
                self.prog.params[name] = self.memo[sym] = self.slot("param", sym.shape, "prologue",
                                                                    name)

    def state_slot(self, name: str, lag: int, stage: str) -> int:
        """The slot of state ``name`` read ``lag`` steps earlier (−k: k steps later)."""
        sym = self.sym.symbols.get(state_symbol_name(name, lag))
        index = self.slot("state", self.sym.exprs[name].shape, stage,
                          state_symbol_name(name, lag))
        if sym is not None:
            self.memo[sym] = index
        return index

    # -- expressions ---------------------------------------------------------------------
    def compile(self) -> Program:
        self.declare_leaves()
        for name, expr in self.sym.exprs.items():
            self.current = name
            index = self.expr(expr)
            self.memo[self.sym.symbols[name]] = index
        for name in self.roles.outputs:
            self.prog.outputs[name] = self.memo[self.sym.symbols[name]]
        self.own_state()
        return self.prog

    def own_state(self) -> None:
        """Each next-state value gets a slot of its own in its time pass (the VM rotates
        these): ``loop`` for state, ``back`` for backward state (or a later pass, §4)."""
        seen: set[int] = set()
        for names, out, stage_of in (
                (self.roles.state, self.prog.state_out, self.prog.state_in),
                (self.roles.back, self.prog.back_out, self.prog.back_in)):
            for name in names:
                stage = self.prog.slots[stage_of[(name, 1)]].stage
                written = {ins.out: ins.op for ins in self.prog.stage_list(stage)}
                index = self.memo[self.sym.symbols[name]]
                if index in seen or index not in written or \
                        self.prog.slots[index].kind != "temp" or \
                        OPS[written[index]].view:  # a view (dropout) owns no buffer to rotate
                    shape = self.sym.exprs[name].shape
                    index = self.emit("copy", (index,), shape, stage=stage)
                seen.add(index)
                out[name] = index

    def expr(self, root: sp.Basic) -> int:
        """Compile one expression tree bottom-up with an explicit stack (no recursion)."""
        stack: list[tuple[sp.Basic, bool]] = [(root, False)]
        while stack:
            node, ready = stack.pop()
            if node in self.memo:
                continue
            kids = _matrix_args(node)
            if ready or not kids:
                self.memo[node] = self.node(node)
                continue
            stack.append((node, True))
            stack.extend((k, False) for k in reversed(kids) if k not in self.memo)
        return self.memo[root]

    def node(self, node: sp.Basic) -> int:
        shape = (int(node.shape[0]), int(node.shape[1]))
        handler = _HANDLERS.get(type(node))
        if handler is None:
            for cls, fn in _HANDLERS.items():
                if isinstance(node, cls):
                    handler = fn
                    break
        if handler is None:
            raise EquationError(f"cannot compile {type(node).__name__} in the equation for "
                                f"'{self.current}'")
        return handler(self, node, shape)

    def sum_terms(self, node: sp.MatAdd, shape: tuple[int, int]) -> int:
        terms = []
        for term in node.args:
            negated, inner = _split_negation(term)
            index = self.memo[inner]
            terms.append((stage_rank(self.stage(index)), negated, index))
        terms.sort(key=lambda t: t[0])  # constants first, then hoistable terms, then state
        _, negated, acc = terms[0]
        if negated:
            acc = self.emit("neg", (acc,), shape)
        for _, negated, index in terms[1:]:
            acc = self.emit("sub" if negated else "add", (acc, index), shape)
        return acc

    def product(self, node: sp.MatMul, shape: tuple[int, int]) -> int:
        coeff = sp.Integer(1)
        mats = []
        for arg in node.args:
            if isinstance(arg, sp.MatrixExpr):
                mats.append(arg)
            else:
                coeff *= arg
        acc = self.memo[mats[0]]
        acc_shape = tuple(int(d) for d in mats[0].shape)
        for m in mats[1:]:
            m_shape = tuple(int(d) for d in m.shape)
            out_shape = (acc_shape[0], m_shape[1])
            acc = self.matmul(acc, self.memo[m], acc_shape, m_shape, out_shape)
            acc_shape = out_shape
        if coeff == -1:
            return self.emit("neg", (acc,), shape)
        if coeff != 1:
            return self.emit("mul", (acc, self.literal(float(coeff))), shape)
        return acc

    def matmul(self, a: int, b: int, a_shape: tuple[int, ...], b_shape: tuple[int, ...],
               shape: tuple[int, int]) -> int:
        sa, sb = self.stage(a), self.stage(b)
        if sa == "prologue" and sb == "prologue":
            return self.emit("matmul", (a, b), shape)
        if a_shape[1] == 1:  # outer product of vectors with one side of length 1: a scaling
            return self.emit("mul", (a, b), shape)
        if sa == "prologue":
            return self.emit("matmul", (b, self.row_weights(a)), shape)
        if sb == "prologue":
            return self.emit("matmul", (a, b), shape)
        return self.emit("rowdot", (a, b), shape)


def _split_negation(term: sp.Basic) -> tuple[bool, sp.Basic]:
    """(True, X) for a sum term written -X, else (False, term)."""
    if isinstance(term, sp.MatMul) and term.args[0] == -1:
        rest = term.args[1:]
        return True, rest[0] if len(rest) == 1 else sp.MatMul(*rest)
    return False, term


def _matrix_args(node: sp.Basic) -> list[sp.Basic]:
    if isinstance(node, sp.MatrixSymbol | sp.OneMatrix | sp.ZeroMatrix):
        return []
    if isinstance(node, sp.MatAdd):
        return [_split_negation(t)[1] for t in node.args]
    if isinstance(node, sp.BlockMatrix):
        return list(node.blocks)
    return [a for a in node.args if isinstance(a, sp.MatrixExpr)]


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"


def _leaf(c: Compiler, node: sp.Basic, shape: tuple[int, int]) -> int:
    raise EquationError(f"'{node}' in the equation for '{c.current}' is not defined")


def _elementwise(c: Compiler, node: Any, shape: tuple[int, int]) -> int:
    op, params = OP_OF_LAMBDA[node.function]
    attrs: dict[str, Any] = dict(params)
    return c.emit(op, (c.memo[node.expr],), shape, **attrs)


def _rows(c: Compiler, node: Any, shape: tuple[int, int]) -> int:
    """``x[a:b]``: a view. Per example, the entries of the row; a constant's rows are the
    columns of its transpose (Wᵀ[…, a:b]ᵀ), so every slice stays on the last axis."""
    (start, stop, step), cols = node.rowslice, node.colslice
    if step != 1 or (cols[0], cols[1], cols[2]) != (0, node.parent.shape[1], 1):
        raise EquationError(f"cannot compile the slice {node} in the equation for "
                            f"'{c.current}'")
    arg = c.memo[node.parent]
    if c.stage(arg) != "prologue":
        return c.emit("slice", (arg,), shape, start=int(start), stop=int(stop))
    cut = c.emit("slice", (c.transposed(arg),), (shape[1], shape[0]), start=int(start),
                 stop=int(stop))
    return c.emit("transpose", (cut,), shape)


def _apply(c: Compiler, node: Any, shape: tuple[int, int]) -> int:
    return c.emit(node.op, tuple(c.memo[a] for a in node.args[1:]), shape)


def _vector_function(c: Compiler, node: Any, shape: tuple[int, int]) -> int:
    """softmax and the reductions: along the row of a per-example value, along the vector of
    a constant one (a column (n, 1) or a row (1, n))."""
    arg = c.memo[node.args[1]]
    rows = int(node.args[1].shape[0])
    axis = -1 if c.stage(arg) != "prologue" else (0 if rows != 1 else 1)
    return c.emit(node.op, (arg,), shape, axis=axis, **node.params)


def _hadamard(c: Compiler, node: Any, shape: tuple[int, int]) -> int:
    acc = c.memo[node.args[0]]
    for arg in node.args[1:]:
        acc = c.emit("mul", (acc, c.memo[arg]), shape)
    return acc


def _power(c: Compiler, node: Any, shape: tuple[int, int]) -> int:
    base, exponent = c.memo[node.base], float(node.exp)
    if exponent == -1:
        return c.emit("div", (c.literal(1.0), base), shape)
    return c.emit("pow", (base,), shape, exponent=exponent)


def _transpose(c: Compiler, node: Any, shape: tuple[int, int]) -> int:
    arg = c.memo[node.arg]
    return arg if c.stage(arg) != "prologue" else c.transposed(arg)


def _concat(c: Compiler, node: Any, shape: tuple[int, int]) -> int:
    parts = tuple(c.memo[b] for b in node.blocks)
    per_example = any(c.stage(p) != "prologue" for p in parts)
    return c.emit("concat", parts, shape, axis=-1 if per_example else 0)


def _broadcast(c: Compiler, node: Any, shape: tuple[int, int]) -> int:
    arg = c.memo[node.args[0]]
    if c.stage(arg) == "prologue":
        return c.emit("copy", (arg,), shape, stage="prologue")
    return c.emit("copy", (arg,), shape)


def _ones(c: Compiler, node: Any, shape: tuple[int, int]) -> int:
    return c.literal(1.0 if isinstance(node, sp.OneMatrix) else 0.0, shape)


def _matpow(c: Compiler, node: Any, shape: tuple[int, int]) -> int:
    if not (node.exp.is_Integer and int(node.exp) >= 1):
        raise EquationError(f"cannot compile the matrix power {node} in the equation for "
                            f"'{c.current}'")
    base, acc = c.memo[node.base], c.memo[node.base]
    for _ in range(int(node.exp) - 1):
        acc = c.emit("matmul", (acc, base), shape)
    return acc


_HANDLERS: dict[type, Any] = {
    sp.MatrixSymbol: _leaf,
    sp.MatAdd: Compiler.sum_terms,
    sp.MatMul: Compiler.product,
    sp.HadamardProduct: _hadamard,
    sp.HadamardPower: _power,
    sp.Transpose: _transpose,
    ElementwiseApplyFunction: _elementwise,
    VectorFunction: _vector_function,
    Apply: _apply,
    sp.MatrixSlice: _rows,
    sp.BlockMatrix: _concat,
    Broadcast: _broadcast,
    sp.OneMatrix: _ones,
    sp.ZeroMatrix: _ones,
    sp.MatPow: _matpow,
}


def compile_checked(checked: Checked, dtype: str = "float32", optimize: bool = True,
                    contiguous: bool = False) -> Program:
    """The Program of checked equations: vectors through SymPy (:func:`compile_program`),
    tensors through ``nnre.lowering``."""
    if checked.sympy is not None:
        return compile_program(checked.sympy, checked.roles, dtype, optimize, contiguous)
    from nnre.lowering import lower

    prog = lower(checked.module, checked.roles, checked.shapes, dtype)  # type: ignore[arg-type]
    if optimize:
        prog = optimize_program(prog)
    budget.check(budget.program_bytes(prog), "the compiled program at batch 1",
                 lambda message: EquationError(message, expected="smaller dimensions"))
    return prog


def compile_program(sym: SympyModel, roles: Roles, dtype: str = "float32",
                    optimize: bool = True, contiguous: bool = False) -> Program:
    """Compile a checked SymPy model into a Program (stacked and fused unless told not to).

    ``contiguous=True`` gives per-example matrix products contiguous weight copies (faster,
    twice the weight memory); see :meth:`Compiler.row_weights`.
    """
    prog = Compiler(sym, roles, dtype, contiguous).compile()
    if optimize:
        prog = optimize_program(prog)  # stacked weights are new values: count them again
        budget.check(budget.program_bytes(prog), "the compiled program at batch 1",
                     lambda message: EquationError(message, expected="smaller dimensions"))
    return prog
