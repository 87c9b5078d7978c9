"""The optimizer's stacking and sibling fusion leave tensor values alone: products of one
per-example matrix by several weights, and slices of a tensor, run as written."""

from __future__ import annotations

import numpy as np

from nnre.model import Model


def test_products_of_one_tensor_by_several_weights_are_not_stacked_as_vectors() -> None:
    text = """
        input X
        X ∈ ℝ^(3×4)
        a = tanh(X A) + 1
        b = tanh(X B) + 1
        c = X[0:1] ⊙ 2 + X[1:2] ⊙ 2
        """
    rng = np.random.default_rng(0)
    w = {"A": rng.normal(size=(4, 4)), "B": rng.normal(size=(4, 4))}
    X = rng.normal(size=(5, 3, 4))
    for optimize in (False, True):
        out, _ = Model.from_equations(text, w, dtype="float64", optimize=optimize).step({"X": X})
        np.testing.assert_allclose(out["a"], np.tanh(X @ w["A"]) + 1, rtol=1e-12)
        np.testing.assert_allclose(out["b"], np.tanh(X @ w["B"]) + 1, rtol=1e-12)
        np.testing.assert_allclose(out["c"], X[:, 0:1] * 2 + X[:, 1:2] * 2, rtol=1e-12)
