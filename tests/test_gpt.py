"""The ``gpt`` template against nanoGPT's model written in PyTorch (benchmarks/gpt_torch.py):
the cached step, the sequence form, training through it, and generation past the context."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import nnre
from nndk.learner import Learner
from nndk.models import read_model
from nndk.sequence import compile_sequence
from nnre.equations import check
from nnre.vm import bind_stage, run_prologue

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from gpt_torch import GPT  # noqa: E402

DIMS = {"L": 2, "heads": 2, "d": 8, "context": 6}
VOCAB = 5


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    text, _ = read_model("gpt")
    learner = Learner(check(text, DIMS, known={"y": (VOCAB,)}), text, "adam", 3, "auto",
                      sequence=True)
    rng = np.random.default_rng(1)
    return {n: (a + rng.normal(scale=0.3, size=a.shape)).reshape(learner.shapes[n])
            for n, a in learner.params.items()}  # gains away from 1, so they count


def _torch_probs(weights: dict[str, np.ndarray], ids: np.ndarray) -> np.ndarray:
    net = GPT({k: v.astype(np.float64) for k, v in weights.items()}, 2, 2).double()
    with torch.no_grad():
        return torch.softmax(net(torch.tensor(ids)), -1).numpy()


def test_the_cached_step_is_nanogpts_forward(weights: dict[str, np.ndarray]) -> None:
    text, _ = read_model("gpt")
    model = nnre.Model.from_equations(text, weights, DIMS, dtype="float64")
    ids = np.array([[1, 4, 0, 3, 3, 2], [2, 0, 1, 1, 4, 0]])
    ys, _ = model.run({"x": ids.T[:, :, None].astype(float)})
    np.testing.assert_allclose(ys["y"].transpose(1, 0, 2), _torch_probs(weights, ids),
                               rtol=1e-9, atol=1e-12)


def test_the_sequence_form_is_nanogpts_forward(weights: dict[str, np.ndarray]) -> None:
    text, _ = read_model("gpt")
    prog = compile_sequence(check(text, DIMS, {k: v.shape for k, v in weights.items()}),
                            "float64")
    ids = np.array([[1, 4, 0, 3, 3, 2], [2, 0, 1, 1, 4, 0], [0, 0, 0, 1, 1, 1]])
    stage = bind_stage(prog, run_prologue(prog, weights), prog.pre + prog.post, 3,
                       list(prog.inputs.values()))
    np.copyto(stage.given[prog.inputs["x"]], ids[:, :, None])
    for f in stage.tapes[0]:
        f()
    np.testing.assert_allclose(stage.arrays[0][prog.outputs["y"]], _torch_probs(weights, ids),
                               rtol=1e-9, atol=1e-12)


def test_one_training_step_moves_the_weights_as_pytorch_does(
        weights: dict[str, np.ndarray]) -> None:
    """The gradient of the mean cross-entropy over every position, by nndk's autodiff through
    the sequence form, against PyTorch's autograd of the same network and loss."""
    from nndk.losses import cross_entropy

    text, _ = read_model("gpt")
    learner = Learner(check(text, DIMS, known={"y": (VOCAB,)}), text, "sgd", 0, "auto",
                      sequence=True)
    learner.load_weights(weights, "test")
    ids = np.array([[1, 4, 0, 3, 3, 2], [2, 0, 1, 1, 4, 0]])
    targets = np.array([[4, 0, 3, 3, 2, 1], [0, 1, 1, 4, 0, 2]])
    run = learner.forward({"x": ids[:, :, None].astype(np.float32)}, 1, 2, None)
    prog = learner.prog
    values = run.full[prog.outputs["y"]]
    loss, seeds = cross_entropy(prog, "y", values.reshape(-1, VOCAB), targets.reshape(-1))
    _, back = learner.buffers(1, 2)
    back.backward({k: v.reshape(run.full[k].shape) for k, v in seeds.items()})
    net = GPT({k: v.astype(np.float64) for k, v in weights.items()}, 2, 2).double()
    logits = net(torch.tensor(ids))
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB),
                                                 torch.tensor(targets.reshape(-1)))
    expected.backward()
    assert loss == pytest.approx(float(expected.detach()), rel=1e-5)
    for name, index in prog.params.items():
        got = back.full[index].reshape(learner.shapes[name])
        want = net.w(name).grad.numpy()
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-5, err_msg=name)


