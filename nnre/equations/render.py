"""Equations as text again: the one printer of the language, used by messages, ``nndk check``,
``inspect`` and the ONNX importer.

Parentheses appear only where the parser needs them; time is written ``ₜ``/``ₜ₋₁``; functions
take their first spelling from the op table (``σ`` for sigmoid).
"""

from __future__ import annotations

from nnre.equations import ast
from nnre.ops import OPS

_PREC = {"+": 1, "-": 1, "*": 2, "/": 2, "@": 3}


def unparse(expr: ast.Expr, limit: int = 60) -> str:
    """Plain text of an expression, shortened to ``limit`` characters for messages."""
    text = render(expr)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render(expr: ast.Expr) -> str:
    """Canonical text of an expression (time written ₜ, ₜ₋₁), built without recursion."""
    out: dict[int, tuple[str, int]] = {}
    for node in ast.walk(expr):
        out[id(node)] = _render_node(node, out)
    return out[id(expr)][0]


def _render_node(node: ast.Expr, out: dict[int, tuple[str, int]]) -> tuple[str, int]:
    def sub(child: ast.Expr, prec: int) -> str:
        text, p = out[id(child)]
        return f"({text})" if p < prec else text

    if isinstance(node, ast.Number):
        return node.text, 9
    if isinstance(node, ast.Name):
        return time_name(node.name, node.time), 9
    if isinstance(node, ast.Binary):
        p = _PREC[node.op]
        sym = {"@": "·", "*": "⊙"}.get(node.op, node.op)
        return f"{sub(node.left, p)} {sym} {sub(node.right, p + 1)}", p
    if isinstance(node, ast.Unary):
        return f"-{sub(node.operand, 4)}", 4
    if isinstance(node, ast.Power):
        e = node.exponent
        shown = "²" if e == 2 else "³" if e == 3 else f"^{_number(e)}"
        return f"{sub(node.base, 6)}{shown}", 5
    if isinstance(node, ast.Transpose):
        return f"{sub(node.operand, 6)}ᵀ", 6
    if isinstance(node, ast.Call):
        return f"{OPS[node.func].spellings[0]}({out[id(node.arg)][0]})", 9
    return "[" + "; ".join(out[id(p)][0] for p in node.parts) + "]", 9


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


def time_name(name: str, time: int | None) -> str:
    if time is None:
        return name
    if time == 0:
        return f"{name}ₜ"
    digits = str(-time).translate(str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉"))
    return f"{name}ₜ₋{digits}"
