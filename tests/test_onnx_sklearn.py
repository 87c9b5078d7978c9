"""scikit-learn MLPs converted by skl2onnx import: the probabilities match scikit-learn and
onnxruntime; the class label (ArgMax → ArrayFeatureExtractor) is left out, with the reason."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("skl2onnx")
pytest.importorskip("onnxruntime")
from onnx_helpers import ort_runner  # noqa: E402
from skl2onnx import to_onnx  # noqa: E402
from sklearn.neural_network import MLPClassifier, MLPRegressor  # noqa: E402

from nndk.onnx.conformance import _run  # noqa: E402
from nndk.onnx.importer import import_model  # noqa: E402

RNG = np.random.default_rng(0)
X = RNG.standard_normal((60, 4)).astype(np.float32)


def _fit(model: object, y: np.ndarray) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence
        return model.fit(X, y)  # type: ignore[attr-defined]


def test_classifier_probabilities_and_the_label_left_out() -> None:
    clf = _fit(MLPClassifier(hidden_layer_sizes=(8,), max_iter=200, random_state=0),
               (X[:, 0] > 0).astype(int) + (X[:, 1] > 0))
    proto = to_onnx(clf, X[:1], options={"zipmap": False}, target_opset=17)
    result = import_model(proto)
    assert "label" in result.dropped and "argmax-label" in result.dropped["label"]
    got = _run(result, {"X": X})["probabilities"].reshape(len(X), -1)
    np.testing.assert_allclose(got, clf.predict_proba(X), rtol=0, atol=1e-5)
    np.testing.assert_allclose(got, ort_runner(proto)({"X": X})["probabilities"], atol=1e-6)
    assert (got.argmax(1) == clf.predict(X)).all()


def test_regressor() -> None:
    reg = _fit(MLPRegressor(hidden_layer_sizes=(8,), max_iter=200, random_state=0),
               X @ np.arange(4.0))
    proto = to_onnx(reg, X[:1], target_opset=17)
    (name,) = [o.name for o in proto.graph.output]
    got = _run(import_model(proto), {"X": X})[name].reshape(-1)
    np.testing.assert_allclose(got, reg.predict(X), rtol=0, atol=1e-4)
    np.testing.assert_allclose(got, ort_runner(proto)({"X": X})[name].reshape(-1), atol=1e-5)


def test_an_imported_classifier_gets_its_labels_by_relabelling(tmp_path) -> None:
    """nndk import, then nndk pack IMPORTED --codec NAME={argmax-label…}: nnre run --input
    prints scikit-learn's own predictions as labels (the codec the import note points to)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from click.testing import CliRunner

    from nndk.cli import cli
    from nnre.loader import load

    names = np.array(["calm", "breeze", "gale"])
    clf = _fit(MLPClassifier(hidden_layer_sizes=(8,), max_iter=200, random_state=0),
               names[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0)])
    onnx_path = tmp_path / "clf.onnx"
    onnx_path.write_bytes(to_onnx(clf, X[:1], options={"zipmap": False},
                                  target_opset=17).SerializeToString())
    runner = CliRunner()
    imported = runner.invoke(cli, ["import", str(onnx_path), "-o", str(tmp_path / "i.bundle")])
    assert imported.exit_code == 0, imported.output
    outputs = json.loads(load(tmp_path / "i.bundle").metadata["extra"]["onnx.outputs"])
    name = outputs["probabilities"][0]
    codec = json.dumps({"id": "argmax-label", "labels": [str(c) for c in clf.classes_]})
    packed = runner.invoke(cli, ["pack", str(tmp_path / "i.bundle"), "--name", "clf",
                                 "--version", "1.0.0", "--codec", f"{name}={codec}",
                                 "-o", str(tmp_path / "labelled.bundle")])
    assert packed.exit_code == 0, packed.output
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-m", "nnre", "run", str(tmp_path / "labelled.bundle"),
                           "--input", "-"], input=json.dumps({"X": X.tolist()}),
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[f"{name}.label"] == list(clf.predict(X))
