"""Tensors per example (the tensor reading of formats/equations.md): hand-written NumPy oracles."""

from __future__ import annotations

import numpy as np
import pytest

from nnre.equations import check, param_shapes
from nnre.errors import EquationError, FeedError, ShapeError
from nnre.model import Model

RNG = np.random.default_rng(0)


def _model(text: str, **shapes: tuple[int, ...]) -> tuple[Model, dict[str, np.ndarray]]:
    weights = {k: RNG.normal(size=s) for k, s in shapes.items()}
    return Model.from_equations(text, weights, dtype="float64"), weights


def _softmax(a: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)  # type: ignore[no-any-return]


def test_matrices_per_example_against_numpy() -> None:
    text = """
        X ∈ ℝ^(4×3)
        W ∈ ℝ^(5×4)
        B ∈ ℝ^(5×3)
        Y = tanh(W X + B) ⊙ 2 − X[0:1] ⊙ 0.5 + (Xᵀ X)[1] ⊙ 0.1
        s = Σ Y
        z = flatten(Y / s)
        y = softmax(V z + b)
        """
    m, w = _model(text, W=(5, 4), B=(5, 3), V=(2, 15), b=(2,))
    assert m.inputs["X"].shape == (4, 3) and m.outputs["y"].shape == (2,)
    assert m.params["b"].shape == (2,) and m.language == 2
    X = RNG.normal(size=(7, 4, 3))
    Y = np.tanh(w["W"] @ X + w["B"]) * 2 - X[:, 0:1] * 0.5 + \
        (np.swapaxes(X, 1, 2) @ X)[:, 1:2] * 0.1
    z = (Y / Y.sum(axis=(1, 2), keepdims=True)).reshape(7, -1)
    want = _softmax(z @ w["V"].T + w["b"])
    out, _ = m.step({"X": X})
    np.testing.assert_allclose(out["y"], want, rtol=1e-12)
    one, _ = m.step({"X": X[3]})  # one example, no batch axis
    np.testing.assert_allclose(one["y"], want[3], rtol=1e-12)


def test_tensor_outputs_keep_their_axes_and_softmax_takes_the_last() -> None:
    text = """
        input X
        X ∈ ℝ^(2×3×4)
        G ∈ ℝ^(3×4)
        A = softmax(X ⊙ G − 1)
        N = X / ‖X‖ + mean(X) − max(X) ⊙ min(X)
        """
    m, w = _model(text, G=(3, 4))
    X = RNG.normal(size=(5, 2, 3, 4))
    out, _ = m.step({"X": X})
    assert m.outputs["A"].shape == (2, 3, 4)
    np.testing.assert_allclose(out["A"], _softmax(X * w["G"] - 1), rtol=1e-12)
    flat = X.reshape(5, -1)
    k = (1, 1, 1)
    norm = np.sqrt((flat ** 2).sum(1)).reshape(5, *k)
    want = X / norm + flat.mean(1).reshape(5, *k) - \
        flat.max(1).reshape(5, *k) * flat.min(1).reshape(5, *k)
    np.testing.assert_allclose(out["N"], want, rtol=1e-12)


def test_recurrent_matrix_state_over_a_sequence() -> None:
    text = """
        xₜ ∈ ℝ^(2×3)
        hₜ ∈ ℝ^(4×3)
        hₜ = tanh(W xₜ + U hₜ₋₁ + [hₜ₋₁[1:4]; xₜ[0]])
        yₜ = flatten(hₜᵀ)
        """
    m, w = _model(text, W=(4, 2), U=(4, 4))
    xs = RNG.normal(size=(6, 3, 2, 3))
    h0 = RNG.normal(size=(3, 4, 3))
    outs, final = m.run({"x": xs}, {"h": h0})
    h = h0
    for t in range(6):
        h = np.tanh(w["W"] @ xs[t] + w["U"] @ h + np.concatenate([h[:, 1:4], xs[t][:, 0:1]], 1))
        np.testing.assert_allclose(outs["y"][t], np.swapaxes(h, 1, 2).reshape(3, -1),
                                   rtol=1e-12)
    np.testing.assert_allclose(final["h"], h, rtol=1e-12)


