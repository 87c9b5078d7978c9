"""Names that are not learned: a small constant ``ε`` given by an equation, and a dimension
name read as its value (``xₜ / H``, ``/ √d_k``). Oracles are hand-written NumPy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nnre
from nndk.pack import PackRequest, pack
from nnre.equations import check, language_version
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


# -- a dimension read as its value ------------------------------------------------------------

def test_a_dimension_is_its_value_in_the_vector_reading() -> None:
    """``xₜ / H`` divides by the number H; ``√H`` folds; nothing is learned for H."""
    text = "xₜ ∈ ℝ^H\nW ∈ ℝ^(H×H)\nyₜ = xₜ / H + W xₜ / √H - H\n"
    checked = check(text, dims={"H": 4})
    assert checked.roles.params == ["W"] and checked.roles.inputs == ["x"]
    assert checked.roles.dims == ["H"] and not checked.tensors
    assert language_version(checked) == 2
    w = RNG.normal(size=(4, 4))
    x = RNG.normal(size=(3, 4))
    model = Model.from_equations(text, {"W": w}, dims={"H": 4}, dtype="float64")
    assert model.language == 2
    out, _ = model.step({"x": x})
    want = x / 4 + x @ w.T / 2.0 - 4
    np.testing.assert_allclose(out["y"], want, rtol=1e-12)


def test_scaled_dot_product_attention_in_the_tensor_reading() -> None:
    """``softmax(Q Kᵀ / √d_k) V`` with d_k a declared dimension: the number 8, a literal."""
    text = ("Q, K, V ∈ ℝ^(T×d_k)\ninput Q, K, V\n"
            "A = softmax(Q Kᵀ / √d_k) V\n")
    checked = check(text, dims={"T": 5, "d_k": 8})
    assert checked.tensors and checked.roles.dims == ["d_k"]
    assert checked.roles.params == [] and sorted(checked.roles.inputs) == ["K", "Q", "V"]
    assert language_version(checked) == 2
    q, k, v = (RNG.normal(size=(2, 5, 8)) for _ in range(3))
    model = Model.from_equations(text, {}, dims={"T": 5, "d_k": 8}, dtype="float64")
    out, _ = model.step({"Q": q, "K": k, "V": v})
    scores = q @ k.transpose(0, 2, 1) / np.sqrt(8.0)
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    want = (e / e.sum(axis=-1, keepdims=True)) @ v
    np.testing.assert_allclose(out["A"], want, rtol=1e-12)


def test_a_dimension_as_a_whole_right_hand_side() -> None:
    """``nₜ = H`` alone: the number broadcast to the target, in both readings."""
    for decl in ("xₜ ∈ ℝ^H\n", "xₜ ∈ ℝ^(2×H)\n"):
        text = decl + "yₜ = xₜ ⊙ 0 + H\n"
        model = Model.from_equations(text, {}, dims={"H": 3}, dtype="float64")
        x = RNG.normal(size=(1, 3) if "2×" not in decl else (1, 2, 3))
        out, _ = model.step({"x": x})
        np.testing.assert_allclose(out["y"], np.full_like(x, 3.0))


def test_a_weight_for_a_dimension_is_refused() -> None:
    with pytest.raises(EquationError) as info:
        check("x ∈ ℝ^H\ny = x / H", dims={"H": 2}, weights={"H": ()})
    assert info.value.message == ("a weight is given for 'H', which is a dimension: the "
                                  "equations read it as the number H")
    assert (info.value.line, info.value.column) == (2, 9)


def test_a_text_without_a_dimension_value_stays_version_1() -> None:
    checked = check("xₜ ∈ ℝ^H\nW ∈ ℝ^(H×H)\nyₜ = W xₜ", dims={"H": 2})
    assert checked.roles.dims == [] and language_version(checked) == 1


def test_a_dimension_value_packs_and_loads(tmp_path: Path) -> None:
    """The bundle stores no weight for H and requires equations/2 (the loader refuses a file
    whose equations need a later version than it states, so loading at all checks that)."""
    (tmp_path / "m.eqn").write_text("xₜ ∈ ℝ^H\nW ∈ ℝ^(H×H)\nyₜ = W xₜ / √H + H\n",
                                    encoding="utf-8")
    w = RNG.normal(size=(3, 3))
    np.savez(tmp_path / "w.npz", W=w)
    out = tmp_path / "m.bundle"
    pack(PackRequest(tmp_path / "m.eqn", tmp_path / "w.npz", out, "m", "1.0.0",
                     dtype="float64", created="2026-01-01T00:00:00Z"))
    model = nnre.load(out)
    assert model.language == 2
    x = RNG.normal(size=3)
    got, _ = model.step({"x": x})
    np.testing.assert_allclose(got["y"], w @ x / np.sqrt(3.0) + 3.0, rtol=1e-12)