def test_generation_goes_on_past_the_context(weights: dict[str, np.ndarray]) -> None:
    """Greedy text of 20 characters from a context of 6: each character the argmax of the
    model fed the stream's characters since its last restart (the last context // 2 when the
    context fills), computed here by PyTorch's own forward."""
    text, _ = read_model("gpt")
    codecs = {"x": {"id": "char", "vocab": list("abcde")},
              "y": {"id": "sample", "vocab": list("abcde")}}
    model = nnre.Model.from_equations(text, weights, DIMS, dtype="float64",
                                      metadata={"codecs": codecs})
    got = "".join(model.generate("ab", 20, temperature=0))
    net = GPT({k: v.astype(np.float64) for k, v in weights.items()}, 2, 2).double()
    seen, want = [0, 1], []
    for _ in range(20):
        with torch.no_grad():
            code = int(torch.argmax(net(torch.tensor([seen]))[0, -1]))
        want.append("abcde"[code])
        seen = seen + [code] if len(seen) < 6 else seen[-2:] + [code]
    assert got == "".join(want)


def test_the_onnx_export_runs_in_onnxruntime_step_by_step_and_all_at_once(
        weights: dict[str, np.ndarray]) -> None:
    ort = pytest.importorskip("onnxruntime")
    from nndk.onnx.export import export_model

    text, _ = read_model("gpt")
    model = nnre.Model.from_equations(text, weights, DIMS)
    ids = np.array([[1, 4, 0, 3, 3, 2], [2, 0, 1, 1, 4, 0]])
    want, _ = model.run({"x": ids.T[:, :, None].astype(np.float32)})
    step = ort.InferenceSession(export_model(model).SerializeToString())
    names = [i.name for i in step.get_inputs()]
    feeds = {n: np.zeros((2, *model.state[n[:-5]].shape), np.float32) for n in names
             if n.endswith("_prev")}
    for t in range(6):
        feeds["x"] = ids[:, t:t + 1].astype(np.float32)
        outs = dict(zip([o.name for o in step.get_outputs()], step.run(None, feeds),
                        strict=True))
        np.testing.assert_allclose(outs["y"], want["y"][t], rtol=1e-4, atol=1e-6)
        feeds = {n: outs[n[:-5] + "_next"] for n in feeds if n.endswith("_prev")}
    whole = ort.InferenceSession(export_model(model, sequence=True).SerializeToString())
    (y,) = whole.run(None, {"x": ids[:, :, None].astype(np.float32)})
    np.testing.assert_allclose(y, want["y"].transpose(1, 0, 2), rtol=1e-4, atol=1e-6)


def test_the_sequence_export_imports_back_and_the_step_export_says_why_not(
        weights: dict[str, np.ndarray], tmp_path: Path) -> None:
    """``nndk export --sequence`` (every step at once: ids fed as numbers, cast and gathered,
    a causal mask) imports back as a tensor model that matches onnxruntime and nanoGPT; the
    cached step, whose state is the keys and values, is refused naming that state, the node
    reading it and what to import instead, one ``error:`` line from the CLI."""
    import os
    import subprocess

    ort = pytest.importorskip("onnxruntime")
    from nndk.onnx.common import OnnxError
    from nndk.onnx.conformance import _run
    from nndk.onnx.export import export_model
    from nndk.onnx.importer import import_model

    text, _ = read_model("gpt")
    model = nnre.Model.from_equations(text, weights, DIMS)
    proto = export_model(model, sequence=True)
    result = import_model(proto)
    again = nnre.Model.from_equations(result.equations, result.weights)
    assert not again.state and again.program.ids  # no state: all steps at once, ids in
    ids = np.array([[1, 4, 0, 3, 3, 2], [2, 0, 1, 1, 4, 0], [0, 0, 0, 1, 1, 1]])
    feeds = {"x": ids[:, :, None].astype(np.float32)}
    got = _run(result, feeds)["y"].reshape(3, 6, VOCAB)
    (by_ort,) = ort.InferenceSession(proto.SerializeToString()).run(None, feeds)
    np.testing.assert_allclose(got, by_ort, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got, _torch_probs(weights, ids), rtol=0, atol=1e-5)
    with pytest.raises(OnnxError, match=r"state 'K\^\{\(1\)\}' \(input 'K\^\{\(1\)\}_prev', "
                       r"read by Where node .*\) holds a 2×6×4 tensor per example, a history "
                       r".*import the --sequence export"):
        import_model(export_model(model))
    import onnx

    onnx.save(export_model(model), str(tmp_path / "step.onnx"))
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-m", "nndk", "import", "step.onnx", "-o", "b.bundle"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 1 and proc.stderr.startswith("error: ") and \
        proc.stderr.count("\n") == 1 and "history" in proc.stderr, proc.stderr
    assert not (tmp_path / "b.bundle").exists()


