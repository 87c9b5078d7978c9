"""The language's one printer: canonical and written text both parse back to the same equation."""

from __future__ import annotations

import pytest

from nnre.equations.parser import parse
from nnre.equations.render import render

CASES = [  # (equation, canonical, written)
    ("h_1ₜ = tanh(W x_t + U h_{1,t-1})", "tanh(W · xₜ + U · h_{1,t-1})",
     "tanh(W xₜ + U h_{1,t-1})"),
    ("y = W₁ (a - b) - -c", "W_1 · (a - b) - -c", "W₁ (a − b) − −c"),
    ("y = --x ⊙ W (-x)", "--x ⊙ W · -x", "−(−x) ⊙ W (−x)"),
    ("y = (Wᵀ)² x", "Wᵀ² · x", "Wᵀ² x"),
    ("y = [a; σ(b)] / 2", "[a; σ(b)] / 2", "[a; σ(b)] / 2"),
    ("gₜ = tanh(U g_{t+1} + V g'ₜ₊₁₂ + h_{1,t+2})", "tanh(U · gₜ₊₁ + V · g'ₜ₊₁₂ + h_{1,t+2})",
     "tanh(U gₜ₊₁ + V g'ₜ₊₁₂ + h_{1,t+2})"),
]


@pytest.mark.parametrize(("text", "canonical", "written"), CASES)
def test_both_styles_read_back_to_the_same_equation(text: str, canonical: str,
                                                    written: str) -> None:
    expr = parse(text).equations[0].expr
    assert render(expr) == canonical
    assert render(expr, written=True) == written
    for shown in (canonical, written):
        again = parse("y = " + shown).equations[0].expr
        assert render(again) == canonical, shown


def test_a_subscripted_name_keeps_its_time_index() -> None:
    """``h_1ₜ`` would read back as one name ``h_1t`` with no time: the printer writes
    ``h_{1,t}`` instead (a bug of the old canonical printer)."""
    eq = parse("h_1ₜ = h_{1,t-2} + x_t").equations[0]
    again = parse("y = " + render(eq.expr)).equations[0].expr
    names = [(n.name, n.time) for n in (again.left, again.right)]  # type: ignore[union-attr]
    assert names == [("h_1", -2), ("x", 0)]


def test_parameters_print_in_the_tables_order_and_read_back() -> None:
    expr = parse("y = clip(leaky_relu(x; slope=0.25); max=2)").equations[0].expr
    assert render(expr) == "clip(leaky_relu(x; slope=0.25); min=-1, max=2)"
    assert render(parse("y = " + render(expr)).equations[0].expr) == render(expr)
    assert render(parse("y = leaky_relu x").equations[0].expr) == "leaky_relu(x; slope=0.01)"


def test_a_norm_written_with_bars_reads_as_the_norm_function() -> None:
    expr = parse("y = x / ‖W x + b‖").equations[0].expr
    assert render(expr) == "x / norm(W · x + b)"


def test_functions_of_several_arguments_read_back() -> None:
    expr = parse("y = where(m, max(a, 0), min(a, b))").equations[0].expr
    assert render(expr) == "where(m, max(a, 0), min(a, b))"
    assert render(parse("y = " + render(expr)).equations[0].expr) == render(expr)


def test_entries_print_as_written() -> None:
    for text in ("y = x[0:2] + (W x)[1]", "y = W [a; b]"):
        expr = parse(text).equations[0].expr
        assert render(parse("y = " + render(expr)).equations[0].expr) == render(expr)
    assert render(parse("y = x[0:2] + (W x)[1]").equations[0].expr) == "x[0:2] + (W · x)[1]"


def test_a_subscript_that_is_not_letters_and_digits_prints_in_braces() -> None:
    """``W₋`` is the name ``W_-``; printed as ``W_-`` it would not read back."""
    for text, shown in (("y = W₋ x", "W_{-} · x"), ("y = W_{1,x} + W_{(1)}", "W_{1,x} + W_{(1)}")):
        expr = parse(text).equations[0].expr
        assert render(expr) == shown
        assert render(parse("y = " + shown).equations[0].expr) == shown
