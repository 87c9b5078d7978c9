"""Checked AST → SymPy matrix expressions, one per equation, with integer shapes.

SymPy is the data structure (structural equality gives common subexpressions for free), not the
parser: nothing is sympified. Elementwise functions are ``ElementwiseApplyFunction`` with one
shared ``Lambda`` per function, so identical subexpressions stay equal; softmax and scalar
broadcasting are small ``MatrixExpr`` nodes of our own. Both come from the op table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypeAlias

import sympy as sp
from sympy.core.symbol import Str
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction

from nnre.equations import ast
from nnre.equations.roles import Roles
from nnre.equations.shapes import Shapes
from nnre.errors import EquationError
from nnre.ops import OPS
from nnre.ops.arithmetic import COMPARISONS

_d = sp.Dummy("d")
Params = tuple[tuple[str, float], ...]
#: One shared Lambda per entry-by-entry function (and parameter values), from its op's SymPy
#: form, so equal calls stay structurally equal; the compiler maps each back to its op.
LAMBDAS: dict[tuple[str, Params], sp.Lambda] = {}
OP_OF_LAMBDA: dict[sp.Lambda, tuple[str, Params]] = {}


def lambda_of(op: str, params: Params) -> sp.Lambda:
    key = (op, params)
    if key not in LAMBDAS:
        form = OPS[op].sympy
        assert form is not None
        lam = sp.Lambda(_d, form(sp, _d, **{k: sp.Float(v) for k, v in params}))
        LAMBDAS[key], OP_OF_LAMBDA[lam] = lam, key
    return LAMBDAS[key]


class VectorFunction(sp.MatrixExpr):
    """A function of a whole vector (softmax, log_softmax): the op's name and its argument."""

    def __new__(cls, op: str, arg: sp.MatrixExpr, params: Params = ()) -> VectorFunction:
        values = sp.Tuple(*(sp.Tuple(Str(k), sp.Float(v)) for k, v in params))
        return sp.Basic.__new__(cls, Str(op), arg, values)  # type: ignore[return-value]

    @property
    def op(self) -> str:
        return str(self.args[0])

    @property
    def params(self) -> dict[str, float]:
        return {str(k): float(v) for k, v in self.args[2]}  # type: ignore[attr-defined]

    @property
    def shape(self) -> tuple[Any, Any]:
        if OPS[self.op].reduces:  # one number
            return (sp.Integer(1), sp.Integer(1))
        return self.args[1].shape  # type: ignore[attr-defined, no-any-return]


class Apply(sp.MatrixExpr):
    """An entry-by-entry function of several arguments (``max(a, b)``): the op's name and its
    arguments, each already of the result's shape."""

    def __new__(cls, op: str, *args: sp.MatrixExpr) -> Apply:
        return sp.Basic.__new__(cls, Str(op), *args)  # type: ignore[return-value]

    @property
    def op(self) -> str:
        return str(self.args[0])

    @property
    def shape(self) -> tuple[Any, Any]:
        return self.args[1].shape  # type: ignore[attr-defined, no-any-return]


class Broadcast(sp.MatrixExpr):
    """A 1×1 matrix repeated to a rows×cols shape (how ``α ⊙ x`` is written in SymPy)."""

    def __new__(cls, arg: sp.MatrixExpr, rows: int, cols: int) -> Broadcast:
        return sp.Basic.__new__(cls, arg, sp.Integer(rows), sp.Integer(cols))  # type: ignore

    @property
    def shape(self) -> tuple[Any, Any]:
        return (self.args[1], self.args[2])


class MatMul(sp.MatMul):
    """``sp.MatMul`` with its shape computed once.

    SymPy's ``MatMul.shape`` asks its first factor for ``rows`` and then for ``cols``, each a
    full ``shape`` walk, so ``-(-(-(…x)))`` costs 2^depth; caching makes it linear.
    """

    @property
    def shape(self) -> tuple[Any, Any]:
        cached = self.__dict__.get("_nnre_shape")
        if cached is None:
            mats = [a for a in self.args if a.is_Matrix]
            first = mats[0].shape
            last = first if len(mats) == 1 else mats[-1].shape
            cached = self.__dict__["_nnre_shape"] = (first[0], last[1])
        return cached  # type: ignore[no-any-return]


