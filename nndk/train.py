"""``nndk train``: the training loop shared by every kind of data, and starting a run.

One seed drives every random choice. A checkpoint holds everything needed to continue bit
for bit (weights, optimizer state, step, data position, carried state, random state); it is
written atomically, never after a NaN/Inf loss, and on Ctrl-C between two steps.
``Trainer`` is the loop shared by every kind of data; ``TextTrainer`` feeds it characters
(``nndk/train_text.py``), ``ArrayTrainer`` arrays (``nndk/train_arrays.py``).
"""

from __future__ import annotations

import math
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from nndk import __version__, checkpoint, dropout
from nndk.config import ConfigError, TrainConfig, default_dims, resolve, validate
from nndk.data import load_text
from nndk.files import clean_stale
from nndk.learner import Learner
from nndk.models import declared_dims, read_model, resolve_dims
from nndk.optim import HYPER, Schedule
from nndk.progress import Pace, Progress
from nnre.equations import Checked
from nnre.errors import NnreError
from nnre.model import Model


class TrainingError(NnreError):
    """Training cannot go on (a non-finite loss, a model that does not fit the data)."""

    code = "training-error"


class Trainer:
    """The loop shared by every kind of data: steps, evaluation, samples, checkpoints.

    Subclasses provide ``train_step``, ``evaluate``, ``sample``, ``steps_per_epoch`` and the
    data part of the checkpoint (``data_record`` / ``data_arrays`` / ``restore_data``).
    """

    kind = "base"
    unit = "chars"
    bits = True

    def __init__(self, config: TrainConfig, learner: Learner, filename: str) -> None:
        self.config = config
        self.learner = learner
        self.filename = filename
        self.step = 0
        self.history: dict[str, float] = {}
        self.saved: tuple[int, Path] | None = None  # (step, directory) of the last checkpoint
        self.run_id: str | None = uuid.uuid4().hex  # tells this run's checkpoints from others
        self.best: float | None = None  # the lowest validation loss checkpointed
        self.notes: list[str] = []  # what a resume changed, for the caller to show
        self.accuracy: float | None = None  # a classifier's, on the last training batch
        self.clock: Callable[[], float] = time.perf_counter  # injectable for tests

    @property
    def params(self) -> dict[str, np.ndarray]:
        return self.learner.params

    @property
    def opt(self) -> Any:
        return self.learner.opt

    def runtime_model(self) -> Model:
        return self.learner.runtime_model()

    def schedule(self) -> Schedule:
        """The learning-rate schedule of the run as configured now (``--resume`` may change
        it); the cosine ends at --lr-decay-steps, by default the run's last step."""
        c = self.config
        return Schedule(c.lr, c.lr_schedule, c.warmup, c.lr_decay, c.decay_every,
                        c.min_lr if c.min_lr is not None else c.lr / 10,
                        c.lr_decay_steps or self.total_steps())

    def learning_rate(self) -> float:
        """The learning rate of the update about to be made (step ``self.step``, from 0)."""
        return self.schedule().at(self.step)

    def dropout_masks(self) -> np.random.Generator | None:
        """The generator of this training step's dropout masks (None without dropout): the
        seed and the step alone choose them, so a resumed run draws the same ones."""
        if not self.learner.masks:
            return None
        return dropout.generator(self.config.seed, self.step)

    def check_loss(self, loss: float) -> None:
        """Stop on a NaN/Inf loss, saying truthfully whether a good checkpoint exists."""
        if math.isfinite(loss):
            return
        if self.saved is None:
            kept = "no checkpoint was written (none had been reached yet)"
        else:
            kept = f"the last good checkpoint (step {self.saved[0]}) is kept in {self.saved[1]}"
        raise TrainingError(f"the loss became {loss} at step {self.step + 1}; {kept} (try a "
                            "lower --lr or --clip)")

    # -- to be provided by the kind of data ----------------------------------------------
    def train_step(self) -> float:
        raise NotImplementedError

    def evaluate(self) -> float | None:
        """The mean validation loss (``--eval-iters`` batches of it, or all), or None."""
        return self.evaluate_metrics()[0]

    def evaluate_metrics(self) -> tuple[float | None, float | None]:
        """(validation loss, validation accuracy of a classifier, else None)."""
        raise NotImplementedError

    def sample(self, length: int) -> str | None:
        return None

    def steps_per_epoch(self) -> int:
        raise NotImplementedError

    def items_per_step(self) -> int:
        raise NotImplementedError

    def data_record(self) -> dict[str, Any]:
        return {}

    def data_arrays(self) -> dict[str, np.ndarray]:
        return {}

    def restore_data(self, arrays: dict[str, np.ndarray], record: dict[str, Any],
                     where: str) -> None:
        return None

    # -- checkpoints ---------------------------------------------------------------------
    def record(self) -> dict[str, Any]:
        return {"nndk_version": __version__, "kind": self.kind, "config": asdict(self.config),
                "model_file": self.filename, "step": self.step, "history": self.history,
                "run_id": self.run_id, "best_val_loss": self.best,
                **self.learner.record(), **self.data_record()}

    def save(self, directory: str | Path, val: float | None = None,
             keep: int = checkpoint.DEFAULT_KEEP) -> Path:
        """Checkpoint now; ``val`` (this step's validation loss) may make it the best."""
        best = val is not None and (self.best is None or val < self.best)
        if best:
            self.best = val
        arrays = self.learner.state_arrays() | self.data_arrays()
        path = checkpoint.save(directory, arrays, self.record(), keep, best)
        self.saved = (self.step, Path(directory))
        return path

    def restore(self, arrays: dict[str, np.ndarray], record: dict[str, Any], where: str
                ) -> None:
        """Continue from a validated record; ``where`` (the checkpoint) names any problem."""
        self.restore_data(arrays, record, where)
        self.learner.restore(arrays, record, where)
        self.step = record["step"]
        self.history = dict(record.get("history", {}))
        self.run_id = record.get("run_id")
        self.best = record.get("best_val_loss")

    # -- the loop ------------------------------------------------------------------------
    def total_steps(self) -> int:
        c = self.config
        if c.steps is not None:
            return c.steps
        epochs = c.epochs if c.epochs is not None else 1.0
        return max(1, int(round(epochs * self.steps_per_epoch())))

    def fit(self, checkpoint_dir: str | Path, report: Callable[[Progress], None],
            keep: int = checkpoint.DEFAULT_KEEP, overwrite: bool = False) -> None:
        """Train to the configured length, evaluating, sampling and checkpointing as it goes.

        ``checkpoint_dir`` must hold no other run's checkpoint (unless ``overwrite``); the
        last ``keep`` checkpoints are kept, and the best by validation loss as best.npz.

        Ctrl-C is honoured between two steps: the checkpoint is written, then
        KeyboardInterrupt is raised again for the caller.
        """
        if keep < 1:
            raise TrainingError(f"--keep must be at least 1, got {keep}")
        checkpoint.claim(checkpoint_dir, self.run_id, overwrite)
        clean_stale(checkpoint_dir)  # temporaries of a run killed while writing here
        interrupted: list[bool] = []
        previous = signal.getsignal(signal.SIGINT)

        def on_sigint(signum: int, frame: Any) -> None:
            interrupted.append(True)

        try:
            signal.signal(signal.SIGINT, on_sigint)
        except ValueError:  # not the main thread: no signal handling
            previous = None
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                self._loop(checkpoint_dir, report, interrupted, keep)  # check_loss: NaN/Inf
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    def _loop(self, checkpoint_dir: str | Path, report: Callable[[Progress], None],
              interrupted: list[bool], keep: int) -> None:
        total, c = self.total_steps(), self.config
        pace = Pace(self.items_per_step(), c.eval_every, self.clock)
        pace.start()
        while self.step < total:
            loss = self.train_step()
            pace.trained()
            self.history["train_loss"] = loss
            if self.accuracy is not None:
                self.history["train_accuracy"] = self.accuracy
            last = self.step == total
            val = sample = val_accuracy = None
            if self.step % c.eval_every == 0 or last:
                val, val_accuracy = self.evaluate_metrics()
                if val is not None:
                    self.history["val_loss"] = val
                if val_accuracy is not None:
                    self.history["val_accuracy"] = val_accuracy
                sample_every = c.sample_every or c.eval_every
                if c.sample_length > 0 and (self.step % sample_every == 0 or last):
                    sample = self.sample(c.sample_length)
                self.save(checkpoint_dir, val, keep)
                pace.evaluated()
            report(Progress(self.step, total, loss, val, pace.rate(), sample, self.unit,
                            self.bits, pace.eta(self.step, total), self.accuracy,
                            val_accuracy))
            if interrupted:
                self.save(checkpoint_dir, keep=keep)
                raise KeyboardInterrupt


