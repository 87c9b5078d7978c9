"""The digits sample: the cnn template trains to ≥ 97 % on a held-out fifth; PyTorch agrees."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import nnre
from nndk.pack import PackRequest, pack
from nndk.train import TrainConfig, start

DIGITS = Path(__file__).resolve().parent.parent / "samples" / "digits"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("sklearn")
    spec = importlib.util.spec_from_file_location("make_digits", DIGITS / "make_digits.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path_factory.mktemp("digits")
    module.main(out)
    return out


def _accuracy(model: nnre.Model, path: Path) -> float:
    d = np.load(path)
    out, _ = model.step({"x": d["x"]})
    return float((out["y"].argmax(axis=1) == d["target"]).mean())


def test_the_shipped_bundle_classifies_the_held_out_fifth(data: Path) -> None:
    model = nnre.load(DIGITS / "digits.bundle")
    assert _accuracy(model, data / "test.npz") >= 0.97
    some = np.load(DIGITS / "some.npz")["x"]
    test = np.load(data / "test.npz")
    np.testing.assert_array_equal(some, test["x"][:len(some)])  # the first test images


def test_the_cnn_template_trains_to_97_percent(data: Path, tmp_path: Path) -> None:
    config = TrainConfig(model="cnn", steps=600, seed=3, eval_every=600, sample_length=0)
    start(config, data / "train.npz").fit(tmp_path / "ck", lambda _: None)
    pack(PackRequest(tmp_path / "ck", None, tmp_path / "d.bundle", "d", "0.1.0"))
    model = nnre.load(tmp_path / "d.bundle")
    assert _accuracy(model, data / "test.npz") >= 0.97
    assert model.metadata["codecs"]["y"]["id"] == "argmax-label"


def test_pytorch_computes_the_same_probabilities(data: Path) -> None:
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    model = nnre.load(DIGITS / "digits.bundle")
    w = {k: torch.from_numpy(np.array(v, np.float64)) for k, v in model.weights().items()}
    x = np.load(data / "test.npz")["x"][:64]
    with torch.no_grad():
        t = torch.from_numpy(x.astype(np.float64))
        h = F.max_pool2d(F.relu(F.conv2d(t, w["W_1"], w["b_1"], padding=1)), 2)
        h = F.max_pool2d(F.relu(F.conv2d(h, w["W_2"], w["b_2"], padding=1)), 2)
        want = F.softmax(h.flatten(1) @ w["W_3"].T + w["b_3"], dim=1).numpy()
    out, _ = model.step({"x": x})
    np.testing.assert_allclose(out["y"], want, atol=2e-5)
