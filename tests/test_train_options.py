"""nanoGPT's options in nndk train: refused where a run would ignore them, kept in
checkpoints and provenance, applied or refused on --resume, and nanoGPT's validation split."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from text_helpers import word_corpus

import nnre
from nndk import checkpoint
from nndk.config import ConfigError
from nndk.data import load_text, split_at
from nndk.pack import PackRequest, pack
from nndk.train import TrainConfig, resume, start

ROOT = Path(__file__).resolve().parent.parent
SHAKESPEARE = ROOT / "samples" / "shakespeare" / "input.txt"


def quiet(_: object) -> None:
    return None


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return word_corpus(tmp_path_factory.mktemp("data"), 2000)


def small(**over: object) -> TrainConfig:
    base = dict(dims={"H": 8}, seq_length=8, batch_size=4, steps=4, eval_every=4,
                sample_length=0, lr=1e-2)
    return TrainConfig(**(base | over))  # type: ignore[arg-type]


@pytest.mark.parametrize(("options", "message"), [
    ({"weight_decay": 0.1}, "--weight-decay 0.1 is AdamW's (--optimizer adamw)"),
    ({"optimizer": "sgd", "beta2": 0.99}, "--beta2 0.99 is Adam's and AdamW's"),
    ({"min_lr": 1e-4}, "--min-lr 0.0001 is the cosine schedule's"),
    ({"lr_decay_steps": 9}, "--lr-decay-steps 9 is the cosine schedule's"),
    ({"lr_schedule": "cosine", "lr_decay": 0.5}, "--lr-decay 0.5 is the step schedule's"),
    ({"lr_schedule": "constant", "decay_every": 10}, "--decay-every 10 is the step schedule's"),
    ({"lr_schedule": "cosine", "warmup": 10, "lr_decay_steps": 10},
     "--lr-decay-steps 10 must be more than --warmup 10"),
    ({"dropout": 1.0}, "--dropout must be a number ≥ 0 and < 1, got 1.0"),
    ({"beta1": 1.0, "optimizer": "adamw"}, "--beta1 must be a number ≥ 0 and < 1"),
    ({"val_split": "head"}, "--val-split must be one of tail, nanogpt"),
])
def test_an_option_the_run_would_ignore_or_cannot_take_is_refused(
        corpus: Path, options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        start(small(**options), corpus)


def test_the_cli_refuses_with_one_error_line(corpus: Path, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "nndk", "train", str(corpus), "--min-lr",
                           "1e-4", "--checkpoint-dir", str(tmp_path / "ck")],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr == ("error: --min-lr 0.0001 is the cosine schedule's (--lr-schedule "
                           "cosine) [bad-option]\n")


def test_new_options_are_in_checkpoints_provenance_and_resume(corpus: Path,
                                                              tmp_path: Path) -> None:
    """AdamW's defaults are filled in and recorded; schedule and dropout changes apply on
    --resume with a note, the split must match."""
    config = small(optimizer="adamw", beta2=0.99, warmup=2, lr_schedule="cosine",
                   val_split="nanogpt")
    start(config, corpus).fit(tmp_path / "ck", quiet)
    _, record = checkpoint.load(tmp_path / "ck")
    saved = record["config"]
    assert (saved["weight_decay"], saved["beta1"], saved["beta2"]) == (0.1, 0.9, 0.99)
    assert (saved["warmup"], saved["lr_schedule"], saved["val_split"]) == (2, "cosine",
                                                                            "nanogpt")
    assert saved["min_lr"] is None and saved["lr_decay_steps"] is None  # lr/10, last step
    pack(PackRequest(tmp_path / "ck", None, tmp_path / "m.bundle", "m", "1.0.0",
                     created="2026-01-01T00:00:00Z"))
    hyper = nnre.load(tmp_path / "m.bundle").metadata["provenance"]["hyperparameters"]
    assert hyper["optimizer"] == "adamw" and hyper["weight_decay"] == 0.1
    assert hyper["beta2"] == 0.99 and hyper["warmup"] == 2 and hyper["lr_schedule"] == "cosine"
    assert hyper["val_split"] == "nanogpt" and hyper["dropout"] == 0.0
    assert "min_lr" not in hyper  # not given: its default follows --lr

    trainer = resume(tmp_path / "ck", steps=8, changes={"min_lr": 1e-3, "beta2": 0.95})
    assert trainer.notes == ["--min-lr 0.001 replaces the checkpoint's none",
                             "--beta2 0.95 replaces the checkpoint's 0.99",
                             "--steps 8 replaces the checkpoint's 4"]
    assert trainer.opt.hyper["beta2"] == 0.95
    with pytest.raises(ConfigError, match="--val-split tail differs from the checkpoint's "
                                          "nanogpt"):
        resume(tmp_path / "ck", changes={"val_split": "tail"})


def test_a_checkpoint_from_before_these_options_resumes_as_it_ran(corpus: Path,
                                                                  tmp_path: Path) -> None:
    """A record without the new fields reads as the step schedule, no warm-up, no dropout,
    the tail split, Adam's default betas: the run continues as it would have."""
    import json

    start(small(steps=2, eval_every=2), corpus).fit(tmp_path / "ck", quiet)
    path = tmp_path / "ck" / checkpoint.FILENAME
    with np.load(path) as data:
        arrays = {k: np.array(data[k]) for k in data.files}
    record = json.loads(arrays["meta.json"].tobytes())
    new = {"weight_decay", "beta1", "beta2", "warmup", "lr_schedule", "min_lr",
           "lr_decay_steps", "dropout", "val_split"}
    record["config"] = {k: v for k, v in record["config"].items() if k not in new}
    arrays["meta.json"] = np.frombuffer(json.dumps(record).encode(), np.uint8)
    np.savez(path, **arrays)
    trainer = resume(tmp_path / "ck", steps=4)
    assert trainer.config.lr_schedule == "step" and trainer.config.val_split == "tail"
    assert trainer.opt.hyper == {"beta1": 0.9, "beta2": 0.999}
    trainer.fit(tmp_path / "ck", quiet)
    assert trainer.step == 4


