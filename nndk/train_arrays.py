"""Training on numeric arrays (.npz or CSV): any equation model, any inputs, one target.

The file holds one array per model input (named like the input) and a target array
(``--target``, default ``target``). Rows are examples: ``(N, n)`` for a model without state,
``(N, T, n)`` (T steps per example) for a recurrent one. Integer targets (class indices)
train with cross-entropy, float targets with mean squared error (``--loss`` to choose).
Batches are drawn from a seeded shuffle, so ``--resume`` continues exactly.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from nndk import checkpoint
from nndk.budget import check_budget
from nndk.data import DataError, load_arrays, split_at
from nndk.losses import LOSSES, Seeds
from nndk.schema import MAX_DIM
from nndk.train import TrainConfig, Trainer, TrainingError, learner_for, pick_output
from nnre.equations import check
from nnre.equations.parser import parse
from nnre.equations.roles import Roles, analyse

EVAL_STREAM = 0xE7A1  # keeps the --eval-iters row choice apart from other seeded choices


class ArrayTrainer(Trainer):
    kind = "arrays"
    unit = "examples"

    def __init__(self, config: TrainConfig, data_path: str | Path, equations: str,
                 filename: str) -> None:
        self.data_path = str(data_path)
        self.data_sha256 = hashlib.sha256(Path(data_path).read_bytes()).hexdigest()
        roles = analyse(parse(equations, filename, config.dims))
        arrays = load_arrays(data_path, [*roles.inputs, config.target])
        target = arrays.get(config.target)
        if target is None:
            raise DataError(f"{data_path}: no target array {config.target!r} (arrays: "
                            f"{', '.join(sorted(arrays))})")
        self.recurrent = bool(roles.state or roles.back)
        self.classes = config.loss == "ce" or (config.loss == "auto" and target.dtype.kind in "iu")
        _check_rows(data_path, arrays, [*roles.inputs, config.target])
        per_example = target.shape[2 if self.recurrent else 1:]
        size = (class_count(data_path, config.target, target) if self.classes
                else int(np.prod(per_example)))
        self.class_total = size if self.classes else None
        output = config.output or ("y" if "y" in roles.outputs else roles.outputs[0])
        known = _input_shapes(roles, arrays, filename) | {output: (size,)}
        probe = check(equations, config.dims, filename=filename, known=known)
        steps = int(target.shape[1]) if self.recurrent and target.ndim > 1 else 1
        check_budget(probe, config.optimizer, steps, config.batch_size)
        self.inputs = probe.roles.inputs
        self.bits = self.classes
        self.output = pick_output(probe, size, filename, output)
        super().__init__(config, learner_for(config, probe, equations, filename), filename)
        self.xs = {name: np.asarray(arrays[name], np.float32) for name in self.inputs}
        self.target = target.astype(np.int64 if self.classes else np.float32)
        count = len(self.target)
        if any(len(x) != count for x in self.xs.values()):
            raise DataError(f"{data_path}: arrays disagree on the number of examples")
        cut = split_at(count, config.val_frac, config.val_split)
        if cut < config.batch_size:
            raise DataError(f"{data_path}: {cut} training examples, fewer than --batch-size "
                            f"{config.batch_size}")
        self.train_rows, self.val_rows = np.arange(cut), np.arange(cut, count)
        self.order = self.learner.rng.permutation(self.train_rows)
        self.cursor = 0

    def steps_per_epoch(self) -> int:
        return len(self.train_rows) // self.config.batch_size

    def items_per_step(self) -> int:
        return self.config.batch_size

    def _batch(self, rows: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
        """Feeds as time-major row blocks, targets in the same row order, and the steps."""
        feeds, steps = {}, 1
        for name, x in self.xs.items():
            part = x[rows]
            if self.recurrent:
                steps = part.shape[1]
                part = part.transpose(1, 0, *range(2, part.ndim))
            feeds[name] = np.ascontiguousarray(part.reshape(steps * len(rows),
                                                            *part.shape[2 if self.recurrent
                                                                        else 1:]))
        target = self.target[rows]
        if self.recurrent:
            target = target.transpose(1, 0, *range(2, target.ndim))
        flat = target.reshape(steps * len(rows), *(() if self.classes else (-1,)))
        return feeds, flat, steps

    def _loss(self, rows: np.ndarray, grad: bool) -> tuple[float, Seeds, Any, tuple[int, int]]:
        """Loss, seeds and run of ``rows``, and a classifier's (right, predictions): the rows
        (and steps) whose largest output is the target."""
        feeds, target, steps = self._batch(rows)
        masks = self.dropout_masks() if grad else None  # training: this step's dropout
        run = self.learner.forward(feeds, steps, len(rows), None, dropout=masks)
        prog = self.learner.prog
        values = run.full[prog.outputs[self.output]]
        loss, seeds = LOSSES["ce" if self.classes else "mse"](prog, self.output, values, target,
                                                              grad)
        hits = (int(np.count_nonzero(values.argmax(axis=1) == target)) if self.classes else 0,
                len(target))
        return loss, seeds, run, hits

    def train_step(self) -> float:
        size = self.config.batch_size
        if self.cursor + size > len(self.order):
            self.order = self.learner.rng.permutation(self.train_rows)
            self.cursor = 0
        rows = self.order[self.cursor:self.cursor + size]
        loss, seeds, run, (right, predictions) = self._loss(rows, grad=True)
        self.check_loss(loss)
        if self.classes:
            self.accuracy = right / predictions
        self.learner.update(run, seeds, self.learning_rate(), self.config.clip)
        self.cursor += size
        self.step += 1
        return loss

    def eval_rows(self) -> np.ndarray:
        """The validation rows evaluated: all, or ``--eval-iters`` batches of them drawn once
        from the seed (the same rows at every evaluation, so that losses compare)."""
        count = self.config.eval_iters * self.config.batch_size
        if not count or count >= len(self.val_rows):
            return self.val_rows
        rng = np.random.default_rng([self.config.seed, EVAL_STREAM])
        return np.sort(rng.choice(self.val_rows, count, replace=False))

    def evaluate_metrics(self) -> tuple[float | None, float | None]:
        """Mean loss over the evaluated rows, and a classifier's accuracy on them."""
        rows = self.eval_rows()
        if len(rows) == 0:
            return None, None
        total, hits, counted, size = 0.0, 0, 0, self.config.batch_size
        for chunk in (rows[i:i + size] for i in range(0, len(rows), size)):
            loss, _, _, (right, predictions) = self._loss(chunk, grad=False)
            total += loss * len(chunk)
            hits, counted = hits + right, counted + predictions
        return total / len(rows), (hits / counted if self.classes else None)

    def data_record(self) -> dict[str, Any]:
        return {"data_path": self.data_path, "data_sha256": self.data_sha256,
                "input": self.inputs[0] if self.inputs else None, "output": self.output,
                "cursor": self.cursor, "classes": self.class_total}

    def data_arrays(self) -> dict[str, np.ndarray]:
        return {"data/order": self.order}

    def restore_data(self, arrays: dict[str, np.ndarray], record: dict[str, Any],
                     where: str) -> None:
        order = checkpoint.take(arrays, "data/order", self.train_rows.shape, where)
        if order.dtype.kind not in "iu" or not np.array_equal(np.sort(order), self.train_rows):
            raise checkpoint.CheckpointError(f"{where}: array 'data/order' is not a shuffle "
                                             "of the training rows")
        if record["cursor"] > len(order):
            raise checkpoint.CheckpointError(f"{where}: field cursor {record['cursor']} is "
                                             f"past the {len(order)} training rows")
        self.order = order.copy()
        self.cursor = record["cursor"]


