"""Backward state in texts read with tensor shapes (formats/equations.md §4, §6.1): the
tensor lowering places each value in its time pass as the vector compiler does, against
hand-written NumPy loops in float64, finite differences of BPTT and onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref

from nnre.equations import check
from nnre.errors import EquationError
from nnre.model import Model

#: ids (``∈ ℕ``) force the tensor reading; a layer norm of both directions at each step.
IDS = """
xₜ ∈ ℕ
E ∈ ℝ^(V×D)
hₜ, gₜ ∈ ℝ^H
yₜ ∈ ℝ^V
eₜ = E[xₜ]ᵀ
hₜ = tanh(W eₜ + U hₜ₋₁ + b)
gₜ = tanh(S eₜ + R gₜ₊₁ + c)
yₜ = softmax(A (γ ⊙ layer_norm([hₜ; gₜ])) + a)
"""
IDS_SHAPES = {"E": (7, 3), "W": (4, 3), "U": (4, 4), "b": (4,), "S": (4, 3), "R": (4, 4),
              "c": (4,), "γ": (8,), "A": (7, 8), "a": (7,)}


def layer_norm(z: np.ndarray) -> np.ndarray:
    return (z - z.mean(-1, keepdims=True)) / np.sqrt(z.var(-1, keepdims=True) + 1e-5)


def ids_reference(p: dict[str, np.ndarray], ids: np.ndarray, h: np.ndarray, g: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ids (T, B) → y (T, B, 7): forward h from step 0, backward g from step T−1."""
    es = p["E"][ids]
    hs, gs = [], [np.empty(0)] * len(ids)
    for e in es:
        h = np.tanh(e @ p["W"].T + h @ p["U"].T + p["b"])
        hs.append(h)
    for t in reversed(range(len(ids))):
        g = np.tanh(es[t] @ p["S"].T + g @ p["R"].T + p["c"])
        gs[t] = g
    z = p["γ"] * layer_norm(np.concatenate([np.stack(hs), np.stack(gs)], axis=-1))
    return ref.softmax(z @ p["A"].T + p["a"]), h, g


def test_the_texts_are_read_with_tensor_shapes() -> None:
    for text, dims in ((IDS, {"V": 7, "D": 3, "H": 4}), (BILSTM, {"H": 3}),
                       (STACKED, {"H": 3})):
        checked = check(text, dims)
        assert checked.tensors and checked.roles.back


@pytest.mark.parametrize("optimize", [True, False])
@pytest.mark.parametrize("steps", [1, 2, 6])
def test_ids_and_layer_norm_match_two_loops(optimize: bool, steps: int) -> None:
    p = ref.random_params(IDS_SHAPES, seed=1)
    model = Model.from_equations(IDS, p, dtype="float64", optimize=optimize)
    rng = np.random.default_rng(2)
    ids = rng.integers(0, 7, size=(steps, 3))
    h0, g0 = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    ys, final = model.run({"x": ids[..., None].astype(np.float64)}, {"h": h0, "g": g0})
    want, h, g = ids_reference(p, ids, h0, g0)
    np.testing.assert_allclose(ys["y"], want, rtol=0, atol=1e-10)
    np.testing.assert_allclose(final["h"], h, rtol=0, atol=1e-10)  # after the last step
    np.testing.assert_allclose(final["g"], g, rtol=0, atol=1e-10)  # at the first step
    assert model.program.back_out and model.program.time_passes() == ["back", "loop"]


#: A bidirectional LSTM over a per-example 2×3 matrix, its output the two directions side by
#: side, an H×2 matrix per step.
BILSTM = """
Xₜ ∈ ℝ^(2×3)
hₜ, cₜ, gₜ, dₜ ∈ ℝ^H
xₜ = flatten(Xₜ)
iₜ = σ(W_i xₜ + U_i hₜ₋₁ + b_i)
fₜ = σ(W_f xₜ + U_f hₜ₋₁ + b_f)
oₜ = σ(W_o xₜ + U_o hₜ₋₁ + b_o)
cₜ = fₜ ⊙ cₜ₋₁ + iₜ ⊙ tanh(W_c xₜ + U_c hₜ₋₁ + b_c)
hₜ = oₜ ⊙ tanh(cₜ)
jₜ = σ(V_i xₜ + R_i gₜ₊₁ + a_i)
kₜ = σ(V_f xₜ + R_f gₜ₊₁ + a_f)
pₜ = σ(V_o xₜ + R_o gₜ₊₁ + a_o)
dₜ = kₜ ⊙ dₜ₊₁ + jₜ ⊙ tanh(V_c xₜ + R_c gₜ₊₁ + a_c)
gₜ = pₜ ⊙ tanh(dₜ)
Yₜ = [hₜ, gₜ]
"""


