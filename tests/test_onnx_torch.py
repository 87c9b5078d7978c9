"""Models exported by PyTorch (``torch.onnx.export``, the TorchScript and dynamo exporters)
import into nnre and match PyTorch's own outputs within 1e-5: an MLP, nn.LSTM, nn.GRU and
nn.RNN, stacked, batch_first and bidirectional."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from nndk.onnx.importer import import_model  # noqa: E402
from nnre.errors import NnreError  # noqa: E402
from nnre.model import Model  # noqa: E402


def _export(module: object, args: tuple, outputs: list[str], tmp_path) -> object:
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=outputs)
    return onnx.load(str(path))


def _save(net: object, args: tuple, path, inputs: list[str], outputs: list[str],
          dynamo: bool = False) -> object:
    """Export with PyTorch's dynamo exporter or the legacy one (opset 17), quietly; the proto."""
    if dynamo:
        pytest.importorskip("onnxscript")
    kw: dict[str, object] = {"dynamo": True} if dynamo else {"dynamo": False,
                                                              "opset_version": 17}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, args, str(path), input_names=inputs, output_names=outputs,
                          external_data=False, **kw)
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


def _compare_torch(net: object, x: object, outputs: list[str], path, **kw: object) -> None:
    """Export ``net`` to ``path``; nnre's import matches PyTorch and onnxruntime at 1e-5."""
    import onnxruntime as ort

    from nndk.onnx.conformance import _run

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), str(path), input_names=["x"], output_names=outputs,
                          external_data=False, **kw)
    got = _run(import_model(onnx.load(str(path))), {"x": x.numpy()})
    out = net(x)
    want = [out[0]] + (list(out[1]) if isinstance(out[1], tuple) else [out[1]])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    by_ort = dict(zip(outputs, sess.run(None, {"x": x.numpy()}), strict=True))
    for name, w in zip(outputs, want, strict=True):
        w = w.detach().numpy()
        np.testing.assert_allclose(got[name].reshape(w.shape), w, rtol=0, atol=1e-5)
        np.testing.assert_allclose(got[name].reshape(w.shape), by_ort[name], rtol=0, atol=1e-5)


@pytest.mark.parametrize("cls", ["LSTM", "GRU"])
@pytest.mark.parametrize("layers, dynamic", [(1, False), (2, False), (1, True)])
def test_dynamo_exporter_recurrent(cls: str, layers: int, dynamic: bool, tmp_path) -> None:
    """The dynamo exporter drops Y's direction axis with Transpose + Reshape; stacked layers
    return their final states concatenated; a dynamic batch builds the zero state by Expand."""
    pytest.importorskip("onnxscript")
    torch.manual_seed(2)
    net = getattr(torch.nn, cls)(3, 8, num_layers=layers).eval()
    x = torch.randn(7, 2, 3)
    dims = ({0: torch.export.Dim("T"), 1: torch.export.Dim("N")},) if dynamic else None
    _compare_torch(net, x, ["y", "hn"] + (["cn"] if cls == "LSTM" else []),
                   tmp_path / "m.onnx", dynamo=True, dynamic_shapes=dims)


@pytest.mark.parametrize("cls", ["LSTM", "GRU"])
def test_legacy_exporter_two_layers_with_dynamic_axes(cls: str, tmp_path) -> None:
    """The zero initial state is Shape(x) → Gather → Concat → ConstantOfShape / Expand."""
    torch.manual_seed(3)
    net = getattr(torch.nn, cls)(3, 8, num_layers=2).eval()
    x = torch.randn(6, 3, 3)
    _compare_torch(net, x, ["y", "hn"] + (["cn"] if cls == "LSTM" else []),
                   tmp_path / "m.onnx", dynamo=False, opset_version=17,
                   dynamic_axes={"x": {0: "T", 1: "N"}})


#: (layers, dynamo, batch_first); the dynamo exporter writes no RNN op for nn.RNN (it
#: unrolls the steps, forward ones too), so nn.RNN goes through the TorchScript one only.
BIDIRECTIONAL = [(1, False, False), (2, False, False), (1, True, False), (2, True, False),
                 (1, False, True), (2, True, True), (2, False, True)]


@pytest.mark.parametrize("cls, layers, dynamo, batch_first",
                         [(cls, *case) for cls in ("LSTM", "GRU", "RNN") for case in BIDIRECTIONAL
                          if not (cls == "RNN" and case[1])])