class BlockMatrix(sp.BlockMatrix):
    """``sp.BlockMatrix`` with its shape computed once (SymPy's visits the first block twice)."""

    @property
    def shape(self) -> tuple[Any, Any]:
        cached = self.__dict__.get("_nnre_shape")
        if cached is None:
            shapes = [b.shape for b in self.blocks]
            cached = self.__dict__["_nnre_shape"] = (sum(r for r, _ in shapes), shapes[0][1])
        return cached  # type: ignore[no-any-return]


Value: TypeAlias = "float | sp.MatrixExpr"


@dataclass
class _Chain:
    """Operands of an associative op (sum, Hadamard or matrix product) still being collected.

    Building ``a + b + c + …`` one SymPy node at a time copies and re-validates every operand
    at each step (quadratic) and nests as deep as the chain is long; collecting the operands
    first builds one flat node.
    """

    kind: type  # sp.MatAdd, sp.HadamardProduct or MatMul
    terms: list[sp.MatrixExpr]
    shape: tuple[int, int]

    def build(self) -> sp.MatrixExpr:
        return self.terms[0] if len(self.terms) == 1 else self.kind(*self.terms)


Pending: TypeAlias = "Value | _Chain"


def _force(value: Pending) -> Value:
    return value.build() if isinstance(value, _Chain) else value


def state_symbol_name(name: str, lag: int) -> str:
    """The symbol of a state read k steps earlier (lag k) or, for lag −k, k steps later."""
    return f"{name}@t-{lag}" if lag > 0 else f"{name}@t+{-lag}"


@dataclass
class SympyModel:
    """One SymPy expression per defined name, over symbols for inputs, state and params."""

    exprs: dict[str, sp.MatrixExpr]  # defined name → expression (in evaluation order)
    symbols: dict[str, sp.MatrixSymbol]  # symbol name → symbol (inputs, params, state, defined)


