"""``nndk train``: learn the weights of an equation model on a text file (char-rnn style).

One seed drives every random choice. A checkpoint holds everything needed to continue bit
for bit (weights, optimizer state, step, data position, carried state, random state); it is
written atomically, never after a NaN/Inf loss, and on Ctrl-C between two steps.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nndk import __version__, checkpoint
from nndk.autodiff import Backward, differentiable_slots
from nndk.data import DataError, Streams, TextData, load_text, one_hot
from nndk.init import init_param
from nndk.losses import LN2, cross_entropy
from nndk.models import read_model
from nndk.optim import OPTIMIZERS, clip_global_norm, learning_rate
from nnre.compiler import compile_program
from nnre.equations import check, param_shapes
from nnre.equations.parser import parse
from nnre.equations.roles import analyse
from nnre.errors import NnreError
from nnre.model import Model
from nnre.vm import Unrolled, bind_prologue


class TrainingError(NnreError):
    """Training cannot go on (a non-finite loss, a model that does not fit the data)."""


@dataclass
class TrainConfig:
    model: str = "lstm"
    dims: dict[str, int] = field(default_factory=lambda: {"H": 128})
    seq_length: int = 50
    batch_size: int = 32
    steps: int | None = None
    epochs: float | None = None
    lr: float = 2e-3
    optimizer: str = "adam"
    clip: float = 5.0
    lr_decay: float = 1.0
    decay_every: int = 0
    val_frac: float = 0.1
    eval_every: int = 100
    sample_every: int = 0  # 0: at every evaluation
    sample_length: int = 200
    temperature: float = 0.8
    seed: int = 0
    init: str = "auto"


@dataclass
class Progress:
    step: int
    total: int
    loss: float
    val_loss: float | None
    chars_per_s: float
    sample: str | None = None


class Trainer:
    """Owns the compiled program, the weights, the optimizer and the data position."""

    def __init__(self, config: TrainConfig, data_path: str | Path, equations: str,
                 filename: str, data: TextData, record: dict[str, Any] | None = None) -> None:
        self.config = config
        self.data_path = str(data_path)
        self.data = data
        self.equations = equations
        self.filename = filename
        vocab = data.size
        inputs = analyse(parse(equations, filename)).inputs
        if len(inputs) != 1:
            raise TrainingError(f"a character model needs exactly one input, {filename} has "
                                f"{len(inputs)}: {', '.join(inputs)}")
        self.input = inputs[0]
        checked = check(equations, config.dims, filename=filename,
                        known={self.input: (vocab,)})
        self.output = self._pick_output(checked.roles.outputs, checked.shapes.of, vocab)
        self.dims = checked.shapes.dims
        self.shapes = param_shapes(checked)
        self.prog = compile_program(checked.sympy, checked.roles, "float32", contiguous=True)
        self.rng = np.random.default_rng(config.seed)
        self.params = {name: init_param(name, self.prog.slots[i].shape, self.rng, config.init,
                                        "float32") for name, i in self.prog.params.items()}
        self.opt = OPTIMIZERS[config.optimizer](self.params)
        self.consts, self.refresh = bind_prologue(self.prog, self.params)
        self.step = 0
        self.batch_index = 0
        self.carry: dict[tuple[str, int], np.ndarray] | None = None
        self.history: dict[str, float] = {}
        self.train_streams = Streams(data.train, config.batch_size, config.seq_length, "training")
        self.val_streams = None
        if len(data.val) > 1:
            val_batch = max(1, min(config.batch_size, (len(data.val) - 1) // config.seq_length))
            self.val_streams = Streams(data.val, val_batch, config.seq_length, "validation")
        self._runs: dict[tuple[int, int], tuple[Unrolled, Backward]] = {}
        if record is not None:
            self._restore(record)

    def _pick_output(self, outputs: list[str], shapes: dict[str, tuple[int, int]],
                     vocab: int) -> str:
        fitting = [o for o in outputs if shapes[o][0] * shapes[o][1] == vocab]
        if not fitting:
            raise TrainingError(f"no output of {self.filename} has the vocabulary size {vocab}:"
                                " " + ", ".join(f"{o} {shapes[o]}" for o in outputs))
        return "y" if "y" in fitting else fitting[0]

    # -- one step ------------------------------------------------------------------------
    def _run(self, steps: int, batch: int) -> tuple[Unrolled, Backward]:
        key = (steps, batch)
        if key not in self._runs:
            run = Unrolled(self.prog, self.consts, steps, batch)
            self._runs[key] = (run, Backward(run, differentiable_slots(self.prog)))
        return self._runs[key]

    def _forward(self, inputs: np.ndarray, carry: dict[tuple[str, int], np.ndarray] | None
                 ) -> Unrolled:
        steps, batch = inputs.shape
        for f in self.refresh:  # stacked / transposed weights follow the parameters
            f()
        run, _ = self._run(steps, batch)
        init = carry or {key: np.zeros((batch, *self.prog.slots[i].shape), np.float32)
                         for key, i in self.prog.state_in.items()}
        run.forward({self.input: one_hot(inputs.reshape(-1), self.data.size, "float32")}, init)
        return run

    def _final_state(self, run: Unrolled) -> dict[tuple[str, int], np.ndarray]:
        out = {}
        for (name, lag) in self.prog.state_in:
            k, b = self.prog.max_lag_of(name), run.batch
            block = k + run.steps - lag
            out[(name, lag)] = run.history[name][block * b:(block + 1) * b].copy()
        return out

    def train_step(self) -> float:
        inputs, targets = self.train_streams.batch(self.batch_index)
        run = self._forward(inputs, self.carry)
        values = run.full[self.prog.outputs[self.output]]
        loss, seeds = cross_entropy(self.prog, self.output, values, targets.reshape(-1))
        if not math.isfinite(loss):
            raise TrainingError(f"the loss became {loss} at step {self.step + 1}; the last "
                                "good checkpoint is kept (try a lower --lr or --clip)")
        _, back = self._run(*inputs.shape)
        back.backward(seeds)
        grads = {name: back.full[i] for name, i in self.prog.params.items()}
        clip_global_norm(grads, self.config.clip)
        lr = learning_rate(self.config.lr, self.step, self.config.lr_decay,
                           self.config.decay_every)
        self.opt.step(self.params, grads, lr)
        self.step += 1
        self.batch_index += 1
        if self.batch_index % self.train_streams.batches == 0:
            self.carry = None  # the streams wrap around: start the next epoch from zero state
        else:
            self.carry = self._final_state(run)
        return loss

    def evaluate(self) -> float | None:
        """Mean cross-entropy (nats per character) over the whole validation split."""
        if self.val_streams is None:
            return None
        carry, total = None, 0.0
        for index in range(self.val_streams.batches):
            inputs, targets = self.val_streams.batch(index)
            run = self._forward(inputs, carry)
            values = run.full[self.prog.outputs[self.output]]
            rows = np.arange(targets.size)
            total -= float(np.mean(np.log(np.maximum(values[rows, targets.reshape(-1)], 1e-30))))
            carry = self._final_state(run)
        return total / self.val_streams.batches

    def runtime_model(self) -> Model:
        """The current weights as a runtime Model (for sampling), sharing the program."""
        weights = {n: a.reshape(self.shapes[n]) for n, a in self.params.items()}
        return Model(self.prog, weights, equations=self.equations, dims=self.dims,
                     param_specs={})

    def sample(self, length: int, prime: str | None = None) -> str:
        """Text from the current weights; its own seed, so training is not perturbed."""
        rng = np.random.default_rng([self.config.seed, self.step])
        model = self.runtime_model()
        vocab = self.data.vocab
        codes = list(self.data.encode(prime)) if prime else [int(self.data.train[0])]
        state = None
        out = []
        probs = None
        for code in codes:
            outputs, state = model.step({self.input: one_hot(np.array(code), len(vocab),
                                                              "float32")}, state)
            probs = outputs[self.output]
        for _ in range(length):
            assert probs is not None
            logits = np.log(np.maximum(probs.astype(np.float64), 1e-30)) / self.config.temperature
            p = np.exp(logits - logits.max())
            code = int(rng.choice(len(vocab), p=p / p.sum()))
            out.append(vocab[code])
            outputs, state = model.step({self.input: one_hot(np.array(code), len(vocab),
                                                              "float32")}, state)
            probs = outputs[self.output]
        return "".join(out)

    # -- checkpoints ---------------------------------------------------------------------
    def record(self) -> dict[str, Any]:
        return {
            "nndk_version": __version__, "config": asdict(self.config),
            "equations": self.equations, "model_file": self.filename, "dims": self.dims,
            "input": self.input, "output": self.output, "vocab": self.data.vocab,
            "data_path": self.data_path, "data_sha256": self.data.sha256,
            "step": self.step, "batch_index": self.batch_index,
            "optimizer": {"name": self.opt.name, "t": self.opt.t},
            "rng": self.rng.bit_generator.state, "history": self.history,
            "carry": sorted(f"{n}@{lag}" for n, lag in (self.carry or {})),
        }

    def arrays(self) -> dict[str, np.ndarray]:
        out = {f"param/{n}": a.reshape(self.shapes[n]) for n, a in self.params.items()}
        out |= {f"opt/{k}": v for k, v in self.opt.state.items()}
        out |= {f"carry/{n}@{lag}": v for (n, lag), v in (self.carry or {}).items()}
        return out

    def save(self, directory: str | Path) -> Path:
        return checkpoint.save(directory, self.arrays(), self.record())

    def _restore(self, record: dict[str, Any]) -> None:
        arrays = record["arrays"]
        for name, value in self.params.items():
            value[...] = arrays[f"param/{name}"].reshape(value.shape)
        for key, value in arrays.items():
            if key.startswith("opt/"):
                self.opt.state[key[4:]] = value.copy()
        self.opt.t = record["optimizer"]["t"]
        self.step, self.batch_index = record["step"], record["batch_index"]
        self.rng.bit_generator.state = record["rng"]
        self.history = dict(record.get("history", {}))
        carry = {}
        for key in record.get("carry", []):
            name, lag = key.rsplit("@", 1)
            carry[(name, int(lag))] = arrays[f"carry/{key}"]
        self.carry = carry or None

    # -- the loop ------------------------------------------------------------------------
    def total_steps(self) -> int:
        c = self.config
        if c.steps is not None:
            return c.steps
        epochs = c.epochs if c.epochs is not None else 1.0
        return max(1, int(round(epochs * self.train_streams.batches)))

    def fit(self, checkpoint_dir: str | Path, report: Callable[[Progress], None]) -> None:
        """Train to the configured length, evaluating, sampling and checkpointing as it goes.

        Ctrl-C is honoured between two steps: the checkpoint is written, then
        KeyboardInterrupt is raised again for the caller.
        """
        interrupted: list[bool] = []
        previous = signal.getsignal(signal.SIGINT)

        def on_sigint(signum: int, frame: Any) -> None:
            interrupted.append(True)

        try:
            signal.signal(signal.SIGINT, on_sigint)
        except ValueError:  # not the main thread: no signal handling
            previous = None
        try:
            self._loop(checkpoint_dir, report, interrupted)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    def _loop(self, checkpoint_dir: str | Path, report: Callable[[Progress], None],
              interrupted: list[bool]) -> None:
        total, c = self.total_steps(), self.config
        chars = c.seq_length * c.batch_size
        start, done_at_start = time.perf_counter(), self.step
        while self.step < total:
            loss = self.train_step()
            rate = (self.step - done_at_start) * chars / (time.perf_counter() - start + 1e-9)
            self.history["train_loss"] = loss
            last = self.step == total
            val = sample = None
            if self.step % c.eval_every == 0 or last:
                val = self.evaluate()
                if val is not None:
                    self.history["val_loss"] = val
                sample_every = c.sample_every or c.eval_every
                if c.sample_length > 0 and (self.step % sample_every == 0 or last):
                    sample = self.sample(c.sample_length)
                self.save(checkpoint_dir)
            report(Progress(self.step, total, loss, val, rate, sample))
            if interrupted:
                self.save(checkpoint_dir)
                raise KeyboardInterrupt


def start(config: TrainConfig, data_path: str | Path) -> Trainer:
    """A fresh trainer for ``config.model`` on the text file ``data_path``."""
    text, filename = read_model(config.model)
    data = load_text(data_path, config.val_frac)
    return Trainer(config, data_path, text, filename, data)


def resume(directory: str | Path, data_path: str | Path | None = None,
           steps: int | None = None) -> Trainer:
    """A trainer restored from a checkpoint, continuing exactly where it stopped."""
    arrays, record = checkpoint.load(directory)
    config = TrainConfig(**record["config"])
    if steps is not None:
        config.steps = steps
    path = data_path or record["data_path"]
    data = load_text(path, config.val_frac, vocab=record["vocab"])
    if data.sha256 != record["data_sha256"]:
        raise DataError(f"{path}: not the data this checkpoint was trained on (sha256 "
                        f"{data.sha256[:12]}… vs {record['data_sha256'][:12]}…)")
    return Trainer(config, path, record["equations"], record["model_file"], data,
                   {**record, "arrays": arrays})


def bits_per_char(nats: float) -> float:
    return nats / LN2
