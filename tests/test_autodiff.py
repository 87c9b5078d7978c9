"""Backpropagation through time against float64 central differences of Model.run, every op."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from nndk import unrolled
from nndk.gradcheck import gradcheck, make_problem
from nnre.ops import OPS

TEMPLATES = Path(__file__).resolve().parent.parent / "nndk" / "templates"
DIMS = {"H": 4, "V": 3, "D": 3, "K": 2}

# Each case exercises some ops; together they cover every op of the table (checked below).
CASES = {
    "elementwise": """
        xₜ ∈ ℝ^3
        aₜ = exp(xₜ) ⊙ tanh(W xₜ) − relu(xₜ) / (2 + abs(xₜ))
        bₜ = sqrt(exp(xₜ) + 1) + log(1 + exp(xₜ)) ⊙ σ(xₜ)
        yₜ = aₜ ⊙ bₜ + xₜ² − (xₜ^3) / 4 + -xₜ
        qₜ = -tanh(xₜ) + softplus(W xₜ) + leaky_relu(W xₜ; slope=0.3)
        rₜ = clip(xₜ; min=-0.4, max=0.9) ⊙ xₜ + layer_norm(W xₜ) + rms_norm(xₜ; eps=0.5)
        nₜ = xₜ / norm(xₜ) + (mean(xₜ) − max(W xₜ)) ⊙ xₜ + Σ(xₜ) ⊙ min(xₜ)
        mₜ = max(xₜ, W xₜ) − min(xₜ, 0.2) + where(max(xₜ, 0), W xₜ, xₜ ⊙ xₜ)
        kₜ = (xₜ > 0.1) ⊙ xₜ + (xₜ < W xₜ) + (xₜ ≤ 0) ⊙ (xₜ ≥ -1)
        sₜ = (W xₜ)[0:2] ⊙ xₜ[1:3] + W[0:2] xₜ + xₜ[2] ⊙ W[1:3] xₜ
        """,
    "activations": """
        xₜ ∈ ℝ^3
        uₜ = W xₜ + b
        yₜ = sin(uₜ) ⊙ cos(xₜ) + erf(uₜ)
        gₜ = gelu(uₜ) + gelu_tanh(xₜ) ⊙ uₜ
        sₜ = silu(uₜ) − swish(xₜ) ⊙ mish(uₜ) + elu(uₜ) ⊙ elu(-xₜ)
        rₜ = hardsigmoid(4 ⊙ uₜ) + hardswish(4 ⊙ xₜ)
        """,
    "recurrent_vectors": """
        xₜ ∈ ℝ^3
        hₜ ∈ ℝ^4
        zₜ = [xₜ; hₜ₋₁]
        hₜ = dropout(tanh(W zₜ + b) ⊙ 0.5 + 0.5 ⊙ hₜ₋₂)
        yₜ ∈ ℝ^3
        c ∈ ℝ^3
        pₜ ∈ ℝ^5
        dₜ = hₜᵀ · hₜ₋₁
        yₜ = log_softmax(V hₜ + c · dₜ)
        pₜ = softmax((hₜᵀ · M)ᵀ)
        """,
    "constants": """
        input x
        x ∈ ℝ^3
        α ∈ ℝ
        A ∈ ℝ^(4×2)
        B ∈ ℝ^(3×2)
        b ∈ ℝ^3
        y = softmax((A·Bᵀ) x + α ⊙ (C x) + [b; 1])
        """,
    "tensors": """
        input X
        X ∈ ℝ^(4×3)
        W ∈ ℝ^(5×4)
        B ∈ ℝ^(5×3)
        V ∈ ℝ^(2×15)
        b ∈ ℝ^2
        Y = tanh(W X + B) ⊙ 2 − X[0:1] ⊙ 0.5 + (Xᵀ X)[1] ⊙ 0.1
        s = Σ Y
        z = flatten(dropout(Y / s))
        y = softmax(V z + b)
        N = layer_norm(Y; eps=0.01) ⊙ rms_norm(Y)
        Q ∈ ℝ^(4×12)
        Q = reshape([Xᵀ, Xᵀ ⊙ 1.5; Xᵀ ⊙ W[0:3], Xᵀ] ⊙ [1; 2; 3; 4; 5; 6])
        """,
    "axes": """
        input X
        X ∈ ℝ^(2×3×4)
        W ∈ ℝ^(4×4)
        U = X W
        A = softmax(U; axis=0) ⊙ log_softmax(U; axis=1) + Σ(U; axis=2) ⊙ mean(U; axis=-3)
        y = max(A; axis=1) ⊙ min(A; axis=0) + norm(A; axis=2) + Σ(W; axis=0) ⊙ 0.1
        """,
    "recurrent_tensors": """
        xₜ ∈ ℝ^(2×3)
        hₜ ∈ ℝ^(4×3)
        W ∈ ℝ^(4×2)
        U ∈ ℝ^(4×4)
        hₜ = tanh(W xₜ + U hₜ₋₁) ⊙ (hₜ₋₁ᵀ hₜ₋₁)[0:1]
        yₜ = softmax(flatten(hₜᵀ)) + Σ([hₜ; xₜ][5]) ⊙ 0.1
        """,
    "ids": """
        xₜ ∈ ℕ
        Xₜ ∈ ℕ^3
        hₜ ∈ ℝ^4
        yₜ ∈ ℝ^3
        E ∈ ℝ^(5×4)
        hₜ = tanh(E[xₜ]ᵀ + U hₜ₋₁) + Σ(E[Xₜ] ⊙ P)
        yₜ = softmax(V hₜ)
        """,
    "attention": """
        xₜ ∈ ℕ
        yₜ ∈ ℝ^3
        P ∈ ℝ^(D×4)
        E ∈ ℝ^(5×4)
        eₜ = (E[xₜ] + P[t])ᵀ
        kₜ, vₜ ∈ ℝ^4
        k̃ₜ, ṽₜ, q̃ₜ ∈ ℝ^(2×1×2)
        k̃ₜ = reshape(W_k eₜ)
        ṽₜ = reshape(W_v eₜ)
        q̃ₜ = reshape(W_q eₜ)
        Kₜ, Vₜ ∈ ℝ^(2×D×2)
        Kₜ = concat(Kₜ₋₁, k̃ₜ; axis=1)
        Vₜ = concat(Vₜ₋₁, ṽₜ; axis=1)
        Sₜ = [Sₜ₋₁; eₜᵀ]
        Sₜ ∈ ℝ^(D×4)
        oₜ ∈ ℝ^4
        oₜ = reshape(softmax(q̃ₜ Kₜᵀ / √2) Vₜ)
        mₜ = Sₜ eₜ
        yₜ = softmax(U (eₜ + oₜ) + Σ(mₜ; axis=0) ⊙ 0.1 + max(log_softmax(mₜ); axis=0))
        """,
    "images": """
        input x
        x ∈ ℝ^(2×6×5)
        K ∈ ℝ^(4×1×3×3)
        c ∈ ℝ^4
        G ∈ ℝ^(3×2×2)
        a = conv(K, x, c; pad=1, groups=2)
        p = maxpool(tanh(a); size=2)
        q = avgpool(a; size=3, stride=2, pad=1)
        r ∈ ℝ^(2×30)
        r = reshape(x[1:2]ᵀ ⊙ x[0:1]ᵀ ⊙ 0.5 + xᵀ)
        s = conv(G, r; stride=2, dilation=2)
        P ∈ ℝ^(6×5×2)
        P = permute(concat(x[0:1], x[1:2] ⊙ 2; axis=0) ⊙ x)
        M = concat(x, x ⊙ x; axis=1) ⊙ 0.5
        y = softmax(V flatten(p) + U flatten(q) + flatten(s) ⊙ 0.1 + R flatten(P))
        """,
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("optimize", [False, True])
def test_gradients_match_central_differences(name: str, optimize: bool) -> None:
    problem = make_problem(CASES[name], DIMS, steps=3, batch=2, optimize=optimize)
    errors = gradcheck(problem)
    assert errors and max(errors.values()) < 1e-6, errors


@pytest.mark.parametrize("contiguous", [False, True])  # True: how the trainer compiles
@pytest.mark.parametrize("template", ["lstm", "gru", "rnn", "mlp", "lstm2", "gru2", "mlp_ln"])
def test_template_gradients(template: str, contiguous: bool) -> None:
    text = (TEMPLATES / f"{template}.eqn").read_text(encoding="utf-8")
    errors = gradcheck(make_problem(text, DIMS, steps=4, batch=2, contiguous=contiguous))
    assert max(errors.values()) < 1e-6, errors
    assert any(k.startswith("param ") for k in errors)


@pytest.mark.parametrize("template", ["lstm", "gru", "rnn", "mlp", "lstm2", "gru2", "mlp_ln"])
def test_template_gradients_in_the_trainer_layout(template: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Parameters stored inside their stacks, and every per-step product in transposed
    form (normally only for large weights): the same gradients as finite differences."""
    monkeypatch.setattr(unrolled, "TRANSPOSED_MIN_WEIGHT", 0)
    text = (TEMPLATES / f"{template}.eqn").read_text(encoding="utf-8")
    problem = make_problem(text, DIMS, steps=4, batch=2, contiguous=True, stacked=True)
    if template in ("lstm", "gru"):
        assert problem.placed, "the stacked gate weights should hold the parameters"
        stack = next(iter(problem.placed.values()))
        assert sum(np.shares_memory(stack, p) for p in problem.params.values()) >= 3
    errors = gradcheck(problem)
    assert max(errors.values()) < 1e-6, errors


