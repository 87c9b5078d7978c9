"""Every class of equation error: where it is reported (line, column) and what it says.

The table is the oracle: each column was worked out by hand from the text (the 1-based
character position of the offending token), not copied from the implementation.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from nnre.equations import check
from nnre.equations.lexer import MAX_NAME_CHARS, MAX_NUMBER_CHARS, MAX_TEXT_CHARS
from nnre.equations.parser import MAX_DEPTH, MAX_NODES
from nnre.errors import EquationError, ShapeError
from nnre.model import Model
from nnre.ops import FUNCTIONS

V3 = "x ∈ ℝ^3\n"

# (id, text, line, column, fragment of the message, fragment of `expected` or None)
CASES = [
    # syntax
    ("trailing-operator", "y = x +", 1, 8, "unexpected end of line", "a name, a number"),
    ("unclosed-paren", "y = (x", 1, 5, "'(' is never closed", "')'"),
    ("unclosed-outer-paren", "y = ((x) + 1", 1, 5, "'(' is never closed", "')'"),
    ("unclosed-call", "y = tanh(x + 1", 1, 9, "'(' is never closed", "')' after the"),
    ("unclosed-stack", V3 + "y = [x; x", 2, 5, "'[' is never closed", "']', ';' or ','"),
    ("stray-close", "y = x)", 1, 6, "unexpected ')'", "an operator or the end of the line"),
    ("no-target", "= x", 1, 1, "at the start of a statement", "a name"),
    ("no-equals", "y x", 1, 3, "unexpected 'x'", "'='"),
    ("exponent-not-number", "y = x^a", 1, 7, "unexpected 'a'", "a number as the exponent"),
    ("double-power", "y = x^2^3", 1, 8, "unexpected '^'", None),
    ("unclosed-concat", V3 + "y = [x, x", 2, 5, "'[' is never closed", "']', ';' or ','"),
    ("empty-concat", "y = []", 1, 6, "unexpected ']'", None),
    ("malformed-number", "y = 1.2.3", 1, 5, "malformed number", None),
    ("unclosed-subscript", "W_{ab = x", 1, 2, "unclosed subscript", "'}'"),
    ("empty-subscript", "y = W_ x", 1, 7, "empty subscript", None),
    ("membership-in-expr", "y = x ∈ ℝ", 1, 7, "unexpected '∈'", None),
    ("nine-dims", "x ∈ ℝ^(2×2×2×2×2×2×2×2×2)\ny = x", 1, 26, "9 dimensions declared",
     "at most 8"),
    ("zero-dim", "x ∈ ℝ^0\ny = x", 1, 7, "in a dimension", "a positive integer"),
    # unknown characters (column counts characters, so it is right after Unicode names too)
    ("unknown-char", "y = x $ 2", 1, 7, "unexpected character '$' (U+0024", None),
    ("unknown-char-line-2", "y = 3 # ok\nz = y ?", 2, 7, "unexpected character '?'", None),
    ("unknown-char-after-unicode", "hₜ = σ(xₜ) ¬", 1, 12, "U+00AC NOT SIGN", None),
    ("superscript-alone", "y = h¹ + x", 1, 6, "unexpected character '¹' (U+00B9 SUPERSCRIPT ONE)",
     "a layer index right before a subscript ('h¹ₜ'), 'h^{(1)}', or a power 'x^4'"),
    ("superscript-four", "y = x⁴", 1, 6, "unexpected character '⁴' (U+2074", None),
    ("layer-not-a-number", "y = W^{(1.5)} x", 1, 7, "unexpected '{' after '^'",
     "a whole number '^{(1)}', or a block's variable or a dimension '^{(l)}'"),
    ("layer-dimension-without-value", "y = W^{(a)} x", 1, 5, "dimension a has no value; "
     "--set a=…", "a value for a"),
    # functions
    ("unknown-function", "y = foo(x)", 1, 5, "unknown function 'foo'", "one of ReLU, abs"),
    ("function-case", "xₜ ∈ ℝ^3\nyₜ = Tanh(xₜ)", 2, 6,
     "unknown function 'Tanh'; did you mean 'tanh'?", "'tanh(…)', or a space before '('"),
    ("function-close", "xₜ ∈ ℝ^3\nyₜ = relu6(xₜ)", 2, 6,
     "unknown function 'relu6'; did you mean 'relu'?", None),
    ("function-close-word", "y = sigmod(x)", 1, 5,
     "unknown function 'sigmod'; did you mean 'sigmoid'?", None),
    ("function-case-sub", "y = 2 ⊙ EXP(x)", 1, 9, "unknown function 'EXP'; did you mean 'exp'?",
     None),
    ("arity", "y = tanh(a, b)", 1, 5, "tanh takes 1 argument, got 2", "one argument"),
    ("no-argument", "y = tanh", 1, 9, "function tanh needs an argument", None),
    ("define-function", "tanh = x", 1, 1, "'tanh' is a function", "a variable name"),
    # time indices
    ("later-read-input", "yₜ = W xₜ₊₁", 1, 8,
     "'xₜ₊₁' reads a later step of 'x', which no equation defines", "an input at ₜ"),
    ("later-read-ascii", "y = x_{t+1}", 1, 5, "reads a later step of 'x'", None),
    ("later-define", "hₜ₊₁ = x", 1, 1, "'hₜ₊₁' is a later step and cannot be defined", None),
    ("both-directions", V3 + "hₜ = tanh(W xₜ + U hₜ₋₁ + R hₜ₊₁)", 2, 29,
     "'hₜ₊₁': 'h' is state that runs forward (it is read at an earlier step); a state runs "
     "forward or backward in time, not both", "another name"),
    ("both-directions-lag-later", V3 + "gₜ = tanh(W xₜ + R gₜ₊₁ + U gₜ₋₁)", 2, 29,
     "'gₜ₋₁': 'g' is state that runs backward", None),
    ("directions-need-each-other", V3 + "hₜ = tanh(W xₜ + U hₜ₋₁ + S gₜ₊₁)\n"
     "gₜ = tanh(V xₜ + R gₜ₊₁ + P hₜ₋₁)\nyₜ = [hₜ; gₜ]", 3, 29,
     "'g' runs backward in time (it is read at a later step) and 'h' forward (it is read at "
     "an earlier step), but each needs the other: g → h → g",
     "a backward state that does not depend on forward state that depends on it"),
    ("directions-need-each-other-through-values", V3 + "aₜ = 2 ⊙ hₜ\n"
     "gₜ = tanh(R gₜ₊₁ + aₜ)\nhₜ = tanh(U hₜ₋₁ + S gₜ₊₁ + W xₜ)\nyₜ = hₜ", 3, 20,
     "but each needs the other: g → a → h → g", None),
    ("backward-beside-step-index", "P ∈ ℝ^(4×2)\ngₜ = tanh(P[t]ᵀ + gₜ₊₁)\nyₜ = gₜ", 2, 19,
     "'gₜ₊₁' makes 'g' backward state, which a text with the step index 't'", None),
    ("earlier-define", "hₜ₋₁ = x", 1, 1, "is an earlier step and cannot be defined", None),
    ("undefined-state", "yₜ = W hₜ₋₁", 1, 8, "reads an earlier step of 'h', which no equation",
     "an equation 'hₜ = …'"),
    ("mixed-time-free", "yₜ = xₜ + x", 1, 11, "'x' is written both with and without", None),
    ("mixed-time-defined", "hₜ = x\ny = h", 2, 5, "'h' is defined with a time index on line 1",
     None),
    ("lag-of-untimed", "h = x\nyₜ = hₜ₋₁", 2, 6, "'h' is defined without a time index", None),
    # definitions and roles
    ("redefinition", "y = a\ny = b", 2, 1, "'y' is defined twice (first on line 1)", None),
    ("cycle", "aₜ = bₜ\nbₜ = aₜ\nyₜ = aₜ", 1, 1,
     "depend on each other within one step: a → b → a", "ₜ₋₁"),
    ("cycle-not-first", "aₜ = bₜ\nbₜ = cₜ\ncₜ = bₜ\nyₜ = aₜ", 2, 1, ": b → c → b", None),
    ("cycle-without-output", "aₜ = bₜ\nbₜ = aₜ", 1, 1, "a → b → a", None),
    ("self-cycle", "x ∈ ℝ^3\nyₜ = yₜ + x", 2, 1, "y → y", None),
    ("input-unused", "input z\n" + V3 + "y = x", 1, 7, "input 'z' is never used", None),
    ("input-defined", "y = x\ninput y", 2, 7, "input 'y' is also defined", None),
    ("output-undefined", "output q\n" + V3 + "y = x", 1, 8, "output 'q' is not defined", None),
    ("state-undefined", "state h\n" + V3 + "y = x", 1, 7, "state 'h' is never defined", None),
    ("epsilon-free", "xₜ ∈ ℝ^3\nyₜ = xₜ / √(mean(xₜ²) + ε)", 2, 25,
     "'ε' is read as a small constant but has no value: define it, e.g. 'ε = 1e-5', or "
     "declare 'ε ∈ ℝ' to learn it", "'ε = 1e-5' or 'ε ∈ ℝ'"),
    ("epsilon-free-static", V3 + "y = x + ϵ", 2, 9, "'ϵ' is read as a small constant", None),
    ("dimension-defined", "x ∈ ℝ^H\nH = 3\ny = x / H", 2, 1,
     "'H' is a dimension (declared on line 1) and cannot also be defined",
     "another name for one of them (a dimension is a number: 'xₜ / H')"),
    ("dimension-declared", "x ∈ ℝ^H\nH ∈ ℝ\ny = x / H", 2, 1,
     "'H' is a dimension (declared on line 1) and cannot also be declared as a value", None),
    ("dimension-timed", "xₜ ∈ ℝ^H\nyₜ = xₜ / Hₜ", 2, 11,
     "'Hₜ': 'H' is a dimension (declared on line 1), a number without a time index",
     "'H' without a time index"),
    ("dimension-input", "input d_k\nx ∈ ℝ^d_k\ny = x / d_k", 1, 7,
     "'d_k' is a dimension (declared on line 2) and cannot appear in 'input …'", None),
    ("no-equations", "# only a comment\n", None, None, "no equations found", None),
    # shapes: the message names the equation, both operands and both shapes
    ("matmul-mismatch", V3 + "W ∈ ℝ^(4×2)\ny = W x", 3, 7,
     "matrix product in the equation for 'y' does not fit: 'W' is (4, 2) and 'x' is (3,)",
     None),
    ("sum-mismatch", "a ∈ ℝ^3\nb ∈ ℝ^4\ny = a + b", 3, 7,
     "sum in the equation for 'y' needs equal shapes: 'a' is (3,) and 'b' is (4,)", None),
    ("hadamard-mismatch", "aₜ ∈ ℝ^3\nbₜ ∈ ℝ^4\nyₜ = tanh(aₜ) ⊙ bₜ", 3, 15,
     "elementwise product in the equation for 'yₜ' needs equal shapes: 'tanh(aₜ)' is (3,) "
     "and 'bₜ' is (4,)", None),
    ("difference-mismatch-dims", "a ∈ ℝ^H\nb ∈ ℝ^V\ny = a - b", 3, 7,
     "'a' is (H=2,) and 'b' is (V=5,)", None),
    ("target-mismatch", "y ∈ ℝ^2\n" + V3 + "y = x", 3, 1,
     "in the equation for 'y': 'y' is (2,) but its right-hand side is (3,)", None),
    ("concat-columns", V3 + "W ∈ ℝ^(3×3)\ny = [x; W]", 3, 5,
     "same number of columns: 'W' is (3, 3)", None),
    ("concat-rows", V3 + "y ∈ ℝ^7\ny = [x; x]", 3, 5, "stacked rows add up to 6, but 7", None),
    ("softmax-matrix", "W ∈ ℝ^(2×3)\ny = softmax(W)", 2, 5, "softmax needs a vector", None),
    ("constant-infinite", V3 + "y = x + 1/0", 2, 10, "no finite value", None),
    # dimensions and shapes that nothing determines
    ("unbound-dim", "x ∈ ℝ^V\ny = x", 1, 1, "dimension V has no value", "V="),
    ("unbound-dim-in-sum", "x ∈ ℝ^(H+V)\ny = x", 1, 1, "dimension", None),
    ("undeclared-shape", "y = W x", 1, 5, "the shape of 'W' cannot be determined",
     "a declaration 'W ∈ ℝ^…' or a weight"),
    # literal and name caps
    ("literal-too-long", "y = " + "1" * (MAX_NUMBER_CHARS + 1), 1, 5,
     f"numeric literal is {MAX_NUMBER_CHARS + 1} characters long", f"at most {MAX_NUMBER_CHARS}"),
    ("literal-overflow", "y = 1e400", 1, 5, "numeric literal 1e400 is out of range", None),
    ("name-too-long", "y = " + "a" * (MAX_NAME_CHARS + 1), 1, 5,
     f"name is {MAX_NAME_CHARS + 1} characters long", None),
]

DIMS = {"difference-mismatch-dims": {"H": 2, "V": 5}, "unbound-dim-in-sum": {"H": 2}}


@pytest.mark.parametrize(("text", "line", "column", "fragment", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_error_location_and_message(text: str, line: int | None, column: int | None,
                                    fragment: str, expected: str | None,
                                    request: pytest.FixtureRequest) -> None:
    case_id = request.node.callspec.id
    with pytest.raises(EquationError) as info:
        check(text, dims=DIMS.get(case_id))
    err = info.value
    assert (err.line, err.column) == (line, column), str(err)
    assert fragment in err.message, str(err)
    if expected is not None:
        assert err.expected is not None and expected in err.expected, str(err)
    if column is not None:
        # the caret display shows the offending line and points at the column
        source, caret = str(err).split("\n")[1:3]
        assert source == "    " + text.split("\n")[line - 1]
        assert caret == "    " + " " * (column - 1) + "^"


def test_shape_errors_are_shape_errors() -> None:
    for case_id, text, *_ in CASES:
        if case_id.endswith("mismatch") or case_id.startswith(("concat-", "unbound-")):
            with pytest.raises(ShapeError):
                check(text, dims=DIMS.get(case_id))


# -- exact messages ---------------------------------------------------------------------------

EXACT = [
    ("y = leaky_relu(x; slop=0.1)",
     "<equations>:1:19: leaky_relu has no parameter 'slop' (expected one of its parameters "
     "(slope))\n    y = leaky_relu(x; slop=0.1)\n                      ^"),
    ("y = clip(x; min=0, min=1)",
     "<equations>:1:20: parameter 'min' given twice\n    y = clip(x; min=0, min=1)\n"
     "                       ^"),
    ("y = clip(x; min 0)",
     "<equations>:1:17: unexpected '0' (expected '=' after the parameter name 'min')\n"
     "    y = clip(x; min 0)\n                    ^"),
    ("y = tanh(x; min=0)",
     "<equations>:1:13: tanh has no parameter 'min' (expected one of its parameters (none))\n"
     "    y = tanh(x; min=0)\n                ^"),
    ("y = foo(x)",
     "<equations>:1:5: unknown function 'foo' (expected one of "
     + ", ".join(sorted(FUNCTIONS)) + ")\n"
     "    y = foo(x)\n"
     "        ^"),
    ("xₜ ∈ ℝ^3\nyₜ = Tanh(xₜ)",
     "<equations>:2:6: unknown function 'Tanh'; did you mean 'tanh'? (expected 'tanh(…)', or "
     "a space before '(' for a product)\n"
     "    yₜ = Tanh(xₜ)\n"
     "         ^"),
    ("yₜ = W xₜ₊₁",
     "<equations>:1:8: 'xₜ₊₁' reads a later step of 'x', which no equation defines (expected an "
     "equation 'xₜ = …' or an input at ₜ)\n"
     "    yₜ = W xₜ₊₁\n"
     "           ^"),
    ("yₜ = W hₜ₋₁",
     "<equations>:1:8: 'hₜ₋₁' reads an earlier step of 'h', which no equation defines "
     "(expected an equation 'hₜ = …' or an input at ₜ)\n"
     "    yₜ = W hₜ₋₁\n"
     "           ^"),
    ("x ∈ ℝ^3\nW ∈ ℝ^(4×2)\ny = W x",
     "<equations>:3:7: matrix product in the equation for 'y' does not fit: 'W' is (4, 2) and "
     "'x' is (3,) (columns of the left must equal rows of the right)\n"
     "    y = W x\n"
     "          ^"),
    ("Q, K ∈ ℝ^(T×d_k)\nd_k = 8\nS = softmax(Q Kᵀ / √d_k)",
     "<equations>:2:1: 'd_k' is a dimension (declared on line 1) and cannot also be defined "
     "(expected another name for one of them (a dimension is a number: 'xₜ / d_k'))\n"
     "    d_k = 8\n"
     "    ^"),
    ("y = a\ny = b",
     "<equations>:2:1: 'y' is defined twice (first on line 1)\n"
     "    y = b\n"
     "    ^"),
    ("y = x\t$",
     "<equations>:1:7: unexpected character '$' (U+0024 DOLLAR SIGN)\n"
     "    y = x $\n"
     "          ^"),
    ("", "no equations found (expected at least one 'name = expression')"),
]


@pytest.mark.parametrize(("text", "message"), EXACT)
def test_exact_message(text: str, message: str) -> None:
    with pytest.raises(EquationError) as info:
        check(text)
    assert str(info.value) == message


def test_filename_in_message() -> None:
    with pytest.raises(EquationError) as info:
        check("y = x +", filename="lstm.eqn")
    assert info.value.one_line() == ("lstm.eqn:1:8: unexpected end of line "
                                     "(expected a name, a number, '(' or '[')")


# -- hostile sizes: a clean EquationError, fast, never RecursionError ---------------------------

_DEEP = MAX_DEPTH + 1
HOSTILE = [
    ("parens", "y = " + "(" * _DEEP + "x" + ")" * _DEEP),
    ("parens-huge", "y = " + "(" * 50_000),
    ("brackets", "y = " + "[" * _DEEP + "x" + "]" * _DEEP),
    ("calls", "y = " + "tanh(" * _DEEP + "x" + ")" * _DEEP),
    ("calls-bare", "y = " + "tanh " * _DEEP + "x"),
    ("unary", "y = " + "-" * 50_000 + "x"),
    ("unary-parens", "y = " + "-(" * _DEEP + "x" + ")" * _DEEP),
    ("transposes", "y = x" + "ᵀ" * 50_000),
    ("squares", "y = x" + "²" * 50_000),
    ("nodes", "y = " + "+".join(["x"] * (MAX_NODES // 2 + 1))),
    ("nodes-juxtaposed", "y = " + " ".join(["W"] * (MAX_NODES + 1))),
    ("text", "y = x" + " " * MAX_TEXT_CHARS),
    ("literal", "y = " + "9" * 10_000),
    ("name", "y = " + "a" * 10_000),
    ("lines", "\n".join(f"y{i} = x" for i in range(MAX_NODES + 1))),
]


@pytest.mark.parametrize("text", [h[1] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_caps_fail_fast(text: str) -> None:
    start = time.perf_counter()
    with pytest.raises(EquationError) as info:
        check(text)
    elapsed = time.perf_counter() - start
    # ~0.2 s alone; generous for a busy 2-core CI machine, far below a quadratic blow-up
    assert elapsed < 5.0, f"{elapsed:.2f} s"
    assert any(word in info.value.message for word in
               ("nested too deeply", "too large", "characters long")), str(info.value)


def test_caps_fail_fast_in_model() -> None:
    text = "x ∈ ℝ^3\ny = " + "(" * _DEEP + "x" + ")" * _DEEP
    start = time.perf_counter()
    with pytest.raises(EquationError, match="nested too deeply"):
        Model.from_equations(text, {})
    assert time.perf_counter() - start < 5.0


LARGE_BUT_ALLOWED = [
    # the largest shapes the caps allow still compile quickly (no quadratic or exponential path)
    ("long-sum", V3 + "y = " + "+".join(["x"] * 4000)),
    ("long-difference", V3 + "y = " + "-".join(["x"] * 4000)),
    ("long-product", V3 + "y = " + "⊙".join(["x"] * 4000)),
    ("long-division", V3 + "y = x" + "/x" * 4000),
    ("long-matmul", "W ∈ ℝ^(3×3)\n" + V3 + "y = " + "W " * 4000 + "x"),
    ("deep-negation", V3 + "y = " + "-(" * (MAX_DEPTH // 2) + "x" + ")" * (MAX_DEPTH // 2)),
    ("deep-concat", V3 + "y = " + "[" * MAX_DEPTH + "x" + "; x]" * MAX_DEPTH),
    ("deep-mixed", V3 + "W ∈ ℝ^(3×3)\ny = " + "(W (" * (MAX_DEPTH // 2 - 1) + "x"
     + ")² ⊙ x + x)" * (MAX_DEPTH // 2 - 1)),
    ("deep-scaled", V3 + "s ∈ ℝ\ny = " + "-(s ⊙ " * (MAX_DEPTH // 2) + "x"
     + ")" * (MAX_DEPTH // 2)),
]


@pytest.mark.parametrize("text", [c[1] for c in LARGE_BUT_ALLOWED],
                         ids=[c[0] for c in LARGE_BUT_ALLOWED])
def test_large_allowed_inputs_check_quickly(text: str) -> None:
    start = time.perf_counter()
    weights = {"W": (3, 3)} if "W" in text else {}
    if "s ∈" in text:
        weights["s"] = ()
    check(text, weights=weights)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"{elapsed:.2f} s"


def test_large_sum_compiles_and_runs() -> None:
    text = V3 + "input x\ny = " + "+".join(["x"] * 4000)
    start = time.perf_counter()
    model = Model.from_equations(text, {}, dtype="float64")
    out, _ = model.step({"x": np.array([1.0, 2.0, 3.0])})
    assert time.perf_counter() - start < 3.0
    np.testing.assert_allclose(out["y"], [4000.0, 8000.0, 12000.0])


def test_caret_under_decomposed_text() -> None:
    """Columns count characters of the NFC text, and the line shown is that text too."""
    with pytest.raises(EquationError) as info:
        check("c\u0302ₜ = x +")  # c + COMBINING CIRCUMFLEX: one character after NFC
    err = info.value
    assert (err.line, err.column) == (1, 9)
    assert str(err).split("\n")[1:] == ["    \u0109ₜ = x +", "    " + " " * 8 + "^"]


def test_an_unclosed_paren_is_reported_where_it_opens() -> None:
    """The whole message, as ``nndk check``/``gradcheck`` print it (exact: the oracle is the
    text, with the caret under the '(' of line 2, column 10)."""
    with pytest.raises(EquationError) as info:
        check("xₜ ∈ ℝ^3\nyₜ = tanh((W xₜ)\n", filename="m.eqn")
    assert str(info.value) == (
        "m.eqn:2:10: '(' is never closed (expected ')' after the function's argument)\n"
        "    yₜ = tanh((W xₜ)\n"
        "             ^")


def test_a_function_of_several_arguments_needs_its_parentheses() -> None:
    """``where a`` once reached the compiler as a one-argument where (an AssertionError)."""
    with pytest.raises(EquationError, match="where takes 3 arguments"):
        check("xₜ ∈ ℝ^3\nyₜ = where xₜ", {})


def test_two_lines_of_one_role_add_up() -> None:
    checked = check("input X\ninput m\nX, m ∈ ℝ^3\ny ∈ ℝ^2\ny = W X + U m", {})
    assert sorted(checked.roles.inputs) == ["X", "m"]
