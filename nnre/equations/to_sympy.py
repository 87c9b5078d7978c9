"""Checked AST → SymPy matrix expressions, one per equation, with integer shapes.

SymPy is the data structure (structural equality gives common subexpressions for free), not the
parser: nothing is sympified. Elementwise functions are ``ElementwiseApplyFunction`` with one
shared ``Lambda`` per function, so identical subexpressions stay equal; softmax and scalar
broadcasting are small ``MatrixExpr`` nodes of our own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypeAlias

import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction

from nnre.equations import ast
from nnre.equations.roles import Roles
from nnre.equations.shapes import Shapes
from nnre.errors import EquationError

_d = sp.Dummy("d")
LAMBDAS: dict[str, sp.Lambda] = {
    "sigmoid": sp.Lambda(_d, 1 / (1 + sp.exp(-_d))),
    "tanh": sp.Lambda(_d, sp.tanh(_d)),
    "relu": sp.Lambda(_d, sp.Max(0, _d)),
    "exp": sp.Lambda(_d, sp.exp(_d)),
    "log": sp.Lambda(_d, sp.log(_d)),
    "sqrt": sp.Lambda(_d, sp.sqrt(_d)),
    "abs": sp.Lambda(_d, sp.Abs(_d)),
}
OP_OF_LAMBDA = {lam: op for op, lam in LAMBDAS.items()}


class Softmax(sp.MatrixExpr):
    """softmax over the entries of a vector."""

    def __new__(cls, arg: sp.MatrixExpr) -> Softmax:
        return sp.Basic.__new__(cls, arg)  # type: ignore[return-value]

    @property
    def shape(self) -> tuple[Any, Any]:
        return self.args[0].shape  # type: ignore[no-any-return]


class LogSoftmax(Softmax):
    """log of softmax over the entries of a vector."""


class Broadcast(sp.MatrixExpr):
    """A 1×1 matrix repeated to a rows×cols shape (how ``α ⊙ x`` is written in SymPy)."""

    def __new__(cls, arg: sp.MatrixExpr, rows: int, cols: int) -> Broadcast:
        return sp.Basic.__new__(cls, arg, sp.Integer(rows), sp.Integer(cols))  # type: ignore

    @property
    def shape(self) -> tuple[Any, Any]:
        return (self.args[1], self.args[2])


VECTOR_FUNCS = {"softmax": Softmax, "log_softmax": LogSoftmax}
_SCALAR_FUNCS = {
    "sigmoid": lambda v: 1 / (1 + math.exp(-v)), "tanh": math.tanh,
    "relu": lambda v: max(v, 0.0), "exp": math.exp, "log": math.log, "sqrt": math.sqrt,
    "abs": abs, "softmax": lambda v: 1.0, "log_softmax": lambda v: 0.0,
}

Value: TypeAlias = Any  # a Python float (folded constant) or a SymPy MatrixExpr


def _flat(cls: type, m: sp.MatrixExpr) -> tuple[sp.MatrixExpr, ...]:
    """The operands of an associative node, so a+b+c is one sum of three terms."""
    return tuple(m.args) if isinstance(m, cls) else (m,)  # type: ignore[attr-defined]


def state_symbol_name(name: str, lag: int) -> str:
    return f"{name}@t-{lag}"


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
        return EquationError(message, line=pos.line, column=pos.column,
                             source_line=self.module.lines[pos.line - 1],
                             filename=self.module.filename)

    def convert(self, expr: ast.Expr) -> sp.MatrixExpr:
        values: dict[int, Value] = {}
        for node in ast.walk(expr):
            values[id(node)] = self.node(node, values)
        out = values[id(expr)]
        if isinstance(out, float):
            return self.literal(out, self.shapes.nodes[id(expr)])
        return out

    def literal(self, value: float, shape: tuple[int, int]) -> sp.MatrixExpr:
        ones = sp.OneMatrix(*shape)
        return ones if value == 1.0 else sp.MatMul(sp.Float(value), ones)

    def node(self, node: ast.Expr, values: dict[int, Value]) -> Value:
        if isinstance(node, ast.Number):
            return node.value
        if isinstance(node, ast.Name):
            if node.time is not None and node.time < 0:
                return self.symbol(state_symbol_name(node.name, -node.time), node.name)
            return self.symbol(node.name, node.name)
        if isinstance(node, ast.Binary):
            return self.binary(node, values[id(node.left)], values[id(node.right)])
        if isinstance(node, ast.Unary):
            v = values[id(node.operand)]
            return -v if isinstance(v, float) else sp.MatMul(sp.Integer(-1), v)
        if isinstance(node, ast.Power):
            return self.power(node, values[id(node.base)])
        if isinstance(node, ast.Transpose):
            v = values[id(node.operand)]
            return v if isinstance(v, float) else sp.Transpose(v)
        if isinstance(node, ast.Call):
            return self.call(node, values[id(node.arg)])
        assert isinstance(node, ast.Concat)
        parts = [self.matrix(values[id(p)], p) for p in node.parts]
        return sp.BlockMatrix([[p] for p in parts])

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

    def binary(self, node: ast.Binary, a: Value, b: Value) -> Value:
        op = node.op
        if isinstance(a, float) and isinstance(b, float):
            fns = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y,
                   "@": lambda x, y: x * y, "/": lambda x, y: x / y}
            return self.fold(node, fns[op], a, b)
        shape = self.shapes.nodes[id(node)]
        if op in ("*", "@") and (isinstance(a, float) or isinstance(b, float)):
            scalar, mat = (a, b) if isinstance(a, float) else (b, a)
            return sp.MatMul(sp.Float(scalar), mat)
        if op == "/" and isinstance(b, float):
            return sp.MatMul(sp.Float(self.fold(node, lambda x: 1 / x, b)), a)
        a_m, b_m = self.matrix(a, node.left), self.matrix(b, node.right)
        if op == "@":
            if a_m.shape == (1, 1) and b_m.shape != (1, 1) and a_m.shape[1] != b_m.shape[0]:
                a_m = Broadcast(a_m, *b_m.shape)
                return sp.HadamardProduct(a_m, b_m)
            if b_m.shape == (1, 1) and a_m.shape[1] != 1:
                return sp.HadamardProduct(a_m, Broadcast(b_m, *a_m.shape))
            return sp.MatMul(a_m, b_m)
        a_m, b_m = self.broadcast(a_m, shape), self.broadcast(b_m, shape)
        if op == "+":
            return sp.MatAdd(*_flat(sp.MatAdd, a_m), *_flat(sp.MatAdd, b_m))
        if op == "-":
            return sp.MatAdd(*_flat(sp.MatAdd, a_m), sp.MatMul(sp.Integer(-1), b_m))
        if op == "*":
            return sp.HadamardProduct(*_flat(sp.HadamardProduct, a_m),
                                      *_flat(sp.HadamardProduct, b_m))
        return sp.HadamardProduct(a_m, sp.HadamardPower(b_m, sp.Integer(-1)))

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

    def call(self, node: ast.Call, v: Value) -> Value:
        if isinstance(v, float):
            return self.fold(node, _SCALAR_FUNCS[node.func], v)
        if node.func in VECTOR_FUNCS:
            if 1 not in tuple(v.shape):
                raise self.error(f"{node.func} needs a vector, got a {v.shape[0]}×{v.shape[1]}"
                                 " matrix", node.pos)
            return VECTOR_FUNCS[node.func](v)
        return ElementwiseApplyFunction(LAMBDAS[node.func], v)


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
