"""Losses over a model's output, with the gradient to seed backpropagation.

Cross-entropy over a softmax output seeds ``p − onehot`` at the softmax's input (the stable
form, no division by a probability); over a log-softmax output it seeds ``−onehot``.
"""

from __future__ import annotations

import numpy as np

from nnre.program import Program

LN2 = float(np.log(2.0))


def producer(prog: Program, slot: int) -> tuple[str, int] | None:
    """(op, first argument) of the instruction that computes ``slot``."""
    for stage in ("pre", "loop", "post", "prologue"):
        for ins in prog.stage_list(stage):
            if ins.out == slot:
                return ins.op, ins.args[0] if ins.args else -1
    return None


def cross_entropy(prog: Program, output: str, values: np.ndarray, targets: np.ndarray
                  ) -> tuple[float, dict[int, np.ndarray]]:
    """Mean cross-entropy (nats) of integer ``targets`` (rows,) and its gradient seeds."""
    slot = prog.outputs[output]
    rows = np.arange(len(targets))
    n = len(targets)
    made_by = producer(prog, slot)
    if made_by is not None and made_by[0] == "softmax":
        probs = values
        loss = -float(np.mean(np.log(np.maximum(probs[rows, targets], 1e-30))))
        seed = probs.astype(np.float64 if probs.dtype == np.float64 else probs.dtype, copy=True)
        seed[rows, targets] -= 1
        seed /= n
        return loss, {made_by[1]: seed}
    if made_by is not None and made_by[0] == "log_softmax":
        loss = -float(np.mean(values[rows, targets]))
        seed = np.zeros_like(values)
        seed[rows, targets] = -1.0 / n
        return loss, {slot: seed}
    probs = np.maximum(values, 1e-30)
    loss = -float(np.mean(np.log(probs[rows, targets])))
    seed = np.zeros_like(values)
    seed[rows, targets] = -1.0 / (n * probs[rows, targets])
    return loss, {slot: seed}


def mean_squared_error(prog: Program, output: str, values: np.ndarray, targets: np.ndarray
                       ) -> tuple[float, dict[int, np.ndarray]]:
    diff = values - targets.reshape(values.shape)
    loss = float(np.mean(diff * diff))
    return loss, {prog.outputs[output]: (2.0 / diff.size) * diff}