def learner_for(config: TrainConfig, checked: Checked, equations: str, filename: str,
                sequence: bool = False) -> Learner:
    """The Learner of a run: its optimizer with the hyperparameters it reads, its dropout;
    ``sequence``: trained in the equations' sequence form (attention)."""
    hyper = {key: getattr(config, key) for key in HYPER.get(config.optimizer, {})
             if getattr(config, key) is not None}
    return Learner(checked, equations, config.optimizer, config.seed, config.init, hyper,
                   config.dropout, filename, sequence)


def pick_output(checked: Checked, size: int, filename: str, name: str | None = None) -> str:
    """The output trained against targets of ``size`` classes: ``name``, 'y', or the only fit."""
    shapes, outputs = checked.shapes.of, checked.roles.outputs
    if name is not None:
        if name not in outputs:
            raise TrainingError(f"{filename} has no output {name!r} (outputs: "
                                f"{', '.join(outputs)})")
        return name
    fitting = [o for o in outputs if shapes[o][0] * shapes[o][1] == size]
    if not fitting:
        raise TrainingError(f"no output of {filename} has size {size}: "
                            + ", ".join(f"{o} {shapes[o]}" for o in outputs))
    return "y" if "y" in fitting else fitting[0]


def start(config: TrainConfig, data_path: str | Path, init_from: str | None = None
          ) -> Trainer:
    """A fresh trainer for ``config.model``: text files train characters, .npz/.csv arrays.

    ``init_from`` (a bundle) supplies the initial weights and the dimensions they fit (a
    ``--set`` that disagrees is refused), and a character model's vocabulary (so every
    character keeps its row of the weights); the optimizer starts fresh.
    """
    validate(asdict(config))
    resolve(config)
    text, filename = read_model(config.model)
    source = None
    if init_from is not None:
        import nnre

        source = nnre.load(init_from)
        config.dims = dims_from_bundle(text, filename, config.dims, source.dims, init_from)
    config.dims = resolve_dims(text, filename, config.dims, default_dims(filename))
    trainer: Trainer
    if Path(data_path).suffix in (".npz", ".csv"):
        from nndk.train_arrays import ArrayTrainer

        trainer = ArrayTrainer(config, data_path, text, filename)
    else:
        from nndk.train_sequence import text_trainer

        vocab = bundle_vocab(source.metadata) if source is not None else None
        data = load_text(data_path, config.val_frac, vocab, config.min_count, config.val_split)
        trainer = text_trainer(config, data_path, text, filename, data)
        if data.folded[0]:
            trainer.notes.append(f"{data.folded[0]} rare character(s) ({data.folded[1]} "
                                 "occurrences) read as the unknown symbol U+FFFD "
                                 f"(--min-count {config.min_count})")
    if source is not None and init_from is not None:
        trainer.learner.load_weights(source.weights(), init_from)
    return trainer


