"""Attention as equations: histories that grow a step at a time, ``t`` as a value, the cached
step and the sequence form, each against a hand-written NumPy transformer step."""

from __future__ import annotations

import numpy as np
import pytest

import nnre
from nndk.sequence import compile_sequence
from nnre.equations import check
from nnre.errors import ContextError, EquationError
from nnre.vm import bind_stage, run_prologue

TEXT = """
xₜ ∈ ℕ
yₜ ∈ ℝ^n_v
P ∈ ℝ^(N×d)
eₜ = (E[xₜ] + P[t])ᵀ
qₜ, kₜ, vₜ ∈ ℝ^d
qₜ = W_q eₜ
kₜ = W_k eₜ
vₜ = W_v eₜ
q̃ₜ, k̃ₜ, ṽₜ ∈ ℝ^(heads×1×d_h)
q̃ₜ = reshape(qₜ)
k̃ₜ = reshape(kₜ)
ṽₜ = reshape(vₜ)
Kₜ, Vₜ ∈ ℝ^(heads×N×d_h)
Kₜ = concat(Kₜ₋₁, k̃ₜ; axis=1)
Vₜ = concat(Vₜ₋₁, ṽₜ; axis=1)
oₜ = softmax(q̃ₜ Kₜᵀ / √d_h) Vₜ
ōₜ ∈ ℝ^d
ōₜ = reshape(oₜ)
yₜ = softmax(E (eₜ + W_o ōₜ))
"""
DIMS = {"n_v": 5, "d": 8, "N": 6, "heads": 2}


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def reference(w: dict[str, np.ndarray], ids: list[int], heads: int) -> np.ndarray:
    """The model of TEXT written out: at step t, attention over the keys of steps 0 … t."""
    d = w["E"].shape[1]
    keys: list[np.ndarray] = []
    values: list[np.ndarray] = []
    ys = []
    for t, x in enumerate(ids):
        e = w["E"][x] + w["P"][t]
        q = (w["W_q"] @ e).reshape(heads, -1)
        keys.append((w["W_k"] @ e).reshape(heads, -1))
        values.append((w["W_v"] @ e).reshape(heads, -1))
        k, v = np.stack(keys, 1), np.stack(values, 1)  # (heads, t + 1, d_h)
        p = _softmax(np.einsum("hd,hjd->hj", q, k) / np.sqrt(q.shape[1]))
        o = np.einsum("hj,hjd->hd", p, v).reshape(d)
        ys.append(_softmax(w["E"] @ (e + w["W_o"] @ o)))
    return np.array(ys)


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    w = {"E": rng.normal(size=(5, 8)), "P": rng.normal(size=(6, 8)) * 0.5}
    for name in ("W_q", "W_k", "W_v", "W_o"):
        w[name] = rng.normal(size=(8, 8)) * 0.4
    return w


@pytest.fixture(scope="module")
def model(weights: dict[str, np.ndarray]) -> nnre.Model:
    return nnre.Model.from_equations(TEXT, weights, DIMS, dtype="float64")


def test_the_cached_step_is_the_reference_step_by_step(model: nnre.Model,
                                                       weights: dict[str, np.ndarray]) -> None:
    ids = [1, 3, 0, 4, 2, 2]
    state = None
    for t, x in enumerate(ids):
        out, state = model.step({"x": np.array([x])}, state)
        np.testing.assert_allclose(out["y"], reference(weights, ids[:t + 1], 2)[t], atol=1e-12)
        assert state["t"] == [t + 1]
    assert model.context == 6 and model.state["K"].shape == (2, 6, 4)
    ys, final = model.run({"x": np.array(ids, float)[:, None]})
    np.testing.assert_allclose(ys["y"], reference(weights, ids, 2), atol=1e-12)
    np.testing.assert_array_equal(final["K"], state["K"])


def test_streams_of_different_lengths_step_as_one_batch(model: nnre.Model,
                                                        weights: dict[str, np.ndarray]) -> None:
    a, b = [1, 3, 0, 4], [2, 2]
    _, first = model.run({"x": np.array(a[:2], float)[:, None]})  # a is two steps ahead
    state = {k: np.stack([v, model.zero_state()[k]]) for k, v in first.items()}
    for i in range(2):
        out, state = model.step({"x": np.array([[a[2 + i]], [b[i]]])}, state)
    np.testing.assert_allclose(out["y"][0], reference(weights, a, 2)[3], atol=1e-12)
    np.testing.assert_allclose(out["y"][1], reference(weights, b, 2)[1], atol=1e-12)
    np.testing.assert_array_equal(state["t"], [[4], [2]])


