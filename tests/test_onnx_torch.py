"""Models exported by PyTorch (``torch.onnx.export``, the TorchScript exporter) import into
nnre and match PyTorch's own outputs within 1e-5: an MLP, an nn.LSTM and an nn.GRU."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from nndk.onnx.importer import import_model  # noqa: E402
from nnre.model import Model  # noqa: E402


def _export(module: object, args: tuple, outputs: list[str], tmp_path) -> object:
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=outputs)
    return onnx.load(str(path))


class MLP(torch.nn.Module):  # type: ignore[misc,name-defined]
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Linear(6, 16), torch.nn.Linear(16, 4)
        self.drop = torch.nn.Dropout(0.3)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return torch.log_softmax(self.b(self.drop(torch.nn.functional.leaky_relu(
            self.a(x), 0.1))), -1)


def test_mlp(tmp_path) -> None:
    torch.manual_seed(0)
    net = MLP().eval()
    x = torch.randn(5, 6)
    result = import_model(_export(net, (x,), ["y"], tmp_path))
    model = Model.from_equations(result.equations, result.weights)
    got, _ = model.step({"x": x.numpy()})
    want = net(x).detach().numpy()
    np.testing.assert_allclose(got[result.outputs["y"][0]], want, rtol=0, atol=1e-5)
    assert "log_softmax(W₂ " in result.equations


@pytest.mark.parametrize("cls", ["LSTM", "GRU"])
def test_recurrent(cls: str, tmp_path) -> None:
    torch.manual_seed(1)
    net = getattr(torch.nn, cls)(3, 8).eval()
    x = torch.randn(7, 2, 3)
    outputs = ["y", "hn"] + (["cn"] if cls == "LSTM" else [])
    result = import_model(_export(net, (x,), outputs, tmp_path))
    model = Model.from_equations(result.equations, result.weights)
    ys, final = model.run({"x": x.numpy()})
    want = net(x)
    y_name = result.outputs["y"][0]
    np.testing.assert_allclose(ys[y_name], want[0].detach().numpy(), rtol=0, atol=1e-5)
    states = want[1] if cls == "LSTM" else (want[1],)
    for onnx_name, value in zip(outputs[1:], states, strict=True):
        name, kind = result.outputs[onnx_name]
        assert kind == "state"
        np.testing.assert_allclose(final[name], value[0].detach().numpy(), rtol=0, atol=1e-5)
    assert "hₜ₋₁" in result.equations and "σ(W_" in result.equations
