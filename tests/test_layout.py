"""Batch-last buffers (nnre/layout.py): which values the VM lays out rows last, and that a
model gives the same results with them as the definitions (direct loops from test_conv)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from nnre.layout import batch_last_slots
from nnre.model import Model
from nnre.ops import OPS

sys.path.insert(0, str(Path(__file__).parent))
from test_conv import loop_conv, loop_pool  # noqa: E402

TEXT = """
input x
x ∈ ℝ^(2×6×6)
W₁ ∈ ℝ^(4×2×3×3)
b₁ ∈ ℝ^4
W₂ ∈ ℝ^(6×2×3×3)
y ∈ ℝ^3
h₁ = relu(conv(W₁, x, b₁; pad=1))
p₁ = maxpool(h₁; size=3, stride=2, pad=1)
q₁ = avgpool(p₁; size=2, stride=1)
h₂ = tanh(conv(W₂, q₁; pad=1, groups=2))
y = softmax(W₃ flatten(h₂) + b₃)
z = maxpool(h₁; size=2)
"""
SHAPES = {"W_1": (4, 2, 3, 3), "b_1": (4,), "W_2": (6, 2, 3, 3), "W_3": (3, 24), "b_3": (3,)}


def _model(dtype: str = "float64") -> tuple[Model, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    weights = {k: rng.normal(size=s) for k, s in SHAPES.items()}
    return Model.from_equations(TEXT, weights, dtype=dtype), weights


def _reference(w: dict[str, np.ndarray], x: np.ndarray) -> dict[str, np.ndarray]:
    one = {"stride": (1, 1), "pads": (1,) * 4, "dilation": (1, 1)}
    h1 = np.maximum(loop_conv(w["W_1"], x, w["b_1"], groups=1, **one), 0)
    p1 = loop_pool(h1, "max", (3, 3), (2, 2), (1,) * 4)
    q1 = loop_pool(p1, "avg", (2, 2), (1, 1), (0,) * 4)
    h2 = np.tanh(loop_conv(w["W_2"], q1, None, groups=2, **one))
    a = h2.reshape(len(x), -1) @ w["W_3"].T + w["b_3"]
    e = np.exp(a - a.max(axis=1, keepdims=True))
    return {"y": e / e.sum(axis=1, keepdims=True),
            "z": loop_pool(h1, "max", (2, 2), (2, 2), (0,) * 4)}


def test_conv_chains_are_batch_last_and_what_callers_touch_is_not() -> None:
    m, _ = _model()
    prog = m.program
    chosen = batch_last_slots(prog.pre, set(prog.inputs.values()) | set(prog.outputs.values()))
    ops = {prog.slots[ins.out].name: ins.op for ins in prog.pre}
    picked = {ops[prog.slots[i].name] for i in chosen}
    # the read-out W₃·flatten(h₂) + b₃ follows its batch-last argument; y is the caller's
    assert picked == {"conv_bias", "relu", "maxpool", "avgpool", "conv", "tanh", "flatten",
                      "matmul", "add"}
    assert prog.outputs["z"] not in chosen and prog.inputs["x"] not in chosen
    assert not any(ins.out in chosen for ins in prog.pre if ins.op == "softmax")
    stage = m.step_stage(5)
    for i in chosen:  # bound as views of (…, rows) memory
        a = stage.arrays[0][i]
        assert np.moveaxis(a, 0, -1).flags.c_contiguous and not a.flags.c_contiguous


@pytest.mark.parametrize("batch", [1, 5])
def test_a_conv_model_with_batch_last_buffers_matches_the_definitions(batch: int) -> None:
    m, w = _model()
    x = np.random.default_rng(1).normal(size=(batch, 2, 6, 6))
    want = _reference(w, x)
    for _ in range(2):  # the second step reuses every buffer and scratch array
        out, _ = m.step({"x": x})
        for name in ("y", "z"):
            np.testing.assert_allclose(out[name], want[name], rtol=1e-12, atol=1e-12)
            assert out[name].flags.c_contiguous  # callers get plain arrays
    seq, _ = m.run({"x": np.stack([x, x[::-1]])})  # the sequence path binds pre over T·B
    np.testing.assert_allclose(seq["y"][1], want["y"][::-1], rtol=1e-12, atol=1e-12)


def test_relu_bound_over_a_batch_last_buffer_equals_the_kernel() -> None:
    relu = OPS["relu"]
    assert relu.unfold is not None
    base = np.random.default_rng(2).normal(size=(4, 3, 3, 7))
    x = np.moveaxis(base, -1, 0)
    out = np.moveaxis(np.empty_like(base), -1, 0)
    for call in relu.unfold(x, out=out):
        call()
    np.testing.assert_array_equal(out, np.maximum(x, 0))


def test_training_gradients_do_not_depend_on_the_layout(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    """The trainer binds conv chains batch last too (nndk.unrolled): the same gradients as
    the same program bound rows first, and its conv results are batch last."""
    from nndk import unrolled
    from nndk.gradcheck import make_problem

    problem = make_problem(TEXT, steps=1, batch=3)
    run = problem.forward()
    conv = next(ins.out for ins in problem.prog.pre if ins.op == "conv_bias")
    assert np.moveaxis(run.full[conv], 0, -1).flags.c_contiguous
    last = {k: np.array(v) for k, v in problem.gradients().param_grads().items()}
    monkeypatch.setattr(unrolled, "batch_last_slots", lambda instrs, fixed: set())
    run = problem.forward()
    assert run.full[conv].flags.c_contiguous
    first = problem.gradients().param_grads()
    assert set(first) == set(last) == set(SHAPES)
    for name, grad in first.items():
        np.testing.assert_allclose(last[name], grad, rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("x_last, out_last", [(True, False), (False, True), (True, True)])
def test_softmax_bound_across_memory_orders_equals_the_definition(x_last: bool,
                                                                  out_last: bool) -> None:
    """A batch-last read-out into the caller's rows-first output: the sums run in x's
    order (a buffer of its own), the result lands in out's."""
    softmax = OPS["softmax"]
    assert softmax.unfold is not None
    a = np.random.default_rng(3).normal(size=(6, 5)) * 30
    x = np.moveaxis(np.ascontiguousarray(a.T), 0, 1) if x_last else a.copy()
    out = np.moveaxis(np.empty((5, 6)), 0, 1) if out_last else np.empty((6, 5))
    calls = softmax.unfold(x, out=out)
    for values in (a[::-1], a):  # buffers bound once are refilled from the current x
        x[...] = values
        for call in calls:
            call()
    e = np.exp(a - a.max(axis=1, keepdims=True))
    np.testing.assert_allclose(out, e / e.sum(axis=1, keepdims=True), rtol=1e-12)


