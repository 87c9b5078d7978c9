"""PyTorch bidirectional recurrent models whose import is read with tensor shapes (token
ids through nn.Embedding, a per-example matrix input) or that normalize a batch-first
output: they import with the reverse direction as backward state and match PyTorch and
onnxruntime, both exporters (formats/equations.md §4, §6.1)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from nndk.onnx.conformance import _run  # noqa: E402
from nndk.onnx.importer import import_model  # noqa: E402
from nnre.equations import check  # noqa: E402


class Tagger(torch.nn.Module):  # type: ignore[misc,name-defined]
    """Embedding → bidirectional GRU or LSTM → a Linear on each step's [forward; reverse]."""

    def __init__(self, cls: str, batch_first: bool) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(7, 3)
        self.rnn = getattr(torch.nn, cls)(3, 5, bidirectional=True, batch_first=batch_first)
        self.fc = torch.nn.Linear(10, 7)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return torch.log_softmax(self.fc(self.rnn(self.emb(x))[0]), -1)


class Normed(torch.nn.Module):  # type: ignore[misc,name-defined]
    """A bidirectional GRU, then a LayerNorm over both directions at each step."""

    def __init__(self, batch_first: bool) -> None:
        super().__init__()
        self.rnn = torch.nn.GRU(3, 5, bidirectional=True, batch_first=batch_first)
        self.norm = torch.nn.LayerNorm(10)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.norm(self.rnn(x)[0])


class Grid(torch.nn.Module):  # type: ignore[misc,name-defined]
    """A 2×3 matrix per example at each step, flattened into a bidirectional LSTM."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = torch.nn.LSTM(6, 4, bidirectional=True)

    def forward(self, x):  # type: ignore[no-untyped-def]
        steps, batch = x.shape[:2]
        return self.rnn(x.reshape(steps, batch, 6))[0]


def _import_and_compare(net: object, x: object, dynamo: bool, tmp_path) -> tuple[str, object]:
    """Export, import, run with nnre; compare with PyTorch and onnxruntime at 1e-5. Returns
    the imported equations and how nnre reads them."""
    if dynamo:
        pytest.importorskip("onnxscript")
    path = tmp_path / "m.onnx"
    kw: dict[str, object] = {"dynamo": True, "external_data": False} if dynamo else \
        {"dynamo": False, "opset_version": 17}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), str(path), input_names=["x"], output_names=["y"], **kw)
    proto = onnx.load(str(path))
    result = import_model(proto)
    name = proto.graph.input[0].name
    got = _run(result, {name: x.numpy()})[proto.graph.output[0].name]
    want = net(x).detach().numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    by_ort = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got.reshape(want.shape), by_ort, rtol=0, atol=1e-5)
    weights = {k: np.shape(v) for k, v in result.weights.items()}
    return result.equations, check(result.equations, weights=weights)


@pytest.mark.parametrize("cls", ["GRU", "LSTM"])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("dynamo", [False, True])
def test_embedding_then_bidirectional(cls: str, batch_first: bool, dynamo: bool,
                                      tmp_path) -> None:
    """Token ids at each step (``xₜ ∈ ℕ``, ``E[xₜ]``) put the text in the tensor reading;
    batch_first ids are [N, T], their embedded rows swapped to [T, N, d] by a Transpose."""
    torch.manual_seed(11)
    net = Tagger(cls, batch_first).eval()
    x = torch.randint(0, 7, (2, 6) if batch_first else (6, 2))
    text, checked = _import_and_compare(net, x, dynamo, tmp_path)
    assert "ₜ ∈ ℕ" in text and "'ₜ₊₁" in text
    assert checked.tensors and checked.roles.back  # type: ignore[attr-defined]


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("dynamo", [False, True])
def test_layer_norm_after_bidirectional(batch_first: bool, dynamo: bool, tmp_path) -> None:
    """A LayerNorm along the last axis acts on each step alone, batch-first or not."""
    torch.manual_seed(12)
    net = Normed(batch_first).eval()
    x = torch.randn(2, 6, 3) if batch_first else torch.randn(6, 2, 3)
    text, _ = _import_and_compare(net, x, dynamo, tmp_path)
    assert "'ₜ₊₁" in text


@pytest.mark.parametrize("dynamo", [False, True])
def test_matrix_input_into_bidirectional(dynamo: bool, tmp_path) -> None:
    torch.manual_seed(13)
    text, checked = _import_and_compare(Grid().eval(), torch.randn(5, 2, 2, 3), dynamo,
                                        tmp_path)
    assert checked.tensors and "'ₜ₊₁" in text  # type: ignore[attr-defined]


def test_layer_norm_across_steps_of_a_batch_first_output_is_refused(tmp_path) -> None:
    """A LayerNorm over (T, H) of a batch-first [N, T, H] output would mix the steps."""
    from nndk.onnx.common import OnnxError

    class AcrossSteps(torch.nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.rnn = torch.nn.GRU(3, 5, bidirectional=True, batch_first=True)
            self.norm = torch.nn.LayerNorm((6, 10))

        def forward(self, x):  # type: ignore[no-untyped-def]
            return self.norm(self.rnn(x)[0])

    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(AcrossSteps().eval(), (torch.randn(2, 6, 3),), str(path),
                          dynamo=False, opset_version=17, input_names=["x"],
                          output_names=["y"])
    with pytest.raises(OnnxError, match="LayerNormalization"):
        import_model(onnx.load(str(path)))