def test_split_nanogpt_is_data_int_n_times_0_9() -> None:
    raw = SHAKESPEARE.read_bytes()
    assert len(raw) == 1_115_394
    assert hashlib.md5(raw).hexdigest() == "6fb458f1232090904fb40fe944165e91"  # noqa: S324
    n = len(raw.decode("utf-8"))
    assert split_at(n, 0.1, "nanogpt") == int(n * 0.9) == 1_003_854
    assert split_at(n, 0.1, "tail") == n - int(n * 0.1) == 1_003_855
    data = load_text(SHAKESPEARE, 0.1, split="nanogpt")
    text = raw.decode("utf-8")
    chars = sorted(set(text))  # nanoGPT's stoi
    stoi = {ch: i for i, ch in enumerate(chars)}
    assert data.vocab == "".join(chars) and len(chars) == 65
    train = np.array([stoi[c] for c in text[:int(n * 0.9)]])  # prepare.py, verbatim
    val = np.array([stoi[c] for c in text[int(n * 0.9):]])
    np.testing.assert_array_equal(data.train, train)
    np.testing.assert_array_equal(data.val, val)


@pytest.mark.parametrize("count", [7, 10, 101, 999])
@pytest.mark.parametrize("frac", [0.05, 0.1, 0.25, 0.5])
def test_both_splits_hold_out_the_tail_and_differ_by_at_most_one(count: int,
                                                                 frac: float) -> None:
    tail, nano = split_at(count, frac, "tail"), split_at(count, frac, "nanogpt")
    assert nano == int(count * (1 - frac)) and tail == count - int(count * frac)
    assert 0 <= tail - nano <= 1


def test_help_teaches_every_new_option() -> None:
    from click.testing import CliRunner

    from nndk.cli import cli

    out = CliRunner().invoke(cli, ["train", "--help"], terminal_width=200).output
    for words in ("--optimizer [adagrad|adam|adamw|rmsprop|sgd]", "--weight-decay",
                  "torch.optim.AdamW", "norm gains do not", "--beta2", "shakespeare_char",
                  "--warmup", "warmup_iters", "--lr-schedule [constant|step|cosine]",
                  "--min-lr", "min_lr", "--lr-decay-steps", "lr_decay_iters", "--dropout",
                  "1/(1−P)", "--val-split [tail|nanogpt]", "data[:int(n*0.9)]",
                  "clip_grad_norm_", "--val-split, --checkpoint-dir and DATA must match"):
        assert words in out, words
