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
