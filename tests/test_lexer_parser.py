"""The lexer and parser against independent oracles: tables of names, hand-written NumPy."""

from __future__ import annotations

import unicodedata
from typing import Any

import numpy as np
import pytest

from nnre.equations import ast, check
from nnre.equations.lexer import canonical_name, tokenize
from nnre.equations.parser import parse
from nnre.errors import EquationError
from nnre.model import Model

RNG = np.random.default_rng(20240601)

# -- names --------------------------------------------------------------------------------------

# (as written, canonical name, time index)
NAMES = [
    ("Wᵢ", "W_i", None),
    ("W_i", "W_i", None),
    ("W_{i}", "W_i", None),
    ("W_f", "W_f", None),
    ("Wf", "Wf", None),
    ("Bᵢ", "B_i", None),
    ("W_{xh}", "W_xh", None),
    ("W_{x h}", "W_xh", None),
    ("b_xh", "b_xh", None),
    ("W₁", "W_1", None),
    ("W_1", "W_1", None),
    ("W_{12}", "W_12", None),
    ("Wₒ", "W_o", None),
    ("xₜ", "x", 0),
    ("x_t", "x", 0),
    ("x_{t}", "x", 0),
    ("hₜ₋₁", "h", -1),
    ("h_{t-1}", "h", -1),
    ("h_{t−1}", "h", -1),  # U+2212 MINUS SIGN
    ("h_{t - 2}", "h", -2),
    ("hₜ₋₁₂", "h", -12),
    ("hₜ₊₁", "h", 1),
    ("h_{i,t}", "h_i", 0),
    ("h_{i,t-1}", "h_i", -1),
    ("c̃ₜ", "c\u0303", 0),  # c + COMBINING TILDE: no precomposed form, stays two characters
    ("ĉₜ", "\u0109", 0),  # precomposed
    ("c\u0302ₜ", "\u0109", 0),  # decomposed: NFC composes it to the same name
    ("x̂", "x\u0302", None),
    ("x′", "x'", None),
    ("x'", "x'", None),
    ("x″", "x''", None),
    ("hʹ", None, None),  # U+02B9 is a modifier letter, not a prime: not part of a name
    ("σ_g", "σ_g", None),
    ("α", "α", None),
    ("Δh", "Δh", None),
    ("W2", "W2", None),
    ("h1ₜ₋₁", "h1", -1),
    # layer indices: superscript digits right before a subscript, or ^{(n)}
    ("h¹ₜ", "h^{(1)}", 0),
    ("h²ₜ₋₁", "h^{(2)}", -1),
    ("h¹_{t-1}", "h^{(1)}", -1),
    ("h¹²ₜ", "h^{(12)}", 0),
    ("W¹ₓ", "W^{(1)}_x", None),
    ("W^{(1)}", "W^{(1)}", None),
    ("W^{(01)}", "W^{(1)}", None),
    ("W^{(1)}_{xh}", "W^{(1)}_xh", None),
    ("W_{xh}^{(1)}", "W^{(1)}_xh", None),
    ("h^{(1)}_t", "h^{(1)}", 0),
    ("h_t^{(1)}", "h^{(1)}", 0),
    ("h¹", None, None),  # no subscript follows: '¹' is not a power either
    ("W^{(a)}", None, None),
]


@pytest.mark.parametrize(("written", "name", "time"), NAMES)
def test_canonical_names(written: str, name: str | None, time: int | None) -> None:
    if name is None:
        with pytest.raises(EquationError):
            canonical_name(written)
        return
    assert canonical_name(written) == name
    first = tokenize(written)[0]
    assert (first.kind, first.text, first.time) == ("NAME", name, time)


def test_nfc_not_nfkc() -> None:
    # NFKC would fold the subscript into a plain letter and the square into a digit
    assert unicodedata.normalize("NFKC", "Wᵢ") == "Wi"
    assert canonical_name("Wᵢ") == "W_i" != canonical_name("Wi")
    assert unicodedata.normalize("NFKC", "x²") == "x2"
    kinds = [t.kind for t in tokenize("x²")[:2]]
    assert kinds == ["NAME", "POW"]
    assert [t.kind for t in tokenize("xₜ² + x^(2)")[:7]] == ["NAME", "POW", "+", "NAME", "^",
                                                              "(", "NUMBER"]
    # NFC does compose decomposed marks, so both spellings of ĉ are one name
    text = "xₜ ∈ ℝ^2\nĉₜ = tanh(xₜ)\nyₜ = c\u0302ₜ"
    checked = check(text)
    assert checked.roles.equations.keys() == {"\u0109", "y"}


