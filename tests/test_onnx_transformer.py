"""Transformers exported by PyTorch import as tensor models (``X ∈ ℝ^(T×d)``, no time index)
and match onnxruntime and PyTorch: nn.TransformerEncoder stacks (post- and pre-norm, a causal
mask given as ``mask=`` and/or ``is_causal=True``), a nanoGPT-style causal self-attention
block with its GELU MLP, and a tiny GPT over token ids; legacy and dynamo exporters."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from nndk.onnx.common import OnnxError  # noqa: E402
from nndk.onnx.conformance import _run  # noqa: E402
from nndk.onnx.importer import import_model  # noqa: E402

T, D, HEADS, V = 6, 16, 4, 13
nn = torch.nn


def _randomize(net: object, seed: int) -> object:
    """Every parameter random (zero biases and unit norms would hide mistakes)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():  # type: ignore[attr-defined]
            p.copy_(torch.randn(p.shape, generator=gen) * 0.4)
    return net.eval()  # type: ignore[attr-defined]


class Encoder(nn.Module):  # type: ignore[misc,name-defined]
    def __init__(self, norm_first: bool, mode: str) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(D, HEADS, 32, dropout=0.0, batch_first=True,
                                           norm_first=norm_first)
        self.stack = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.mode = mode

    def forward(self, x):  # type: ignore[no-untyped-def]
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1])
        if self.mode == "mask":
            return self.stack(x, mask=mask)
        if self.mode == "mask+is_causal":
            return self.stack(x, mask=mask, is_causal=True)
        return self.stack(x)


class Block(nn.Module):  # type: ignore[misc,name-defined]
    """nanoGPT's Block: x + attn(ln₁(x)), then + mlp(ln₂(x)), the mask a tril buffer."""

    def __init__(self, sdpa: bool = False) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.qkv, self.proj = nn.Linear(D, 3 * D), nn.Linear(D, D)
        self.fc, self.out = nn.Linear(D, 4 * D), nn.Linear(4 * D, D)
        self.register_buffer("bias", torch.tril(torch.ones(T, T)).view(1, 1, T, T))
        self.sdpa = sdpa

    def attend(self, x):  # type: ignore[no-untyped-def]
        b, t, c = x.size()
        q, k, v = self.qkv(x).split(D, dim=2)
        q, k, v = (z.view(b, t, HEADS, c // HEADS).transpose(1, 2) for z in (q, k, v))
        if self.sdpa:
            y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            att = att.masked_fill(self.bias[:, :, :t, :t] == 0, float("-inf"))
            y = torch.softmax(att, dim=-1) @ v
        return self.proj(y.transpose(1, 2).contiguous().view(b, t, c))

    def forward(self, x):  # type: ignore[no-untyped-def]
        x = x + self.attend(self.ln1(x))
        return x + self.out(nn.functional.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):  # type: ignore[misc,name-defined]
    """Token and position embeddings, two blocks, a final norm and the read-out."""

    def __init__(self) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(V, D), nn.Embedding(T, D)
        self.blocks = nn.Sequential(Block(), Block())
        self.ln, self.head = nn.LayerNorm(D), nn.Linear(D, V)

    def forward(self, ids):  # type: ignore[no-untyped-def]
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1]))
        return self.head(self.ln(self.blocks(x)))


def _export(net: object, x: object, path, dynamo: bool, dynamic: bool = False) -> None:
    kw: dict[str, object] = {"opset_version": 17} if not dynamo else {}
    if dynamic:
        kw["dynamic_shapes"] = ({0: torch.export.Dim("N")},)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), str(path), input_names=["x"], output_names=["y"],
                          dynamo=dynamo, external_data=False, **kw)


