"""Names that are not learned: a small constant ``ε`` given by an equation, and a dimension
name read as its value (``xₜ / H``, ``/ √d_k``). Oracles are hand-written NumPy."""

from __future__ import annotations

import numpy as np
import pytest

from nnre.equations import check
from nnre.errors import EquationError
from nnre.model import Model

RNG = np.random.default_rng(12)


def test_epsilon_defined_by_an_equation_is_a_constant() -> None:
    """RMS norm with ``ε = 1e-5``: ε is a defined name (no weight), its value the number."""
    text = "xₜ ∈ ℝ^4\nγ ∈ ℝ^4\nε = 1e-5\nyₜ = γ ⊙ xₜ / √(mean(xₜ²) + ε)\n"
    checked = check(text)
    assert checked.roles.params == ["γ"]
    assert checked.roles.outputs == ["y"]
    gamma = RNG.normal(size=4)
    x = RNG.normal(size=(2, 4)) * 1e-3  # small enough that ε matters
    model = Model.from_equations(text, {"γ": gamma}, dtype="float64")
    out, _ = model.step({"x": x})
    want = gamma * x / np.sqrt((x**2).mean(axis=1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(out["y"], want, rtol=1e-12)


def test_epsilon_declared_is_learned() -> None:
    checked = check("xₜ ∈ ℝ^3\nε ∈ ℝ\nyₜ = xₜ / ε")
    assert checked.roles.params == ["ε"]


def test_a_timed_epsilon_is_an_input() -> None:
    checked = check("xₜ, εₜ ∈ ℝ^3\nyₜ = xₜ + εₜ")
    assert sorted(checked.roles.inputs) == ["x", "ε"]


def test_epsilon_with_a_weight_is_a_parameter() -> None:
    checked = check("x ∈ ℝ^3\ny = x + ε", weights={"ε": ()})
    assert checked.roles.params == ["ε"]
    with pytest.raises(EquationError, match="small constant"):
        check("x ∈ ℝ^3\ny = x + ε", weights={})
