"""Temporaries of a killed nndk are recognisable and cleaned by the next run, nothing else."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from nndk.cli import cli
from nndk.files import TMP_PREFIX, clean_stale

KILL_MID_WRITE = """
import os, signal, sys
from pathlib import Path
from nndk.files import atomic_write

def write(f):
    f.write(b"half a checkpoint")
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)

atomic_write(Path(sys.argv[1]), write)
"""


ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
TRAIN = ["--set", "H=8", "--seq-length", "8", "--batch-size", "2", "--steps", "2",
         "--sample-length", "0"]


def nndk(*args: str) -> subprocess.CompletedProcess[str]:
    """``nndk ARGS`` as a new process: one that started after the killed one."""
    return subprocess.run([sys.executable, "-m", "nndk", *args], env=ENV, text=True,
                          capture_output=True)


def killed_writer(target: Path) -> Path:
    """Run a process that is SIGKILLed half way through an atomic write; its temporary."""
    proc = subprocess.run([sys.executable, "-c", KILL_MID_WRITE, str(target)], env=ENV)
    assert proc.returncode == -9
    left = sorted(target.parent.glob(TMP_PREFIX + "*"))
    assert len(left) == 1 and left[0].name.startswith(f"{TMP_PREFIX}{target.name}.")
    assert not target.exists()
    earlier = time.time() - 10  # the kill happened a while ago: /proc's boot time is coarse
    os.utime(left[0], (earlier, earlier))
    return left[0]


def bystanders(folder: Path) -> list[Path]:
    """Old files that merely look temporary, and a new nndk temporary (a live writer's)."""
    old = time.time() - 3600
    paths = [folder / ".checkpoint.npz.x.tmp", folder / "notes.nndk-tmp-", folder / "keep.txt"]
    for path in paths:
        path.write_text("mine")
        os.utime(path, (old, old))
    live = folder / f"{TMP_PREFIX}checkpoint.npz.live"
    live.write_text("in progress")
    os.utime(live, (time.time() + 60, time.time() + 60))
    return [*paths, live]


def test_next_train_cleans_a_killed_runs_temporary_only(tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    ck.mkdir()
    stale = killed_writer(ck / "checkpoint.npz")
    others = bystanders(ck)
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat " * 40, encoding="utf-8")
    result = nndk("train", str(corpus), "--checkpoint-dir", str(ck), *TRAIN)
    assert result.returncode == 0, result.stderr
    assert not stale.exists()
    assert all(p.exists() for p in others)
    assert (ck / "checkpoint.npz").is_file()


def test_next_pack_cleans_a_killed_packs_temporary_only(tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat " * 40, encoding="utf-8")
    assert CliRunner().invoke(cli, ["train", str(corpus), "--checkpoint-dir", str(ck),
                                    *TRAIN]).exit_code == 0
    out = tmp_path / "dist"
    out.mkdir()
    stale = killed_writer(out / "m.bundle")
    others = bystanders(out)
    result = nndk("pack", str(ck), "--name", "m", "--version", "1.0.0", "-o",
                  str(out / "m.bundle"))
    assert result.returncode == 0, result.stderr
    assert not stale.exists() and all(p.exists() for p in others)
    assert sorted(p.name for p in out.glob(TMP_PREFIX + "*")) == [f"{TMP_PREFIX}checkpoint.npz"
                                                                 ".live"]


def test_clean_stale_leaves_symlinks_and_directories(tmp_path: Path) -> None:
    old = time.time() - 3600
    (tmp_path / f"{TMP_PREFIX}dir").mkdir()
    target = tmp_path / "precious"
    target.write_text("x")
    link = tmp_path / f"{TMP_PREFIX}link"
    link.symlink_to(target)
    os.utime(link, (old, old), follow_symlinks=False)
    os.utime(target, (old, old))
    assert clean_stale(tmp_path) == []
    assert target.exists() and link.is_symlink()


@pytest.mark.parametrize("name", ["checkpoint.npz", "m.bundle"])
def test_a_failed_write_leaves_no_temporary(tmp_path: Path, name: str) -> None:
    from nndk.files import atomic_write

    def explode(f: object) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / name, explode)
    assert list(tmp_path.iterdir()) == []


def test_keep_the_last_n_and_the_best_checkpoint(tmp_path: Path) -> None:
    from nndk import checkpoint
    from nndk.train import TrainConfig, start

    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat " * 60, encoding="utf-8")
    trainer = start(TrainConfig(dims={"H": 8}, seq_length=8, batch_size=2, steps=10,
                                eval_every=2, sample_length=0, lr=0.5), corpus)
    vals: dict[int, float] = {}
    trainer.fit(tmp_path / "ck", lambda p: vals.update({p.step: p.val_loss})
                if p.val_loss is not None else None, keep=2)
    ck = tmp_path / "ck"
    assert sorted(p.name for p in ck.iterdir()) == [
        "best.npz", "checkpoint.npz", "step-000000008.npz", "step-000000010.npz"]
    assert (ck / "checkpoint.npz").stat().st_ino == (ck / "step-000000010.npz").stat().st_ino
    best_step = min(vals, key=lambda s: vals[s])
    _, record = checkpoint.load(ck / "best.npz")
    assert record["step"] == best_step and record["best_val_loss"] == vals[best_step]


def test_another_runs_checkpoint_is_kept_unless_overwrite(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat " * 60, encoding="utf-8")
    ck = tmp_path / "ck"
    runner = CliRunner()
    args = ["train", str(corpus), "--checkpoint-dir", str(ck), *TRAIN[:-4],
            "--sample-length", "0", "--eval-every", "1"]
    assert runner.invoke(cli, [*args, "--steps", "3"]).exit_code == 0
    before = {p.name: p.read_bytes() for p in ck.iterdir()}
    refused = runner.invoke(cli, [*args, "--steps", "2", "--seed", "1"])
    assert refused.exit_code != 0 and "another run's checkpoint" in str(refused.exception)
    assert {p.name: p.read_bytes() for p in ck.iterdir()} == before
    replaced = runner.invoke(cli, [*args, "--steps", "2", "--seed", "1", "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert sorted(p.name for p in ck.iterdir()) == [
        "best.npz", "checkpoint.npz", "step-000000001.npz", "step-000000002.npz"]


def test_resume_continues_in_its_own_directory_applying_flags(tmp_path: Path) -> None:
    from nndk import checkpoint

    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat " * 60, encoding="utf-8")
    run = tmp_path / "runs" / "a"
    first = nndk("train", str(corpus), "--checkpoint-dir", str(run), *TRAIN, "--eval-every", "2")
    assert first.returncode == 0, first.stderr
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    result = subprocess.run([sys.executable, "-m", "nndk", "train", str(corpus), "--resume",
                             str(run), "--steps", "5", "--eval-every", "1", "--lr", "0.01"],
                            env=ENV, text=True, capture_output=True, cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert list(elsewhere.iterdir()) == []  # nothing written to ./checkpoints
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert notes == ["note: --steps 5 replaces the checkpoint's 2",
                     "note: --eval-every 1 replaces the checkpoint's 2",
                     "note: --lr 0.01 replaces the checkpoint's 0.002"]
    _, record = checkpoint.load(run)
    assert record["step"] == 5 and record["config"]["eval_every"] == 1
    assert record["config"]["lr"] == 0.01
    # --eval-every 1 was applied: a checkpoint at every step, the last 3 kept
    assert [p.name for p in checkpoint.step_files(run)] == [
        "step-000000003.npz", "step-000000004.npz", "step-000000005.npz"]


def test_every_train_option_has_a_resume_rule() -> None:
    from dataclasses import fields

    from nndk.config import TrainConfig
    from nndk.resume import RESUME

    options = {p.name for p in cli.commands["train"].params} - {"data", "resume_dir"}
    options = {{"init_scheme": "init", "bindings": "dims"}.get(o, o) for o in options}
    assert options | {f.name for f in fields(TrainConfig)} == set(RESUME)


def test_a_write_into_a_missing_folder_names_the_folder(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Not the temporary that could not be made there (issue #15), and nothing is created."""
    from nnre.files import atomic_write

    (tmp_path / "file").write_text("x")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as missing:
        atomic_write("no/such/m.bundle", lambda f: f.write(b"x"))
    assert (missing.value.filename, missing.value.strerror) == (
        "no/such", "no such directory, cannot write m.bundle in it")
    with pytest.raises(NotADirectoryError) as not_dir:
        atomic_write("file/m.bundle", lambda f: f.write(b"x"))
    assert not_dir.value.filename == "file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