@pytest.mark.parametrize("name", ["lstm", "gru", *sorted(CASES)])
def test_a_second_pass_gives_the_same_gradients(name: str) -> None:
    """The tape writes most buffers instead of zero-filling them: nothing may carry over."""
    text = CASES.get(name) or (TEMPLATES / f"{name}.eqn").read_text(encoding="utf-8")
    problem = make_problem(text, DIMS, steps=3, batch=2)
    back = problem.gradients()
    first = {k: np.array(v) for k, v in back.param_grads().items()}
    back.backward(problem.seeds())
    for k, v in back.param_grads().items():
        np.testing.assert_array_equal(v, first[k], err_msg=k)


def test_every_op_is_covered_by_the_cases() -> None:
    used = set()
    for text in CASES.values():
        for optimize in (False, True):
            prog = make_problem(text, DIMS, optimize=optimize).prog
            for stage in ("prologue", "pre", "loop", "post"):
                used.update(ins.op for ins in prog.stage_list(stage))
    assert used == set(OPS), sorted(set(OPS) - used)


#: Ops whose arguments are not (rows, n) vectors: their rows in tests/test_ops.py's CALLS.
SHAPED = frozenset({"conv", "conv_bias", "maxpool", "avgpool", "gather", "append"})


@pytest.mark.parametrize("op", sorted(op for op, d in OPS.items() if d.vjp is not None))
def test_rules_read_only_the_values_they_declare(op: str) -> None:
    """Values a rule does not declare (``Op.reads``) may be gone by backward time:
    poisoned with NaN, they must not reach the contribution."""
    rule = OPS[op].vjp
    assert rule is not None
    attrs = {"exponent": 3.0, "axis": -1, "slope": 0.2, "min": -1.0, "max": 1.0}
    nargs = 2 if op in ("add", "sub", "mul", "div", "matmul", "rowdot", "concat") else 1
    shape = (2, 3)
    if op in SHAPED:
        from test_ops import CALLS, _forward

        shapes, attrs = CALLS[op]
        nargs = len(shapes)
    for i in range(nargs):
        args = [np.full(shape if not (op == "matmul" and k == 1) else (3, 3), 0.5)
                for k in range(nargs)]
        out = np.full(shape if op != "rowdot" else (2, 1), 0.25)
        if op in SHAPED:
            args = [np.full(s, 0.5) for s in shapes]
            out = np.full(_forward(OPS[op], args, attrs).shape, 0.25)
        g = np.ones_like(out)
        if "args" not in OPS[op].reads:
            args = [np.full_like(a, np.nan) for a in args]
        if "out" not in OPS[op].reads:
            out = np.full_like(out, np.nan)
        result = rule(g, out, args, attrs, i)
        assert result is not None and np.all(np.isfinite(result)), (op, i)