def lstm_direction(p: dict[str, np.ndarray], xs: np.ndarray, h: np.ndarray, c: np.ndarray,
                   w: str, u: str, b: str, reverse: bool
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    out = np.zeros((*xs.shape[:2], h.shape[-1]))
    for t in (reversed(range(len(xs))) if reverse else range(len(xs))):
        x = xs[t]

        def gate(k: str, x: np.ndarray = x, h: np.ndarray = h) -> np.ndarray:
            return x @ p[f"{w}_{k}"].T + h @ p[f"{u}_{k}"].T + p[f"{b}_{k}"]

        i, f, o = ref.sigmoid(gate("i")), ref.sigmoid(gate("f")), ref.sigmoid(gate("o"))
        c = f * c + i * np.tanh(gate("c"))
        h = o * np.tanh(c)
        out[t] = h
    return out, h, c


def test_bidirectional_lstm_with_a_matrix_output() -> None:
    shapes = {f"{m}_{k}": (3, 6) for m in "WV" for k in "ifoc"}
    shapes |= {f"{m}_{k}": (3, 3) for m in "UR" for k in "ifoc"}
    shapes |= {f"{m}_{k}": (3,) for m in "ba" for k in "ifoc"}
    p = ref.random_params(shapes, seed=3)
    model = Model.from_equations(BILSTM, p, dtype="float64")
    rng = np.random.default_rng(4)
    xs = rng.normal(size=(5, 2, 2, 3))
    init = {k: rng.normal(size=(2, 3)) for k in ("h", "c", "g", "d")}
    ys, final = model.run({"X": xs}, init)
    flat = xs.reshape(5, 2, 6)
    fw, h, c = lstm_direction(p, flat, init["h"], init["c"], "W", "U", "b", False)
    bw, g, d = lstm_direction(p, flat, init["g"], init["d"], "V", "R", "a", True)
    np.testing.assert_allclose(ys["Y"], np.stack([fw, bw], axis=-1), rtol=0, atol=1e-10)
    for name, want in (("h", h), ("c", c), ("g", g), ("d", d)):
        np.testing.assert_allclose(final[name], want, rtol=0, atol=1e-10, err_msg=name)
    assert set(model.program.back_out) == {"g", "d"}


#: Two bidirectional layers joined with concat(…; axis=0): the second layer's backward
#: state reads the first layer's forward values, so it runs in a third pass (back2); it
#: reads two steps later (``g@t+2``).
STACKED = """
xₜ ∈ ℝ^(2×1)
aₜ, bₜ, cₜ, dₜ ∈ ℝ^H
aₜ = tanh(W₁ flatten(xₜ) + U₁ aₜ₋₁)
bₜ = tanh(V₁ flatten(xₜ) + R₁ bₜ₊₁)
zₜ = concat(aₜ, bₜ; axis=0)
cₜ = tanh(W₂ zₜ + U₂ cₜ₋₁)
dₜ = tanh(V₂ zₜ + R₂ dₜ₊₂)
yₜ = Σ(concat(cₜ, dₜ; axis=1); axis=1)
"""
STACKED_SHAPES = {"W_1": (3, 2), "U_1": (3, 3), "V_1": (3, 2), "R_1": (3, 3),
                  "W_2": (3, 6), "U_2": (3, 3), "V_2": (3, 6), "R_2": (3, 3)}


def test_stacked_bidirectional_layers_run_in_three_passes() -> None:
    p = ref.random_params(STACKED_SHAPES, seed=5)
    model = Model.from_equations(STACKED, p, dtype="float64")
    assert model.program.time_passes() == ["back", "loop", "back2"]
    assert set(model.state) == {"a", "b", "c", "d", "d@t+2"}
    rng = np.random.default_rng(6)
    steps = 5
    xs = rng.normal(size=(steps, 2, 2))  # a vector (2×1) is fed as its entries
    init = {k: rng.normal(size=(2, 3)) for k in model.state}
    ys, final = model.run({"x": xs}, init)
    flat = xs
    a, b = init["a"], {steps: init["b"]}
    aa = []
    for t in range(steps):
        a = np.tanh(flat[t] @ p["W_1"].T + a @ p["U_1"].T)
        aa.append(a)
    for t in reversed(range(steps)):
        b[t] = np.tanh(flat[t] @ p["V_1"].T + b[t + 1] @ p["R_1"].T)
    z = [np.concatenate([aa[t], b[t]], axis=-1) for t in range(steps)]
    c, cc = init["c"], []
    for t in range(steps):
        c = np.tanh(z[t] @ p["W_2"].T + c @ p["U_2"].T)
        cc.append(c)
    d = {steps: init["d"], steps + 1: init["d@t+2"]}
    for t in reversed(range(steps)):
        d[t] = np.tanh(z[t] @ p["V_2"].T + d[t + 2] @ p["R_2"].T)
    want = np.stack([cc[t] + d[t] for t in range(steps)])
    np.testing.assert_allclose(ys["y"], want, rtol=0, atol=1e-10)
    for name, value in (("a", a), ("b", b[0]), ("c", c), ("d", d[0]), ("d@t+2", d[1])):
        np.testing.assert_allclose(final[name], value, rtol=0, atol=1e-10, err_msg=name)


@pytest.mark.parametrize("text, dims", [(IDS, {"V": 5, "D": 3, "H": 3}),
                                        (BILSTM, {"H": 3}), (STACKED, {"H": 3})],
                         ids=["ids", "bilstm", "stacked"])
@pytest.mark.parametrize("stacked", [False, True])
def test_bptt_matches_finite_differences(text: str, dims: dict[str, int], stacked: bool
                                         ) -> None:
    """BPTT through every pass, each differentiated from its last step back, against
    float64 central differences of Model.run (nndk.gradcheck)."""
    from nndk.gradcheck import gradcheck, make_problem

    problem = make_problem(text, dims, steps=4, batch=2, contiguous=stacked,
                           stacked=stacked)
    errors = gradcheck(problem)
    assert max(errors.values()) < 1e-6, errors
    assert any(k.startswith("state") and "@t+" in k for k in errors), errors
    assert any(k.startswith("param R") for k in errors), errors


def test_backward_state_beside_a_history_or_the_step_index_is_refused() -> None:
    """A history and the step index count the steps of one forward loop: a text with either
    and backward state is refused at the later step it reads, by name."""
    history = """
    xₜ ∈ ℝ^2
    gₜ ∈ ℝ^2
    Kₜ ∈ ℝ^(4×2)
    gₜ = tanh(xₜ + gₜ₊₁)
    Kₜ = [Kₜ₋₁; gₜᵀ]
    yₜ = Σ(Kₜ; axis=0)ᵀ
    """
    with pytest.raises(EquationError, match=r"'gₜ₊₁' makes 'g' backward state, which a text "
                       r"with the history 'K' .* cannot have yet") as err:
        check(history)
    assert (err.value.line, err.value.column) == (5, 20)
    step = "xₜ ∈ ℕ\nP ∈ ℝ^(4×2)\ngₜ = tanh(P[t]ᵀ + gₜ₊₁)\nyₜ = gₜ"
    with pytest.raises(EquationError, match="with the step index 't'"):
        check(step)


def test_the_sequence_form_refuses_backward_state() -> None:
    from nnre.lowering import lower

    checked = check(IDS, {"V": 7, "D": 3, "H": 4})
    with pytest.raises(EquationError, match="'g' is read at a later step .*no form that runs "
                       "all steps at once"):
        lower(checked.module, checked.roles, checked.shapes, "float64", steps=4)  # type: ignore


@pytest.mark.parametrize("which", ["ids", "bilstm", "stacked"])
def test_sequence_export_runs_in_onnxruntime(which: str) -> None:
    """``--sequence``: one Scan per time pass (a backward one scanning in reverse), run by
    onnxruntime from a given state, against Model.run: outputs and every final state."""
    pytest.importorskip("onnxruntime")
    from onnx_helpers import ort_runner

    from nndk.onnx.common import OnnxError
    from nndk.onnx.export import export_model

    text, shapes = {"ids": (IDS, IDS_SHAPES), "stacked": (STACKED, STACKED_SHAPES),
                    "bilstm": (BILSTM, None)}[which]
    if shapes is None:
        shapes = {f"{m}_{k}": (3, 6) for m in "WV" for k in "ifoc"}
        shapes |= {f"{m}_{k}": (3, 3) for m in "UR" for k in "ifoc"}
        shapes |= {f"{m}_{k}": (3,) for m in "ba" for k in "ifoc"}
    model = Model.from_equations(text, ref.random_params(shapes, seed=7), dtype="float64")
    with pytest.raises(OnnxError, match="backward state .*--sequence"):
        export_model(model)
    proto = export_model(model, sequence=True)
    assert sum(n.op_type == "Scan" for n in proto.graph.node) == \
        len(model.program.time_passes())
    rng = np.random.default_rng(8)
    xs = {n: rng.normal(size=(5, 2, *s.shape)) for n, s in model.inputs.items()}
    if which == "ids":
        xs["x"] = rng.integers(0, 7, size=(5, 2, 1)).astype(np.float64)
    init = {n: rng.normal(size=(2, *s.shape)) for n, s in model.state.items()}
    ys, final = model.run(xs, init)
    got = ort_runner(proto)(xs | {f"{n}_prev": v for n, v in init.items()})
    for name, value in ys.items():
        np.testing.assert_allclose(got[name], value, rtol=0, atol=1e-10, err_msg=name)
    for name, value in final.items():
        np.testing.assert_allclose(got[f"{name}_next"], value, rtol=0, atol=1e-10,
                                   err_msg=name)


SUFFIX = """
xₜ ∈ ℝ^2
yₜ ∈ ℝ^2
hₜ, gₜ ∈ ℝ^H
hₜ = tanh(W xₜ + U hₜ₋₁ + b)
gₜ = tanh(V xₜ + R gₜ₊₁ + c)
yₜ = softmax(A flatten([hₜ, gₜ]) + a)
"""


def test_nndk_train_learns_through_the_backward_pass(tmp_path) -> None:
    """``nndk train`` on the suffix-sign task (the class at step t is the sign of the sum of
    the inputs from t to the end, which only backward state can know), with ``[hₜ, gₜ]``
    putting the text in the tensor reading: the packed model's held-out accuracy, computed
    here by Model.run, and the validation loss falls far below chance."""
    import re

    from click.testing import CliRunner

    import nnre
    from nndk.cli import cli

    rng = np.random.default_rng(0)
    xs = rng.normal(size=(320, 6, 2)).astype(np.float32)
    target = (np.cumsum(xs[:, ::-1, 0], axis=1)[:, ::-1] > 0).astype(np.int64)
    np.savez(tmp_path / "suffix.npz", x=xs, target=target)
    (tmp_path / "bi.eqn").write_text(SUFFIX, encoding="utf-8")
    assert check(SUFFIX, {"H": 8}).tensors
    runner = CliRunner()
    result = runner.invoke(cli, ["train", str(tmp_path / "suffix.npz"), "--model",
                                 str(tmp_path / "bi.eqn"), "--set", "H=8", "--steps", "120",
                                 "--batch-size", "32", "--lr", "0.02", "--eval-every", "10",
                                 "--val-frac", "0.2", "--seed", "1", "--checkpoint-dir",
                                 str(tmp_path / "ck")])
    assert result.exit_code == 0, result.output
    losses = [float(v) for v in re.findall(r"val(?:idation)?(?: loss)?[ =:]+([0-9.]+)",
                                           result.output)]
    # chance is ln 2 ≈ 0.69 nats
    assert len(losses) == 12 and losses[-1] < min(0.5 * losses[0], 0.25), result.output
    packed = runner.invoke(cli, ["pack", str(tmp_path / "ck"), "-o", str(tmp_path / "bi.bundle"),
                                 "--name", "bi", "--version", "0.1.0"])
    assert packed.exit_code == 0, packed.output
    model = nnre.load(tmp_path / "bi.bundle")
    assert model.program.back_out
    ys, _ = model.run({"x": xs[-64:].swapaxes(0, 1)})
    accuracy = float(np.mean(ys["y"].argmax(-1) == target[-64:].T))
    assert accuracy > 0.9, accuracy


def test_a_matrix_as_backward_state() -> None:
    """``Gₜ ∈ ℝ^(2×3)`` read a step later: its rows mixed by W from the last step back."""
    from nndk.gradcheck import gradcheck, make_problem

    text = "Xₜ ∈ ℝ^(2×3)\nGₜ ∈ ℝ^(2×3)\nGₜ = tanh(Xₜ + W Gₜ₊₁)\n"
    rng = np.random.default_rng(9)
    w = rng.normal(size=(2, 2))
    model = Model.from_equations(text, {"W": w}, dtype="float64")
    xs = rng.normal(size=(4, 2, 2, 3))
    ys, final = model.run({"X": xs})
    g, want = np.zeros((2, 2, 3)), np.zeros_like(xs)
    for t in reversed(range(4)):
        g = np.tanh(xs[t] + w @ g)
        want[t] = g
    np.testing.assert_allclose(ys["G"], want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(final["G"], want[0], rtol=0, atol=1e-12)
    assert max(gradcheck(make_problem(text, steps=3)).values()) < 1e-6
