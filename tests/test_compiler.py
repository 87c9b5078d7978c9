"""The compiler's rewrites: same numbers as the plain program, fewer NumPy calls per step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import reference as ref

from nnre.model import Model

TEMPLATES = Path(__file__).resolve().parent.parent / "nndk" / "templates"

CASES = {
    "lstm": ref.lstm_shapes(5, 4),
    "gru": ref.gru_shapes(5, 4),
    "rnn": {"W_h": (5, 4), "U_h": (5, 5), "b_h": (5,), "W_y": (4, 5), "b_y": (4,)},
    "mlp": {"W_1": (6, 3), "b_1": (6,), "W_2": (2, 6), "b_2": (2,)},
}
EXTRA = {
    # a peephole-style cell: state read inside and outside the gates, scalar broadcasting,
    # stacked input, transposes and a read-out that needs no capture of the gates
    "peephole": ("""
        zₜ = [xₜ; hₜ₋₁]
        gₜ = σ(W_g zₜ + p ⊙ cₜ₋₁ + b_g)
        uₜ = tanh(W_u zₜ + b_u)
        cₜ = gₜ ⊙ cₜ₋₁ + (1 − gₜ) ⊙ uₜ
        hₜ = tanh(cₜ) ⊙ 0.5 + 0.5 ⊙ hₜ₋₁
        yₜ = log_softmax((hₜᵀ · W_y)ᵀ + b_y)
        """, {"W_g": (5, 9), "W_u": (5, 9), "b_g": (5,), "b_u": (5,), "p": (5,),
              "W_y": (5, 4), "b_y": (4,)}),
}


def _text(name: str) -> str:
    return (TEMPLATES / f"{name}.eqn").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(CASES) + sorted(EXTRA))
def test_optimized_program_matches_plain(name: str) -> None:
    if name in EXTRA:
        text, shapes = EXTRA[name]
    else:
        text, shapes = _text(name), CASES[name]
    params = ref.random_params(shapes, seed=11)
    plain = Model.from_equations(text, params, dtype="float64", optimize=False)
    fast = Model.from_equations(text, params, dtype="float64", optimize=True)
    feeds = {k: np.random.default_rng(12).normal(size=(6, 3, *s.shape))
             for k, s in plain.inputs.items()}
    out_a, st_a = plain.run(feeds)
    out_b, st_b = fast.run(feeds)
    assert out_a.keys() == out_b.keys() and st_a.keys() == st_b.keys()
    for k in out_a:
        np.testing.assert_allclose(out_b[k], out_a[k], rtol=1e-12, atol=1e-12)
    for k in st_a:
        np.testing.assert_allclose(st_b[k], st_a[k], rtol=1e-12, atol=1e-12)


def test_lstm_step_is_one_matmul_and_readout_runs_after_the_loop() -> None:
    model = Model.from_equations(_text("lstm"), ref.random_params(ref.lstm_shapes(8, 5)))
    prog = model.program
    loop_ops = [ins.op for ins in prog.loop]
    assert loop_ops.count("matmul") == 1  # the four U·hₜ₋₁ products, stacked
    assert loop_ops.count("sigmoid") == 1  # the three gates, fused
    assert loop_ops.count("add") == 2  # gate pre-activations (fused) and the cell update
    assert [ins.op for ins in prog.pre] == ["matmul", "add"]  # W·xₜ + b for all steps
    assert [ins.op for ins in prog.post] == ["matmul", "add", "softmax"]
    assert "softmax" not in loop_ops


def test_listing_names_every_stage_and_shape() -> None:
    model = Model.from_equations(_text("rnn"), ref.random_params(CASES["rnn"]))
    listing = model.listing()
    assert "loop (each step): 3 instructions" in listing
    assert "matmul(h@t-1[B, 5], U_hᵀ[5, 5])" in listing
    assert "next state: h ←" in listing
