"""nndk train on arrays: classification and sequence regression, resume, --init-from, pack."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nnre
from nndk.pack import PackRequest, pack
from nndk.train import TrainConfig, resume, start

SEQ_EQN = "hₜ ∈ ℝ^H\nhₜ = tanh(W xₜ + U hₜ₋₁ + b)\nyₜ = V hₜ + c\n"


def quiet(_: object) -> None:
    return None


@pytest.fixture(scope="module")
def classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 4)).astype(np.float32)
    target = (x @ rng.normal(size=(4, 3))).argmax(axis=1)
    path = tmp_path_factory.mktemp("d") / "cls.npz"
    np.savez(path, x=x, target=target)
    return path


@pytest.fixture(scope="module")
def sequences(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    rng = np.random.default_rng(1)
    xs = rng.normal(size=(200, 6, 2)).astype(np.float32)
    target = (0.3 * np.cumsum(xs, axis=1)[:, :, :1]).astype(np.float32)  # a running sum
    folder = tmp_path_factory.mktemp("s")
    np.savez(folder / "seq.npz", x=xs, target=target)
    (folder / "seq.eqn").write_text(SEQ_EQN, encoding="utf-8")
    return folder / "seq.npz", folder / "seq.eqn"


@pytest.mark.parametrize("model", ["mlp", "mlp_ln"])
def test_mlp_classifier_learns(classes: Path, tmp_path: Path, model: str) -> None:
    config = TrainConfig(model=model, dims={"H": 16}, batch_size=32, steps=200, lr=1e-2,
                         eval_every=100, sample_length=0)
    trainer = start(config, classes)
    trainer.fit(tmp_path, quiet)
    data = np.load(classes)
    model = trainer.runtime_model()
    probs = model.step({"x": data["x"][-40:]})[0]["y"]
    accuracy = float(np.mean(probs.argmax(axis=1) == data["target"][-40:]))
    assert accuracy > 0.85, accuracy


def test_sequence_regression_learns_and_resumes_exactly(sequences: tuple[Path, Path],
                                                        tmp_path: Path) -> None:
    data, eqn = sequences
    config = dict(model=str(eqn), dims={"H": 12}, batch_size=16, lr=1e-2, eval_every=20,
                  sample_length=0)
    straight = start(TrainConfig(**config, steps=40), data)  # type: ignore[arg-type]
    before = straight.evaluate()
    straight.fit(tmp_path / "a", quiet)
    after = straight.evaluate()
    assert before is not None and after is not None and after < 0.3 * before
    first = start(TrainConfig(**config, steps=20), data)  # type: ignore[arg-type]
    first.fit(tmp_path / "b", quiet)
    second = resume(tmp_path / "b", steps=40)
    second.fit(tmp_path / "b", quiet)
    for name, value in straight.params.items():
        np.testing.assert_array_equal(second.params[name], value, err_msg=name)


def test_pack_array_checkpoint_and_init_from(classes: Path, tmp_path: Path) -> None:
    config = TrainConfig(model="mlp", dims={"H": 8}, batch_size=32, steps=30, lr=1e-2,
                         eval_every=30, sample_length=0)
    trainer = start(config, classes)
    trainer.fit(tmp_path / "ck", quiet)
    out = tmp_path / "mlp.bundle"
    pack(PackRequest(tmp_path / "ck", None, out, "mlp", "0.1.0", created="2026-01-01T00:00:00Z"))
    model = nnre.load(out)
    assert model.metadata["provenance"]["steps"] == 30
    labels = model.metadata["codecs"]["y"]  # a classifier's output reads as its class
    assert labels == {"id": "argmax-label", "labels": ["0", "1", "2"]}
    again = start(TrainConfig(model="mlp", dims={"H": 8}, steps=1, sample_length=0), classes,
                  init_from=str(out))
    for name, value in trainer.params.items():
        np.testing.assert_array_equal(again.params[name], value, err_msg=name)
    assert again.step == 0 and again.opt.t == 0
    with pytest.raises(nnre.NnreError, match="has shape"):
        start(TrainConfig(model="mlp", dims={"H": 9}, steps=1, sample_length=0), classes,
              init_from=str(out))


@pytest.mark.parametrize("read_out", ["log_softmax", "softmax", "regression"])
def test_reported_validation_loss_is_the_models_own(classes: Path,
                                                    sequences: tuple[Path, Path],
                                                    tmp_path: Path, read_out: str) -> None:
    """The checkpoint's val_loss is the loss over the validation rows, recomputed here with
    ``Model.run`` in float64: NLL for either classifier read-out, MSE for a sequence model."""
    from nndk import checkpoint
    from nnre.model import Model

    if read_out == "regression":
        data_path, text = sequences[0], SEQ_EQN
    else:
        data_path = classes
        text = f"input x\nh ∈ ℝ^H\nh = relu(W₁·x + b₁)\ny = {read_out}(W₂·h + b₂)\n"
        (tmp_path / "m.eqn").write_text(text, encoding="utf-8")
    model_file = str(sequences[1] if read_out == "regression" else tmp_path / "m.eqn")
    config = TrainConfig(model=model_file, dims={"H": 8}, batch_size=16, steps=6,
                         eval_every=6, sample_length=0, lr=1e-2)
    start(config, data_path).fit(tmp_path / "ck", quiet)
    arrays, record = checkpoint.load(tmp_path / "ck")
    weights = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    model = Model.from_equations(text, weights, dtype="float64")
    data = np.load(data_path)
    val = slice(len(data["target"]) - int(len(data["target"]) * config.val_frac), None)
    x, target = data["x"][val], data["target"][val]
    if read_out == "regression":
        ys = model.run({"x": x.transpose(1, 0, 2)})[0]["y"].transpose(1, 0, 2)
        want = float(np.mean((ys - target) ** 2))
    else:
        ys = model.run({"x": x[None]})[0]["y"][0]
        picked = ys[np.arange(len(target)), target]
        want = -float(np.mean(picked if read_out == "log_softmax" else np.log(picked)))
    assert record["history"]["val_loss"] == pytest.approx(want, rel=1e-5)


def test_frozen_parameters_keep_their_values(classes: Path, tmp_path: Path) -> None:
    """``frozen W₁``: training leaves W₁ (random features here) as initialised and trains
    the rest; the bundle still stores it, and needs version 2 of the language."""
    eqn = tmp_path / "frozen.eqn"
    eqn.write_text("input x\nfrozen W₁\nh ∈ ℝ^H\nh = relu(W₁·x + b₁)\n"
                   "y = softmax(W₂·h + b₂)\n", encoding="utf-8")
    config = TrainConfig(model=str(eqn), dims={"H": 16}, batch_size=32, steps=60, lr=1e-2,
                         eval_every=60, sample_length=0)
    trainer = start(config, classes)
    before = {k: v.copy() for k, v in trainer.learner.params.items()}
    trainer.fit(tmp_path / "ck", quiet)
    after = trainer.learner.params
    np.testing.assert_array_equal(after["W_1"], before["W_1"])
    assert not np.array_equal(after["W_2"], before["W_2"])
    assert not np.array_equal(after["b_1"], before["b_1"])
    out = tmp_path / "f.bundle"
    pack(PackRequest(tmp_path / "ck", None, out, "f", "0.1.0", created="2026-01-01T00:00:00Z"))
    from nnre.bundle.read import decode

    assert decode(out).header.requires == ("equations/2",)
    np.testing.assert_array_equal(decode(out).tensors["W_1"], before["W_1"])
