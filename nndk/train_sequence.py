"""Training attention on text, nanoGPT style: windows of ``context`` characters drawn at random,
every position trained at once through the equations' sequence form (a causal mask, no loop).

A text whose only state grows a step at a time (``Kₜ = [Kₜ₋₁; kₜᵀ]``) has no state to carry
between batches: each window is read from the start, as generation starts. The model is
trained in its sequence form (``nnre.compiler.compile_sequence``) and sampled, packed and run
in its step form, which the same text compiles to; the two agree (tests/test_attention.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nndk.config import TrainConfig
from nndk.data import TextData
from nndk.losses import Seeds, cross_entropy
from nndk.train_text import TextTrainer
from nndk.unrolled import Unrolled
from nnre.equations.parser import parse
from nnre.equations.roles import analyse

WINDOWS = 0x51DE  # keeps the windows' draw apart from other seeded choices
VALIDATION = 0xE7A1
DEFAULT_EVAL_WINDOWS = 20  # nanoGPT's --eval_iters in its CPU example


def text_trainer(config: TrainConfig, data_path: str | Path, equations: str, filename: str,
                 data: TextData) -> TextTrainer:
    """The trainer for a character model: windows through the sequence form for attention,
    carried streams for recurrent networks."""
    roles = analyse(parse(equations, filename, config.dims))
    if roles.appends and all(name in roles.appends for name in roles.state):
        return SequenceTrainer(config, data_path, equations, filename, data)
    return TextTrainer(config, data_path, equations, filename, data)


class SequenceTrainer(TextTrainer):
    """Random windows of the context's length; every position's next character at once."""

    sequence = True

    def __init__(self, config: TrainConfig, data_path: str | Path, equations: str,
                 filename: str, data: TextData) -> None:
        super().__init__(config, data_path, equations, filename, data)
        self.window = self.learner.prog.slots[self.learner.prog.inputs[self.input]].shape[0]
        if len(data.train) <= self.window + 1:
            from nndk.train import TrainingError

            raise TrainingError(f"the training text has {len(data.train)} characters, not "
                                f"more than a window of the context ({self.window}) and one")

    def steps_per_epoch(self) -> int:
        return max(1, (len(self.data.train) - 1) // (self.window * self.config.batch_size))

    def items_per_step(self) -> int:
        return self.window * self.config.batch_size

    def windows(self, text: np.ndarray, count: int, seed: list[int]
                ) -> tuple[np.ndarray, np.ndarray]:
        """``count`` windows at random offsets (as nanoGPT's get_batch): inputs and the
        characters one step later, both (count, window)."""
        starts = np.random.default_rng(seed).integers(0, len(text) - self.window, count)
        picks = starts[:, None] + np.arange(self.window)
        return text[picks], text[picks + 1]

    def _forward(self, inputs: np.ndarray, carry: object = None, train: bool = False
                 ) -> Unrolled:
        """The forward pass of a batch of windows; ``train`` draws this step's dropout masks
        (every position of every window its own entries)."""
        batch = inputs.shape[0]
        feeds = {self.input: inputs[:, :, None].astype(np.float32)}
        masks = self.dropout_masks() if train else None
        return self.learner.forward(feeds, 1, batch, None, dropout=masks)

    def _loss(self, run: Unrolled, targets: np.ndarray, grad: bool) -> tuple[float, Seeds]:
        prog = self.learner.prog
        values = run.full[prog.outputs[self.output]]
        loss, seeds = cross_entropy(prog, self.output, values.reshape(-1, values.shape[-1]),
                                    targets.reshape(-1), grad)
        return loss, {slot: seed.reshape(run.full[slot].shape) for slot, seed in seeds.items()}

    def train_step(self) -> float:
        inputs, targets = self.windows(self.data.train, self.config.batch_size,
                                       [self.config.seed, self.step, WINDOWS])
        run = self._forward(inputs, train=True)
        loss, seeds = self._loss(run, targets, grad=True)
        self.check_loss(loss)
        self.learner.update(run, seeds, self.learning_rate(), self.config.clip)
        self.step += 1
        self.batch_index += 1
        return loss

    def evaluate_metrics(self) -> tuple[float | None, float | None]:
        """Mean cross-entropy (nats per character) of ``--eval-iters`` batches of held-out
        windows (nanoGPT's estimate_loss), the same windows at every evaluation so that the
        losses compare."""
        if len(self.data.val) <= self.window:
            return None, None
        count = self.config.eval_iters or DEFAULT_EVAL_WINDOWS
        total = 0.0
        for index in range(count):
            inputs, targets = self.windows(self.data.val, self.config.batch_size,
                                           [self.config.seed, index, VALIDATION])
            total += self._loss(self._forward(inputs), targets, grad=False)[0]
        return total / count, None