def test_batched_products_broadcast_leading_axes() -> None:
    text = """
        input X
        output Y, Z
        X ∈ ℝ^(3×2×4)
        P ∈ ℝ^(3×5×2)
        Y = P X
        Z = Y Xᵀ ⊙ 0.5
        """
    m, w = _model(text, P=(3, 5, 2))
    X = RNG.normal(size=(2, 3, 2, 4))
    out, _ = m.step({"X": X})
    Y = w["P"] @ X
    np.testing.assert_allclose(out["Y"], Y, rtol=1e-12)
    np.testing.assert_allclose(out["Z"], Y @ np.swapaxes(X, -1, -2) * 0.5, rtol=1e-12)


def test_vector_texts_keep_their_reading() -> None:
    """A text of vectors goes through version 1's path: same program as before tensors."""
    checked = check("xₜ ∈ ℝ^3\nhₜ ∈ ℝ^4\nhₜ = tanh(W xₜ + U hₜ₋₁)")
    assert not checked.tensors and checked.sympy is not None
    assert check("input X\nX ∈ ℝ^(2×3)\ny = flatten(X)").tensors


def test_parameter_shapes_from_declarations() -> None:
    checked = check("input x\nx ∈ ℝ^(1×4×4)\nK ∈ ℝ^(2×1×4×4)\nc ∈ ℝ^2\nα ∈ ℝ\n"
                    "y = Σ(K ⊙ x) ⊙ α + c")
    assert param_shapes(checked) == {"K": (2, 1, 4, 4), "c": (2,), "α": ()}


@pytest.mark.parametrize("text, message", [
    ("input X\nX ∈ ℝ^(2×3)\nW ∈ ℝ^(4×5)\ny = W X", "does not fit"),
    ("input X\nX ∈ ℝ^(2×3)\nG ∈ ℝ^(4×3)\ny = X ⊙ G", "broadcast"),
    ("input X\nX ∈ ℝ^(2×3)\ny = X[1:5]", "reads past the end"),
    ("input X\nX ∈ ℝ^(2×3×4)\nY ∈ ℝ^(2×3)\nY = X ⊙ 2", r"\(2, 3\) and \(2, 3, 4\)"),
])
def test_shape_errors_are_located(text: str, message: str) -> None:
    with pytest.raises(ShapeError, match=message) as err:
        check(text)
    assert err.value.line is not None


def test_flatten_of_a_constant_is_refused() -> None:
    with pytest.raises(EquationError, match="varies per example"):
        Model.from_equations("input x\nx ∈ ℝ^(2×2)\nK ∈ ℝ^(2×2)\ny = flatten(K) + flatten(x)",
                             {"K": np.ones((2, 2))})


