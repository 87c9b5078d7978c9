"""Backward state (``gₜ = f(xₜ, gₜ₊₁)``, formats/equations.md §4): the backward pass runs
from the last step to the first before the forward loop, against hand-written NumPy loops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import reference as ref

from nnre.errors import FeedError
from nnre.model import Model
from nnre.program import ProgramDataError, from_data, to_data

TEMPLATES = Path(__file__).resolve().parent.parent / "nndk" / "templates"

BIRNN = """
xₜ ∈ ℝ^3
hₜ, gₜ ∈ ℝ^4
hₜ = tanh(W xₜ + U hₜ₋₁ + b)
gₜ = tanh(V xₜ + R gₜ₊₁ + c)
yₜ = softmax(A [hₜ; gₜ])
"""
BIRNN_SHAPES = {"W": (4, 3), "U": (4, 4), "b": (4,), "V": (4, 3), "R": (4, 4), "c": (4,),
                "A": (5, 8)}


def birnn(p: dict[str, np.ndarray], xs: np.ndarray, h: np.ndarray, g: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forward h over t = 0 … T−1, backward g over t = T−1 … 0, y from both at each t."""
    hs, gs = [], [None] * len(xs)
    for x in xs:
        h = np.tanh(x @ p["W"].T + h @ p["U"].T + p["b"])
        hs.append(h)
    for t in reversed(range(len(xs))):
        g = np.tanh(xs[t] @ p["V"].T + g @ p["R"].T + p["c"])
        gs[t] = g
    both = np.concatenate([np.stack(hs), np.stack(gs)], axis=-1)
    return ref.softmax(both @ p["A"].T), h, g