def test_tokens_of_a_line() -> None:
    toks = tokenize("hₜ = oₜ ∘ σ_h(cₜ)  # read-out")
    got = [(t.kind, t.text, t.column) for t in toks]
    assert got == [("NAME", "h", 1), ("=", "=", 4), ("NAME", "o", 6), ("*", "∘", 9),
                   ("NAME", "σ_h", 11), ("(", "(", 14), ("NAME", "c", 15), (")", ")", 17),
                   ("NEWLINE", "\n", 30), ("EOF", "", 30)]  # the line has 29 characters


# -- numbers through the whole pipeline -----------------------------------------------------------

A, B, C = RNG.normal(size=3), RNG.normal(size=3), RNG.normal(size=3)
W, U = RNG.normal(size=(3, 3)), RNG.normal(size=(3, 3))
W24 = RNG.normal(size=(3, 6))
ALPHA = 0.7
DECL = "a, b, c ∈ ℝ^3\nα ∈ ℝ\n"
PARAMS: dict[str, Any] = {"W": W, "U": U, "W_c": W24, "α": np.float64(ALPHA)}
FEEDS = {"a": A, "b": B, "c": C}


def evaluate(expr: str) -> np.ndarray:
    """y = expr over inputs a, b, c and whichever of the parameters the text uses."""
    text = DECL + "y = " + expr
    checked = check(text, weights={k: np.shape(v) for k, v in PARAMS.items()})
    used = set(checked.roles.params)
    inputs = set(checked.roles.inputs)
    decl = "".join(f"{n} ∈ ℝ^3\n" for n in "abc" if n in inputs)
    decl += "α ∈ ℝ\n" if "α" in used else ""
    decl += "input " + ", ".join(sorted(inputs)) + "\n" if inputs else ""
    model = Model.from_equations(decl + "y = " + expr, {k: PARAMS[k] for k in used},
                                 dtype="float64")
    out, _ = model.step({k: FEEDS[k] for k in inputs})
    return out["y"]


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-v))


EXPRESSIONS = [
    # unary minus binds tighter than + (the original Go parser read -a+b as -(a+b))
    ("-a+b", -A + B),
    ("-a + b", (-A) + B),
    ("−a + b", -A + B),  # U+2212
    ("-a^2", -(A**2)),
    ("-a ⊙ b", (-A) * B),
    ("a ⊙ -b", A * -B),
    ("a - -b", A + B),
    ("--a", A),
    ("a - b - c", (A - B) - C),
    ("a - (b - c)", A - (B - C)),
    ("a / b / c", (A / B) / C),
    ("a / b ⊙ c", (A / B) * C),
    ("a ÷ b", A / B),
    # matrix product: juxtaposition and every symbol
    ("W a", W @ A),
    ("W·a", W @ A),
    ("W⋅a", W @ A),
    ("W@a", W @ A),
    ("W U a", W @ U @ A),
    ("W (U a)", W @ (U @ A)),
    ("(W U) a", (W @ U) @ A),
    # a one-letter or matrix-like name right before '(' stays a product (not a function)
    ("W(a + b)", W @ (A + B)),
    ("U(a)", U @ A),
    ("W_c([a; b])", W24 @ np.concatenate([A, B])),
    # elementwise binds looser than the matrix product
    ("b ⊙ W a", B * (W @ A)),
    ("b * W a", B * (W @ A)),
    ("b ∘ W a", B * (W @ A)),
    ("W a ⊙ b", (W @ A) * B),
    ("W a + b", W @ A + B),
    ("a + b ⊙ c", A + B * C),
    ("(a + b) ⊙ c", (A + B) * C),
    ("W a / b", (W @ A) / B),
    # functions, with and without parentheses around a single operand
    ("tanh c", np.tanh(C)),
    ("tanh(c)", np.tanh(C)),
    ("tanh a + b", np.tanh(A) + B),
    ("tanh a²", np.tanh(A**2)),
    ("tanh(a)²", np.tanh(A) ** 2),
    ("tanh W a", np.tanh(W) @ A),
    ("σ(a)", _sigmoid(A)),
    ("sigmoid(a)", _sigmoid(A)),
    ("σ_g(a)", _sigmoid(A)),
    ("σ_c(a)", np.tanh(A)),
    ("σ_h(a)", np.tanh(A)),
    ("relu(a)", np.maximum(A, 0)),
    ("ReLU(a)", np.maximum(A, 0)),
    ("exp(a)", np.exp(A)),
    ("log(exp(a))", A),
    ("sqrt(abs(a))", np.sqrt(np.abs(A))),
    ("√(abs(a))", np.sqrt(np.abs(A))),
    ("√abs(a)", None),  # √ needs its operand as an atom: abs(a) is a call, so this parses too
    ("abs(a)", np.abs(A)),
    ("softmax(a)", np.exp(A) / np.exp(A).sum()),
    ("log_softmax(a)", A - np.log(np.exp(A).sum())),
    # powers and transpose
    ("a²", A**2),
    ("a^2", A**2),
    ("a³", A**3),
    ("a^3", A**3),
    ("a^(-1)", 1 / A),
    ("a^-2", A**-2.0),
    ("abs(a)^0.5", np.abs(A) ** 0.5),
    ("(a + b)²", (A + B) ** 2),
    ("Wᵀ a", W.T @ A),
    ("(aᵀ W)ᵀ", (A @ W)),
    ("aᵀ b", np.array([A @ B])),
    ("W a²", W @ (A**2)),
    # numbers and scalars
    ("2 a", 2 * A),
    ("a 2", 2 * A),
    ("0.5a", 0.5 * A),
    (".5 a", 0.5 * A),
    ("1e-1 a", 0.1 * A),
    ("2^3 a", 8 * A),
    ("1 - a", 1 - A),
    ("2 / a", 2 / A),
    ("a / 4", A / 4),
    ("a α", ALPHA * A),  # more scalar parameters: test_scalar_parameter_broadcast
    # concatenation
    ("W_c [a; b]", W24 @ np.concatenate([A, B])),
    ("W_c [a; W b]", W24 @ np.concatenate([A, W @ B])),
    ("W_c [a;\n b]", W24 @ np.concatenate([A, B])),  # a newline inside brackets continues
    ("[a; b; c]", np.concatenate([A, B, C])),
]


