"""Training a model with backward state: BPTT runs through the backward pass too.

The task needs the future: the class at step t is the sign of the sum of the inputs from t
to the end, which a backward state accumulates and a forward one cannot know. The gradient
the trainer takes is checked against central differences of the cross-entropy computed
independently, by the runtime's ``Model.run`` in float64.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from nndk.cli import cli
from nndk.train import TrainConfig, TrainingError, start
from nnre.model import Model

BIRNN = """
hₜ, gₜ ∈ ℝ^H
hₜ = tanh(W xₜ + U hₜ₋₁ + b)
gₜ = tanh(V xₜ + R gₜ₊₁ + c)
yₜ = softmax(A [hₜ; gₜ] + a)
"""
FORWARD = BIRNN.replace("gₜ₊₁", "gₜ₋₁")


def quiet(_: object) -> None:
    return None


@pytest.fixture(scope="module")
def suffix_signs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(320, 6, 2)).astype(np.float32)
    target = (np.cumsum(xs[:, ::-1, 0], axis=1)[:, ::-1] > 0).astype(np.int64)
    folder = tmp_path_factory.mktemp("bi")
    np.savez(folder / "suffix.npz", x=xs, target=target)
    (folder / "birnn.eqn").write_text(BIRNN, encoding="utf-8")
    (folder / "forward.eqn").write_text(FORWARD, encoding="utf-8")
    return folder


def _accuracy(folder: Path, eqn: str, tmp_path: Path) -> float:
    config = TrainConfig(model=str(folder / eqn), dims={"H": 8}, batch_size=32, steps=120,
                         lr=2e-2, eval_every=120, sample_length=0, val_frac=0.2, seed=1)
    trainer = start(config, folder / "suffix.npz")
    trainer.fit(tmp_path / eqn, quiet)
    data = np.load(folder / "suffix.npz")
    model = trainer.runtime_model()
    ys, _ = model.run({"x": data["x"][-64:].swapaxes(0, 1)})
    return float(np.mean(ys["y"].argmax(-1) == data["target"][-64:].T))


def test_backward_state_learns_what_forward_state_cannot(suffix_signs: Path,
                                                         tmp_path: Path) -> None:
    """Held-out accuracy on the suffix-sign task: the bidirectional model learns it, the
    same model with its second state running forward stays far below."""
    both = _accuracy(suffix_signs, "birnn.eqn", tmp_path)
    forward = _accuracy(suffix_signs, "forward.eqn", tmp_path)
    assert both > 0.9, both
    assert forward < both - 0.1, (forward, both)


def test_trainer_gradient_matches_finite_differences(suffix_signs: Path) -> None:
    """A few optimizer steps, then the trainer's gradient of one batch's loss (float32 BPTT
    through both passes) against float64 central differences of Model.run's loss."""
    config = TrainConfig(model=str(suffix_signs / "birnn.eqn"), dims={"H": 5}, batch_size=8,
                         steps=5, lr=1e-2, eval_every=5, sample_length=0, seed=2)
    trainer = start(config, suffix_signs / "suffix.npz")
    for _ in range(3):
        trainer.train_step()
    rows = trainer.order[:8]
    _, seeds, run, _ = trainer._loss(rows, grad=True)
    learner = trainer.learner
    _, back = learner.buffers(run.steps, run.batch)
    back.backward(seeds)
    grads = {name: np.array(g, np.float64) for name, g in back.param_grads().items()}
    data = np.load(suffix_signs / "suffix.npz")
    xs, target = data["x"][rows].swapaxes(0, 1).astype(np.float64), data["target"][rows].T
    weights = {n: np.array(a, np.float64).reshape(learner.shapes[n])
               for n, a in learner.params.items()}
    model = Model.from_equations(BIRNN, weights, {"H": 5}, "float64", optimize=False)

    def loss(params: dict[str, np.ndarray]) -> float:
        probe = Model(model.program, params, equations=BIRNN, dims=model.dims,
                      param_specs=model.params)
        ys = probe.run({"x": xs})[0]["y"]
        return -float(np.mean(np.log(np.take_along_axis(ys, target[..., None], -1))))

    rng = np.random.default_rng(3)
    for name, value in weights.items():
        d = rng.normal(size=value.shape)
        eps = 1e-5
        numeric = (loss({**weights, name: value + eps * d})
                   - loss({**weights, name: value - eps * d})) / (2 * eps)
        analytic = float(np.sum(grads[name].reshape(value.shape) * d))
        assert abs(numeric - analytic) <= 1e-4 * max(abs(numeric), 1e-3), (name, numeric,
                                                                          analytic)


def test_gradcheck_command_passes_on_a_bidirectional_text(tmp_path: Path) -> None:
    eqn = tmp_path / "bi.eqn"
    eqn.write_text("xₜ ∈ ℝ^2\nyₜ ∈ ℝ^2\n" + BIRNN, encoding="utf-8")
    result = CliRunner().invoke(cli, ["gradcheck", str(eqn), "--set", "H=3", "--steps", "4"])
    assert result.exit_code == 0, result.output
    assert "state g@t+1" in result.output and "param R" in result.output
    check = CliRunner().invoke(cli, ["check", str(eqn), "--set", "H=3"])
    assert check.exit_code == 0, check.output
    assert "backward state: g (3,)" in check.output and "state: h (3,)" in check.output
    assert "back (each step, from the last to the first): " in check.output


def test_text_training_refuses_backward_state(suffix_signs: Path, tmp_path: Path) -> None:
    text = tmp_path / "t.txt"
    text.write_text("hello world\n" * 50, encoding="utf-8")
    eqn = tmp_path / "bi.eqn"
    eqn.write_text(BIRNN.replace("[hₜ; gₜ] + a", "[hₜ; gₜ]"), encoding="utf-8")
    with pytest.raises(TrainingError, match="'g' in .* is backward state .*arrays of whole "
                       "sequences"):
        start(TrainConfig(model=str(eqn), dims={"H": 4}, steps=1), text)
