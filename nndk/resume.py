"""``nndk train --resume``: continue the run a checkpoint names, in its own directory.

A resumed run is the same run: what defines it (the model, its dimensions, the data and how
it is cut into batches, the seed, the optimizer) must match the checkpoint, and a flag that
says otherwise is refused rather than silently ignored. What only steers the rest of the run
(its length, the learning-rate schedule, clipping, evaluation and samples) is applied, with
a note saying what changed. ``RESUME`` is that decision, one entry per flag.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from nndk import checkpoint
from nndk.config import ConfigError, TrainConfig, flag, resolve, validate
from nndk.data import DataError, load_text
from nndk.models import read_model
from nndk.train import Trainer
from nndk.train_sequence import text_trainer

MATCH, APPLY, REFUSE = "must match the checkpoint", "applied", "refused"

RESUME: dict[str, str] = {
    # what the run is: a different value is another run
    "model": MATCH, "dims": MATCH, "seq_length": MATCH, "batch_size": MATCH, "seed": MATCH,
    "val_frac": MATCH, "init": MATCH, "optimizer": MATCH, "loss": MATCH, "target": MATCH,
    "output": MATCH, "min_count": MATCH, "val_split": MATCH,
    # how the rest of it goes: applied, with a note
    "steps": APPLY, "epochs": APPLY, "lr": APPLY, "lr_decay": APPLY, "decay_every": APPLY,
    "clip": APPLY, "eval_every": APPLY, "sample_every": APPLY, "sample_length": APPLY,
    "temperature": APPLY, "keep": APPLY, "reset_frac": APPLY,
    "eval_iters": APPLY, "print_every": APPLY, "warmup": APPLY, "lr_schedule": APPLY,
    "min_lr": APPLY, "lr_decay_steps": APPLY, "weight_decay": APPLY, "beta1": APPLY,
    "beta2": APPLY, "dropout": APPLY,
    # meaningless for a run that already exists
    "init_from": REFUSE, "overwrite": REFUSE, "checkpoint_dir": MATCH,
}
WHY_REFUSED = {
    "init_from": "--init-from starts a new run from a bundle's weights; --resume continues "
                 "a checkpoint: use one or the other",
    "overwrite": "--resume continues the run in its own directory and replaces nothing",
}


def resume_rules() -> str:
    """``RESUME`` in words, for ``--help``."""
    names = {"dims": "--set", "checkpoint_dir": "--checkpoint-dir", "steps": "--steps/--epochs "
             "(longer only)"}
    spelled = {rule: [names.get(k, flag(k)) for k, r in RESUME.items() if r == rule
                      and k != "epochs"] for rule in (MATCH, APPLY, REFUSE)}
    return (f"{', '.join(spelled[MATCH])} and DATA must match it; "
            f"{', '.join(spelled[APPLY])} are applied with a note; "
            f"{' and '.join(spelled[REFUSE])} are refused.")


def run_directory(source: str | Path) -> Path:
    """The directory a resumed run writes to: the checkpoint's own."""
    return checkpoint.resolve(source).parent


def resume(directory: str | Path, data_path: str | Path | None = None,
           changes: Mapping[str, Any] | None = None) -> Trainer:
    """A trainer restored from a checkpoint, continuing exactly where it stopped.

    ``changes`` holds only the options the user gave (by config field name, plus
    ``checkpoint_dir``, ``init_from``, ``overwrite``, ``keep``); each is matched, applied or
    refused by ``RESUME``. The notes on what was applied are in ``trainer.notes``.
    """
    arrays, record = checkpoint.load(directory)
    where = str(checkpoint.resolve(directory))
    changes = dict(changes or {})
    config, notes = apply_changes(TrainConfig(**record["config"]), changes, record,
                                  Path(directory))
    path = data_path or record["data_path"]
    trainer: Trainer
    if record["kind"] == "arrays":
        from nndk.train_arrays import ArrayTrainer

        trainer = ArrayTrainer(config, path, record["equations"], record["model_file"])
        sha = trainer.data_sha256
    else:
        data = load_text(path, config.val_frac, vocab=record["vocab"], split=config.val_split)
        trainer = text_trainer(config, path, record["equations"], record["model_file"], data)
        sha = data.sha256
    if sha != record["data_sha256"]:
        raise DataError(f"{path}: not the data this checkpoint was trained on (sha256 "
                        f"{sha[:12]}… vs {record['data_sha256'][:12]}…)")
    trainer.restore(arrays, record, where)
    trainer.saved = (trainer.step, run_directory(directory))  # a NaN now keeps this one
    extends = "steps" in changes or "epochs" in changes
    if extends and trainer.total_steps() <= trainer.step:
        what = "--steps" if config.steps is not None else "--epochs"
        raise ConfigError(f"{where}: the run is at step {trainer.step}; {what} must make it "
                          f"longer (it gives {trainer.total_steps()} steps)")
    trainer.notes = notes
    return trainer


def apply_changes(config: TrainConfig, changes: dict[str, Any], record: dict[str, Any],
                  directory: Path) -> tuple[TrainConfig, list[str]]:
    """The saved config with the user's changes applied; refuse those ``RESUME`` forbids."""
    if changes.get("steps") is not None and changes.get("epochs") is not None:
        raise ConfigError("--steps and --epochs both given: choose one")
    notes = []
    for key, value in changes.items():
        rule = RESUME.get(key)
        if rule is None:
            raise ConfigError(f"{flag(key)} has no rule for --resume")
        if rule == REFUSE:
            raise ConfigError(f"{flag(key)} with --resume: {WHY_REFUSED[key]}")
        if rule == MATCH:
            _must_match(config, key, value, record, directory)
        elif key in {f.name for f in fields(TrainConfig)} and value != getattr(config, key):
            old = getattr(config, key)
            notes.append(f"{flag(key)} {value} replaces the checkpoint's "
                         f"{'none' if old is None else old}")
            setattr(config, key, value)
    if "steps" in changes:
        config.epochs = None
    if "epochs" in changes:
        config.steps = None
    validate(asdict(config))
    return resolve(config), notes


def _must_match(config: TrainConfig, key: str, value: Any, record: dict[str, Any],
                directory: Path) -> None:
    """Refuse a flag that would make the resumed run a different one."""
    refuse = "a resumed run keeps what defines it; start a new run to change it"
    if key == "model":
        if read_model(value)[0] != record["equations"]:
            raise ConfigError(f"--model {value} is not the checkpoint's model "
                              f"({record['model_file']}); {refuse}")
    elif key == "dims":
        for name, size in value.items():
            if record["dims"].get(name) != size:
                saved = record["dims"].get(name)
                have = f"{name}={saved}" if saved is not None else f"no dimension {name}"
                raise ConfigError(f"--set {name}={size}: the checkpoint has {have}; {refuse}")
    elif key == "checkpoint_dir":
        if Path(value).resolve() != run_directory(directory).resolve():
            raise ConfigError(f"--checkpoint-dir {value} with --resume {directory}: a resumed "
                              f"run continues in its own directory, "
                              f"{run_directory(directory)}")
    elif value != getattr(config, key):
        raise ConfigError(f"{flag(key)} {value} differs from the checkpoint's "
                          f"{getattr(config, key)}; {refuse}")
