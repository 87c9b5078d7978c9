"""nndk train: learning, bit-identical resume, atomic checkpoints, clear failures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from text_helpers import word_corpus

from nndk import checkpoint
from nndk.budget import BudgetError, estimate
from nndk.models import read_model
from nndk.optim import OPTIMIZERS, clip_global_norm
from nndk.train import TrainConfig, TrainingError, resume, start
from nnre.equations import check


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return word_corpus(tmp_path_factory.mktemp("data"))


def small(**over: object) -> TrainConfig:
    base = dict(dims={"H": 16}, seq_length=10, batch_size=4, steps=12, eval_every=6,
                sample_length=0, lr=1e-2)
    return TrainConfig(**(base | over))  # type: ignore[arg-type]


def quiet(_: object) -> None:
    return None


def test_resume_is_bit_identical(corpus: Path, tmp_path: Path) -> None:
    straight = start(small(steps=12), corpus)
    straight.fit(tmp_path / "a", quiet)
    first = start(small(steps=6), corpus)
    first.fit(tmp_path / "b", quiet)
    second = resume(tmp_path / "b", steps=12)
    assert second.step == 6
    second.fit(tmp_path / "b", quiet)
    for name, value in straight.params.items():
        np.testing.assert_array_equal(second.params[name], value, err_msg=name)
    for key, value in straight.opt.state.items():
        np.testing.assert_array_equal(second.opt.state[key], value, err_msg=key)


@pytest.mark.parametrize("model", ["lstm", "gru", "rnn", "lstm2", "gru2"])
def test_training_lowers_the_loss(corpus: Path, tmp_path: Path, model: str) -> None:
    trainer = start(small(model=model, steps=60, eval_every=30), corpus)
    before = trainer.evaluate()
    trainer.fit(tmp_path, quiet)
    after = trainer.evaluate()
    assert before is not None and after is not None
    assert after < (0.9 if model.endswith("2") else 0.8) * before, (before, after)  # stacks
    # learn more slowly in 60 steps


def test_checkpoint_round_trip_and_progress_sample(corpus: Path, tmp_path: Path) -> None:
    seen = []
    trainer = start(small(steps=6, eval_every=3, sample_length=25), corpus)
    trainer.fit(tmp_path, seen.append)
    assert [p.step for p in seen] == list(range(1, 7))
    samples = [p.sample for p in seen if p.sample is not None]
    assert len(samples) == 2 and all(len(s) == 25 for s in samples)
    assert set("".join(samples)) <= set(trainer.data.vocab)
    arrays, record = checkpoint.load(tmp_path)
    assert record["step"] == 6 and record["vocab"] == trainer.data.vocab
    assert record["config"]["seed"] == 0 and len(record["data_sha256"]) == 64
    np.testing.assert_array_equal(arrays["param/W_f"], trainer.params["W_f"])
    assert arrays["param/b_f"].shape == (16,)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(corpus: Path,
                                                           tmp_path: Path) -> None:
    trainer = start(small(steps=4, eval_every=2), corpus)
    trainer.fit(tmp_path, quiet)
    good = (tmp_path / checkpoint.FILENAME).read_bytes()
    trainer.config.steps = 8
    trainer.params["W_y"][...] = np.nan
    with pytest.raises(TrainingError, match=r"loss became nan at step 5; the last good "
                                            r"checkpoint \(step 4\) is kept in"):
        trainer.fit(tmp_path, quiet)
    assert (tmp_path / checkpoint.FILENAME).read_bytes() == good


def test_nan_at_the_first_step_does_not_claim_a_checkpoint(corpus: Path, tmp_path: Path) -> None:
    trainer = start(small(steps=4, eval_every=2), corpus)
    trainer.params["W_y"][...] = np.nan
    with pytest.raises(TrainingError, match="at step 1; no checkpoint was written"):
        trainer.fit(tmp_path, quiet)
    assert not (tmp_path / checkpoint.FILENAME).exists()


def test_nan_right_after_resume_names_the_resumed_checkpoint(corpus: Path,
                                                             tmp_path: Path) -> None:
    start(small(steps=2, eval_every=2), corpus).fit(tmp_path, quiet)
    trainer = resume(tmp_path, steps=4)
    trainer.params["W_y"][...] = np.nan
    with pytest.raises(TrainingError, match=r"at step 3; the last good checkpoint \(step 2\) "
                                            f"is kept in {tmp_path}"):
        trainer.fit(tmp_path, quiet)


def test_memory_budget_comes_from_nnre_max_bytes(corpus: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    text, filename = read_model("lstm")
    vocab = len(set(corpus.read_text(encoding="utf-8")))
    checked = check(text, {"H": 16}, filename=filename, known={"x": (vocab,)})
    fixed, per_batch = estimate(checked, "adam", 10, 4)
    assert fixed == 4 * 4 * (4 * 16 * (vocab + 16 + 1) + vocab * 17)  # param, grad, 2 moments
    monkeypatch.setenv("NNRE_MAX_BYTES", str(fixed + per_batch - 1))
    with pytest.raises(BudgetError, match=f"needs about {fixed + per_batch:,} bytes"):
        start(small(steps=1), corpus)
    monkeypatch.setenv("NNRE_MAX_BYTES", str(fixed + per_batch))
    start(small(steps=1), corpus)


def test_resume_refuses_other_data(corpus: Path, tmp_path: Path) -> None:
    start(small(steps=2, eval_every=2), corpus).fit(tmp_path, quiet)
    other = tmp_path / "other.txt"
    other.write_text(corpus.read_text(encoding="utf-8")[::-1], encoding="utf-8")
    with pytest.raises(Exception, match="not the data this checkpoint was trained on"):
        resume(tmp_path, other)


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    target.write_bytes(b"good")

    def explode(f: object) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        checkpoint.atomic_write(target, explode)
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_clip_global_norm() -> None:
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    norm = clip_global_norm(grads, 1.0)
    assert norm == pytest.approx(5.0)
    scale = 1.0 / (5.0 + 1e-6)  # PyTorch's clip_grad_norm_ adds 1e-6 to the norm
    np.testing.assert_allclose(grads["a"], [3 * scale, 0.0], rtol=1e-12)
    np.testing.assert_allclose(grads["b"], [[4 * scale]], rtol=1e-12)
    inside = {"a": np.array([0.6, 0.0])}
    assert clip_global_norm(inside, 1.0) == pytest.approx(0.6)
    np.testing.assert_array_equal(inside["a"], [0.6, 0.0])  # under the limit: untouched


def test_adam_first_steps_match_the_paper() -> None:
    p = {"w": np.array([1.0, -2.0])}
    opt = OPTIMIZERS["adam"](p)
    g1, g2 = np.array([0.5, -1.0]), np.array([0.1, 0.3])
    opt.step(p, {"w": g1.copy()}, 0.1)
    opt.step(p, {"w": g2.copy()}, 0.1)
    w, m, v = np.array([1.0, -2.0]), np.zeros(2), np.zeros(2)
    for t, g in enumerate([g1, g2], start=1):
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        w = w - 0.1 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    np.testing.assert_allclose(p["w"], w, rtol=1e-6)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_descends_a_quadratic(name: str) -> None:
    p = {"w": np.array([3.0, -2.0])}
    opt = OPTIMIZERS[name](p)
    lr = 0.5 if name == "adagrad" else 0.05  # Adagrad's steps shrink as squares accumulate
    for _ in range(200):
        opt.step(p, {"w": 2 * p["w"]}, lr)
    assert float(np.sum(p["w"] ** 2)) < 0.1 * 13.0


def test_shipped_corpus_learns_well_below_unigram_entropy(tmp_path: Path) -> None:
    corpus_path = Path(__file__).resolve().parent.parent / "samples" / "corpus.txt"
    text = corpus_path.read_text(encoding="utf-8")
    counts = np.unique(np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32),
                       return_counts=True)[1]
    p = counts / counts.sum()
    unigram_bits = float(-(p * np.log2(p)).sum())
    trainer = start(TrainConfig(dims={"H": 32}, seq_length=25, batch_size=16, steps=200,
                                eval_every=200, sample_length=0, lr=1e-2), corpus_path)
    trainer.fit(tmp_path, quiet)
    val_bits = trainer.history["val_loss"] / np.log(2)
    assert val_bits < 0.6 * unigram_bits, (val_bits, unigram_bits)


def test_pack_checkpoint_carries_vocab_sampling_and_provenance(corpus: Path,
                                                               tmp_path: Path) -> None:
    import nnre
    from nndk.pack import PackRequest, pack

    trainer = start(small(steps=4, eval_every=4), corpus)
    trainer.fit(tmp_path / "ck", quiet)
    out = tmp_path / "m.bundle"
    pack(PackRequest(tmp_path / "ck", None, out, "tiny", "1.2.3", created="2026-01-01T00:00:00Z"))
    model = nnre.load(out)
    meta = model.metadata
    assert meta["codecs"]["x"] == {"id": "char", "vocab": list(trainer.data.vocab)}
    assert meta["sampling"]["temperature"] == trainer.config.temperature
    prov = meta["provenance"]
    assert prov["steps"] == 4 and prov["seed"] == 0
    assert prov["data_sha256"] == trainer.data.sha256
    assert prov["final_losses"]["train_loss"] == trainer.history["train_loss"]
    assert prov["hyperparameters"]["seq_length"] == 10
    xs = np.eye(trainer.data.size, dtype=np.float32)[trainer.data.val[:20]]
    want = trainer.runtime_model().run({"x": xs})[0]["y"]
    np.testing.assert_array_equal(model.run({"x": xs})[0]["y"], want)


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(corpus: Path, tmp_path: Path) -> None:
    import re
    import signal
    import subprocess
    import sys
    import time

    ck = tmp_path / "ck"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nndk", "train", str(corpus), "--set", "H=8", "--steps",
         "100000", "--seq-length", "5", "--batch-size", "2", "--eval-every", "5",
         "--sample-length", "0", "--checkpoint-dir", str(ck)],
        stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (ck / checkpoint.FILENAME).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    match = re.search(r"interrupted at step (\d+); checkpoint saved", err)
    assert match, err
    _, record = checkpoint.load(ck)
    assert record["step"] == int(match.group(1)) > 0


@pytest.mark.parametrize("model", ["lstm", "gru", "rnn"])
def test_codes_gather_the_same_rows_as_the_one_hot_product(model: str) -> None:
    """Characters given as codes take rows of the input weights instead of multiplying."""
    from nndk.data import one_hot
    from nndk.learner import Learner
    from nndk.models import read_model
    from nnre.equations import check

    text, _ = read_model(model)
    learner = Learner(check(text, {"H": 8, "V": 7}), text, "adam", 0, "auto")
    codes = np.random.default_rng(0).integers(0, 7, size=5 * 3)
    name = next(iter(learner.prog.inputs))
    feeds = {name: one_hot(codes, 7, "float32")}
    plain = [np.array(v) for v in learner.forward(feeds, 5, 3, None).full if v is not None]
    run = learner.forward(feeds, 5, 3, None, {name: codes})
    assert run.coded == {name}
    gathered = [v for v in run.full if v is not None]
    for a, b in zip(plain, gathered, strict=True):
        np.testing.assert_array_equal(a, b)


RNN_READ_OUTS = {
    "log_softmax": "yₜ = log_softmax(W_y hₜ + b_y)",
    "softmax": "yₜ = softmax(W_y hₜ + b_y)",
    "dropout": "yₜ = softmax(W_y dropout(hₜ) + b_y)",  # trained with --dropout 0.5
}


@pytest.mark.parametrize("read_out", sorted(RNN_READ_OUTS))
def test_reported_validation_loss_is_the_models_own_nll(corpus: Path, tmp_path: Path,
                                                        read_out: str) -> None:
    """Progress, checkpoint and provenance report the mean NLL over the validation split,
    recomputed here by ``Model.run`` in float64 over the same streams, whatever the output
    (evaluation runs without dropout: the oracle's equations have none)."""
    import nnre
    from nndk.pack import PackRequest, pack
    from nnre.model import Model

    text = "xₜ ∈ ℝ^V\nhₜ ∈ ℝ^H\nyₜ ∈ ℝ^V\nhₜ = tanh(W_h xₜ + U_h hₜ₋₁ + b_h)\n"
    text += RNN_READ_OUTS[read_out] + "\n"
    (tmp_path / "rnn.eqn").write_text(text, encoding="utf-8")
    config = small(model=str(tmp_path / "rnn.eqn"), steps=5, eval_every=5,
                   dropout=0.5 if read_out == "dropout" else 0.0)
    seen: list = []
    start(config, corpus).fit(tmp_path / "ck", seen.append)

    arrays, record = checkpoint.load(tmp_path / "ck")
    weights = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    model = Model.from_equations(text.replace("dropout(hₜ)", "hₜ"), weights, dtype="float64")
    chars = corpus.read_text(encoding="utf-8")
    vocab = sorted(set(chars))
    codes = np.array([vocab.index(ch) for ch in chars])
    val = codes[len(codes) - int(len(codes) * config.val_frac):]
    streams = min(config.batch_size, (len(val) - 1) // config.seq_length)
    per_stream = (len(val) - 1) // streams
    used = per_stream // config.seq_length * config.seq_length
    xs = val[:per_stream * streams].reshape(streams, per_stream)[:, :used].T
    ts = val[1:per_stream * streams + 1].reshape(streams, per_stream)[:, :used].T
    ys = model.run({"x": np.eye(len(vocab))[xs]})[0]["y"]
    picked = ys[np.arange(used)[:, None], np.arange(streams), ts]
    logp = picked if read_out == "log_softmax" else np.log(picked)
    want = -float(logp.mean())
    assert 2.0 < want < 4.0  # near log(vocabulary) after 5 steps: the oracle reads y right

    assert seen[-1].val_loss == pytest.approx(want, rel=1e-5)
    assert record["history"]["val_loss"] == pytest.approx(want, rel=1e-5)
    out = tmp_path / "m.bundle"
    pack(PackRequest(tmp_path / "ck", None, out, "tiny", "1.0.0", created="2026-01-01T00:00:00Z"))
    final = nnre.load(out).metadata["provenance"]["final_losses"]
    assert final["val_loss"] == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("hidden", [128, 256])  # arrays dominate the peak
def test_the_memory_estimate_bounds_what_training_allocates(hidden: int) -> None:
    """The oracle is tracemalloc's peak over building the trainer and one step: the estimate
    must cover it without refusing runs that fit (an earlier estimate counted every weight
    once per step and example, and refused H=512 on a 24 GiB machine)."""
    import tracemalloc

    from nndk.data import TextData
    from nndk.train_text import TextTrainer

    steps, batch, vocab = 20, 16, "".join(chr(32 + i) for i in range(40))
    codes = np.random.default_rng(0).integers(0, len(vocab), 20_000)
    text, filename = read_model("lstm")
    config = TrainConfig(dims={"H": hidden}, seq_length=steps, batch_size=batch,
                         sample_length=0)
    tracemalloc.start()
    try:
        trainer = TextTrainer(config, "<test>", text, filename,
                              TextData(vocab, codes, codes[:0], "0" * 64))
        trainer.train_step()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    fixed, per_batch = estimate(check(text, {"H": hidden, "V": len(vocab)}), "adam", steps,
                                batch)
    assert peak <= fixed + per_batch <= 3 * peak, (peak, fixed + per_batch)


def test_init_from_a_text_bundle_takes_its_dimensions_and_vocabulary(corpus: Path,
                                                                     tmp_path: Path) -> None:
    """No --set: the bundle's H, not the default 128; a text using fewer characters keeps
    the bundle's vocabulary, so each character reads the weights' row it was trained with."""
    import nnre
    from nndk.pack import PackRequest, pack

    trainer = start(small(steps=2, eval_every=2, dims={"H": 12}), corpus)
    trainer.fit(tmp_path / "ck", quiet)
    out = tmp_path / "m.bundle"
    pack(PackRequest(tmp_path / "ck", None, out, "m", "1.0.0", created="2026-01-01T00:00:00Z"))
    fewer = tmp_path / "fewer.txt"
    fewer.write_text(corpus.read_text(encoding="utf-8").replace("z", "q") * 2, encoding="utf-8")
    again = start(TrainConfig(steps=1, sample_length=0), fewer, init_from=str(out))
    assert again.config.dims["H"] == 12
    assert again.data.vocab == trainer.data.vocab != "".join(sorted(set(fewer.read_text())))
    xs = np.eye(again.data.size, dtype=np.float32)[again.data.val[:30]]
    np.testing.assert_array_equal(again.runtime_model().run({"x": xs})[0]["y"],
                                  nnre.load(out).run({"x": xs})[0]["y"])
    other = tmp_path / "other.txt"
    other.write_text("new characters: ÅÆØ " * 50, encoding="utf-8")
    with pytest.raises(Exception, match="characters not in the model's vocabulary"):
        start(TrainConfig(steps=1, sample_length=0), other, init_from=str(out))


def test_a_text_model_trains_without_declaring_its_output(corpus: Path, tmp_path: Path) -> None:
    """The trainer knows V from the text: neither ``xₜ ∈ ℝ^V`` nor ``yₜ ∈ ℝ^V`` is needed."""
    eqn = tmp_path / "bare.eqn"
    eqn.write_text("hₜ ∈ ℝ^H\nhₜ = tanh(W_h xₜ + U_h hₜ₋₁ + b_h)\n"
                   "yₜ = softmax(W_y hₜ + b_y)\n", encoding="utf-8")
    trainer = start(small(model=str(eqn), steps=30, eval_every=30), corpus)
    before = trainer.evaluate()
    trainer.fit(tmp_path / "ck", quiet)
    after = trainer.evaluate()
    assert trainer.learner.shapes["W_y"] == (trainer.data.size, 16)
    assert before is not None and after is not None and after < 0.8 * before


def test_the_training_estimate_counts_conv_columns() -> None:
    """conv's im2col (kernel · C entries per output position, made again by its gradient)
    dwarfs x and the result with a large kernel; the estimate left it out."""
    text = "input x\nx ∈ ℝ^(1×64×64)\nK ∈ ℝ^(1×1×21×21)\ny = flatten(conv(K, x; pad=10))"
    _, per_batch = estimate(check(text), "adam", 1, 1)
    assert per_batch >= 64 * 64 * 21 * 21 * 4, per_batch


POOL_EQN = ("input x\nx ∈ ℝ^(2×48×48)\nk ∈ ℝ^(2×1×1)\nh = relu(x ⊙ k)\n"
            "p = maxpool(h; size=3, stride=3, pad=1)\ny = W flatten(p) + b\n")


def test_the_training_estimate_counts_pooling_padded_copies(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """maxpool with padding copies h padded, and its gradient pads h and h's gradient again:
    a step needs more than the values and their gradients (tracemalloc measured 4.5 MB here
    against an estimate of 3.9 MB that left the copies out). The estimate counts them: a
    budget one byte short is refused before the run allocates its buffers, the estimate
    itself is accepted, and a step's peak stays within it."""
    import tracemalloc

    eqn = tmp_path / "pool.eqn"
    eqn.write_text(POOL_EQN, encoding="utf-8")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(40, 2, 48, 48)).astype(np.float32),
             target=rng.integers(0, 3, 40))
    config = TrainConfig(model=str(eqn), batch_size=32, steps=1, eval_every=1,
                         sample_length=0, val_frac=0.2)
    fixed, per_batch = estimate(check(POOL_EQN, {}, known={"y": (3,)}), "adam", 1, 32)
    monkeypatch.setenv("NNRE_MAX_BYTES", str(fixed + per_batch - 1))
    tracemalloc.start()
    try:
        with pytest.raises(BudgetError, match=f"needs about {fixed + per_batch:,} bytes"):
            start(config, tmp_path / "d.npz")
        refused_peak = tracemalloc.get_traced_memory()[1]
        monkeypatch.setenv("NNRE_MAX_BYTES", str(fixed + per_batch))
        trainer = start(config, tmp_path / "d.npz")
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        trainer.train_step()
        step_peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert refused_peak < per_batch / 2, (refused_peak, per_batch)  # the data, no buffers
    assert step_peak <= fixed + per_batch, (step_peak, fixed + per_batch)
