"""nndk train on arrays: classification and sequence regression, resume, --init-from, pack."""

from __future__ import annotations

import re
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
    with pytest.raises(nnre.NnreError, match=r"--set H=9: .*mlp.bundle has H=8, the size "
                                             r"its weights fit \(leave --set H out"):
        start(TrainConfig(model="mlp", dims={"H": 9}, steps=1, sample_length=0), classes,
              init_from=str(out))
    default = start(TrainConfig(model="mlp", steps=1, sample_length=0), classes,
                    init_from=str(out))  # no --set: H=8 from the bundle, not the default 128
    assert default.config.dims["H"] == 8 and default.learner.dims["H"] == 8


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


def write_csv(path: Path, header: list[str], rows: np.ndarray) -> Path:
    lines = [",".join(header)] + [",".join(repr(float(v)) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("header", [["x.0", "x.1", "x.2", "target"],
                                    ["x0", "x1", "x2", "target"],
                                    ["target", "x2", "x0", "x1"],  # any order: by index
                                    ["x1", "x2", "x3", "target"]])  # numbered from 1
def test_csv_columns_x0_x1_and_x_dot_0_make_one_array(tmp_path: Path,
                                                      header: list[str]) -> None:
    from nndk.data import load_arrays

    rng = np.random.default_rng(0)
    table = rng.normal(size=(5, 4)).round(3)
    arrays = load_arrays(write_csv(tmp_path / "d.csv", header, table))
    order = sorted((h for h in header if h != "target"), key=lambda h: int(h.strip("x.")))
    np.testing.assert_array_equal(arrays["x"], table[:, [header.index(h) for h in order]])
    np.testing.assert_array_equal(arrays["target"], table[:, [header.index("target")]])
    assert sorted(arrays) == ["target", "x"]


def test_a_column_named_like_an_input_stays_that_input(tmp_path: Path) -> None:
    from nndk.data import load_arrays

    table = np.arange(6.0).reshape(3, 2)
    path = write_csv(tmp_path / "d.csv", ["x1", "target"], table)
    assert sorted(load_arrays(path)) == ["target", "x"]  # without the model: x1 is x's column
    arrays = load_arrays(path, ["x1", "target"])  # a model whose input is x1
    np.testing.assert_array_equal(arrays["x1"], table[:, :1])


@pytest.mark.parametrize("header, message", [
    (["x0", "x2", "target"], "columns of array 'x' ('x0', 'x2') must be numbered 0, 1, 2"),
    (["x.1", "x.1", "target"], "must be numbered 0, 1, 2, … or 1, 2, 3, … without gaps"),
    (["x", "x0", "target"], "columns 'x', 'x0' all name array 'x'")])
def test_csv_column_numbering_errors(tmp_path: Path, header: list[str], message: str) -> None:
    from nndk.data import DataError, load_arrays

    path = write_csv(tmp_path / "d.csv", header, np.zeros((2, 3)))
    with pytest.raises(DataError, match=re.escape(message)):
        load_arrays(path)


def test_training_on_csv_x0_columns_equals_training_on_the_npz(classes: Path,
                                                               tmp_path: Path) -> None:
    data = np.load(classes)
    x, target = data["x"].astype(np.float64), data["target"]
    table = np.column_stack([x, target])
    csv_path = write_csv(tmp_path / "d.csv", ["x0", "x1", "x2", "x3", "target"], table)
    npz_path = tmp_path / "d.npz"
    np.savez(npz_path, x=x.astype(np.float32), target=target.astype(np.float64))
    config = dict(model="mlp", dims={"H": 8}, batch_size=16, steps=5, eval_every=5,
                  sample_length=0, loss="ce")
    a = start(TrainConfig(**config), csv_path)  # type: ignore[arg-type]
    b = start(TrainConfig(**config), npz_path)  # type: ignore[arg-type]
    a.fit(tmp_path / "a", quiet)
    b.fit(tmp_path / "b", quiet)
    for name, value in a.params.items():
        np.testing.assert_array_equal(value, b.params[name], err_msg=name)