def _check(net: object, x: object, path, batch_free: object = None) -> str:
    """nnre's import matches onnxruntime on ``x`` (rtol 1e-4) and PyTorch on ``batch_free``
    (another batch size: the equations are per example); returns the equations."""
    result = import_model(onnx.load(str(path)))
    assert "x ∈ ℝ^(6×16)" in result.equations or "x ∈ ℕ^6" in result.equations
    assert "ₜ" not in result.equations and not result.sequence  # a tensor model
    feeds = {"x": x.numpy()}  # type: ignore[attr-defined]
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, feeds)[0]
    got = _run(result, feeds)["y"].reshape(want.shape)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    if batch_free is not None:
        want = net(batch_free).detach().numpy()  # type: ignore[operator]
        got = _run(result, {"x": batch_free.numpy()})["y"].reshape(want.shape)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    return result.equations


@pytest.mark.parametrize("mode, dynamo", [("mask", False), ("mask+is_causal", False),
                                          ("none", False), ("mask+is_causal", True),
                                          ("none", True)])
@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_encoder_stacks(norm_first: bool, mode: str, dynamo: bool,
                                    tmp_path) -> None:
    """(``mask=`` alone does not export with dynamo: torch.export stops at the layer's
    data-dependent check whether the mask is causal.)"""
    net = _randomize(Encoder(norm_first, mode), 1)
    x = torch.randn(2, T, D)
    _export(net, x, tmp_path / "m.onnx", dynamo)
    text = _check(net, x, tmp_path / "m.onnx", torch.randn(3, T, D))
    assert "softmax(" in text and "E₁" in text  # heads split by a 0/1 weight


@pytest.mark.parametrize("dynamo", [False, True])
@pytest.mark.parametrize("sdpa", [False, True])
def test_nanogpt_blocks(sdpa: bool, dynamo: bool, tmp_path) -> None:
    net = _randomize(nn.Sequential(Block(sdpa), Block(sdpa)), 2)
    x = torch.randn(2, T, D)
    _export(net, x, tmp_path / "m.onnx", dynamo)
    _check(net, x, tmp_path / "m.onnx", torch.randn(3, T, D))


@pytest.mark.parametrize("dynamo", [False, True])
def test_a_tiny_gpt_over_token_ids(dynamo: bool, tmp_path) -> None:
    net = _randomize(GPT(), 3)
    ids = torch.randint(0, V, (2, T))
    _export(net, ids, tmp_path / "m.onnx", dynamo)
    text = _check(net, ids, tmp_path / "m.onnx", torch.randint(0, V, (3, T)))
    assert "x ∈ ℕ^6" in text and "[x]" in text


@pytest.mark.parametrize("cls", ["encoder", "block"])
@pytest.mark.parametrize("how", ["batch of 1", "dynamic batch (dynamo)"])
def test_exports_with_a_batch_of_one_or_a_dynamic_batch(cls: str, how: str, tmp_path) -> None:
    """A graph exported for one example is that example's model; a dynamic batch (the
    dynamo exporter's reshapes with −1) is followed with probes of 2 and of 3 examples."""
    net = _randomize(Encoder(False, "mask+is_causal") if cls == "encoder" else Block(), 4)
    one = how == "batch of 1"
    x = torch.randn(1 if one else 2, T, D)
    _export(net, x, tmp_path / "m.onnx", dynamo=not one, dynamic=not one)
    _check(net, x if one else torch.randn(4, T, D), tmp_path / "m.onnx", torch.randn(3, T, D))


def test_a_dynamic_batch_from_the_legacy_exporter_is_refused(tmp_path) -> None:
    """Its reshapes compute N·H from the input's shape: a size that depends on the batch."""
    net = _randomize(Encoder(False, "none"), 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.randn(2, T, D),), str(tmp_path / "m.onnx"), dynamo=False,
                          opset_version=17, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    with pytest.raises(OnnxError, match=r"Mul of the batch or time size \(nodes "
                                        r"'/stack/layers.0/self_attn/Mul'"):
        import_model(onnx.load(str(tmp_path / "m.onnx")))