def test_stepping_past_the_context_is_refused(model: nnre.Model) -> None:
    _, state = model.run({"x": np.zeros((6, 1))})
    with pytest.raises(ContextError, match="the context is full: this model holds 6 steps"):
        model.step({"x": np.array([1])}, state)
    with pytest.raises(ContextError):
        model.run({"x": np.zeros((7, 1))})
    with pytest.raises(ContextError):  # a step count that is not a whole number
        model.step({"x": np.array([1])}, {**state, "t": np.array([0.5])})


def test_the_sequence_form_runs_every_step_at_once_with_a_causal_mask(
        weights: dict[str, np.ndarray]) -> None:
    checked = check(TEXT, DIMS, {k: v.shape for k, v in weights.items()})
    for optimize in (False, True):
        prog = compile_sequence(checked, "float64", optimize=optimize)
        assert not prog.loop and not prog.state_in and prog.inputs["x"] in range(99)
        ids = np.array([[1, 3, 0, 4, 2, 2], [0, 1, 2, 3, 4, 0]], float)
        stage = bind_stage(prog, run_prologue(prog, weights), prog.pre + prog.post, 2,
                           list(prog.inputs.values()))
        np.copyto(stage.given[prog.inputs["x"]], ids[:, :, None])
        for f in stage.tapes[0]:
            f()
        y = stage.arrays[0][prog.outputs["y"]]
        for b in range(2):
            np.testing.assert_allclose(y[b], reference(weights, list(ids[b].astype(int)), 2),
                                       atol=1e-12)


BAD = {
    "an output with an entry per step": ("Sₜ = Kₜ qₜ", "cannot be an output or state"),
    "a state with an entry per step": ("Sₜ = Kₜ qₜ + Sₜ₋₁\nzₜ = Σ(Sₜ; axis=0) ⊙ qₜ",
                                       "cannot be an output or state"),
    "a reshape of a history": ("R ∈ ℝ^(N·d)\nRₜ = reshape(Kₜ)", "would mix the entries"),
    "two entries a step": ("Kₜ = [Kₜ₋₁; [kₜᵀ; kₜᵀ]]", "more than one entry"),
    "the previous history read elsewhere": ("zₜ = Kₜ₋₁ qₜ", "reads the previous value"),
    "a history read two steps back": ("zₜ = Kₜ₋₂ qₜ", "steps back is read"),
    "mean along the steps": ("zₜ = mean(Kₜ qₜ; axis=0) ⊙ qₜ", "is not defined"),
}
BASE = """
xₜ ∈ ℝ^3
qₜ, kₜ ∈ ℝ^4
qₜ = A xₜ
kₜ = B xₜ
Kₜ ∈ ℝ^(N×4)
"""


@pytest.mark.parametrize("case", sorted(BAD))
def test_what_would_mix_the_steps_is_an_error(case: str) -> None:
    extra, message = BAD[case]
    text = BASE + ("Kₜ = [Kₜ₋₁; kₜᵀ]\n" if "Kₜ = " not in extra else "") + extra + \
        "\nyₜ = qₜ"
    if "R ∈" in extra:
        text = text.replace("R ∈ ℝ^(N·d)", "R ∈ ℝ^(N×4)")
    with pytest.raises(EquationError, match=message):
        nnre.Model.from_equations(text, _weights_for(text), {"N": 5})


def _weights_for(text: str) -> dict[str, np.ndarray]:
    return {"A": np.ones((4, 3)), "B": np.ones((4, 3))}


def test_a_recurrence_has_no_sequence_form() -> None:
    text = "xₜ ∈ ℝ^2\nhₜ ∈ ℝ^3\nP ∈ ℝ^(4×3)\nhₜ = tanh(W xₜ + U hₜ₋₁) + P[t]ᵀ"
    with pytest.raises(EquationError, match="no form that runs all steps at once"):
        compile_sequence(check(text, {}))
    with pytest.raises(EquationError, match="no context"):
        compile_sequence(check("xₜ ∈ ℝ^2\nhₜ ∈ ℝ^3\nhₜ = tanh(W xₜ)", {}))


@pytest.mark.parametrize("optimize", [False, True])
def test_the_sequence_form_has_the_gradient_of_central_differences(optimize: bool) -> None:
    from test_autodiff import CASES
    from test_autodiff import DIMS as CASE_DIMS

    from nndk.gradcheck import gradcheck, make_problem

    problem = make_problem(CASES["attention"], CASE_DIMS, batch=2, optimize=optimize,
                           sequence=True)
    errors = gradcheck(problem)
    assert any(k.startswith("param W_k") for k in errors)
    assert max(errors.values()) < 1e-6, errors
