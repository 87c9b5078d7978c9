"""Token-id inputs (PyTorch's nn.Embedding, exported to ONNX) import as ids, ``x ∈ ℕ^T`` and
``E[x]``, and the model takes the ids at run time: against PyTorch and onnxruntime."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import helper, numpy_helper  # noqa: E402

import nnre  # noqa: E402
from nndk.onnx.common import OnnxError  # noqa: E402
from nndk.onnx.importer import import_file, import_model  # noqa: E402
from nnre.errors import FeedError  # noqa: E402
from nnre.model import Model  # noqa: E402

V, D, T = 11, 6, 5


class EmbedLinear(torch.nn.Module):  # type: ignore[misc,name-defined]
    """Ids → rows of a table → a Linear on each (or on their mean over the sequence)."""

    def __init__(self, mean: bool) -> None:
        super().__init__()
        self.embed, self.out, self.mean = torch.nn.Embedding(V, D), torch.nn.Linear(D, 3), mean

    def forward(self, ids):  # type: ignore[no-untyped-def]
        rows = self.embed(ids)
        return self.out(rows.mean(dim=1) if self.mean else rows)


def _export(net: object, ids: object, path, dynamo: bool) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (ids,), str(path), input_names=["ids"], output_names=["y"],
                          dynamo=dynamo, external_data=False,
                          **({} if dynamo else {"opset_version": 17}))
    return onnx.load(str(path))


@pytest.mark.parametrize("dynamo", [False, True])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
@pytest.mark.parametrize("shape, mean", [((4, T), False), ((4, T), True), ((4,), False)])
def test_embedding_exports_take_ids_at_run_time(dynamo: bool, dtype: object,
                                                shape: tuple[int, ...], mean: bool,
                                                tmp_path) -> None:
    torch.manual_seed(3)
    net = EmbedLinear(mean).eval()
    ids = torch.randint(0, V, shape, dtype=dtype)  # type: ignore[call-overload]
    proto = _export(net, ids, tmp_path / "m.onnx", dynamo)
    result = import_model(proto)
    assert ("ids ∈ ℕ^5" if len(shape) == 2 else "ids ∈ ℕ\n") in result.equations
    assert "[ids]" in result.equations  # E[ids]: rows of the table, not a one-hot product
    model = Model.from_equations(result.equations, result.weights)
    assert model.program.ids == {"ids": V}
    fresh = torch.randint(0, V, shape, dtype=dtype)  # type: ignore[call-overload]
    per = model.inputs["ids"].shape  # (T,), or (1,) for one id (x ∈ ℕ is fed (N, 1))
    feed = fresh.numpy().reshape(-1, *per)
    got, _ = model.step({"ids": feed})  # the ids themselves, an example per row
    want = net(fresh).detach().numpy()
    by_ort = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=[
        "CPUExecutionProvider"]).run(None, {"ids": fresh.numpy()})[0]
    name = result.outputs["y"][0]
    np.testing.assert_allclose(got[name].reshape(want.shape), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[name].reshape(want.shape), by_ort, rtol=1e-5, atol=1e-6)
    seq, _ = model.run({"ids": np.stack([feed, feed[::-1]])})  # [steps, N, …]
    np.testing.assert_allclose(seq[name][1].reshape(want.shape),
                               net(fresh.flip(0)).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_an_imported_bundle_refuses_ids_outside_the_table(tmp_path) -> None:
    """Through a bundle: ids are whole numbers 0 … V−1 (ONNX's −1, the last row, too is
    refused before anything runs)."""
    torch.manual_seed(4)
    net = EmbedLinear(False).eval()
    _export(net, torch.randint(0, V, (2, T)), tmp_path / "m.onnx", False)
    import_file(tmp_path / "m.onnx", tmp_path / "m.bundle")
    model = nnre.load(tmp_path / "m.bundle")
    ids = np.array([[1, 2, 3, 4, 10]])
    got, _ = model.step({"ids": ids})
    np.testing.assert_allclose(got[next(iter(model.outputs))].reshape(1, T, 3),
                               net(torch.tensor(ids)).detach().numpy(), rtol=1e-5, atol=1e-6)
    for bad in (11, -1):
        with pytest.raises(FeedError, match=r"input 'ids' holds .* its ids are whole numbers "
                                            r"0 … 10"):
            model.step({"ids": np.array([[1, 2, bad, 4, 5]])})


def test_integer_inputs_read_as_numbers_are_refused() -> None:
    """An integer input that an Add reads is numbers, not ids: refused, naming it."""
    nodes = [helper.make_node("Gather", ["E", "ids"], ["rows"]),
             helper.make_node("Cast", ["ids"], ["f"], to=1),
             helper.make_node("Add", ["f", "f"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("ids", 7, ["N", 3])],
        [helper.make_tensor_value_info("y", 1, None), helper.make_tensor_value_info(
            "rows", 1, None)], [numpy_helper.from_array(np.ones((4, 2), np.float32), "E")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(OnnxError, match="input 'ids' is not a float or boolean tensor.*or "
                                        "token ids that only Gather reads"):
        import_model(proto)
