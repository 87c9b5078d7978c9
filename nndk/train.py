"""``nndk train``: the training loop, and training on a text file (char-rnn style).

One seed drives every random choice. A checkpoint holds everything needed to continue bit
for bit (weights, optimizer state, step, data position, carried state, random state); it is
written atomically, never after a NaN/Inf loss, and on Ctrl-C between two steps.
``Trainer`` is the loop shared by every kind of data; ``TextTrainer`` feeds it characters
(``nndk/train_arrays.py`` feeds it arrays).
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

from nndk import __version__, checkpoint
from nndk.budget import check_budget
from nndk.config import DEFAULT_DIMS, TrainConfig, validate
from nndk.data import Streams, TextData, load_text, one_hot
from nndk.files import clean_stale
from nndk.learner import Learner, State
from nndk.losses import Seeds, cross_entropy
from nndk.models import read_model, resolve_dims
from nndk.optim import learning_rate
from nndk.progress import Pace, Progress
from nndk.unrolled import Unrolled
from nnre.equations import Checked, check
from nnre.equations.parser import parse
from nnre.equations.roles import analyse
from nnre.errors import NnreError
from nnre.model import Model

RESTART_STREAM = 0x5EED  # keeps the restart choice apart from other seeded choices


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

    def learning_rate(self) -> float:
        c = self.config
        return learning_rate(c.lr, self.step, c.lr_decay, c.decay_every)

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


class TextTrainer(Trainer):
    """Characters in, the next character out: char-rnn's streams with carried state."""

    kind = "text"

    def __init__(self, config: TrainConfig, data_path: str | Path, equations: str,
                 filename: str, data: TextData) -> None:
        inputs = analyse(parse(equations, filename)).inputs
        if len(inputs) != 1:
            raise TrainingError(f"a character model needs exactly one input, {filename} has "
                                f"{len(inputs)}: {', '.join(inputs)}")
        self.input = inputs[0]
        checked = check(equations, config.dims, filename=filename,
                        known={self.input: (data.size,)})
        check_budget(checked, config.optimizer, config.seq_length, config.batch_size)
        self.output = pick_output(checked, data.size, filename)
        super().__init__(config, Learner(checked, equations, config.optimizer, config.seed,
                                         config.init), filename)
        self.data_path = str(data_path)
        self.data = data
        self.batch_index = 0
        self.carry: State | None = None
        self.train_streams = Streams(data.train, config.batch_size, config.seq_length, "training")
        self.val_streams = None
        if len(data.val) > 1:
            val_batch = max(1, min(config.batch_size, (len(data.val) - 1) // config.seq_length))
            self.val_streams = Streams(data.val, val_batch, config.seq_length, "validation")

    def steps_per_epoch(self) -> int:
        return self.train_streams.batches

    def items_per_step(self) -> int:
        return self.config.seq_length * self.config.batch_size

    def _forward(self, inputs: np.ndarray, carry: State | None) -> Unrolled:
        steps, batch = inputs.shape
        codes = inputs.reshape(-1)
        feeds = {self.input: one_hot(codes, self.data.size, "float32")}
        return self.learner.forward(feeds, steps, batch, carry, {self.input: codes})

    def _loss(self, run: Unrolled, targets: np.ndarray, grad: bool) -> tuple[float, Seeds]:
        prog = self.learner.prog
        values = run.full[prog.outputs[self.output]]
        return cross_entropy(prog, self.output, values, targets.reshape(-1), grad)

    def restarts(self) -> np.ndarray:
        """The streams that read this step's batch from the zero state rather than the state
        carried from the previous batch: round(reset_frac · batch) of them, chosen by the
        seed and the step alone, so a resumed run picks the same ones.

        Generation starts from the zero state; a model that only ever sees carried state
        starts badly (``benchmarks/bench_zero_state.py``)."""
        count = round(self.config.reset_frac * self.config.batch_size)
        if count == 0:
            return np.zeros(0, np.intp)
        rng = np.random.default_rng([self.config.seed, self.step, RESTART_STREAM])
        return np.sort(rng.permutation(self.config.batch_size)[:count])

    def _carried(self) -> State | None:
        """The state this step starts from: the carry, with the restarting streams zeroed."""
        rows = self.restarts()
        if self.carry is None or len(rows) == 0:
            return self.carry
        carry = {key: value.copy() for key, value in self.carry.items()}
        for value in carry.values():
            value[rows] = 0
        return carry

    def train_step(self) -> float:
        inputs, targets = self.train_streams.batch(self.batch_index)
        run = self._forward(inputs, self._carried())
        loss, seeds = self._loss(run, targets, grad=True)
        self.check_loss(loss)
        self.learner.update(run, seeds, self.learning_rate(), self.config.clip)
        self.step += 1
        self.batch_index += 1
        if self.batch_index % self.train_streams.batches == 0:
            self.carry = None  # the streams wrap around: start the next epoch from zero state
        else:
            self.carry = self.learner.final_state(run)
        return loss

    def evaluate_metrics(self) -> tuple[float | None, float | None]:
        """Mean cross-entropy (nats per character) over the validation streams, the state
        carried from batch to batch: all of them, or the first ``--eval-iters`` batches
        (that many ``seq_length`` pieces of every stream, spread over the whole held-out
        text, the same at every evaluation so that losses compare)."""
        if self.val_streams is None:
            return None, None
        count = self.val_streams.batches
        if self.config.eval_iters:
            count = min(count, self.config.eval_iters)
        carry, total = None, 0.0
        for index in range(count):
            inputs, targets = self.val_streams.batch(index)
            run = self._forward(inputs, carry)
            total += self._loss(run, targets, grad=False)[0]
            carry = self.learner.final_state(run)
        return total / count, None

    def sample(self, length: int, prime: str | None = None) -> str:
        """Text from the current weights, by the runtime's own ``Model.generate``; its own
        seed (from the run's seed and the step), so training is not perturbed."""
        vocab = list(self.data.vocab)
        codecs = {self.input: {"id": "char", "vocab": vocab},
                  self.output: {"id": "sample", "vocab": vocab}}
        model = self.learner.runtime_model({"codecs": codecs})
        seed = int(np.random.SeedSequence([self.config.seed, self.step]).generate_state(1)[0])
        prime = prime or vocab[int(self.data.train[0])]
        return "".join(model.generate(prime, length, temperature=self.config.temperature,
                                      seed=seed))

    def data_record(self) -> dict[str, Any]:
        return {"input": self.input, "output": self.output, "vocab": self.data.vocab,
                "data_path": self.data_path, "data_sha256": self.data.sha256,
                "batch_index": self.batch_index,
                "carry": sorted(f"{n}@{lag}" for n, lag in (self.carry or {}))}

    def data_arrays(self) -> dict[str, np.ndarray]:
        return {f"carry/{n}@{lag}": v for (n, lag), v in (self.carry or {}).items()}

    def restore_data(self, arrays: dict[str, np.ndarray], record: dict[str, Any],
                     where: str) -> None:
        self.batch_index = record["batch_index"]
        zero = self.learner.zero_state(self.config.batch_size)
        carry = {}
        for key in record["carry"]:
            name, lag = key.rsplit("@", 1)
            if (name, int(lag)) not in zero:
                raise checkpoint.CheckpointError(f"{where}: field carry names {key!r}, not a "
                                                 "state of the model")
            shape = zero[(name, int(lag))].shape
            carry[(name, int(lag))] = checkpoint.take(arrays, f"carry/{key}", shape, where)
        self.carry = carry or None


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

    ``init_from`` (a bundle) supplies the initial weights, and nothing else.
    """
    validate(asdict(config))
    text, filename = read_model(config.model)
    config.dims = resolve_dims(text, filename, config.dims, DEFAULT_DIMS)
    trainer: Trainer
    if Path(data_path).suffix in (".npz", ".csv"):
        from nndk.train_arrays import ArrayTrainer

        trainer = ArrayTrainer(config, data_path, text, filename)
    else:
        trainer = TextTrainer(config, data_path, text, filename,
                              load_text(data_path, config.val_frac))
    if init_from is not None:
        import nnre

        trainer.learner.load_weights(nnre.load(init_from).weights(), init_from)
    return trainer


def resume(directory: str | Path, data_path: str | Path | None = None,
           steps: int | None = None, changes: dict[str, Any] | None = None) -> Trainer:
    """A trainer restored from a checkpoint (``nndk/resume.py`` says what may change)."""
    from nndk.resume import resume as resume_run

    given = dict(changes or {}) | ({"steps": steps} if steps is not None else {})
    return resume_run(directory, data_path, given)
