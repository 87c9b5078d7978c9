"""``axis=k`` for the reductions and softmax (formats/equations.md §6.1): NumPy oracles."""

from __future__ import annotations

import numpy as np
import pytest

from nnre.equations import check
from nnre.equations.render import render
from nnre.errors import EquationError, ShapeError
from nnre.model import Model

RNG = np.random.default_rng(3)


def _softmax(a: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)  # type: ignore[no-any-return]


def test_reductions_and_softmax_along_one_axis_against_numpy() -> None:
    text = """
        input X
        X ∈ ℝ^(3×4×5)
        a = Σ(X; axis=1) + mean(X; axis=0)
        b = softmax(X; axis=0) − log_softmax(X; axis=-2)
        c = max(X; axis=-1) ⊙ min(X; axis=2)
        d = ‖X‖ + norm(X; axis=1)
        """
    m = Model.from_equations(text, {}, dtype="float64")
    X = RNG.normal(size=(6, 3, 4, 5))
    out, _ = m.step({"X": X})
    np.testing.assert_allclose(out["a"], X.sum(2, keepdims=True) + X.mean(1, keepdims=True),
                               rtol=1e-12)
    e = np.exp(X - X.max(2, keepdims=True))
    np.testing.assert_allclose(out["b"], _softmax(X, 1) - np.log(e / e.sum(2, keepdims=True)),
                               rtol=1e-12)
    np.testing.assert_allclose(out["c"], X.max(3, keepdims=True) * X.min(3, keepdims=True),
                               rtol=1e-12)
    whole = np.sqrt((X ** 2).sum(axis=(1, 2, 3), keepdims=True))
    np.testing.assert_allclose(out["d"], whole + np.sqrt((X ** 2).sum(2, keepdims=True)),
                               rtol=1e-12)
    assert m.outputs["a"].shape == (3, 4, 5) and m.outputs["c"].shape == (3, 4, 1)


def test_a_vector_is_a_column_and_a_constant_reduces_once() -> None:
    """A vector's entries are axis 0; axis -1 is its one column. A weight reduced along an
    axis is computed once, in the prologue."""
    text = """
        input x
        x ∈ ℝ^4
        W ∈ ℝ^(4×3)
        s = Σ(x; axis=0) ⊙ x + Σ(x; axis=-1)
        y = softmax(x; axis=0) + Σ(W; axis=1) + (mean(W; axis=0) W ᵀ)ᵀ
        """
    W = RNG.normal(size=(4, 3))
    m = Model.from_equations(text, {"W": W}, dtype="float64")
    x = RNG.normal(size=(5, 4))
    out, _ = m.step({"x": x})
    np.testing.assert_allclose(out["s"], x.sum(1, keepdims=True) * x + x, rtol=1e-12)
    want = _softmax(x, 1) + W.sum(1) + (W.mean(0, keepdims=True) @ W.T)[0]
    np.testing.assert_allclose(out["y"], want, rtol=1e-12)
    assert any(ins.op == "sum" for ins in m.program.prologue)


def test_an_axis_parameter_reads_back_and_selects_the_tensor_reading() -> None:
    checked = check("input x\nx ∈ ℝ^4\ny = softmax(x; axis=0)\n")
    assert checked.tensors
    eq = checked.module.equations[0]
    assert render(eq.expr) == "softmax(x; axis=0)"
    again = check(f"input x\nx ∈ ℝ^4\ny = {render(eq.expr)}\n")
    assert render(again.module.equations[0].expr) == "softmax(x; axis=0)"


@pytest.mark.parametrize("text,message", [
    ("X ∈ ℝ^(2×3)\ny = Σ(X; axis=2)", "'X' has 2 axes"),
    ("X ∈ ℝ^(2×3)\ny = softmax(X; axis=-3)", "'X' has 2 axes"),
    ("X ∈ ℝ^(2×3)\ny = Σ(X; axis=0.5)", "axis=0.5 is not a whole number"),
    ("X ∈ ℝ^(2×3)\ny = tanh(X; axis=0)", "tanh has no parameter 'axis'"),
    ("X ∈ ℝ^(2×3)\ny = max(X, X; axis=0)", "max with 2 arguments has no parameters"),
])
def test_bad_axes_are_located_errors(text: str, message: str) -> None:
    with pytest.raises((EquationError, ShapeError), match=message):
        check("input X\n" + text + "\n")