def test_onnx_export_of_tensor_models_matches_onnxruntime() -> None:
    pytest.importorskip("onnxruntime")
    from nndk.onnx.export import export_model
    from tests.onnx_helpers import ort_runner

    text = """
        xₜ ∈ ℝ^(2×3)
        hₜ ∈ ℝ^(4×3)
        hₜ = tanh(W xₜ + U hₜ₋₁) ⊙ (hₜ₋₁ᵀ hₜ₋₁)[0:1]
        yₜ = softmax(flatten(hₜᵀ)) + Σ([hₜ; xₜ][5]) ⊙ 0.1
        """
    weights = {"W": RNG.normal(size=(4, 2)), "U": RNG.normal(size=(4, 4)) * 0.5}
    m = Model.from_equations(text, {k: v.astype(np.float32) for k, v in weights.items()})
    run = ort_runner(export_model(m))
    x = RNG.normal(size=(3, 2, 3)).astype(np.float32)
    h = RNG.normal(size=(3, 4, 3)).astype(np.float32)
    got = run({"x": x, "h_prev": h})
    out, nxt = m.step({"x": x}, {"h": h})
    np.testing.assert_allclose(got["y"], out["y"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["h_next"], nxt["h"], rtol=1e-5, atol=1e-6)


def test_side_by_side_blocks_and_reshape_against_numpy() -> None:
    text = """
        input x, X
        x ∈ ℝ^3
        X ∈ ℝ^(3×4)
        M ∈ ℝ^(3×2)
        Y ∈ ℝ^(6×5)
        Z ∈ ℝ^(4×3)
        B = [x, X ⊙ 2; M, Xᵀ[0:3]ᵀ[0:3]ᵀ[0:3]]
        Y = reshape(B)
        Z = reshape(Xᵀ)
        """
    m, w = _model(text, M=(3, 2))
    x, X = RNG.normal(size=(2, 3)), RNG.normal(size=(2, 3, 4))
    out, _ = m.step({"x": x, "X": X})
    top = np.concatenate([x[:, :, None], X * 2], axis=2)
    bottom = np.concatenate([np.broadcast_to(w["M"], (2, 3, 2)),
                             np.swapaxes(X[:, :, 0:3], 1, 2)], axis=2)
    B = np.concatenate([top, bottom], axis=1)
    np.testing.assert_allclose(out["Y"], B.reshape(2, 6, 5), rtol=1e-12)
    np.testing.assert_allclose(out["Z"], np.swapaxes(X, 1, 2).copy().reshape(2, 4, 3))


def test_reshape_needs_a_declared_target() -> None:
    with pytest.raises(ShapeError, match="whole right-hand side"):
        check("input X\nX ∈ ℝ^(2×3)\nY = reshape(X)")
    with pytest.raises(ShapeError, match="same number of entries"):
        check("input X\nX ∈ ℝ^(2×3)\nY ∈ ℝ^(5×1)\nY = reshape(X)")


IDS_TEXT = """
    xₜ ∈ ℕ
    Xₜ ∈ ℕ^3
    hₜ ∈ ℝ^4
    E ∈ ℝ^(5×4)
    hₜ = tanh(E[xₜ]ᵀ + U hₜ₋₁) + Σ(E[Xₜ])
    """


def test_ids_pick_rows_of_a_table() -> None:
    m, w = _model(IDS_TEXT, E=(5, 4), U=(4, 4))
    x = RNG.integers(0, 5, (6, 2, 1)).astype(float)
    X = RNG.integers(0, 5, (6, 2, 3)).astype(float)
    outs, final = m.run({"x": x, "X": X})
    h = np.zeros((2, 4))
    for t in range(6):
        picked = w["E"][x[t, :, 0].astype(int)]
        h = np.tanh(picked + h @ w["U"].T) + \
            w["E"][X[t].astype(int)].sum(axis=(1, 2))[:, None]
        np.testing.assert_allclose(outs["h"][t], h, rtol=1e-12)
    assert m.inputs["X"].shape == (3,) and m.program.ids == {"x": 5, "X": 5}


@pytest.mark.parametrize("bad", [5.0, -1.0, 2.5, np.nan])
def test_ids_outside_the_table_are_refused_before_running(bad: float) -> None:
    m, _ = _model(IDS_TEXT, E=(5, 4), U=(4, 4))
    X = np.zeros((1, 3))
    X[0, 1] = bad
    with pytest.raises(FeedError, match=r"input 'X' holds .* at index \[0, 1\]; its ids are "
                                        r"whole numbers 0 … 4"):
        m.step({"x": np.zeros((1, 1)), "X": X})


def test_without_a_naturals_declaration_brackets_stay_a_product() -> None:
    """Version 1's reading of W[x] (W times the stacked [x]) is kept."""
    checked = check("xₜ ∈ ℝ^3\nyₜ ∈ ℝ^2\nyₜ = W[xₜ]")
    assert not checked.tensors
    with pytest.raises(ShapeError, match="is declared ∈ ℕ"):
        check("input x\nx ∈ ℕ\nE ∈ ℝ^(4×2)\nj ∈ ℕ\ny = E[x] + E[j]ᵀᵀ\nj = x")


def test_onnx_export_of_ids_matches_onnxruntime() -> None:
    pytest.importorskip("onnxruntime")
    from nndk.onnx.export import export_model
    from tests.onnx_helpers import ort_runner

    m, _ = _model(IDS_TEXT, E=(5, 4), U=(4, 4))
    m32 = Model.from_equations(IDS_TEXT, {k: v.astype(np.float32)
                                          for k, v in m.weights().items()})
    run = ort_runner(export_model(m32))
    x = np.array([[1.0], [4.0]], np.float32)
    X = np.array([[0.0, 2.0, 3.0], [4.0, 4.0, 1.0]], np.float32)
    h = RNG.normal(size=(2, 4)).astype(np.float32)
    got = run({"x": x, "X": X, "h_prev": h})
    _, nxt = m32.step({"x": x, "X": X}, {"h": h})
    np.testing.assert_allclose(got["h_next"], nxt["h"], rtol=1e-5, atol=1e-6)


def test_permute_puts_axes_in_the_declared_order() -> None:
    text = """
        input X
        X ∈ ℝ^(C×H×W)
        Y ∈ ℝ^(H×W×C)
        Y = permute(X ⊙ 2)
        Z ∈ ℝ^(W×C×H)
        Z = permute(Y)
        F ∈ ℝ^(24×1)
        F = reshape(Z)
        """
    m = Model.from_equations(text, {}, {"C": 2, "H": 3, "W": 4}, dtype="float64")
    X = RNG.normal(size=(5, 2, 3, 4))
    out, _ = m.step({"X": X})
    want = np.transpose(X * 2, (0, 3, 1, 2))
    np.testing.assert_array_equal(out["F"], want.reshape(5, -1))
    with pytest.raises(ShapeError, match="cannot tell where each axis"):
        check("input X\nX ∈ ℝ^(H×H)\nY ∈ ℝ^(H×H)\nY = permute(X)", {"H": 2})


@pytest.mark.parametrize("reading", ["vectors", "tensors"])
def test_layer_norm_and_rms_norm_against_numpy(reading: str) -> None:
    """Named norms equal the primitives' form (a NumPy oracle), in both readings."""
    text = ("input x\nx ∈ ℝ^4\n" if reading == "vectors" else "input x\nx ∈ ℝ^(3×4)\n") + \
        "a = layer_norm(x; eps=0.01)\nb = rms_norm(x)\noutput a, b"
    m = Model.from_equations(text, {}, dtype="float64")
    x = RNG.normal(size=(5, 4) if reading == "vectors" else (5, 3, 4))
    out, _ = m.step({"x": x})
    centred = x - x.mean(-1, keepdims=True)
    want_a = centred / np.sqrt((centred ** 2).mean(-1, keepdims=True) + 0.01)
    want_b = x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(out["a"], want_a, rtol=1e-12)
    np.testing.assert_allclose(out["b"], want_b, rtol=1e-12)


@pytest.mark.parametrize("optimize", [False, True])
def test_optimizer_leaves_products_and_slices_of_matrices_alone(optimize: bool) -> None:
    """Stacking and sibling fusion widen rows of vector entries; in a tensor text they met
    X·W of a per-example matrix, a batch of constants and first-axis slices (and a literal
    of no axes beside vector slices) and built buffers of the wrong shape."""
    text = """
        input x, X
        output Y, Z, A, B, a, b
        x ∈ ℝ^4
        X ∈ ℝ^(4×4)
        W ∈ ℝ^(4×5)
        V ∈ ℝ^(4×6)
        P ∈ ℝ^(2×4×5)
        Q ∈ ℝ^(2×4×5)
        Y = [X W, X V]
        Z = X P + X Q
        A = tanh(X[0:2])
        B = tanh(X[2:4])
        a = tanh(x[0:2] ⊙ 2)
        b = tanh(x[2:4] ⊙ 2)
        """
    shapes = {"W": (4, 5), "V": (4, 6), "P": (2, 4, 5), "Q": (2, 4, 5)}
    w = {k: RNG.normal(size=s) for k, s in shapes.items()}
    m = Model.from_equations(text, w, dtype="float64", optimize=optimize)
    x, X = RNG.normal(size=(3, 4)), RNG.normal(size=(3, 4, 4))
    out, _ = m.step({"x": x, "X": X})
    want = {"Y": np.concatenate([X @ w["W"], X @ w["V"]], axis=2),
            "Z": X[:, None] @ w["P"] + X[:, None] @ w["Q"],
            "A": np.tanh(X[:, 0:2]), "B": np.tanh(X[:, 2:4]),
            "a": np.tanh(x[:, 0:2] * 2), "b": np.tanh(x[:, 2:4] * 2)}
    for name, value in want.items():
        np.testing.assert_allclose(out[name], value, rtol=1e-12, err_msg=name)


@pytest.mark.parametrize("text", [
    "input X\nX ∈ ℝ^(3×2)\nY = X [1; 2]",
    "input x\nx ∈ ℝ^3\nc ∈ ℝ^3\nX ∈ ℝ^(2×2)\ninput X\nY = [x; c; 1] + Σ X",
])
@pytest.mark.parametrize("optimize", [False, True])
def test_numbers_stacked_with_parts_pass_the_program_check(text: str, optimize: bool) -> None:
    """A number in ``[…; 1]`` was a part of no axes: NumPy broadcast it, but concat's shape
    rule refused the program, so a warm load could never use its cache entry."""
    from nnre.compiler import compile_checked
    from nnre.program import check_program, from_data, to_data

    prog = compile_checked(check(text), "float64", optimize=optimize)
    check_program(from_data(to_data(prog)))
    weights = {"c": np.arange(3.0)} if "c ∈" in text else {}
    m = Model.from_equations(text, weights, dtype="float64", optimize=optimize)
    feeds = {k: RNG.normal(size=(2, *s.shape)) for k, s in m.inputs.items()}
    out, _ = m.step(feeds)
    if "X [1; 2]" in text:
        np.testing.assert_allclose(out["Y"], feeds["X"] @ [1.0, 2.0], rtol=1e-12)
    else:
        want = np.concatenate([feeds["x"], np.tile([0.0, 1.0, 2.0, 1.0], (2, 1))], axis=1)
        np.testing.assert_allclose(out["Y"], want + feeds["X"].sum((1, 2))[:, None])


def test_functions_along_entries_of_a_number() -> None:
    """A number is one entry (as in version 1): layer_norm(2) raised IndexError in the
    tensor reading (its kernel read the last axis of a value with none)."""
    text = "input X\nX ∈ ℝ^(2×3)\nY = X + layer_norm(2) + rms_norm(2; eps=0) + softmax(3) " \
           "+ log_softmax(1)"
    m = Model.from_equations(text, {}, dtype="float64")
    X = RNG.normal(size=(2, 2, 3))
    out, _ = m.step({"X": X})
    np.testing.assert_allclose(out["Y"], X + 2.0, rtol=1e-12)


@pytest.mark.parametrize("text", [
    "input x, k\nx ∈ ℝ^(1×5×5)\nk ∈ ℝ^(1×1×3×3)\ny = conv(k, x)",
    "input x, c\nx ∈ ℝ^(1×5×5)\nc ∈ ℝ^1\nK ∈ ℝ^(1×1×3×3)\ny = conv(K, x, c)",
])
def test_a_kernel_or_bias_that_varies_per_example_is_refused(text: str) -> None:
    """conv's kernel and bias take no rows: given per-example values, the run failed with
    NumPy's ValueError instead of an error that names the argument."""
    weights = {"K": np.ones((1, 1, 3, 3))} if "K ∈" in text else {}
    with pytest.raises(EquationError, match="argument of conv in the equation for 'y' varies "
                                            "per example"):
        Model.from_equations(text, weights)


def test_one_value_broadcast_into_targets_of_different_shapes() -> None:
    """Equal instructions are shared, but a copy's shape is its target's: Y = x and Z = x
    (or Y = 2 and Z = 2) shared one copy, so Z got Y's shape (a reshape error, or 6 of
    Z's 12 entries)."""
    text = "input x\nx ∈ ℝ^3\nY ∈ ℝ^(3×2)\nZ ∈ ℝ^(3×4)\nY = x\nZ = x\nA ∈ ℝ^(3×2)\n" \
           "C ∈ ℝ^(3×4)\nA = 2\nC = 2\noutput Y, Z, A, C"
    m = Model.from_equations(text, {}, dtype="float64")
    x = RNG.normal(size=(2, 3))
    out, _ = m.step({"x": x})
    np.testing.assert_array_equal(out["Y"], np.repeat(x[:, :, None], 2, axis=2))
    np.testing.assert_array_equal(out["Z"], np.repeat(x[:, :, None], 4, axis=2))
    assert out["A"].size == 2 * 6 and out["C"].size == 2 * 12


def test_signals_and_results_of_length_one_keep_their_axes() -> None:
    """A 1-D conv or pool whose result has length 1 is (C, 1): its slot was made a flat
    vector (C,), which the program check refused and maxpool's kernel failed on; a (C, 1)
    signal was taken for a vector and refused."""
    from nnre.program import check_program

    text = """
        input x, u
        x ∈ ℝ^(2×3)
        u ∈ ℝ^(5×1)
        K ∈ ℝ^(4×2×3)
        J ∈ ℝ^(3×5×1)
        y = conv(K, x)
        p = maxpool(x; size=3)
        q = conv(J, u)
        output y, p, q
        """
    w = {"K": RNG.normal(size=(4, 2, 3)), "J": RNG.normal(size=(3, 5, 1))}
    m = Model.from_equations(text, w, dtype="float64")
    check_program(m.program)
    x, u = RNG.normal(size=(2, 2, 3)), RNG.normal(size=(2, 5))
    out, _ = m.step({"x": x, "u": u})
    np.testing.assert_allclose(out["y"], np.einsum("oct,bct->bo", w["K"], x), rtol=1e-12)
    np.testing.assert_allclose(out["p"], x.max(axis=2), rtol=1e-12)
    np.testing.assert_allclose(out["q"], u @ w["J"][:, :, 0].T, rtol=1e-12)


def test_an_entry_of_a_number_is_the_number() -> None:
    """(2)[0:1] and N[0:1] (a dimension read as its value) are 1×1 to the shape check, but
    the lowering sliced a value of no axes: IndexError when the prologue ran."""
    m = Model.from_equations("input X\nX ∈ ℝ^(N×3)\nY = X + N[0:1] + (2)[0]", {}, {"N": 2},
                             dtype="float64")
    X = RNG.normal(size=(3, 2, 3))
    np.testing.assert_allclose(m.step({"X": X})[0]["Y"], X + 4.0, rtol=1e-12)


@pytest.mark.parametrize("text", [
    "input x\nx ∈ ℝ^3\nc ∈ ℝ^3\nY = [x, c]",
    "input x\nx ∈ ℝ^3\nc ∈ ℝ^3\ny = [x; c; 1]",
    "input X\nX ∈ ℝ^(2×3)\nC ∈ ℝ^(1×3)\nY = [C; X; C ⊙ 2]",
])
def test_constants_stacked_beside_per_example_parts_export(text: str) -> None:
    """ONNX's Concat does not broadcast: constant parts are expanded to every row."""
    pytest.importorskip("onnxruntime")
    from nndk.onnx.export import export_model
    from tests.onnx_helpers import ort_runner

    name = "c" if "c ∈" in text else "C"
    shape = (3,) if name == "c" else (1, 3)
    m = Model.from_equations(text, {name: RNG.normal(size=shape).astype(np.float32)})
    feeds = {k: RNG.normal(size=(4, *s.shape)).astype(np.float32) for k, s in m.inputs.items()}
    out, _ = m.step(feeds)
    got = ort_runner(export_model(m))(feeds)
    for key, want in out.items():
        np.testing.assert_allclose(got[key], want, rtol=1e-6)


def test_concat_along_any_axis_against_numpy() -> None:
    text = """
        input X
        X ∈ ℝ^(2×3×4)
        C ∈ ℝ^(2×1×4)
        A = concat(X, C ⊙ 2; axis=1)
        B = concat(X, X ⊙ X; axis=-1)
        output A, B
        """
    m, w = _model(text, C=(2, 1, 4))
    X = RNG.normal(size=(5, 2, 3, 4))
    out, _ = m.step({"X": X})
    assert m.outputs["A"].shape == (2, 4, 4) and m.outputs["B"].shape == (2, 3, 8)
    np.testing.assert_array_equal(
        out["A"], np.concatenate([X, np.broadcast_to(w["C"] * 2, (5, 2, 1, 4))], axis=2))
    np.testing.assert_array_equal(out["B"], np.concatenate([X, X * X], axis=3))
    with pytest.raises(ShapeError, match="differ on another axis"):
        check("input X\nX ∈ ℝ^(2×3)\nC ∈ ℝ^(3×3)\nA = concat(X, C; axis=1)")
    with pytest.raises(ShapeError, match="needs two values"):
        check("input X\nX ∈ ℝ^(2×3)\nA = concat(X, X)")
