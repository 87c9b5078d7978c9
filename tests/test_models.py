"""The standard cells, written as equations, against hand-written NumPy references."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import reference as ref

from nnre.model import Model

TEMPLATES = Path(__file__).resolve().parent.parent / "nndk" / "templates"
H, V, T, B = 6, 5, 7, 3

LSTM_GO = """\
iₜ = σ(Wᵢ·xₜ+Uᵢ·hₜ₋₁+Bᵢ)
fₜ = σ(Wf·xₜ+Uf·hₜ₋₁+Bf)
oₜ = σ(Wₒ·xₜ+Uₒ·hₜ₋₁+Bₒ)
ĉₜ = tanh(Wc·xₜ+Uc·hₜ₋₁+Bc)
cₜ = (fₜ*cₜ₋₁)+(iₜ*ĉₜ)
hₜ = oₜ*tanh(cₜ)
yₜ = softmax(Wy·hₜ+By)
"""
GO_NAMES = {"W_i": "W_i", "U_i": "U_i", "b_i": "B_i", "W_f": "Wf", "U_f": "Uf", "b_f": "Bf",
            "W_o": "W_o", "U_o": "U_o", "b_o": "B_o", "W_c": "Wc", "U_c": "Uc", "b_c": "Bc",
            "W_y": "Wy", "b_y": "By"}

LSTM_DOT = """\
iₜ = σ(W_i · xₜ + U_i · hₜ₋₁ + b_i)
fₜ = σ(W_f · xₜ + U_f · hₜ₋₁ + b_f)
oₜ = σ(W_o · xₜ + U_o · hₜ₋₁ + b_o)
c̃ₜ = tanh(W_c · xₜ + U_c · hₜ₋₁ + b_c)
cₜ = fₜ ⊙ cₜ₋₁ + iₜ ⊙ c̃ₜ
hₜ = oₜ ⊙ tanh(cₜ)
yₜ = softmax(W_y · hₜ + b_y)
"""

LSTM_SPELLINGS = {
    "go": (LSTM_GO, GO_NAMES),
    "wikipedia": ((TEMPLATES / "lstm.eqn").read_text(encoding="utf-8"), None),
    "odot": (LSTM_DOT, None),
}


@pytest.fixture(scope="module")
def data() -> tuple[dict[str, np.ndarray], np.ndarray]:
    params = ref.random_params(ref.lstm_shapes(H, V), seed=1)
    xs = np.random.default_rng(2).normal(size=(T, B, V))
    return params, xs


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("float64", 1e-12)])
@pytest.mark.parametrize("spelling", sorted(LSTM_SPELLINGS))
def test_lstm_spellings_match_numpy(spelling: str, dtype: str, tol: float, data: tuple) -> None:
    params, xs = data
    text, names = LSTM_SPELLINGS[spelling]
    weights = {(names or {}).get(k, k): v for k, v in params.items()}
    model = Model.from_equations(text, weights, dtype=dtype)
    assert set(model.inputs) == {"x"} and set(model.outputs) == {"y"}
    assert set(model.state) == {"h", "c"}
    ys, state = model.run({"x": xs})
    want_y, want_h, want_c = ref.lstm(params, xs, np.zeros((B, H)), np.zeros((B, H)))
    assert ys["y"].dtype == np.dtype(dtype)
    np.testing.assert_allclose(ys["y"], want_y, atol=tol, rtol=0)
    np.testing.assert_allclose(state["h"], want_h, atol=tol, rtol=0)
    np.testing.assert_allclose(state["c"], want_c, atol=tol, rtol=0)


def test_step_by_step_equals_run_and_state_carries(data: tuple) -> None:
    params, xs = data
    model = Model.from_equations(LSTM_DOT, params, dtype="float64")
    ys_run, final = model.run({"x": xs})
    state = None
    for t in range(T):
        out, state = model.step({"x": xs[t]}, state)
        np.testing.assert_allclose(out["y"], ys_run["y"][t], atol=1e-14)
    assert state is not None
    np.testing.assert_allclose(state["h"], final["h"], atol=1e-14)
    first, mid = model.run({"x": xs[:3]})
    second, end = model.run({"x": xs[3:]}, mid)
    np.testing.assert_allclose(np.concatenate([first["y"], second["y"]]), ys_run["y"],
                               atol=1e-14)
    np.testing.assert_allclose(end["c"], final["c"], atol=1e-14)


def test_unbatched_feeds_and_caller_state_untouched(data: tuple) -> None:
    params, xs = data
    model = Model.from_equations(LSTM_DOT, params, dtype="float64")
    rng = np.random.default_rng(5)
    h0, c0 = rng.normal(size=H), rng.normal(size=H)
    kept = (h0.copy(), c0.copy())
    ys, state = model.run({"x": xs[:, 0]}, {"h": h0, "c": c0})
    want_y, want_h, _ = ref.lstm(params, xs[:, :1], h0[None], c0[None])
    assert ys["y"].shape == (T, V) and state["h"].shape == (H,)
    np.testing.assert_allclose(ys["y"], want_y[:, 0], atol=1e-12)
    np.testing.assert_allclose(state["h"], want_h[0], atol=1e-12)
    np.testing.assert_array_equal(h0, kept[0])
    np.testing.assert_array_equal(c0, kept[1])


def test_returned_arrays_are_not_overwritten_by_later_calls(data: tuple) -> None:
    params, xs = data
    model = Model.from_equations(LSTM_DOT, params, dtype="float64")
    out1, s1 = model.step({"x": xs[0]})
    saved = (out1["y"].copy(), s1["h"].copy())
    model.step({"x": xs[1]}, s1)
    model.step({"x": xs[2]})
    np.testing.assert_array_equal(out1["y"], saved[0])
    np.testing.assert_array_equal(s1["h"], saved[1])


def test_gru_matches_numpy() -> None:
    params = ref.random_params(ref.gru_shapes(H, V), seed=3)
    xs = np.random.default_rng(4).normal(size=(T, B, V))
    model = Model.from_equations((TEMPLATES / "gru.eqn").read_text(encoding="utf-8"), params)
    ys, state = model.run({"x": xs})
    want_y, want_h = ref.gru(params, xs, np.zeros((B, H)))
    np.testing.assert_allclose(ys["y"], want_y, atol=1e-5)
    np.testing.assert_allclose(state["h"], want_h, atol=1e-5)


def test_rnn_matches_numpy() -> None:
    shapes = {"W_h": (H, V), "U_h": (H, H), "b_h": (H,), "W_y": (V, H), "b_y": (V,)}
    params = ref.random_params(shapes, seed=6)
    xs = np.random.default_rng(7).normal(size=(T, B, V))
    model = Model.from_equations((TEMPLATES / "rnn.eqn").read_text(encoding="utf-8"), params)
    ys, state = model.run({"x": xs})
    want_y, want_h = ref.rnn(params, xs, np.zeros((B, H)))
    np.testing.assert_allclose(ys["y"], want_y, atol=1e-5)
    np.testing.assert_allclose(state["h"], want_h, atol=1e-5)


@pytest.mark.parametrize("text", [
    "h = relu(W₁·x + b₁)\ny = softmax(W₂·h + b₂)\n",
    (TEMPLATES / "mlp.eqn").read_text(encoding="utf-8"),
])
def test_mlp_matches_numpy(text: str) -> None:
    params = ref.random_params({"W_1": (8, 4), "b_1": (8,), "W_2": (3, 8), "b_2": (3,)}, seed=8)
    x = np.random.default_rng(9).normal(size=(B, 4))
    model = Model.from_equations(text, params)
    assert list(model.inputs) == ["x"] and not model.state
    out, state = model.step({"x": x})
    assert state == {}
    np.testing.assert_allclose(out["y"], ref.mlp(params, x), atol=1e-6)
    seq, _ = model.run({"x": np.stack([x, 2 * x])})
    np.testing.assert_allclose(seq["y"][1], ref.mlp(params, 2 * x), atol=1e-6)


def test_model_shared_between_threads(data: tuple) -> None:
    params, xs = data
    model = Model.from_equations(LSTM_DOT, params, dtype="float64")
    want = model.run({"x": xs})[0]["y"]
    results: list[np.ndarray] = []
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            for _ in range(20):
                results.append(model.run({"x": xs})[0]["y"])
                model.run({"x": np.random.default_rng(seed).normal(size=(3, 2, V))})
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert len(results) == 80
    for r in results:
        np.testing.assert_array_equal(r, want)


def test_deeper_lag_state() -> None:
    # h depends on the two previous steps: a second-order linear recurrence.
    text = "hₜ = a ⊙ hₜ₋₁ + b ⊙ hₜ₋₂ + xₜ\n"
    a, b = np.array([0.5, -0.3]), np.array([0.25, 0.1])
    model = Model.from_equations(text, {"a": a, "b": b}, dtype="float64")
    assert set(model.state) == {"h", "h@t-2"}
    xs = np.random.default_rng(0).normal(size=(9, 2))
    ys, state = model.run({"x": xs})
    h1, h2, want = np.zeros(2), np.zeros(2), []
    for x in xs:
        h1, h2 = a * h1 + b * h2 + x, h1
        want.append(h1)
    np.testing.assert_allclose(ys["h"], np.stack(want), atol=1e-12)
    np.testing.assert_allclose(state["h"], h1, atol=1e-12)
    np.testing.assert_allclose(state["h@t-2"], h2, atol=1e-12)


def test_layer_norm_and_rms_norm_written_from_primitives_match_numpy() -> None:
    """Per-example numbers (reductions, xᵀx) broadcast over vectors, as NumPy does."""
    rng = np.random.default_rng(3)
    g, b = rng.normal(size=5), rng.normal(size=5)
    text = ("x ∈ ℝ^5\nμ = mean(x)\nv = mean((x − μ)²)\n"
            "ln = γ ⊙ (x − μ) / √(v + 1e-5) + β\nrms = γ ⊙ x / √(mean(x²) + 1e-6)\n"
            "unit = x / ‖x‖ + (xᵀ x) x ⊙ 0\n")
    model = Model.from_equations(text, {"γ": g, "β": b}, dtype="float64")
    x = rng.normal(size=(4, 5))
    out, _ = model.step({"x": x})
    mu, var = x.mean(1, keepdims=True), x.var(1, keepdims=True)
    np.testing.assert_allclose(out["ln"], g * (x - mu) / np.sqrt(var + 1e-5) + b, rtol=1e-12)
    np.testing.assert_allclose(out["rms"], g * x / np.sqrt((x * x).mean(1, keepdims=True) + 1e-6),
                               rtol=1e-12)
    np.testing.assert_allclose(out["unit"], x / np.linalg.norm(x, axis=1, keepdims=True),
                               rtol=1e-12)