def dims_from_bundle(text: str, filename: str, given: dict[str, int],
                     bundle: dict[str, int], source: str) -> dict[str, int]:
    """The dimensions of a run started from a bundle's weights: the bundle's, for each one
    the model declares, with ``--set`` only where it agrees (the weights fit one size)."""
    for name, size in given.items():
        if name in bundle and bundle[name] != size:
            raise ConfigError(f"--set {name}={size}: {source} has {name}={bundle[name]}, the "
                              f"size its weights fit (leave --set {name} out to use it)")
    declared = declared_dims(text, filename)
    return {k: v for k, v in bundle.items() if k in declared} | given


def bundle_vocab(metadata: dict[str, Any]) -> str | None:
    """A character model's vocabulary, from its ``char`` codec; None for other bundles."""
    for entry in (metadata.get("codecs") or {}).values():
        if entry.get("id") == "char":
            return "".join(entry["vocab"])
    return None


def resume(directory: str | Path, data_path: str | Path | None = None,
           steps: int | None = None, changes: dict[str, Any] | None = None) -> Trainer:
    """A trainer restored from a checkpoint (``nndk/resume.py`` says what may change)."""
    from nndk.resume import resume as resume_run

    given = dict(changes or {}) | ({"steps": steps} if steps is not None else {})
    return resume_run(directory, data_path, given)