def test_scoring_reads_a_long_text_in_chunks_of_the_context(
        weights: dict[str, np.ndarray]) -> None:
    text, _ = read_model("gpt")
    codecs = {"x": {"id": "char", "vocab": list("abcde")},
              "y": {"id": "sample", "vocab": list("abcde")}}
    model = nnre.Model.from_equations(text, weights, DIMS, dtype="float64",
                                      metadata={"codecs": codecs})
    chars = "abcdeedcbaabbccddeeaa"
    got = model.score(chars)
    net = GPT({k: v.astype(np.float64) for k, v in weights.items()}, 2, 2).double()
    want = []
    for start in range(0, len(chars), 6):  # no prime (no newline): each chunk's first free
        ids = ["abcde".index(c) for c in chars[start:start + 6]]
        with torch.no_grad():
            logp = torch.log_softmax(net(torch.tensor([ids]))[0], -1).numpy()
        want += [-logp[i, ids[i + 1]] / np.log(2) for i in range(len(ids) - 1)]
    np.testing.assert_allclose(got.bits, want, rtol=1e-9)


def test_a_batch_of_texts_scores_as_each_alone(weights: dict[str, np.ndarray]) -> None:
    """score_batch (what nnre.ray runs): texts of a transformer as the rows of one batch,
    each cut to the context, give the bits of scoring each alone (checked above)."""
    from nnre.scoring import score_batch

    text, _ = read_model("gpt")
    codecs = {"x": {"id": "char", "vocab": list("abcde")},
              "y": {"id": "sample", "vocab": list("abcde")}}
    model = nnre.Model.from_equations(text, weights, DIMS, dtype="float64",
                                      metadata={"codecs": codecs})
    texts = ["abcdeedcbaabbccddeeaa", "a", "", "edcba", "abcdeabcdeab"]
    for alone, batched in zip(texts, score_batch(model, texts), strict=True):
        want = model.score(alone)
        np.testing.assert_allclose(batched.bits, want.bits, rtol=1e-9)
        assert batched.positions.tolist() == want.positions.tolist()


def test_attention_starts_from_gpt2s_init() -> None:
    """auto is N(0, 0.02) for a text with histories: the tied read-out starts near uniform
    (cross-entropy ln V), where Xavier's tables start near 2 ln V and train worse."""
    from nndk.init import GPT2_STD

    text, _ = read_model("gpt")
    dims = {"L": 2, "heads": 2, "d": 32, "context": 8}
    learner = Learner(check(text, dims, known={"y": (65,)}), text, "adam", 0, "auto",
                      sequence=True)
    table = learner.params["E"]
    assert abs(float(table.std()) - GPT2_STD) < 0.002 and abs(float(table.mean())) < 0.002
    gains = [n for n in learner.params if n.startswith("γ")]
    assert len(gains) == 5 and all(np.all(learner.params[n] == 1) for n in gains)  # layers too
    ids = np.random.default_rng(0).integers(0, 65, (4, 9))
    run = learner.forward({"x": ids[:, :-1, None].astype(np.float32)}, 1, 4, None)
    probs = run.full[learner.prog.outputs["y"]].reshape(-1, 65)
    loss = -np.mean(np.log(probs[np.arange(32), ids[:, 1:].reshape(-1)]))
    assert abs(loss - np.log(65)) < 0.05
