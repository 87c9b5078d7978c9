"""Layer indices written as papers write them: ``h¹ₜ``, ``h²ₜ₋₁`` and ``W^{(1)}`` are names
(canonical ``h^{(1)}``, ``W^{(1)}``), while ``x²`` stays a power. The oracle for the
two-layer network is a hand-written NumPy loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnre
from nndk.pack import PackRequest, pack
from nnre.bundle.schema import is_name
from nnre.equations import check, language_version
from nnre.equations.parser import parse
from nnre.equations.render import render
from nnre.errors import EquationError
from nnre.model import Model

RNG = np.random.default_rng(91)

RNN2 = """\
xₜ ∈ ℝ^V
h¹ₜ, h²ₜ ∈ ℝ^H
h¹ₜ = tanh(W^{(1)} xₜ + U^{(1)} h¹ₜ₋₁ + b^{(1)})
h²ₜ = tanh(W^{(2)} h¹ₜ + U^{(2)} h²ₜ₋₁ + b^{(2)})
yₜ = softmax(W_y h²ₜ + b_y)
"""
V, H, K = 4, 5, 3
WEIGHTS = {
    "W^{(1)}": RNG.normal(size=(H, V)) * 0.5, "U^{(1)}": RNG.normal(size=(H, H)) * 0.5,
    "b^{(1)}": RNG.normal(size=H) * 0.1, "W^{(2)}": RNG.normal(size=(H, H)) * 0.5,
    "U^{(2)}": RNG.normal(size=(H, H)) * 0.5, "b^{(2)}": RNG.normal(size=H) * 0.1,
    "W_y": RNG.normal(size=(K, H)), "b_y": RNG.normal(size=K),
}


def reference(xs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The two-layer Elman network, one step at a time, for one sequence of shape (T, V)."""
    w = WEIGHTS
    h1, h2 = np.zeros(H), np.zeros(H)
    ys = []
    for x in xs:
        h1 = np.tanh(w["W^{(1)}"] @ x + w["U^{(1)}"] @ h1 + w["b^{(1)}"])
        h2 = np.tanh(w["W^{(2)}"] @ h1 + w["U^{(2)}"] @ h2 + w["b^{(2)}"])
        z = w["W_y"] @ h2 + w["b_y"]
        e = np.exp(z - z.max())
        ys.append(e / e.sum())
    return np.array(ys), h1, h2


def test_roles_of_a_two_layer_rnn() -> None:
    checked = check(RNN2, weights={k: v.shape for k, v in WEIGHTS.items()})
    assert language_version(checked) == 2  # a version-1 reader could not read h¹ₜ
    assert sorted(checked.roles.params) == sorted(WEIGHTS)
    assert checked.roles.state == {"h^{(1)}": 1, "h^{(2)}": 1}
    assert checked.roles.inputs == ["x"] and checked.roles.outputs == ["y"]


def test_a_two_layer_rnn_against_numpy() -> None:
    model = Model.from_equations(RNN2, WEIGHTS, dtype="float64")
    xs = RNG.normal(size=(6, V))
    ys, state = model.run({"x": xs})
    want, h1, h2 = reference(xs)
    np.testing.assert_allclose(ys["y"], want, rtol=1e-12)
    np.testing.assert_allclose(state["h^{(1)}"], h1, rtol=1e-12)
    np.testing.assert_allclose(state["h^{(2)}"], h2, rtol=1e-12)


def test_every_spelling_of_a_layer_is_one_name() -> None:
    """``h¹ₜ₋₁``, ``h^{(1)}_{t-1}``, ``h¹_{t-1}`` read the same state; ``W_{xh}^{(1)}`` and
    ``W^{(1)}_{xh}`` the same weight."""
    text = ("xₜ ∈ ℝ^2\nh^{(1)}_t = tanh(W_{xh}^{(1)} xₜ + h¹_{t-1})\n"
            "yₜ = W^{(1)}_{xh} h¹ₜ + h^{(1)}_{t-1}")
    checked = check(text, weights={"W^{(1)}_xh": (2, 2)})
    assert checked.roles.params == ["W^{(1)}_xh"]
    assert checked.roles.state == {"h^{(1)}": 1}


