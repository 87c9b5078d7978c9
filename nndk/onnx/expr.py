"""Readable equation text for imported graphs: a tiny expression tree and its printer.

The printer puts parentheses only where the equation parser needs them (``+ −`` loosest, then
``⊙ /``, then the matrix product written as juxtaposition ``W x``, then unary minus), writes
time indices as ``ₜ``/``ₜ₋₁`` and numbers in their shortest form for the model's dtype. Names
are handed out by :class:`Names`, which keeps ONNX names that are already good equation names
and numbers the rest (``W₁``, ``b₁``, ``h₂``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnre.equations.lexer import canonical_name, tokenize
from nnre.equations.parser import ROLE_WORDS
from nnre.errors import EquationError
from nnre.ops import FUNCTIONS

SUM, ELEM, MAT, UNARY, ATOM = 1, 2, 3, 4, 5
_PREC = {"+": SUM, "−": SUM, "⊙": ELEM, "/": ELEM, "·": MAT}
_SUBSCRIPTS = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")
_RESERVED = {*FUNCTIONS, *ROLE_WORDS, "in", "R", "T", "t"}


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
    func: str  # a spelling from nnre.ops.FUNCTIONS: 'σ', 'tanh', 'relu', …
    arg: Expr


@dataclass(frozen=True)
class Bin:
    op: str  # '+', '−', '⊙', '/', '·' (matrix product)
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


Expr = Name | Num | Call | Bin | Neg | Stack | Tr


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


def prec(e: Expr) -> int:
    if isinstance(e, Bin):
        return _PREC[e.op]
    if isinstance(e, Neg):
        return UNARY
    return ATOM


def show(e: Expr) -> str:
    """The expression as equation text."""
    if isinstance(e, Name):
        return _timed(e.text, e.time)
    if isinstance(e, Num):
        return e.text
    if isinstance(e, Call):
        return f"{e.func}({show(e.arg)})"
    if isinstance(e, Neg):
        return "−" + _wrap(e.a, prec(e.a) < ATOM)
    if isinstance(e, Stack):
        return "[" + "; ".join(show(p) for p in e.parts) + "]"
    if isinstance(e, Tr):
        return _wrap(e.a, prec(e.a) < ATOM or isinstance(e.a, Num)) + "ᵀ"
    p = _PREC[e.op]
    left = _wrap(e.a, prec(e.a) < p)
    right = _wrap(e.b, prec(e.b) < ATOM if p == MAT else prec(e.b) <= p)
    return f"{left} {right}" if p == MAT else f"{left} {e.op} {right}"


def _wrap(e: Expr, parens: bool) -> str:
    return f"({show(e)})" if parens else show(e)


def _timed(text: str, time: int | None) -> str:
    """``hₜ``, ``hₜ₋₁``; a name with a subscript of its own takes the time inside it (h_{1,t})."""
    if time is None:
        return text
    key = canonical_name(text)
    if "_" in key:
        base, sub = key.split("_", 1)
        return f"{base}_{{{sub},t{'' if time == 0 else time}}}"
    return key + ("ₜ" if time == 0 else "ₜ₋" + str(-time).translate(_SUBSCRIPTS))


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
        self.counters: dict[str, int] = {}

    def take(self, text: str) -> bool:
        key = canonical_name(text)
        if key in self.taken:
            return False
        self.taken.add(key)
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