def test_gradcheck_command_reports_every_gradient_and_fails_past_the_tolerance() -> None:
    from click.testing import CliRunner

    from nndk.cli import cli

    args = ["gradcheck", "rnn", "--set", "H=4", "--set", "V=3"]
    ok = CliRunner().invoke(cli, args)
    assert ok.exit_code == 0, ok.output
    assert "param U_h" in ok.output and "state h@t-1" in ok.output
    assert "rnn.eqn: 7 gradients match" in ok.output
    strict = CliRunner().invoke(cli, [*args, "--tolerance", "0"])
    assert strict.exit_code == 1 and "gradient check failed" in strict.output


def test_a_program_that_is_not_the_equations_fails_the_check() -> None:
    """The finite differences run ``Model.run`` compiled from the equations, so a compiled
    program that differs from them (here W_f and W_i bound to each other's slots) fails, even
    though its backward pass is consistent with its own forward pass."""
    text = (TEMPLATES / "lstm.eqn").read_text(encoding="utf-8")
    problem = make_problem(text, DIMS, steps=3, batch=2)
    params = dict(problem.prog.params)
    params["W_f"], params["W_i"] = params["W_i"], params["W_f"]
    problem.prog = dataclasses.replace(problem.prog, params=params)
    errors = gradcheck(problem)
    assert errors["param W_f"] > 1e-2 and errors["param W_i"] > 1e-2, errors


