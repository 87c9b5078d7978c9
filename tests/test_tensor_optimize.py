"""The optimizer's stacking and sibling fusion leave tensor values alone: products of one
per-example matrix by several weights, and slices of a tensor, run as written."""

from __future__ import annotations

import numpy as np

from nnre.model import Model


def test_products_of_one_tensor_by_several_weights_are_not_stacked_as_vectors() -> None:
    text = """
        input X
        X ∈ ℝ^(3×4)
        a = tanh(X A) + 1
        b = tanh(X B) + 1
        c = X[0:1] ⊙ 2 + X[1:2] ⊙ 2
        """
    rng = np.random.default_rng(0)
    w = {"A": rng.normal(size=(4, 4)), "B": rng.normal(size=(4, 4))}
    X = rng.normal(size=(5, 3, 4))
    for optimize in (False, True):
        out, _ = Model.from_equations(text, w, dtype="float64", optimize=optimize).step({"X": X})
        np.testing.assert_allclose(out["a"], np.tanh(X @ w["A"]) + 1, rtol=1e-12)
        np.testing.assert_allclose(out["b"], np.tanh(X @ w["B"]) + 1, rtol=1e-12)
        np.testing.assert_allclose(out["c"], X[:, 0:1] * 2 + X[:, 1:2] * 2, rtol=1e-12)


POOLED = """
    input x
    x ∈ ℝ^(2×6×6)
    K ∈ ℝ^(3×2×3×3)
    c ∈ ℝ^3
    y ∈ ℝ^2
    h = relu(conv(K, x, c; pad=1))
    p = maxpool(h; size=2)
    q = maxpool(relu(x ⊙ 2); size=3, stride=1, pad=1)
    s = relu(x ⊙ 3)
    y = softmax(V flatten(p) + U flatten(q) + R flatten(maxpool(s; size=2)) + T flatten(s))
    """


def test_relu_moves_after_max_pooling_where_the_pool_alone_reads_it() -> None:
    """maxpool(relu(h)) → relu(maxpool(h)): the same outputs and gradients (max commutes
    with ReLU; both send g to a window's first maximum or nowhere), fewer entries."""
    from nndk.gradcheck import make_problem

    plain, fast = (make_problem(POOLED, steps=1, batch=4, optimize=o, seed=3)
                   for o in (False, True))
    for p, swapped in ((plain, 0), (fast, 2)):  # s is read twice: its ReLU stays first
        writer = {ins.out: ins.op for ins in p.prog.pre}
        pairs = [(writer.get(ins.args[0]), ins.op) for ins in p.prog.pre
                 if ins.op in ("relu", "maxpool")]
        assert pairs.count(("maxpool", "relu")) == swapped
        assert pairs.count(("relu", "maxpool")) == 3 - swapped
    ys = [p.forward().full[p.prog.outputs["y"]] for p in (plain, fast)]
    np.testing.assert_allclose(ys[1], ys[0], rtol=1e-12, atol=1e-12)
    # x = 0 in a whole window: both ReLU placements see only zeros (ties) there
    for p in (plain, fast):
        p.feeds["x"][0, :, 0:2, 0:2] = -1.0
    grads = [p.gradients().param_grads() for p in (plain, fast)]
    assert set(grads[0]) == {"K", "c", "V", "U", "R", "T"}
    for name, grad in grads[0].items():
        np.testing.assert_allclose(grads[1][name], grad, rtol=1e-12, atol=1e-12, err_msg=name)