@pytest.mark.parametrize(("expr", "want"), EXPRESSIONS, ids=[e for e, _ in EXPRESSIONS])
def test_expression_numbers(expr: str, want: np.ndarray | None) -> None:
    if want is None:
        want = np.sqrt(np.abs(A))
    np.testing.assert_allclose(evaluate(expr), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("expr", ["α ⊙ a", "a + α", "α a", "a α", "α α a"])
def test_scalar_parameter_broadcast(expr: str) -> None:
    text = "a ∈ ℝ^3\nα ∈ ℝ\ninput a\ny = " + expr
    model = Model.from_equations(text, {"α": np.float64(ALPHA)}, dtype="float64")
    out, _ = model.step({"a": A})
    want = A + ALPHA if "+" in expr else ALPHA ** expr.count("α") * A
    np.testing.assert_allclose(out["y"], want, rtol=1e-12)


def test_same_tree_for_equivalent_spellings() -> None:
    """Spellings that the grammar says are equal give structurally equal SymPy expressions."""
    pairs = [("-a+b", "(-a)+b"), ("W a", "W·a"), ("b ⊙ W a", "b ⊙ (W a)"),
             ("tanh c", "tanh(c)"), ("a²", "a^2"), ("a ∘ b", "a * b")]
    for left, right in pairs:
        exprs = [check("a, b, c ∈ ℝ^3\nW ∈ ℝ^(3×3)\ny = " + e).sympy.exprs["y"]
                 for e in (left, right)]
        assert exprs[0] == exprs[1], (left, right)


# -- declarations ---------------------------------------------------------------------------------

DECLARATIONS = [
    "xₜ ∈ ℝ^V\nhₜ ∈ ℝ^H\nW ∈ ℝ^(H×V)",
    "x_t in R^V\nh_t in R^H\nW in R^(H x V)",
    "x_t ∈ ℝ^V\nh_t ∈ R^H\nW ∈ ℝ^(H,V)",
    "xₜ ∈ ℝ^V\nhₜ, yₜ ∈ ℝ^H\nW ∈ ℝ^{H×V}",
    "xₜ ∈ ℝ^V\nW ∈ ℝ^(H×V)\nU ∈ ℝ^(H × H)",
    "xₜ ∈ ℝ^5\nhₜ ∈ ℝ^(2+2)",
]


@pytest.mark.parametrize("decl", DECLARATIONS)
def test_declarations_bind_shapes(decl: str) -> None:
    text = decl + "\nhₜ = tanh(W xₜ + U hₜ₋₁)\nyₜ = hₜ"
    checked = check(text, dims={"V": 5, "H": 4} if "V" in decl else None)
    assert checked.shapes.of["W"] == (4, 5)
    assert checked.shapes.of["U"] == (4, 4)
    assert checked.shapes.of["x"] == (5, 1)
    assert (checked.roles.inputs, checked.roles.params) == (["x"], ["W", "U"])
    assert checked.roles.state == {"h": 1}


def test_scalar_declaration() -> None:
    checked = check("α ∈ ℝ\nx ∈ R^3\ny = α x")
    assert checked.shapes.of["α"] == (1, 1) and "α" in checked.shapes.scalar


def test_role_lines() -> None:
    text = "input x, z\nstate h\noutput h\nxₜ, zₜ ∈ ℝ^2\nhₜ = tanh(W xₜ + zₜ)\nyₜ = hₜ"
    roles = check(text, weights={"W": (2, 2)}).roles
    assert roles.inputs == ["x", "z"] and roles.outputs == ["h"] and roles.state == {"h": 1}


def test_free_names_without_time_index() -> None:
    """Without any time index, free names with a supplied weight are parameters, the rest
    inputs; without weights every free name is a parameter."""
    text = "x ∈ ℝ^2\nh = relu(W₁·x + b₁)"
    given = check(text, weights={"W_1": (3, 2), "b_1": (3,)}).roles
    assert (given.inputs, given.params) == (["x"], ["W_1", "b_1"])
    declared = check(text + "\nW₁ ∈ ℝ^(3×2)\nb₁ ∈ ℝ^3").roles
    assert (declared.inputs, declared.params) == ([], ["W_1", "x", "b_1"])
    with_time = check("xₜ ∈ ℝ^2\nhₜ = W xₜ + b", weights={"W": (3, 2), "b": (3,)})
    assert (with_time.roles.inputs, with_time.roles.params) == (["x"], ["W", "b"])


def test_layout_comments_crlf_tabs() -> None:
    text = "# header\r\n\r\nx ∈ ℝ^2\t# tab\r\ny =\ttanh(x)   # trailing\r\n"
    model = Model.from_equations(text, {}, dtype="float64")
    out, _ = model.step({"x": A[:2]})
    np.testing.assert_allclose(out["y"], np.tanh(A[:2]))


# -- recurrent models: time indices and the three LSTM spellings ----------------------------------

H, V, T = 4, 3, 5


def _lstm_weights() -> dict[str, np.ndarray]:
    w = {}
    for gate in "ifoc":
        w[f"W_{gate}"] = RNG.normal(size=(H, V)) * 0.5
        w[f"U_{gate}"] = RNG.normal(size=(H, H)) * 0.5
        w[f"b_{gate}"] = RNG.normal(size=H) * 0.1
    w["W_y"], w["b_y"] = RNG.normal(size=(V, H)), RNG.normal(size=V)
    return w


LSTM_W = _lstm_weights()
XS = RNG.normal(size=(T, V))


def _lstm_numpy(w: dict[str, np.ndarray], xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, c, ys = np.zeros(H), np.zeros(H), []
    for x in xs:
        gates = {g: w[f"W_{g}"] @ x + w[f"U_{g}"] @ h + w[f"b_{g}"] for g in "ifoc"}
        i, f, o = (_sigmoid(gates[g]) for g in "ifo")
        c = f * c + i * np.tanh(gates["c"])
        h = o * np.tanh(c)
        z = w["W_y"] @ h + w["b_y"]
        ys.append(np.exp(z) / np.exp(z).sum())
    return np.array(ys), h


GO = """xₜ ∈ ℝ^V
hₜ, cₜ ∈ ℝ^H
iₜ = σ(Wᵢ·xₜ+Uᵢ·hₜ₋₁+Bᵢ)
fₜ = σ(Wf·xₜ+Uf·hₜ₋₁+Bf)
oₜ = σ(Wₒ·xₜ+Uₒ·hₜ₋₁+Bₒ)
ĉₜ = tanh(Wc·xₜ+Uc·hₜ₋₁+Bc)
cₜ = (fₜ*cₜ₋₁)+(iₜ*ĉₜ)
hₜ = oₜ*tanh(cₜ)
yₜ = softmax(Wy·hₜ+By)"""
GO_NAMES = {"W_i": "W_i", "Wf": "W_f", "W_o": "W_o", "Wc": "W_c", "Wy": "W_y",
            "U_i": "U_i", "Uf": "U_f", "U_o": "U_o", "Uc": "U_c",
            "B_i": "b_i", "Bf": "b_f", "B_o": "b_o", "Bc": "b_c", "By": "b_y"}
WIKIPEDIA = """xₜ ∈ ℝ^V
hₜ, cₜ ∈ ℝ^H
fₜ = σ_g(W_f xₜ + U_f hₜ₋₁ + b_f)
iₜ = σ_g(W_i xₜ + U_i hₜ₋₁ + b_i)
oₜ = σ_g(W_o xₜ + U_o hₜ₋₁ + b_o)
c̃ₜ = σ_c(W_c xₜ + U_c hₜ₋₁ + b_c)
cₜ = fₜ ∘ cₜ₋₁ + iₜ ∘ c̃ₜ
hₜ = oₜ ∘ σ_h(cₜ)
yₜ = softmax(W_y hₜ + b_y)"""
DOTS = WIKIPEDIA.replace("∘", "⊙").replace(" xₜ", "·xₜ").replace(" hₜ", "·hₜ")
ASCII = """x_t in R^V
h_t, c_t in R^H
f_t = sigmoid(W_f @ x_t + U_f @ h_{t-1} + b_f)
i_t = sigmoid(W_i @ x_t + U_i @ h_{t-1} + b_i)
o_t = sigmoid(W_o @ x_t + U_o @ h_{t-1} + b_o)
g_t = tanh(W_c @ x_t + U_c @ h_{t-1} + b_c)
c_t = f_t * c_{t-1} + i_t * g_t
h_t = o_t * tanh(c_t)
y_t = softmax(W_y @ h_t + b_y)"""


@pytest.mark.parametrize("text", [GO, WIKIPEDIA, DOTS, ASCII], ids=["go", "wikipedia", "dots",
                                                                    "ascii"])
def test_lstm_spellings(text: str) -> None:
    if text is GO:
        params = {k: LSTM_W[v] for k, v in GO_NAMES.items()}
    else:
        params = LSTM_W
    model = Model.from_equations(text, params, dims={"V": V, "H": H}, dtype="float64")
    assert set(model.inputs) == {"x"} and set(model.state) == {"h", "c"}
    ys, state = model.run({"x": XS})
    want_ys, want_h = _lstm_numpy(LSTM_W, XS)
    np.testing.assert_allclose(ys["y"], want_ys, rtol=1e-10)
    np.testing.assert_allclose(state["h"], want_h, rtol=1e-10)


def test_deeper_lag() -> None:
    text = "xₜ ∈ ℝ^2\nhₜ = xₜ + 0.5 hₜ₋₁ + 0.25 hₜ₋₂\nyₜ = hₜ"
    model = Model.from_equations(text, {}, dtype="float64")
    xs = RNG.normal(size=(6, 2))
    h1 = h2 = np.zeros(2)
    want = []
    for x in xs:
        h1, h2 = x + 0.5 * h1 + 0.25 * h2, h1
        want.append(h1)
    ys, _ = model.run({"x": xs})
    np.testing.assert_allclose(ys["y"], np.array(want), rtol=1e-12)


@pytest.mark.parametrize("func,oracle", [
    ("sqrt", np.sqrt), ("relu", lambda v: np.maximum(v, 0)), ("abs", np.abs),
    ("exp", np.exp), ("tanh", np.tanh), ("σ", lambda v: 1 / (1 + np.exp(-v))),
])
def test_functions_of_one_element_vectors(func: str, oracle: object) -> None:
    # SymPy applies a function to a 1×1 matrix itself (sqrt(X) → X**(1/2)); we must not.
    model = Model.from_equations(f"x ∈ ℝ^1\ninput x\ny = {func}(x)", {}, dtype="float64")
    for value in (0.25, 2.0):
        out = model.step({"x": np.array([value])})[0]["y"]
        np.testing.assert_allclose(out, oracle(np.array([value])), rtol=1e-12)  # type: ignore[operator]


@pytest.mark.parametrize("text", ["y = Wx(a)", "y = W_h(a)", "y = U(h)", "y = σ_o(a)",
                                  "y = lin (a)", "y = Tanh (a)"])
def test_names_before_a_paren_that_stay_products(text: str) -> None:
    """Only a function's spelling up to case or a close match of one is refused (and, as
    before, a word of two or more lowercase letters written right before '('); a space
    before '(' always makes a product."""
    expr = parse(text).equations[0].expr
    assert isinstance(expr, ast.Binary) and expr.op == "@"