@pytest.mark.parametrize("optimize", [True, False])
@pytest.mark.parametrize("steps", [1, 2, 7])
def test_bidirectional_matches_two_loops(optimize: bool, steps: int) -> None:
    p = ref.random_params(BIRNN_SHAPES, seed=1)
    model = Model.from_equations(BIRNN, p, dtype="float64", optimize=optimize)
    xs = np.random.default_rng(2).normal(size=(steps, 3, 3))
    ys, final = model.run({"x": xs})
    want, h, g = birnn(p, xs, np.zeros((3, 4)), np.zeros((3, 4)))
    np.testing.assert_allclose(ys["y"], want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(final["h"], h, rtol=0, atol=1e-12)  # after the last step
    np.testing.assert_allclose(final["g"], g, rtol=0, atol=1e-12)  # at the first step
    assert set(model.state) == {"h", "g"}


def test_given_backward_state_is_the_value_after_the_last_step() -> None:
    """State passed to run: forward state before step 0, backward state after step T−1;
    one unbatched sequence gives unbatched outputs."""
    p = ref.random_params(BIRNN_SHAPES, seed=3)
    model = Model.from_equations(BIRNN, p, dtype="float64")
    rng = np.random.default_rng(4)
    xs, h0, g0 = rng.normal(size=(5, 3)), rng.normal(size=4), rng.normal(size=4)
    ys, final = model.run({"x": xs}, {"h": h0, "g": g0})
    want, h, g = birnn(p, xs[:, None], h0[None], g0[None])
    np.testing.assert_allclose(ys["y"], want[:, 0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(final["g"], g[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(final["h"], h[0], rtol=0, atol=1e-12)


def test_reverse_lstm_is_the_lstm_over_the_reversed_sequence() -> None:
    """The LSTM template with ₜ₋₁ written ₜ₊₁ is the same cell run from the last step: its
    outputs are the forward LSTM's over the reversed input, reversed."""
    text = (TEMPLATES / "lstm.eqn").read_text(encoding="utf-8").replace("ₜ₋₁", "ₜ₊₁")
    p = ref.random_params(ref.lstm_shapes(5, 4), seed=5)
    model = Model.from_equations(text, p, dtype="float64")
    xs = np.random.default_rng(6).normal(size=(6, 2, 4))
    ys, final = model.run({"x": xs})
    want, h, c = ref.lstm(p, xs[::-1], np.zeros((2, 5)), np.zeros((2, 5)))
    np.testing.assert_allclose(ys["y"], want[::-1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(final["h"], h, rtol=0, atol=1e-12)
    np.testing.assert_allclose(final["c"], c, rtol=0, atol=1e-12)
    assert "back (each step, from the last to the first)" in model.listing()
    assert "loop (each step): 0 instructions" in model.listing()


def test_deeper_lead_and_forward_reading_a_later_backward_step() -> None:
    """``gₜ₊₂`` keeps two later steps (state ``g`` and ``g@t+2``); a forward equation may read
    a backward value at ₜ and a backward state at a later step."""
    text = """
    xₜ ∈ ℝ^2
    gₜ, hₜ ∈ ℝ^3
    gₜ = tanh(V xₜ + R gₜ₊₂)
    hₜ = tanh(W xₜ + U hₜ₋₁ + S gₜ₊₁ + gₜ)
    yₜ = hₜ
    """
    shapes = {"V": (3, 2), "R": (3, 3), "W": (3, 2), "U": (3, 3), "S": (3, 3)}
    p = ref.random_params(shapes, seed=7)
    model = Model.from_equations(text, p, dtype="float64")
    assert set(model.state) == {"g", "g@t+2", "h"}
    rng = np.random.default_rng(8)
    steps, batch = 5, 2
    xs = rng.normal(size=(steps, batch, 2))
    init = {k: rng.normal(size=(batch, 3)) for k in model.state}
    ys, final = model.run({"x": xs}, init)
    g = {steps: init["g"], steps + 1: init["g@t+2"]}  # after the last step
    for t in reversed(range(steps)):
        g[t] = np.tanh(xs[t] @ p["V"].T + g[t + 2] @ p["R"].T)
    h = init["h"]
    for t in range(steps):
        h = np.tanh(xs[t] @ p["W"].T + h @ p["U"].T + g[t + 1] @ p["S"].T + g[t])
        np.testing.assert_allclose(ys["y"][t], h, rtol=0, atol=1e-12)
    np.testing.assert_allclose(final["g"], g[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(final["g@t+2"], g[1], rtol=0, atol=1e-12)
    short, short_final = model.run({"x": xs[:1]}, init)  # fewer steps than the lead
    np.testing.assert_allclose(short_final["g@t+2"], init["g"], rtol=0, atol=0)


def test_read_out_of_the_backward_pass_runs_after_it() -> None:
    """A backward-only model: its read-out is not part of the recurrence, so it moves out of
    the per-step pass (``post``), reading the backward values kept for every step."""
    text = (TEMPLATES / "rnn.eqn").read_text(encoding="utf-8").replace("ₜ₋₁", "ₜ₊₁")
    p = ref.random_params({"W_h": (5, 4), "U_h": (5, 5), "b_h": (5,), "W_y": (4, 5),
                           "b_y": (4,)}, seed=9)
    model = Model.from_equations(text, p, dtype="float64")
    assert model.program.post and not model.program.loop
    xs = np.random.default_rng(10).normal(size=(4, 3, 4))
    ys, final = model.run({"x": xs})
    want, h = ref.rnn(p, xs[::-1], np.zeros((3, 5)))
    np.testing.assert_allclose(ys["y"], want[::-1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(final["h"], h, rtol=0, atol=1e-12)


def test_one_step_at_a_time_is_refused() -> None:
    """The output at step 0 needs the last input: step, generation and scoring refuse the
    model, naming the backward state and what to use instead."""
    chars = {"codecs": {"x": {"id": "char", "vocab": list("abc")},
                        "y": {"id": "sample", "vocab": list("abc")}}}
    p = ref.random_params(BIRNN_SHAPES | {"A": (3, 8)})
    model = Model.from_equations(BIRNN, p, metadata=chars)
    with pytest.raises(FeedError, match="'g' is backward state .*Model.run"):
        model.step({"x": np.zeros(3, np.float32)})
    with pytest.raises(FeedError, match="'g' is backward state"):
        model.step_stage(2)
    with pytest.raises(FeedError, match="'g' is backward state"):
        next(iter(model.generate("ab", 3)))
    with pytest.raises(FeedError, match="'g' is backward state: the model reads later"):
        model.score("abc")


def test_program_data_round_trip_and_checks() -> None:
    """The backward stage and its state survive the compile cache's plain data; a program
    whose backward state is malformed is refused."""
    model = Model.from_equations(BIRNN, ref.random_params(BIRNN_SHAPES), dtype="float64")
    data = to_data(model.program)
    again = from_data(data)
    assert again.back == model.program.back and again.back_in == model.program.back_in
    assert again.back_out == model.program.back_out and again.listing() == model.listing()
    bad = dict(data, back_in=[[n, lead + 1, i] for n, lead, i in data["back_in"]])
    with pytest.raises(ProgramDataError, match="malformed backward state 'g'"):
        from_data(bad)
    bad = dict(data, back_out=[])
    with pytest.raises(ProgramDataError, match="malformed backward state 'g'"):
        from_data(bad)
    into_loop = dict(data, slots=[[n, k, shape, "loop" if n == "g@t+1" else st]
                                  for n, k, shape, st in data["slots"]])
    with pytest.raises(ProgramDataError, match="instruction in the wrong stage"):
        from_data(into_loop)
    with pytest.raises(ProgramDataError, match="a time pass that is not back2"):
        from_data(dict(data, passes=[["loop", []]]))
    clash = dict(data, back_in=[["h", 1, i] for _, _, i in data["back_in"]],
                 back_out=[["h", i] for _, i in data["back_out"]])
    with pytest.raises(ProgramDataError, match="state in both directions"):
        from_data(clash)


def test_forward_programs_have_no_backward_stage() -> None:
    """A text without later steps compiles and lists exactly as before."""
    text = (TEMPLATES / "lstm.eqn").read_text(encoding="utf-8")
    model = Model.from_equations(text, ref.random_params(ref.lstm_shapes(5, 4)))
    assert not model.program.back and not model.program.back_in
    assert "back (" not in model.listing()


def test_nnre_run_gives_a_bidirectional_vector_its_outputs() -> None:
    """``nnre run --input`` on a sequence runs both passes: the conformance vector's outputs,
    computed by the generator's own loops."""
    import json
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    vectors = root / "formats" / "vectors" / "valid"
    case = json.loads((vectors / "birnn_f64.json").read_text(encoding="utf-8"))
    proc = subprocess.run([sys.executable, "-m", "nnre", "run", str(vectors / "birnn_f64.bundle"),
                           "--input", "-"], input=json.dumps(case["inputs"]).encode(),
                          capture_output=True, cwd=root, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 0, proc.stderr.decode()
    np.testing.assert_allclose(json.loads(proc.stdout)["y"], case["expected"]["y"], rtol=1e-12)


STACKED = """
xₜ ∈ ℝ^3
aₜ, bₜ, cₜ, dₜ ∈ ℝ^4
aₜ = tanh(W₁ xₜ + U₁ aₜ₋₁)
bₜ = tanh(V₁ xₜ + R₁ bₜ₊₁)
cₜ = tanh(W₂ [aₜ; bₜ] + U₂ cₜ₋₁)
dₜ = tanh(V₂ [aₜ; bₜ] + R₂ dₜ₊₁)
yₜ = [cₜ; dₜ]
"""


def test_stacked_bidirectional_layers_run_in_three_passes() -> None:
    """Layer 2's backward state reads layer 1's forward output, so it runs in a third pass
    (back2), after layer 1's forward one; against plain loops, layer by layer."""
    shapes = {"W_1": (4, 3), "U_1": (4, 4), "V_1": (4, 3), "R_1": (4, 4), "W_2": (4, 8),
              "U_2": (4, 4), "V_2": (4, 8), "R_2": (4, 4)}
    p = ref.random_params(shapes, seed=12)
    model = Model.from_equations(STACKED, p, dtype="float64")
    assert model.program.time_passes() == ["back", "loop", "back2"]
    xs = np.random.default_rng(13).normal(size=(5, 2, 3))

    def direction(inputs: np.ndarray, w: np.ndarray, u: np.ndarray, reverse: bool
                  ) -> np.ndarray:
        h, out = np.zeros((inputs.shape[1], 4)), np.zeros((*inputs.shape[:2], 4))
        for t in (reversed(range(len(inputs))) if reverse else range(len(inputs))):
            h = np.tanh(inputs[t] @ w.T + h @ u.T)
            out[t] = h
        return out

    one = np.concatenate([direction(xs, p["W_1"], p["U_1"], False),
                          direction(xs, p["V_1"], p["R_1"], True)], axis=-1)
    two = np.concatenate([direction(one, p["W_2"], p["U_2"], False),
                          direction(one, p["V_2"], p["R_2"], True)], axis=-1)
    ys, final = model.run({"x": xs})
    np.testing.assert_allclose(ys["y"], two, rtol=0, atol=1e-12)
    np.testing.assert_allclose(final["d"], two[0, :, 4:], rtol=0, atol=1e-12)
    np.testing.assert_allclose(final["c"], two[-1, :, :4], rtol=0, atol=1e-12)


def test_stacked_bidirectional_gradients() -> None:
    """BPTT through three passes (each differentiated in the reverse of its own order)
    against float64 central differences of Model.run."""
    from nndk.gradcheck import gradcheck, make_problem

    for stacked in (False, True):
        problem = make_problem(STACKED, steps=4, batch=2, contiguous=stacked, stacked=stacked)
        errors = gradcheck(problem)
        assert max(errors.values()) < 1e-6, errors
        assert "state d@t+1" in errors and "state c@t-1" in errors


@pytest.mark.parametrize("vector", ["birnn_f64", "birnn_ids_f64"])
def test_a_warm_load_runs_the_cached_program(vector: str) -> None:
    """The compile cache stores the time passes and the backward state as plain data: a
    second load (no SymPy, no lowering) gives the same outputs and final state as the
    first, for the vector reading and the tensor one."""
    import nnre

    bundle = Path(__file__).resolve().parent.parent / "formats" / "vectors" / "valid" / \
        f"{vector}.bundle"
    rng = np.random.default_rng(14)
    xs = rng.normal(size=(4, 2, 3)) if vector == "birnn_f64" else \
        rng.integers(0, 3, size=(4, 2, 1)).astype(np.float64)
    cold = nnre.load(bundle)
    warm = nnre.load(bundle)
    assert warm.program is not cold.program and warm.listing() == cold.listing()
    (y1, s1), (y2, s2) = cold.run({"x": xs}), warm.run({"x": xs})
    np.testing.assert_array_equal(y1["y"], y2["y"])
    for key in s1:
        np.testing.assert_array_equal(s1[key], s2[key])