@pytest.mark.parametrize("optimize", [False, True])
def test_products_of_matrices_per_step_are_never_transposed(
        optimize: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The transposed per-step form ``(Wᵀ xᵀ)ᵀ`` is for rows of vectors; given a batch of
    matrices (``hₜ₋₁ W`` with h a matrix per example) its ``.T`` reversed every axis: an
    error, or wrong values when the sizes happened to fit."""
    monkeypatch.setattr(unrolled, "TRANSPOSED_MIN_WEIGHT", 0)
    for text in ("xₜ ∈ ℝ^(3×4)\nhₜ ∈ ℝ^(3×4)\nW ∈ ℝ^(4×4)\nhₜ = tanh(hₜ₋₁ W + xₜ)",
                 "xₜ ∈ ℝ^(4×4)\nhₜ ∈ ℝ^(4×4)\nW ∈ ℝ^(4×4)\nhₜ = tanh(hₜ₋₁ W + xₜ)"):
        problem = make_problem(text, steps=3, batch=4, optimize=optimize, contiguous=True)
        errors = gradcheck(problem)
        assert max(errors.values()) < 1e-6, errors


@pytest.mark.parametrize("text", [
    "input X\nX ∈ ℝ^(3×4)\nW ∈ ℝ^(3×2)\nY = Xᵀ W",
    "input X\nX ∈ ℝ^(4×3)\nW ∈ ℝ^(3×2)\nY = X[0:2] W",
    "xₜ ∈ ℝ^(3×2)\nhₜ ∈ ℝ^(3×2)\nW ∈ ℝ^(3×2)\nhₜ = tanh(xₜ + hₜ₋₁ ⊙ 0.5)\nyₜ = hₜᵀ W",
])
def test_a_reused_tape_reads_the_current_pass(text: str) -> None:
    """The trainer binds Unrolled and Backward once and reruns them on each batch. A weight's
    gradient Σ aᵀ g with a a strided view (a transpose, a slice of a matrix) reshaped a to
    rows at bind time: a copy, so every later batch reused the first batch's values."""
    from nndk.autodiff import Backward, differentiable_slots, transient_slots
    from nndk.unrolled import Unrolled
    from nnre.vm import bind_prologue

    problem = make_problem(text, steps=3, batch=2)
    consts = bind_prologue(problem.prog, problem.params)[0]

    def bound() -> tuple[Unrolled, Backward]:
        run = Unrolled(problem.prog, consts, 3, 2, transient_slots(problem.prog))
        return run, Backward(run, differentiable_slots(problem.prog, inputs=False))

    rng = np.random.default_rng(1)
    second = {k: rng.normal(size=v.shape) for k, v in problem.feeds.items()}
    run, back = bound()
    for feeds in (problem.feeds, second):
        run.forward(dict(feeds), dict(problem.init))
        back.backward(problem.seeds())
    fresh_run, fresh = bound()
    fresh_run.forward(dict(second), dict(problem.init))
    fresh.backward(problem.seeds())
    i = problem.prog.params["W"]
    np.testing.assert_allclose(back.full[i], fresh.full[i], rtol=1e-12)


@pytest.mark.parametrize("text", [
    "input x\nx ∈ ℝ^3\ny = tanh(x)\nz = y[0:2]\noutput z, y",
    "input x\nx ∈ ℝ^(2×3)\ny = maxpool(x; size=3)\nz = flatten(y)\noutput y, z",
])
def test_seeds_on_outputs_that_share_a_buffer(text: str) -> None:
    """Seeds were claimed in slot order (the first one written, the others added) but put
    in the gradient buffers in the outputs' order: with z a view of y listed first, y's
    seed overwrote z's."""
    errors = gradcheck(make_problem(text, steps=3, batch=2))
    assert max(errors.values()) < 1e-6, errors


@pytest.mark.parametrize("text", ["input x\nx ∈ ℝ^3\ny = tanh(x)\nz = y\noutput y, z",
                                  "input x\nx ∈ ℝ^(2×3)\ny = tanh(x)\nz = y\noutput y, z"])
def test_outputs_that_are_one_value_both_seed_it(text: str) -> None:
    """y and z = y are one slot; the check's loss reads both, but its seeds kept only one."""
    errors = gradcheck(make_problem(text, steps=3, batch=2))
    assert max(errors.values()) < 1e-6, errors


@pytest.mark.parametrize("text", [
    "input x\nx ∈ ℝ^3\nc ∈ ℝ^3\ny = tanh(c)\nz = x\noutput y, z",
    "input x\nx ∈ ℝ^(2×3)\nC ∈ ℝ^(2×3)\ny = tanh(C)\nz = x\nw = C\noutput y, z, w",
])
def test_outputs_that_are_constants_are_checked(text: str) -> None:
    """A constant output is read on every row: its seed is the sum over rows (the check
    crashed copying (rows, n) seeds into the constant's (n, 1) gradient)."""
    errors = gradcheck(make_problem(text, steps=2, batch=2))
    assert max(errors.values()) < 1e-6 and any(k.startswith("param") for k in errors), errors