class _Converter:
    def __init__(self, module: ast.Module, roles: Roles, shapes: Shapes) -> None:
        self.module = module
        self.roles = roles
        self.shapes = shapes
        self.symbols: dict[str, sp.MatrixSymbol] = {}

    def symbol(self, key: str, name: str) -> sp.MatrixSymbol:
        if key not in self.symbols:
            r, c = self.shapes.of[name]
            self.symbols[key] = sp.MatrixSymbol(key, r, c)
        return self.symbols[key]

    def error(self, message: str, pos: ast.Pos) -> EquationError:
        return EquationError(ast.in_copy(message, pos), line=pos.line, column=pos.column,
                             source_line=self.module.lines[pos.line - 1],
                             filename=self.module.filename)

    def convert(self, expr: ast.Expr) -> sp.MatrixExpr:
        values: dict[int, Pending] = {}
        for node in ast.walk(expr):
            values[id(node)] = self.node(node, values)
        out = _force(values[id(expr)])
        if isinstance(out, float):
            return self.literal(out, self.shapes.nodes[id(expr)])
        return out

    def literal(self, value: float, shape: tuple[int, int]) -> sp.MatrixExpr:
        ones = sp.OneMatrix(*shape)
        return ones if value == 1.0 else sp.MatMul(sp.Float(value), ones)

    def node(self, node: ast.Expr, pending: dict[int, Pending]) -> Pending:
        if isinstance(node, ast.Binary):  # the only reader that may extend a chain
            return self.binary(node, pending[id(node.left)], pending[id(node.right)])
        values = {id(c): _force(pending[id(c)]) for c in ast.children(node)}
        if isinstance(node, ast.Number):
            return node.value
        if isinstance(node, ast.Name) and node.name in self.roles.dims:
            return float(self.shapes.dims[node.name])  # a dimension read as its value
        if isinstance(node, ast.Name):
            if node.time:  # an earlier step (state) or a later one (backward state)
                return self.symbol(state_symbol_name(node.name, -node.time), node.name)
            return self.symbol(node.name, node.name)
        if isinstance(node, ast.Unary):
            v = values[id(node.operand)]
            return -v if isinstance(v, float) else MatMul(sp.Integer(-1), v)
        if isinstance(node, ast.Power):
            return self.power(node, values[id(node.base)])
        if isinstance(node, ast.Transpose):
            v = values[id(node.operand)]
            return v if isinstance(v, float) else sp.Transpose(v)
        if isinstance(node, ast.Slice):
            v = values[id(node.operand)]
            if isinstance(v, float):
                raise self.error("a number has no entries to take", node.pos)
            return sp.MatrixSlice(v, (node.start, node.stop, 1), (0, v.shape[1], 1))
        if isinstance(node, ast.Call) and len(node.args) > 1:
            return self.apply(node, [values[id(a)] for a in node.args])
        if isinstance(node, ast.Call):
            return self.call(node, values[id(node.arg)])
        assert isinstance(node, ast.Concat)
        parts = [self.matrix(values[id(p)], p) for p in node.parts]
        return BlockMatrix([[p] for p in parts])

    def matrix(self, value: Value, node: ast.Expr) -> sp.MatrixExpr:
        if isinstance(value, float):
            return self.literal(value, self.shapes.nodes[id(node)])
        return value

    def fold(self, node: ast.Expr, fn: Any, *args: float) -> float:
        try:
            out = float(fn(*args))
        except (ArithmeticError, ValueError):
            out = math.nan
        if not math.isfinite(out):
            raise self.error("this constant expression has no finite value", node.pos)
        return out

    def binary(self, node: ast.Binary, a: Pending, b: Pending) -> Pending:
        op = node.op
        if isinstance(a, float) and isinstance(b, float):
            fns = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y,
                   "@": lambda x, y: x * y, "/": lambda x, y: x / y}
            fold = OPS[COMPARISONS[op]].fold if op in COMPARISONS else fns[op]
            return self.fold(node, fold, a, b)
        shape = self.shapes.nodes[id(node)]
        if op in COMPARISONS:  # 1 where it holds, else 0: an entry-by-entry function
            return Apply(COMPARISONS[op], *(self.broadcast(self.matrix(_force(v), n), shape)
                                            for v, n in ((a, node.left), (b, node.right))))
        if op in ("*", "@") and (isinstance(a, float) or isinstance(b, float)):
            scalar, mat = (a, b) if isinstance(a, float) else (b, a)
            return MatMul(sp.Float(scalar), _force(mat))
        if op == "/" and isinstance(b, float):
            return MatMul(sp.Float(self.fold(node, lambda x: 1 / x, b)), _force(a))
        if op == "@":
            return self.matmul(node, a, b)
        kind = sp.MatAdd if op in "+-" else sp.HadamardProduct
        terms = self.terms(a, kind, shape, node.left)
        right = self.terms(b, kind, shape, node.right)
        if op == "-":
            right = [MatMul(sp.Integer(-1), _Chain(kind, right, shape).build())]
        elif op == "/":
            right = [sp.HadamardPower(_Chain(kind, right, shape).build(), sp.Integer(-1))]
        terms.extend(right)  # in place: each chain has one reader, so this stays linear
        return _Chain(kind, terms, shape)

    def terms(self, value: Pending, kind: type, shape: tuple[int, int], node: ast.Expr
              ) -> list[sp.MatrixExpr]:
        """The operands ``value`` contributes to a ``kind`` chain of the given shape."""
        if isinstance(value, _Chain) and value.kind is kind and value.shape == shape:
            return value.terms
        return [self.broadcast(self.matrix(_force(value), node), shape)]

    def matmul(self, node: ast.Binary, a: Pending, b: Pending) -> Pending:
        """``a · b``, or ``a ⊙ b`` broadcast when one side is a declared scalar (``α x``)."""
        b_m = self.matrix(_force(b), node.right)
        a_shape = a.shape if isinstance(a, _Chain) else \
            tuple(self.matrix(a, node.left).shape)  # type: ignore[arg-type]
        if a_shape == (1, 1) and b_m.shape != (1, 1) and a_shape[1] != b_m.shape[0]:
            a_m = self.matrix(_force(a), node.left)
            return _Chain(sp.HadamardProduct, [Broadcast(a_m, *b_m.shape), b_m], b_m.shape)
        if b_m.shape == (1, 1) and a_shape[1] != 1:
            terms = self.terms(a, sp.HadamardProduct, a_shape, node.left)
            terms.append(Broadcast(b_m, *a_shape))
            return _Chain(sp.HadamardProduct, terms, a_shape)
        if isinstance(a, _Chain) and a.kind is MatMul:  # W V x: extend, do not rebuild
            factors = a.terms
        else:
            factors = [self.matrix(_force(a), node.left)]
        factors.append(b_m)
        return _Chain(MatMul, factors, (a_shape[0], b_m.shape[1]))

    def broadcast(self, m: sp.MatrixExpr, shape: tuple[int, int]) -> sp.MatrixExpr:
        if tuple(m.shape) == tuple(shape):
            return m
        if isinstance(m, sp.OneMatrix) or (isinstance(m, sp.MatMul) and
                                           isinstance(m.args[-1], sp.OneMatrix)):
            coeff = 1.0 if isinstance(m, sp.OneMatrix) else float(m.args[0])
            return self.literal(coeff, shape)
        return Broadcast(m, *shape)

    def power(self, node: ast.Power, v: Value) -> Value:
        e = node.exponent
        if isinstance(v, float):
            return self.fold(node, lambda x: x ** e, v)
        exponent = sp.Integer(int(e)) if e == int(e) else sp.Float(e)
        return sp.HadamardPower(v, exponent)

    def apply(self, node: ast.Call, values: list[Value]) -> Value:
        if all(isinstance(v, float) for v in values):
            fold = OPS[node.func].fold
            assert fold is not None
            return self.fold(node, fold, *values)  # type: ignore[arg-type]
        shape = self.shapes.nodes[id(node)]
        return Apply(node.func, *(self.broadcast(self.matrix(v, a), shape)
                                  for v, a in zip(values, node.args, strict=True)))

    def call(self, node: ast.Call, v: Value) -> Value:
        if isinstance(v, float):
            fold = OPS[node.func].fold
            assert fold is not None
            return self.fold(node, lambda x: fold(x, **dict(node.params)), v)
        if OPS[node.func].vector:
            if 1 not in tuple(v.shape):
                raise self.error(f"{node.func} needs a vector, got a {v.shape[0]}×{v.shape[1]}"
                                 " matrix", node.pos)
            return VectorFunction(node.func, v, node.params)
        # Not ElementwiseApplyFunction(...): for a 1×1 operand SymPy applies the function to
        # the matrix itself (sqrt(X) becomes X**(1/2), relu fails to compare), so build the
        # node directly; its args are exactly (function, expr) either way.
        return sp.Basic.__new__(ElementwiseApplyFunction, lambda_of(node.func, node.params), v)


def to_sympy(module: ast.Module, roles: Roles, shapes: Shapes) -> SympyModel:
    """Build the SymPy expression of every defined name, in evaluation order."""
    conv = _Converter(module, roles, shapes)
    exprs = {}
    for name in roles.order:
        eq = roles.equations[name]
        expr = conv.convert(eq.expr)
        if tuple(expr.shape) != shapes.of[name]:
            expr = conv.broadcast(expr, shapes.of[name])
        exprs[name] = expr
        conv.symbol(name, name)
    return SympyModel(exprs, conv.symbols)
