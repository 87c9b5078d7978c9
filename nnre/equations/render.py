"""Equations as text again: the one printer of the language, used by messages, ``nndk check``,
``inspect`` and the ONNX importer.

Parentheses appear only where the parser needs them; time is written ``ₜ``/``ₜ₋₁``; functions
take their first spelling from the op table (``σ`` for sigmoid).
"""

from __future__ import annotations

from nnre.equations import ast
from nnre.equations.lexer import is_base_letter
from nnre.ops import OPS

_PREC = {"<": 0, ">": 0, "≤": 0, "≥": 0, "+": 1, "-": 1, "*": 2, "/": 2, "@": 3}
UNARY, POWER, TRANSPOSE, ATOM = 4, 5, 6, 9
_SUBSCRIPTS = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


def unparse(expr: ast.Expr, limit: int = 60) -> str:
    """Plain text of an expression, shortened to ``limit`` characters for messages."""
    text = render(expr)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render(expr: ast.Expr, written: bool = False) -> str:
    """The text of an expression, built without recursion.

    Canonical (the default, for messages and listings): canonical names, ``·`` for the
    matrix product, ASCII minus. ``written``: as a person writes it (what the ONNX importer
    stores): names as they were written (``W₁``), the matrix product as juxtaposition
    (``W x``) and ``−``. Both parse back to the same expression.
    """
    out: dict[int, tuple[str, int]] = {}
    for node in ast.walk(expr):
        out[id(node)] = _render_node(node, out, written)
    return out[id(expr)][0]


def _render_node(node: ast.Expr, out: dict[int, tuple[str, int]], written: bool
                 ) -> tuple[str, int]:
    def sub(child: ast.Expr, prec: int) -> str:
        text, p = out[id(child)]
        return f"({text})" if p < prec else text

    if isinstance(node, ast.Number):
        return node.text, ATOM
    if isinstance(node, ast.Name):
        if written and node.time is None:
            return node.raw, ATOM
        return time_name(node.name, node.time), ATOM
    if isinstance(node, ast.Binary):
        p = _PREC[node.op]
        if written and node.op == "@":  # juxtaposition: the right side must be one operand
            return f"{sub(node.left, p)} {sub(node.right, POWER)}", p
        sym = {"@": "·", "*": "⊙", "-": "−" if written else "-"}.get(node.op, node.op)
        return f"{sub(node.left, p)} {sym} {sub(node.right, p + 1)}", p
    if isinstance(node, ast.Unary):
        return ("−" + sub(node.operand, POWER)) if written else \
            ("-" + sub(node.operand, UNARY)), UNARY
    if isinstance(node, ast.Power):
        e = node.exponent
        shown = "²" if e == 2 else "³" if e == 3 else f"^{_number(e)}"
        return f"{sub(node.base, TRANSPOSE)}{shown}", POWER
    if isinstance(node, ast.Slice):
        which = str(node.start) if node.stop == node.start + 1 else f"{node.start}:{node.stop}"
        return f"{sub(node.operand, ATOM)}[{which}]", TRANSPOSE
    if isinstance(node, ast.Gather):
        return f"{sub(node.operand, ATOM)}[{out[id(node.index)][0]}]", TRANSPOSE
    if isinstance(node, ast.Transpose):
        number = isinstance(node.operand, ast.Number)  # 2ᵀ would not read back
        return f"{sub(node.operand, ATOM + 1 if number else TRANSPOSE)}ᵀ", TRANSPOSE
    if isinstance(node, ast.Call):
        shown = "".join(f"{'; ' if i == 0 else ', '}{k}={_number(v)}"
                        for i, (k, v) in enumerate(node.params))
        args = ", ".join(out[id(a)][0] for a in node.args)
        return f"{OPS[node.func].spellings[0]}({args}{shown})", ATOM
    assert isinstance(node, ast.Concat)
    if node.across:
        return "[" + ", ".join(out[id(p)][0] for p in node.parts) + "]", ATOM

    def row(part: ast.Expr) -> str:  # a row of parts side by side is written without brackets
        if isinstance(part, ast.Concat) and part.across:
            return ", ".join(out[id(p)][0] for p in part.parts)
        return out[id(part)][0]

    return "[" + "; ".join(row(p) for p in node.parts) + "]", ATOM


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


def _untimed(name: str) -> str:
    """A canonical name as it reads back: ``W_xh`` as is, but a subscript that is not a run of
    letters and digits in braces (``W_{-}`` for ``W₋``, ``W_{1,x}``): ``W_-`` would not parse."""
    base, sep, sub = name.partition("_")
    if not sep or all(ch.isascii() and ch.isdigit() or is_base_letter(ch) for ch in sub):
        return name
    return f"{base}_{{{sub}}}"


def time_name(name: str, time: int | None) -> str:
    """``hₜ``, ``hₜ₋₁``, ``gₜ₊₁``; a name with a subscript of its own takes the time inside it
    (``h_{1,t}``, ``h_{1,t-1}``): ``h_1ₜ`` would read as one name ``h_1t``."""
    if time is None:
        return _untimed(name)
    if "_" in name:
        base, sub = name.split("_", 1)
        return f"{base}_{{{sub},t{'' if time == 0 else f'{time:+d}'}}}"
    if time == 0:
        return name + "ₜ"
    return name + ("ₜ₋" if time < 0 else "ₜ₊") + str(abs(time)).translate(_SUBSCRIPTS)