def test_bidirectional(cls: str, layers: int, dynamo: bool, batch_first: bool,
                       tmp_path) -> None:
    """``bidirectional=True``: the reverse direction is backward state (``h'ₜ₊₁``); y puts
    both directions side by side, h_n stacks [layer 1 forward, layer 1 reverse, layer 2 …]
    (the reverse direction's final state is its value at the first step). Layer 2's reverse
    pass reads layer 1's forward output, so it runs after it. Both exporters, batch_first."""
    if dynamo:
        pytest.importorskip("onnxscript")
    torch.manual_seed(7 + layers)
    net = getattr(torch.nn, cls)(3, 5, num_layers=layers, bidirectional=True,
                                 batch_first=batch_first).eval()
    x = torch.randn(2, 6, 3) if batch_first else torch.randn(6, 2, 3)
    kw: dict[str, object] = {"dynamo": True} if dynamo else {"dynamo": False,
                                                              "opset_version": 17}
    outputs = ["y", "hn"] + (["cn"] if cls == "LSTM" else [])
    path = tmp_path / "m.onnx"
    _compare_torch(net, x, outputs, path, **kw)
    result = import_model(onnx.load(str(path)))
    assert "h'ₜ₊₁" in result.equations
    assert result.outputs["hn"][1] == "states"
    model = Model.from_equations(result.equations, result.weights)
    with pytest.raises(NnreError, match="backward state"):
        model.step({"x": np.zeros(3, np.float32)})


