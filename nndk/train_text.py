"""Training on a text file, char-rnn style: characters in, the next character out.

The text is cut into parallel streams (``nndk/data.py``) read ``seq_length`` characters at a
time, the state carried from one batch to the next, except on the streams that restart from
the zero state (``--reset-frac``), so that the model also learns to start as generation does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nndk import checkpoint
from nndk.budget import check_budget
from nndk.config import TrainConfig
from nndk.data import Streams, TextData, one_hot
from nndk.learner import State
from nndk.losses import Seeds, cross_entropy
from nndk.train import Trainer, TrainingError, learner_for, pick_output
from nndk.unrolled import Unrolled
from nnre.equations import check
from nnre.equations.parser import parse
from nnre.equations.roles import analyse
from nnre.generate import default_prime

RESTART_STREAM = 0x5EED  # keeps the restart choice apart from other seeded choices


class TextTrainer(Trainer):
    """Characters in, the next character out: char-rnn's streams with carried state."""

    kind = "text"
    sequence = False  # trained through the sequence form (nndk.train_sequence)

    def __init__(self, config: TrainConfig, data_path: str | Path, equations: str,
                 filename: str, data: TextData) -> None:
        module = parse(equations, filename, config.dims)
        roles = analyse(module)
        if len(roles.inputs) != 1:
            raise TrainingError(f"a character model needs exactly one input, {filename} has "
                                f"{len(roles.inputs)}: {', '.join(roles.inputs)}")
        if roles.back:
            name = next(iter(roles.back))
            raise TrainingError(f"'{name}' in {filename} is backward state (read at a later "
                                "step): the model would read the characters it is to predict, "
                                "and text is generated one character at a time; train it on "
                                "arrays of whole sequences (an .npz whose inputs are (N, T, …))")
        self.input = roles.inputs[0]
        ids = any(d.ids and self.input in {n.name for n in d.names}
                  for d in module.declarations)
        known = {} if ids else {self.input: (data.size,)}  # x ∈ ℕ: fed codes, not one-hot
        trained = config.output or ("y" if "y" in roles.outputs else
                                    roles.outputs[0] if len(roles.outputs) == 1 else None)
        if trained in roles.outputs:  # its size is the vocabulary's: no `yₜ ∈ ℝ^V` needed
            known[trained] = (data.size,)
        checked = check(equations, config.dims, filename=filename, known=known)
        check_budget(checked, config.optimizer, config.seq_length, config.batch_size)
        self.output = pick_output(checked, data.size, filename, config.output)
        super().__init__(config, learner_for(config, checked, equations, filename,
                                             self.sequence), filename)
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

    def _forward(self, inputs: np.ndarray, carry: State | None, train: bool = False
                 ) -> Unrolled:
        """The forward pass of a batch; ``train`` draws this step's dropout masks."""
        steps, batch = inputs.shape
        codes = inputs.reshape(-1)
        masks = self.dropout_masks() if train else None
        if self.input in self.learner.prog.ids:  # x ∈ ℕ: the codes themselves
            feeds = {self.input: codes.reshape(-1, 1).astype(np.float32)}
            return self.learner.forward(feeds, steps, batch, carry, dropout=masks)
        feeds = {self.input: one_hot(codes, self.data.size, "float32")}
        return self.learner.forward(feeds, steps, batch, carry, {self.input: codes}, masks)

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
        run = self._forward(inputs, self._carried(), train=True)
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
        seed (from the run's seed and the step), so training is not perturbed. The prime is
        ``nnre run``'s default, a line break if the text has one (a lone first character of
        the text, such as a digit, is an ambiguous start)."""
        vocab = list(self.data.vocab)
        codecs = {self.input: {"id": "char", "vocab": vocab},
                  self.output: {"id": "sample", "vocab": vocab}}
        model = self.learner.runtime_model({"codecs": codecs})
        seed = int(np.random.SeedSequence([self.config.seed, self.step]).generate_state(1)[0])
        prime = prime or default_prime(model)
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
