"""Readable equation text for imported graphs: a tiny expression tree the converters build.

It is printed by the language's one printer (``nnre.equations.render``, written style: the
matrix product as juxtaposition ``W x``, ``−``, names as written); numbers come in their
shortest form for the model's dtype. Names are handed out by :class:`Names`, which keeps ONNX
names that are already good equation names and numbers the rest (``W₁``, ``b₁``, ``h₂``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnre.equations import ast
from nnre.equations.lexer import canonical_name, tokenize
from nnre.equations.parser import ROLE_WORDS
from nnre.equations.render import render
from nnre.errors import EquationError
from nnre.names import skeleton
from nnre.ops import BY_ARITY, OPS

_SUBSCRIPTS = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")
_RESERVED = {*(s for s, _ in BY_ARITY), *ROLE_WORDS, "in", "R", "T", "t"}  # every spelling


@dataclass(frozen=True)
class Name:
    text: str  # the spelling printed, e.g. 'W₁' (canonical 'W_1')
    time: int | None = None  # None: no index; 0: ₜ; -1: ₜ₋₁; -k: ₜ₋ₖ


@dataclass(frozen=True)
class Num:
    value: float
    text: str


@dataclass(frozen=True)
class Call:
    func: str  # a spelling from nnre.ops.BY_ARITY: 'σ', 'tanh', 'relu', …
    arg: Expr
    params: tuple[tuple[str, float], ...] = ()  # leaky_relu(x; slope=0.2)
    more: tuple[Expr, ...] = ()  # further arguments: max(a, b), where(c, a, b)


@dataclass(frozen=True)
class Bin:
    op: str  # '+', '−', '⊙', '/', '·' (matrix product), or a comparison '<', '>', '≤', '≥'
    a: Expr
    b: Expr


@dataclass(frozen=True)
class Neg:
    a: Expr


@dataclass(frozen=True)
class Stack:
    parts: tuple[Expr, ...]


@dataclass(frozen=True)
class Tr:
    a: Expr


@dataclass(frozen=True)
class Part:
    """Entries start … stop−1 of a vector: ``x[start:stop]``."""

    a: Expr
    start: int
    stop: int


@dataclass(frozen=True)
class Pow:
    """``a^k`` for a number k (``a²``, ``a^0.5``)."""

    a: Expr
    k: float


@dataclass(frozen=True)
class Take:
    """The rows of a table that ids pick: ``E[x]`` (x declared ``∈ ℕ``)."""

    table: Name
    ids: Name


Expr = Name | Num | Call | Bin | Neg | Stack | Tr | Part | Pow | Take


def number(value: float, dtype: str) -> Expr:
    """A literal in the shortest text that reads back as the same value in ``dtype``."""
    if not np.isfinite(value):
        raise ValueError(f"{value} has no equation literal")
    mag = abs(float(value))
    text = str(np.float32(mag)) if dtype == "float32" else repr(mag)
    text = text.replace("e+", "e")
    lit = Num(mag, text[:-2] if text.endswith(".0") else text)
    return Neg(lit) if value < 0 else lit


def add(a: Expr, b: Expr) -> Expr:
    """``a + b``, written ``a − c`` when b is ``−c``."""
    return Bin("−", a, b.a) if isinstance(b, Neg) else Bin("+", a, b)


def sub(a: Expr, b: Expr) -> Expr:
    """``a − b``, written ``a + c`` when b is ``−c``."""
    return Bin("+", a, b.a) if isinstance(b, Neg) else Bin("−", a, b)


def combine(op: str, a: Expr, b: Expr) -> Expr:
    """``a op b`` for an infix operator of the language, signs folded into ``+``/``−``."""
    if op == "+":
        return add(a, b)
    if op == "−":
        return sub(a, b)
    return Bin(op, a, b)


def show(e: Expr) -> str:
    """The expression as equation text, by the language's one printer (written style)."""
    return render(to_ast(e), written=True)


_AST_OPS = {"+": "+", "−": "-", "⊙": "*", "/": "/", "·": "@", "<": "<", ">": ">", "≤": "≤",
            "≥": "≥"}
_AT = ast.Pos(0, 0)


def to_ast(e: Expr) -> ast.Expr:
    """The same expression as the parser's nodes (what ``render`` prints)."""
    if isinstance(e, Name):
        return ast.Name(canonical_name(e.text), e.time, e.text, _AT)
    if isinstance(e, Num):
        return ast.Number(e.value, e.text, _AT)
    if isinstance(e, Call):
        args = (to_ast(e.arg), *(to_ast(m) for m in e.more))
        op = OPS[BY_ARITY[(e.func, len(args))]]
        given = dict(e.params)
        params = tuple((k, given.get(k, v)) for k, v in op.params.items())
        if "axis" in given:  # softmax(x; axis=1), Σ(x; axis=0): no default to fill in
            params += (("axis", given["axis"]),)
        return ast.Call(op.name, args, _AT, params)
    if isinstance(e, Neg):
        return ast.Unary("-", to_ast(e.a), _AT)
    if isinstance(e, Stack):
        return ast.Concat(tuple(to_ast(p) for p in e.parts), _AT)
    if isinstance(e, Tr):
        return ast.Transpose(to_ast(e.a), _AT)
    if isinstance(e, Part):
        return ast.Slice(to_ast(e.a), e.start, e.stop, _AT)
    if isinstance(e, Pow):
        return ast.Power(to_ast(e.a), e.k, _AT)
    if isinstance(e, Take):
        ids = to_ast(e.ids)
        assert isinstance(ids, ast.Name)
        return ast.Gather(to_ast(e.table), ids, _AT)
    return ast.Binary(_AST_OPS[e.op], to_ast(e.a), to_ast(e.b), _AT)


def good_name(text: str) -> bool:
    """True when ``text`` is already a plain equation name that means no function or keyword."""
    try:
        tokens = tokenize(text)
    except EquationError:
        return False
    names = [t for t in tokens if t.kind not in ("NEWLINE", "EOF")]
    return (len(names) == 1 and names[0].kind == "NAME" and names[0].time is None
            and names[0].raw == text and names[0].text not in _RESERVED)


class Names:
    """Hands out distinct names (distinct by canonical spelling)."""

    def __init__(self) -> None:
        self.taken: set[str] = set()
        self.looks: set[str] = set()
        self.counters: dict[str, int] = {}

    def take(self, text: str) -> bool:
        """Claim ``text`` unless its canonical name, or a name that looks like it (UTS #39:
        ONNX's ``e1`` beside ``el``), is taken; equations may not hold lookalikes."""
        key = canonical_name(text)
        look = skeleton(key)
        if key in self.taken or look in self.looks:
            return False
        self.taken.add(key)
        self.looks.add(look)
        return True

    def numbered(self, stem: str, subscript: bool = True) -> str:
        """The next free ``stem₁``, ``stem₂``… (``stem1`` when subscripts would clash with ₜ)."""
        while True:
            self.counters[stem] = self.counters.get(stem, 0) + 1
            digits = str(self.counters[stem])
            text = stem + (digits.translate(_SUBSCRIPTS) if subscript else digits)
            if self.take(text):
                return text

    def prefer(self, text: str, stem: str, subscript: bool = True) -> str:
        """``text`` itself when it is a good, free name; else a numbered ``stem``."""
        if good_name(text) and self.take(text):
            return text
        return self.numbered(stem, subscript)
