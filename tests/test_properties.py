"""Property tests of the equation language (hypothesis).

(a) random well-formed expressions evaluate like a NumPy oracle built from the same random tree;
(b) random text never raises anything but EquationError;
(c) the canonical rendering of a parsed expression parses back to the same numbers.

The generator prints each tree with the fewest parentheses the precedence table allows, so the
parser's precedence is tested against this independent printer, not against itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nnre.equations import check
from nnre.equations.parser import parse
from nnre.equations.render import render
from nnre.errors import EquationError
from nnre.model import Model

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

RNG = np.random.default_rng(7)
VECS = {"a": RNG.normal(size=3), "b": RNG.normal(size=3)}
MATS = {"W": RNG.normal(size=(3, 3)) * 0.6, "U": RNG.normal(size=(3, 3)) * 0.6}
W2 = RNG.normal(size=(3, 6)) * 0.5
DECL = "a, b ∈ ℝ^3\n"
WEIGHT_SHAPES = {"W": (3, 3), "U": (3, 3), "W_c": (3, 6)}

# precedence levels of the language (formats/equations.md): a child printed below the level its
# position needs gets parentheses
SUM, ELEMENTWISE, MATMUL, UNARY, TIGHT, POSTFIX, ATOM = 1, 2, 3, 4, 5, 6, 9


@dataclass(frozen=True)
class Expr:
    text: str
    prec: int
    value: np.ndarray
    scale: float  # largest magnitude of any intermediate value, for the tolerance


def at_least(e: Expr, prec: int) -> str:
    return e.text if e.prec >= prec else f"({e.text})"


def scale(*parts: Expr, value: np.ndarray) -> float:
    return max([float(np.max(np.abs(value)))] + [p.scale for p in parts])


def leaf(names: dict[str, np.ndarray]) -> st.SearchStrategy[Expr]:
    return st.sampled_from(sorted(names)).map(
        lambda n: Expr(n, ATOM, names[n], float(np.max(np.abs(names[n])))))


def _softmax(v: np.ndarray) -> np.ndarray:
    e = np.exp(v - v.max())
    return e / e.sum()


def _log_softmax(v: np.ndarray) -> np.ndarray:
    s = v - v.max()
    return s - np.log(np.exp(s).sum())


# function spelling → NumPy, for arguments that are safe anywhere
SAFE_FUNCS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tanh": np.tanh, "σ_c": np.tanh, "σ_h": np.tanh,
    "σ": lambda v: 1 / (1 + np.exp(-v)), "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
    "σ_g": lambda v: 1 / (1 + np.exp(-v)),
    "relu": lambda v: np.maximum(v, 0), "ReLU": lambda v: np.maximum(v, 0),
    "abs": np.abs,
}
VECTOR_FUNCS = {"softmax": _softmax, "log_softmax": _log_softmax}


@st.composite
def call(draw: st.DrawFn, arg: Expr, funcs: dict[str, Callable[[np.ndarray], np.ndarray]]
         ) -> Expr:
    name = draw(st.sampled_from(sorted(funcs)))
    value = funcs[name](arg.value)
    # parentheses may be omitted (tanh cₜ); but f (x)² is f(x)², so not before a '('
    if arg.prec >= POSTFIX and not arg.text.startswith("(") and draw(st.booleans()):
        return Expr(f"{name} {arg.text}", TIGHT, value, scale(arg, value=value))
    return Expr(f"{name}({arg.text})", ATOM, value, scale(arg, value=value))


@st.composite
def positive_call(draw: st.DrawFn, arg: Expr) -> Expr:
    """log and sqrt only ever see positive arguments: abs(·) + 1 or exp(tanh(·))."""
    if draw(st.booleans()):
        inner_value = np.abs(arg.value) + 1
        inner = f"abs({arg.text}) + 1"
    else:
        inner_value = np.exp(np.tanh(arg.value))
        inner = f"exp(tanh({arg.text}))"
    name = draw(st.sampled_from(["log", "sqrt", "√"]))
    value = np.log(inner_value) if name == "log" else np.sqrt(inner_value)
    return Expr(f"{name}({inner})", ATOM, value, scale(arg, value=inner_value))


@st.composite
def matrices(draw: st.DrawFn, depth: int) -> Expr:
    if depth <= 0 or draw(st.integers(0, 2)) == 0:
        return draw(leaf(MATS))
    kind = draw(st.sampled_from(["T", "mm", "+", "⊙", "tanh", "scale"]))
    m = draw(matrices(depth - 1))
    if kind == "T":
        return Expr(at_least(m, POSTFIX) + "ᵀ", POSTFIX, m.value.T, m.scale)
    if kind == "tanh":
        v = np.tanh(m.value)
        return Expr(f"tanh({m.text})", ATOM, v, scale(m, value=v))
    if kind == "scale":
        v = 0.5 * m.value
        return Expr(f"0.5 {at_least(m, TIGHT)}", MATMUL, v, scale(m, value=v))
    n = draw(matrices(depth - 1))
    if kind == "mm":
        v = m.value @ n.value
        return Expr(f"{at_least(m, MATMUL)} · {at_least(n, UNARY)}", MATMUL, v,
                    scale(m, n, value=v))
    sym, fn, prec = {"+": ("+", np.add, SUM), "⊙": ("⊙", np.multiply, ELEMENTWISE)}[kind]
    v = fn(m.value, n.value)
    return Expr(f"{at_least(m, prec)} {sym} {at_least(n, prec + 1)}", prec, v,
                scale(m, n, value=v))


BINARY = {
    "+": (SUM, np.add), "-": (SUM, np.subtract), "−": (SUM, np.subtract),
    "⊙": (ELEMENTWISE, np.multiply), "*": (ELEMENTWISE, np.multiply),
    "∘": (ELEMENTWISE, np.multiply),
}


@st.composite
def vectors(draw: st.DrawFn, depth: int) -> Expr:
    if depth <= 0 or draw(st.integers(0, 3)) == 0:
        return draw(leaf(VECS))
    kind = draw(st.sampled_from(["binary", "binary", "matmul", "neg", "call", "vcall", "pos",
                                 "square", "cube", "pow", "T", "concat", "number", "dot"]))
    e = draw(vectors(depth - 1))
    if kind == "binary":
        sym = draw(st.sampled_from(sorted(BINARY)))
        prec, fn = BINARY[sym]
        f = draw(vectors(depth - 1))
        v = fn(e.value, f.value)
        return Expr(f"{at_least(e, prec)} {sym} {at_least(f, prec + 1)}", prec, v,
                    scale(e, f, value=v))
    if kind == "matmul":
        m = draw(matrices(depth - 1))
        sym = draw(st.sampled_from([" ", " · ", " ⋅ ", " @ "]))
        right = at_least(e, TIGHT if sym == " " else UNARY)  # W -x would read as W - x
        v = m.value @ e.value
        return Expr(f"{at_least(m, MATMUL)}{sym}{right}", MATMUL, v, scale(m, e, value=v))
    if kind == "neg":
        sym = draw(st.sampled_from(["-", "−"]))
        return Expr(f"{sym}{at_least(e, UNARY)}", UNARY, -e.value, e.scale)
    if kind == "call":
        return draw(call(e, SAFE_FUNCS))
    if kind == "vcall":
        return draw(call(e, VECTOR_FUNCS))
    if kind == "pos":
        return draw(positive_call(e))
    if kind in ("square", "cube"):
        sym, k = ("²", 2) if kind == "square" else ("³", 3)
        v = e.value ** k
        return Expr(at_least(e, POSTFIX) + sym, POSTFIX, v, scale(e, value=v))
    if kind == "pow":
        k = draw(st.sampled_from([2, 3, -1]))
        base = np.abs(e.value) + 1 if k == -1 else e.value
        text = f"(abs({e.text}) + 1)" if k == -1 else at_least(e, POSTFIX)
        exponent = draw(st.sampled_from([f"^{k}", f"^({k})"]))
        v = base ** float(k)
        return Expr(f"{text}{exponent}", TIGHT, v, scale(e, value=np.maximum(v, base)))
    if kind == "T":
        return Expr(f"{at_least(e, POSTFIX)}ᵀᵀ", POSTFIX, e.value, e.scale)
    if kind == "concat":
        f = draw(vectors(depth - 1))
        v = W2 @ np.concatenate([e.value, f.value])
        return Expr(f"W_c [{e.text}; {f.text}]", MATMUL, v, scale(e, f, value=v))
    if kind == "number":
        c = draw(st.sampled_from(["2", "0.5", "1.5", "3"]))
        where = draw(st.sampled_from(["left", "right", "add", "sub"]))
        x = float(c)
        if where == "left":
            return Expr(f"{c} {at_least(e, TIGHT)}", MATMUL, x * e.value, e.scale * x)
        if where == "right":
            return Expr(f"{at_least(e, MATMUL)} {c}", MATMUL, x * e.value, e.scale * x)
        v = e.value + x if where == "add" else x - e.value
        text = f"{at_least(e, SUM)} + {c}" if where == "add" else f"{c} - {at_least(e, 2)}"
        return Expr(text, SUM, v, scale(e, value=v))
    # dot: v (vᵀ w) scales a vector by an inner product
    f = draw(vectors(depth - 1))
    s = float(e.value @ f.value)
    v = e.value * s
    return Expr(f"{at_least(e, MATMUL)} ({at_least(e, POSTFIX)}ᵀ {at_least(f, TIGHT)})",
                MATMUL, v, scale(e, f, value=v) + abs(s))


def evaluate(expr_text: str) -> np.ndarray:
    roles = check(DECL + "y = " + expr_text, weights=WEIGHT_SHAPES).roles
    text = DECL + "input " + ", ".join(roles.inputs) + "\ny = " + expr_text
    params = {k: v for k, v in {**MATS, "W_c": W2}.items() if k in roles.params}
    model = Model.from_equations(text, params, dtype="float64")
    out, _ = model.step({k: VECS[k] for k in model.inputs})
    return out["y"]


@SETTINGS
@given(vectors(4))
def test_random_expressions_match_numpy(e: Expr) -> None:
    assume(np.all(np.isfinite(e.value)) and e.scale < 1e8)
    got = evaluate(e.text)
    np.testing.assert_allclose(got, e.value, rtol=1e-9, atol=1e-12 * (1 + e.scale),
                               err_msg=e.text)


@SETTINGS
@given(vectors(4))
def test_rendering_parses_back_to_the_same_numbers(e: Expr) -> None:
    assume(np.all(np.isfinite(e.value)) and e.scale < 1e8)
    rendered = render(parse("y = " + e.text).equations[0].expr)
    again = render(parse("y = " + rendered).equations[0].expr)
    assert again == rendered  # canonical text is a fixpoint
    np.testing.assert_allclose(evaluate(rendered), e.value, rtol=1e-9,
                               atol=1e-12 * (1 + e.scale), err_msg=f"{e.text} → {rendered}")
    written = render(parse("y = " + e.text).equations[0].expr, written=True)
    assert render(parse("y = " + written).equations[0].expr) == rendered, written


# -- random text never raises anything but EquationError ----------------------------------------

SYMBOLS = list("=+-−·⋅@*⊙∘/÷^()[]{};,∈×√ℝᵀ²³_'′″#.ₜ₋₊₁₂ᵢₒ̃̂ \t\n0123456789eE") + [
    "tanh", "σ", "σ_g", "softmax", "log", "sqrt", "relu", "in", "R", "input", "state",
    "output", "x", "xₜ", "hₜ₋₁", "hₜ₊₁", "hₜ", "W", "W_f", "b_{xh}", "x_t", "h_{t-1}", "c̃ₜ",
    "∈ ℝ^3", "∈ ℝ^(3×3)", "∈ ℝ", "in R^H", " = ", "\n", "1e400", "9" * 40,
    # version 2: parameters, reductions, several arguments, comparisons, invisible letters
    "leaky_relu", "clip", "; slope=", "; min=", "max", "min", "mean", "Σ", "‖", "where",
    "gelu", "erf", "<", ">", "≤", ">=", ",", "\u3164", "\u034f", "х",
]
GRAMMAR_ISH = st.lists(st.sampled_from(SYMBOLS), max_size=40).map("".join)
ANY_TEXT = st.text(max_size=80)
MIXED = st.lists(st.one_of(st.sampled_from(SYMBOLS), st.characters()), max_size=40).map("".join)


def _only_equation_errors(text: str) -> None:
    for run in (lambda: check(text), lambda: check(text, dims={"H": 2, "V": 3}),
                lambda: Model.from_equations(text, {}),
                lambda: Model.from_equations(text, {"W": np.eye(3)}, dims={"H": 3})):
        try:
            run()
        except EquationError:
            pass


@SETTINGS
@given(st.one_of(GRAMMAR_ISH, ANY_TEXT, MIXED))
def test_random_text_raises_only_equation_errors(text: str) -> None:
    _only_equation_errors(text)


@SETTINGS
@given(vectors(3), st.integers(0, 200), st.sampled_from(SYMBOLS))
def test_mutated_expressions_raise_only_equation_errors(e: Expr, at: int, insert: str) -> None:
    """One symbol inserted into a valid equation: still parsed or cleanly rejected."""
    text = DECL + "y = " + e.text
    at %= len(text) + 1
    _only_equation_errors(text[:at] + insert + text[at:])


@pytest.mark.slow
@settings(max_examples=3000, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.one_of(GRAMMAR_ISH, ANY_TEXT, MIXED))
def test_random_text_long_run(text: str) -> None:
    _only_equation_errors(text)