POOLED = """
input x
x ∈ ℝ^(1×8×8)
W₁ ∈ ℝ^(3×1×3×3)
b₁ ∈ ℝ^3
W₂ ∈ ℝ^(2×3×3×3)
y ∈ ℝ^3
h₁ = relu(conv(W₁, x, b₁; pad=1))
p₁ = maxpool(h₁; size=2)
h₂ = relu(conv(W₂, p₁; pad=1))
p₂ = maxpool(h₂; size=3, stride=1)
y = softmax(W₃ flatten(p₂) + b₃)
"""


def test_a_conv_read_by_one_max_pool_alone_is_bound_with_it() -> None:
    """nnre.vm binds conv → max pool → ReLU as one (Op.pooled) where the pool's windows
    tile the conv's result: the first conv's and pool's results are never stored; the
    second pool's windows overlap, so that chain is bound apart after all. Same results as
    the definitions, twice (every buffer and scratch reused)."""
    from nnre.vm import pooled_convs

    rng = np.random.default_rng(4)
    shapes = {"W_1": (3, 1, 3, 3), "b_1": (3,), "W_2": (2, 3, 3, 3), "W_3": (3, 8),
              "b_3": (3,)}
    w = {k: rng.normal(size=s) for k, s in shapes.items()}
    m = Model.from_equations(POOLED, w, dtype="float64")
    prog = m.program
    convs = [ins.out for ins in prog.pre if ins.op.startswith("conv")]
    chains = sorted(pooled_convs(prog, prog.pre, set()).values(), key=lambda c: c[0].out)
    assert [c[0].out for c in chains] == convs  # the ReLUs follow the pools (nnre.optimize)
    assert all([ins.op for ins in c[1:]] == ["maxpool", "relu"] for c in chains)
    stage = m.step_stage(5)
    assert all(stage.arrays[0][ins.out] is None for ins in chains[0][:2])  # never stored
    assert all(stage.arrays[0][ins.out] is not None for ins in chains[1])
    one = {"stride": (1, 1), "pads": (1,) * 4, "dilation": (1, 1), "groups": 1}
    x = rng.normal(size=(5, 1, 8, 8))
    h1 = np.maximum(loop_conv(w["W_1"], x, w["b_1"], **one), 0)
    p1 = loop_pool(h1, "max", (2, 2), (2, 2), (0,) * 4)
    p2 = loop_pool(np.maximum(loop_conv(w["W_2"], p1, None, **one), 0), "max", (3, 3),
                   (1, 1), (0,) * 4)
    a = p2.reshape(5, -1) @ w["W_3"].T + w["b_3"]
    e = np.exp(a - a.max(axis=1, keepdims=True))
    for _ in range(2):
        out, _ = m.step({"x": x})
        np.testing.assert_allclose(out["y"], e / e.sum(axis=1, keepdims=True), rtol=1e-12)