def _check_rows(path: str | Path, arrays: dict[str, np.ndarray], names: list[str]) -> None:
    """Every array used has the same, non-zero number of rows (examples)."""
    rows = {name: (len(arrays[name]) if arrays[name].ndim else 0) for name in names
            if name in arrays}
    for name, count in rows.items():
        if count == 0:
            raise DataError(f"{path}: array {name!r} has no examples (shape "
                            f"{arrays[name].shape})")
    if len(set(rows.values())) > 1:
        raise DataError(f"{path}: arrays disagree on the number of examples: "
                        + ", ".join(f"{name!r} has {count}" for name, count in rows.items()))


def class_count(path: str | Path, name: str, target: np.ndarray) -> int:
    """The number of classes of integer targets; refuses negative or fractional indices
    (which would index out of range, or truncate silently) and absurd counts."""
    if target.dtype.kind == "f" and not np.array_equal(target, np.floor(target)):
        where = tuple(int(i) for i in np.argwhere(target != np.floor(target))[0])
        raise DataError(f"{path}: array {name!r} holds {target[where]} at index {list(where)}; "
                        "class indices (--loss ce) must be whole numbers")
    low, high = int(target.min()), int(target.max())
    if low < 0:
        where = tuple(int(i) for i in np.argwhere(target < 0)[0])
        raise DataError(f"{path}: array {name!r} holds class {low} at index {list(where)}; "
                        "class indices must be ≥ 0")
    if high >= MAX_DIM:
        raise DataError(f"{path}: array {name!r} holds class {high}; at most {MAX_DIM} "
                        "classes can be trained")
    return high + 1


def _input_shapes(roles: Roles, arrays: dict[str, np.ndarray], filename: str
                  ) -> dict[str, tuple[int, ...]]:
    """Each model input's per-step shape, read from the array of the same name."""
    clash = sorted(set(roles.params) & set(arrays))
    if clash:
        raise TrainingError(f"{clash[0]!r} is a parameter of {filename} and also an array in "
                            f"the data; if it is an input, declare it: 'input {clash[0]}'")
    shapes = {}
    for name in roles.inputs:
        if name not in arrays:
            raise TrainingError(f"the data has no array for input {name!r} (arrays: "
                                f"{', '.join(sorted(arrays))})")
        timed = roles.state or roles.back
        per_example = arrays[name].shape[2:] if timed else arrays[name].shape[1:]
        shapes[name] = tuple(int(d) for d in per_example)
    return shapes