def test_bidirectional_with_initial_state_inputs(tmp_path) -> None:
    """h0 and c0 given as inputs [2, N, H]: each direction's initial state, the reverse one
    being its value after the last step."""
    torch.manual_seed(11)
    net = torch.nn.LSTM(3, 4, bidirectional=True).eval()
    x, h0, c0 = torch.randn(5, 2, 3), torch.randn(2, 2, 4), torch.randn(2, 2, 4)
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x, (h0, c0)), str(path), dynamo=False, opset_version=17,
                          input_names=["x", "h0", "c0"], output_names=["y", "hn", "cn"])
    from nndk.onnx.conformance import _run

    result = import_model(onnx.load(str(path)))
    assert result.inputs["h0"] == ("h,h'", "states")
    got = _run(result, {"x": x.numpy(), "h0": h0.numpy(), "c0": c0.numpy()})
    want = net(x, (h0, c0))
    for name, value in zip(["y", "hn", "cn"], [want[0], *want[1]], strict=True):
        np.testing.assert_allclose(got[name].reshape(value.shape), value.detach().numpy(),
                                   rtol=0, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("cls", ["LSTM", "GRU"])
@pytest.mark.parametrize("dynamo, dynamic", [(False, False), (False, True), (True, False),
                                             (True, True)])
def test_batch_first(cls: str, dynamo: bool, dynamic: bool, tmp_path) -> None:
    """``batch_first=True``: the export transposes x [N, T, F] to [T, N, F] before the op and
    Y back after it. The import is time-major: the model takes x as [T, N, F] and gives y
    as [T, N, H]; the ONNX names of the swapped tensors are in ``batch_first``."""
    if dynamo:
        pytest.importorskip("onnxscript")
    torch.manual_seed(4)
    net = getattr(torch.nn, cls)(3, 8, batch_first=True).eval()
    x = torch.randn(2, 6, 3)  # [N, T, F]
    outputs = ["y", "hn"] + (["cn"] if cls == "LSTM" else [])
    if dynamo:
        kw: dict[str, object] = {"dynamo": True}
        if dynamic:
            kw["dynamic_shapes"] = ({0: torch.export.Dim("N"), 1: torch.export.Dim("T")},)
    else:
        kw = {"dynamo": False, "opset_version": 17}
        if dynamic:
            kw["dynamic_axes"] = {"x": {0: "N", 1: "T"}}
    path = tmp_path / "m.onnx"
    _compare_torch(net, x, outputs, path, **kw)
    from nndk.onnx.importer import bundle_metadata

    proto = onnx.load(str(path))
    result = import_model(proto)
    assert result.batch_first == ("x", "y")
    assert "Time-major" in result.equations
    meta = bundle_metadata(proto, result, None, None, str(path))
    assert meta["extra"]["onnx.batch_first"] == '["x", "y"]'
    model = Model.from_equations(result.equations, result.weights)
    ys, final = model.run({"x": x.numpy().swapaxes(0, 1)})  # time-major, as documented
    want = net(x)
    np.testing.assert_allclose(ys[result.outputs["y"][0]],
                               want[0].detach().numpy().swapaxes(0, 1), rtol=0, atol=1e-5)
    h_n = want[1][0] if cls == "LSTM" else want[1]
    np.testing.assert_allclose(final[result.outputs["hn"][0]], h_n[0].detach().numpy(),
                               rtol=0, atol=1e-5)


def test_batch_first_input_read_elsewhere_is_refused(tmp_path) -> None:
    """x is batch-first only when every node reads it through the swap; here a Linear reads
    it directly as well, so the swap of its batch and time axes is refused."""
    from nndk.onnx.common import OnnxError

    class Both(torch.nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.rnn, self.lin = torch.nn.GRU(3, 3, batch_first=True), torch.nn.Linear(3, 3)

        def forward(self, x):  # type: ignore[no-untyped-def]
            return self.rnn(x)[0] + self.lin(x)

    proto = _save(Both().eval(), (torch.randn(2, 5, 3),), tmp_path / "m.onnx", ["x"], ["y"])
    with pytest.raises(OnnxError, match="GRU of a batch-first sequence"):
        import_model(proto)


class Tagger(torch.nn.Module):  # type: ignore[misc,name-defined]
    """A batch-first LSTM, then per-step layers on its output [N, T, H]."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn, self.fc = torch.nn.LSTM(3, 8, batch_first=True), torch.nn.Linear(8, 5)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return torch.log_softmax(self.fc(torch.relu(self.rnn(x)[0])) * 0.5, -1)


@pytest.mark.parametrize("dynamo", [False, True])
def test_batch_first_then_per_step_layers(dynamo: bool, tmp_path) -> None:
    """Layers that act on each step of the batch-first output (Relu, a Linear's MatMul + Add,
    LogSoftmax along H) are the same on the time-major values: the tagger imports whole."""
    torch.manual_seed(5)
    net = Tagger().eval()
    x = torch.randn(2, 6, 3)
    proto = _save(net, (x,), tmp_path / "m.onnx", ["x"], ["y"], dynamo)
    from nndk.onnx.conformance import _run

    result = import_model(proto)
    assert result.batch_first == ("x", "y")
    got = _run(result, {"x": x.numpy()})["y"]
    np.testing.assert_allclose(got, net(x).detach().numpy(), rtol=0, atol=1e-5)


def test_batch_first_mixed_with_time_major_is_refused(tmp_path) -> None:
    """The batch-first output added to a time-major value would pair the wrong entries."""
    from nndk.onnx.common import OnnxError

    class Mixed(torch.nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.rnn = torch.nn.GRU(3, 3, batch_first=True)

        def forward(self, x):  # type: ignore[no-untyped-def]
            y = self.rnn(x)[0]
            return y + y.transpose(0, 1)

    proto = _save(Mixed().eval(), (torch.randn(4, 4, 3),), tmp_path / "m.onnx", ["x"], ["y"])
    with pytest.raises(OnnxError, match="Add of a batch-first sequence"):
        import_model(proto)


@pytest.mark.parametrize("cls", ["LSTM", "GRU"])
@pytest.mark.parametrize("dynamo", [False, True])
def test_batch_first_two_layers(cls: str, dynamo: bool, tmp_path) -> None:
    """Stacked batch-first layers: one Transpose in, the layers time-major, one out."""
    if dynamo:
        pytest.importorskip("onnxscript")
    torch.manual_seed(6)
    net = getattr(torch.nn, cls)(3, 8, num_layers=2, batch_first=True).eval()
    kw: dict[str, object] = {"dynamo": True} if dynamo else {"dynamo": False,
                                                              "opset_version": 17}
    _compare_torch(net, torch.randn(3, 5, 3), ["y", "hn"] + (["cn"] if cls == "LSTM" else []),
                   tmp_path / "m.onnx", **kw)


class LastStep(torch.nn.Module):  # type: ignore[misc,name-defined]
    """The usual recurrent classifier: a Linear and a softmax on the output at the last step
    (``y[:, -1]`` batch-first, ``y[-1]`` time-major)."""

    def __init__(self, cls: str, batch_first: bool) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.rnn = getattr(torch.nn, cls)(3, 8, num_layers=2, batch_first=batch_first)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):  # type: ignore[no-untyped-def]
        y = self.rnn(x)[0]
        return torch.softmax(self.fc(y[:, -1] if self.batch_first else y[-1]), -1)


@pytest.mark.parametrize("cls", ["LSTM", "GRU"])
@pytest.mark.parametrize("dynamo, batch_first", [(False, True), (True, True), (False, False),
                                                 (True, False)])
def test_output_at_the_last_step(cls: str, dynamo: bool, batch_first: bool, tmp_path) -> None:
    """The output at the last step imports as the model's output at every step, of which the
    ONNX graph's is the last (kind 'last'): equal to PyTorch and onnxruntime, and the text says
    so; the same bundle run step by step gives PyTorch's value for every prefix."""
    import onnxruntime as ort

    from nndk.onnx.conformance import _run

    torch.manual_seed(7)
    net = LastStep(cls, batch_first).eval()
    x = torch.randn(3, 6, 3) if batch_first else torch.randn(6, 3, 3)
    path = tmp_path / "m.onnx"
    result = import_model(_save(net, (x,), path, ["x"], ["p"], dynamo))
    assert result.outputs["p"][1] == "last"
    assert "p is" in result.equations and "at the last step only" in result.equations
    want = net(x).detach().numpy()
    np.testing.assert_allclose(_run(result, {"x": x.numpy()})["p"], want, rtol=0, atol=1e-5)
    by_ort = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(by_ort, want, rtol=0, atol=1e-5)
    model = Model.from_equations(result.equations, result.weights)
    seq = x.numpy().swapaxes(0, 1) if batch_first else x.numpy()  # [T, N, 3]
    ys, _ = model.run({"x": seq})
    for t in (1, 4):
        prefix = torch.from_numpy(seq[:t].swapaxes(0, 1) if batch_first else seq[:t])
        np.testing.assert_allclose(ys[result.outputs["p"][0]][t - 1],
                                   net(prefix).detach().numpy(), rtol=0, atol=1e-5)


def test_softmax_along_time_is_refused_in_user_terms(tmp_path) -> None:
    """Attention pooling over a batch-first recurrent output (softmax along T) needs every
    step at once: refused, naming the node and the time axis (not "the batch axis")."""
    from nndk.onnx.common import OnnxError

    class Pool(torch.nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.rnn, self.score = torch.nn.GRU(3, 4, batch_first=True), torch.nn.Linear(4, 1)

        def forward(self, x):  # type: ignore[no-untyped-def]
            h = self.rnn(x)[0]
            return (torch.softmax(self.score(h), dim=1) * h).sum(1)

    proto = _save(Pool().eval(), (torch.randn(2, 5, 3),), tmp_path / "m.onnx", ["x"], ["y"])
    with pytest.raises(OnnxError, match=r"Softmax along the time axis .*node '/Softmax'"):
        import_model(proto)


class TextClassifier(torch.nn.Module):  # type: ignore[misc,name-defined]
    """nn.Embedding over token ids, an LSTM, a Linear on the top layer's final state (h_n[-1],
    or h_n.squeeze(0) of one layer) or on the output's last step."""

    def __init__(self, layers: int, read: str, batch_first: bool) -> None:
        super().__init__()
        self.read, self.batch_first = read, batch_first
        self.embed = torch.nn.Embedding(30, 6)
        self.rnn = torch.nn.LSTM(6, 8, num_layers=layers, batch_first=batch_first)
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, ids):  # type: ignore[no-untyped-def]
        y, (h, _) = self.rnn(self.embed(ids))
        if self.read == "squeeze":
            return self.fc(h.squeeze(0))
        if self.read == "final":
            return self.fc(h[-1])
        return self.fc(y[:, -1] if self.batch_first else y[-1])


@pytest.mark.parametrize("layers, read, batch_first, dynamo", [
    (1, "squeeze", True, False), (2, "final", True, False), (2, "final", True, True),
    (1, "output", True, True), (2, "final", False, False), (1, "output", False, True)])
def test_text_classifier_over_token_ids(layers: int, read: str, batch_first: bool,
                                        dynamo: bool, tmp_path) -> None:
    """Token ids ([N, T] or [T, N], int64) into an embedding and a recurrent layer, read out
    at the last step: ids per step (``xₜ ∈ ℕ``, ``E[xₜ]``), equal to PyTorch."""
    from nndk.onnx.conformance import _run

    torch.manual_seed(8)
    net = TextClassifier(layers, read, batch_first).eval()
    ids = torch.randint(0, 30, (3, 7) if batch_first else (7, 3))
    proto = _save(net, (ids,), tmp_path / "m.onnx", ["ids"], ["p"], dynamo)
    result = import_model(proto)
    assert "∈ ℕ" in result.equations and result.outputs["p"][1] == "last"
    assert ("ids" in result.batch_first) == batch_first
    got = _run(result, {"ids": ids.numpy()})["p"]
    np.testing.assert_allclose(got, net(ids).detach().numpy(), rtol=0, atol=1e-5)


def test_final_state_of_a_reverse_direction_is_refused(tmp_path) -> None:
    """A bidirectional layer's reverse final state is its value at the first step: read beside
    the sequence it has no per-step form, and the refusal says so."""
    from nndk.onnx.common import OnnxError

    class Both(torch.nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.rnn = torch.nn.GRU(3, 4, batch_first=True, bidirectional=True)
            self.fc = torch.nn.Linear(8, 2)

        def forward(self, x):  # type: ignore[no-untyped-def]
            h = self.rnn(x)[1]
            return self.fc(torch.cat([h[0], h[1]], -1))

    proto = _save(Both().eval(), (torch.randn(2, 5, 3),), tmp_path / "m.onnx", ["x"], ["y"])
    with pytest.raises(OnnxError, match="reverse direction's final state"):
        import_model(proto)
