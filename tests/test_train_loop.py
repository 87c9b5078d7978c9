"""The training loop's reports: speed and ETA without evaluation time (an injected clock),
--eval-iters against hand computations, a classifier's accuracy against NumPy argmax, and
--print-every's log lines."""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pytest

from nndk import checkpoint
from nndk.progress import Pace, Progress, Reporter
from nndk.train import TrainConfig, start
from nnre.model import Model


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = random.Random(0)
    words = "the quick brown fox jumps over a lazy dog".split()
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text(" ".join(rng.choice(words) for _ in range(3000)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    target = (x @ rng.normal(size=(4, 3))).argmax(axis=1)
    path = tmp_path_factory.mktemp("d") / "cls.npz"
    np.savez(path, x=x, target=target)
    return path


def small(**over: object) -> TrainConfig:
    base = dict(dims={"H": 8}, seq_length=10, batch_size=4, steps=10, eval_every=4,
                sample_length=0, lr=1e-2)
    return TrainConfig(**(base | over))  # type: ignore[arg-type]


def test_speed_and_eta_leave_evaluation_time_out(corpus: Path, tmp_path: Path) -> None:
    """A fake clock: each training step takes 2 s, each evaluation 30 s. Speed must be the
    items of a step per 2 s, and the ETA the remaining steps at 2 s plus the remaining
    evaluations (steps 8 and 10 after step 4) at 30 s."""
    trainer = start(small(), corpus)
    now = [0.0]
    trainer.clock = lambda: now[0]
    step, evaluate = trainer.train_step, trainer.evaluate_metrics

    def slow_step() -> float:
        now[0] += 2.0
        return step()

    def slow_eval() -> tuple[float | None, float | None]:
        now[0] += 30.0
        return evaluate()

    trainer.train_step = slow_step  # type: ignore[method-assign]
    trainer.evaluate_metrics = slow_eval  # type: ignore[method-assign]
    seen: list[Progress] = []
    trainer.fit(tmp_path, seen.append)
    assert [p.chars_per_s for p in seen] == [10 * 4 / 2.0] * 10
    evals_left = {1: 3, 2: 3, 3: 3, 4: 2, 5: 2, 6: 2, 7: 2, 8: 1, 9: 1, 10: 0}
    for p in seen[3:]:  # once an evaluation has been timed
        assert p.eta == pytest.approx((10 - p.step) * 2.0 + evals_left[p.step] * 30.0)
    assert [p.eta for p in seen[:3]] == [(10 - s) * 2.0 for s in (1, 2, 3)]


def test_pace_counts_the_evaluations_left() -> None:
    now = [0.0]
    pace = Pace(items_per_step=5, eval_every=3, clock=lambda: now[0])
    pace.start()
    for _ in range(3):
        now[0] += 1.0
        pace.trained()
    now[0] += 4.0
    pace.evaluated()
    assert pace.rate() == 5.0
    # steps 4..7 left at 1 s, evaluations at 6 and at the last step 7 at 4 s
    assert pace.eta(3, 7) == 4 * 1.0 + 2 * 4.0
    assert pace.eta(6, 6) == 0.0 and pace.eta(5, 6) == 1.0 + 4.0


def stream_windows(codes: np.ndarray, streams: int, seq: int, batches: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Longhand char-rnn streams: ``streams`` rows, the first ``batches·seq`` of each."""
    per = (len(codes) - 1) // streams
    xs = codes[:per * streams].reshape(streams, per)[:, :batches * seq].T
    ts = codes[1:per * streams + 1].reshape(streams, per)[:, :batches * seq].T
    return xs, ts


@pytest.mark.parametrize("iters", [1, 3, 10_000])
def test_eval_iters_on_text_is_the_nll_of_that_many_batches(corpus: Path, tmp_path: Path,
                                                           iters: int) -> None:
    config = small(steps=3, eval_every=3, eval_iters=iters)
    trainer = start(config, corpus)
    trainer.fit(tmp_path, lambda _: None)
    arrays, _ = checkpoint.load(tmp_path)
    weights = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    model = Model.from_equations(trainer.learner.equations, weights, dtype="float64")
    chars = corpus.read_text(encoding="utf-8")
    vocab = sorted(set(chars))
    codes = np.array([vocab.index(ch) for ch in chars])
    val = codes[len(codes) - int(len(codes) * config.val_frac):]
    per = (len(val) - 1) // config.batch_size
    batches = min(iters, per // config.seq_length)  # 10,000: all of them
    xs, ts = stream_windows(val, config.batch_size, config.seq_length, batches)
    ys = model.run({"x": np.eye(len(vocab))[xs]})[0]["y"]
    want = -float(np.log(ys[np.arange(len(xs))[:, None], np.arange(xs.shape[1]), ts]).mean())
    assert trainer.history["val_loss"] == pytest.approx(want, rel=1e-5)


def runtime_of(trainer) -> Model:  # type: ignore[no-untyped-def]
    weights = {k: np.array(v, np.float64) for k, v in trainer.runtime_model().weights().items()}
    return Model.from_equations(trainer.learner.equations, weights, dtype="float64")


@pytest.mark.parametrize("iters", [0, 2])
def test_classifier_reports_accuracy_and_eval_iters_samples_rows(classes: Path,
                                                                iters: int) -> None:
    """Validation loss and accuracy are those of the evaluated rows (all of them, or
    --eval-iters batches drawn once: the same rows every time), recomputed with NumPy."""
    config = TrainConfig(model="mlp", dims={"H": 8}, batch_size=16, steps=80, lr=3e-2,
                         eval_every=80, sample_length=0, eval_iters=iters, val_frac=0.3)
    trainer = start(config, classes)
    for _ in range(80):
        trainer.train_step()
    rows = trainer.eval_rows()
    val_rows = np.arange(300 - 90, 300)
    if iters:
        assert len(rows) == iters * 16 == len(set(rows.tolist()))
        assert set(rows.tolist()) <= set(val_rows.tolist())
        np.testing.assert_array_equal(rows, trainer.eval_rows())
        assert not np.array_equal(rows, val_rows[:len(rows)])  # drawn, not the first rows
    else:
        np.testing.assert_array_equal(rows, val_rows)
    loss, accuracy = trainer.evaluate_metrics()
    data = np.load(classes)
    probs = runtime_of(trainer).step({"x": data["x"][rows]})[0]["y"]
    target = data["target"][rows]
    assert loss == pytest.approx(-np.log(probs[np.arange(len(rows)), target]).mean(), rel=1e-5)
    assert accuracy == float(np.mean(probs.argmax(axis=1) == target))
    assert 0.6 < accuracy <= 1.0  # learned: well above chance (1/3)


def test_training_accuracy_is_that_of_the_batch_before_its_update(classes: Path,
                                                                  tmp_path: Path) -> None:
    config = TrainConfig(model="mlp", dims={"H": 8}, batch_size=16, steps=5, lr=1e-2,
                         eval_every=5, sample_length=0)
    trainer = start(config, classes)
    data = np.load(classes)
    for _ in range(5):
        rows = trainer.order[trainer.cursor:trainer.cursor + 16].copy()
        before = runtime_of(trainer)
        trainer.train_step()
        probs = before.step({"x": data["x"][rows]})[0]["y"]
        assert trainer.accuracy == float(np.mean(probs.argmax(axis=1) == data["target"][rows]))
    seen: list[Progress] = []
    trainer.config.steps = 6
    trainer.fit(tmp_path, seen.append)
    assert seen[-1].accuracy == trainer.history["train_accuracy"]
    assert seen[-1].val_accuracy == trainer.history["val_accuracy"]
    line = Reporter(io.StringIO()).line(seen[-1])
    assert f"acc {100 * seen[-1].accuracy:.1f}%" in line
    assert f"val acc {100 * seen[-1].val_accuracy:.1f}%" in line


def test_text_and_regression_report_no_accuracy(corpus: Path, tmp_path: Path) -> None:
    seen: list[Progress] = []
    start(small(steps=4), corpus).fit(tmp_path, seen.append)
    assert all(p.accuracy is None and p.val_accuracy is None for p in seen)


def progress(step: int, val: float | None = None) -> Progress:
    return Progress(step, 10, 1.0, val, 100.0, unit="chars", eta=5.0)


@pytest.mark.parametrize("every, lines", [(0, [4, 8, 10]), (3, [3, 4, 6, 8, 9, 10])])
def test_print_every_adds_log_lines_when_not_in_a_terminal(every: int,
                                                           lines: list[int]) -> None:
    out = io.StringIO()
    report = Reporter(out, print_every=every)
    for step in range(1, 11):
        report(progress(step, 1.5 if step in (4, 8) else None))
    written = [int(line.split()[1].split("/")[0]) for line in out.getvalue().splitlines()]
    assert written == lines
    assert "ETA 0:00:05" in out.getvalue()


def test_print_every_reaches_the_reporter_from_the_command_line(corpus: Path,
                                                                tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "nndk", "train", str(corpus), "--set", "H=8", "--steps", "6",
         "--seq-length", "5", "--batch-size", "2", "--eval-every", "6", "--print-every", "2",
         "--eval-iters", "2", "--sample-length", "0", "--checkpoint-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    steps = [line.split()[1] for line in proc.stderr.splitlines() if line.startswith("step ")]
    assert steps == ["2/6", "4/6", "6/6"]
    _, record = checkpoint.load(tmp_path)
    assert record["config"]["print_every"] == 2 and record["config"]["eval_iters"] == 2