def test_layer_names_render_and_read_back() -> None:
    eq = parse("h²ₜ = tanh(W^{(2)}_{xh} h¹ₜ + U^{(2)} h²ₜ₋₁ + x²)").equations[0]
    shown = render(eq.expr)
    assert shown == "tanh(W^{(2)}_xh · h^{(1)}ₜ + U^{(2)} · h^{(2)}ₜ₋₁ + x²)"
    again = parse("y = " + shown).equations[0].expr
    assert render(again) == shown
    written = render(eq.expr, written=True)
    assert render(parse("y = " + written).equations[0].expr) == shown
    # a layer with a subscript takes the time inside it: W^{(2)}_{xh,t}
    eq = parse("a^{(1)}_{xh,t} = b^{(1)}_{xh,t-2}").equations[0]
    assert render(eq.expr) == "b^{(1)}_{xh,t-2}"
    assert render(parse("y = " + render(eq.expr)).equations[0].expr) == render(eq.expr)


def test_a_square_stays_a_power() -> None:
    model = Model.from_equations("xₜ ∈ ℝ^3\nyₜ = xₜ² + x²ₜ ⊙ 0 + xₜ³", {}, dtype="float64")
    x = RNG.normal(size=3)
    out, _ = model.step({"x": x, "x^{(2)}": np.ones(3)})
    np.testing.assert_allclose(out["y"], x**2 + x**3, rtol=1e-12)


def test_layer_names_that_look_alike_are_refused() -> None:
    """Latin h and Cyrillic һ (U+04BB) with the same layer index are two names a reader
    cannot tell apart."""
    with pytest.raises(EquationError, match="names 'h¹ₜ' and 'һ¹ₜ' look alike"):
        check("xₜ ∈ ℝ^2\nh¹ₜ = tanh(xₜ)\nyₜ = һ¹ₜ + h¹ₜ")


def test_bundle_names_hold_a_layer_index() -> None:
    assert is_name("W^{(1)}") and is_name("W^{(12)}_xh") and is_name("σ^{(1)}_g")
    for bad in ("W^{(x)}", "W^{()}", "W^{(1)}x", "W_a^{(1)}", "^{(1)}", "W^{(1)}^{(2)}"):
        assert not is_name(bad), bad


def test_a_two_layer_rnn_packs_and_loads(tmp_path: Path) -> None:
    (tmp_path / "m.eqn").write_text(RNN2, encoding="utf-8")
    np.savez(tmp_path / "w.npz", **WEIGHTS)  # type: ignore[arg-type]
    out = tmp_path / "m.bundle"
    pack(PackRequest(tmp_path / "m.eqn", tmp_path / "w.npz", out, "m", "1.0.0",
                     dtype="float64", created="2026-01-01T00:00:00Z"))
    model = nnre.load(out)  # refused if the file required less than equations/2
    assert model.language == 2
    xs = RNG.normal(size=(4, V))
    ys, state = model.run({"x": xs})
    want, h1, _ = reference(xs)
    np.testing.assert_allclose(ys["y"], want, rtol=1e-12)
    np.testing.assert_allclose(state["h^{(1)}"], h1, rtol=1e-12)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="hWx¹²³⁴⁰ₜ₋₁_t{}()^-1 +", max_size=24))
def test_layer_spellings_fail_only_with_equation_errors(tail: str) -> None:
    """Any mix of the characters layer indices are made of reads as a name, a power or an
    EquationError, never another exception; whatever parses renders back to itself."""
    try:
        eq = parse("y = " + tail).equations[0]
    except EquationError:
        return
    shown = render(eq.expr)
    assert render(parse("y = " + shown).equations[0].expr) == shown
