"""Every loss nndk reports or trains with: the mean loss of a batch, and its gradient seeds.

Training, evaluation (text and arrays) and every report built on them (progress lines, the
checkpoint's history, a pack's provenance) take their numbers from here, so a model whose
output is a log-softmax is scored as one everywhere. Cross-entropy reads the output by what
produced it: over a softmax it seeds ``p − onehot`` at the softmax's input (the stable form,
no division by a probability), over a log-softmax it reads log-probabilities directly and
seeds ``−onehot``; any other output is taken as probabilities.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from nnre.program import Program

LN2 = float(np.log(2.0))
Seeds = dict[int, np.ndarray]
Loss = Callable[[Program, str, np.ndarray, np.ndarray, bool], tuple[float, Seeds]]


def producer(prog: Program, slot: int) -> tuple[str, int] | None:
    """(op, first argument) of the instruction that computes ``slot``."""
    for stage in prog.stages():
        for ins in prog.stage_list(stage):
            if ins.out == slot:
                return ins.op, ins.args[0] if ins.args else -1
    return None


def cross_entropy(prog: Program, output: str, values: np.ndarray, targets: np.ndarray,
                  grad: bool = True) -> tuple[float, Seeds]:
    """Mean cross-entropy (nats) of integer ``targets`` (rows,), and (if ``grad``) its seeds."""
    slot = prog.outputs[output]
    rows, n = np.arange(len(targets)), len(targets)
    made_by = producer(prog, slot)
    kind = made_by[0] if made_by is not None else None
    if kind == "log_softmax":
        loss = -float(np.mean(values[rows, targets]))
    else:
        loss = -float(np.mean(np.log(np.maximum(values[rows, targets], 1e-30))))
    if not grad:
        return loss, {}
    if made_by is not None and kind == "softmax":
        seed = values.copy()
        seed[rows, targets] -= 1
        seed /= n
        return loss, {made_by[1]: seed}
    seed = np.zeros_like(values)
    if kind == "log_softmax":
        seed[rows, targets] = -1.0 / n
    else:
        seed[rows, targets] = -1.0 / (n * np.maximum(values[rows, targets], 1e-30))
    return loss, {slot: seed}


def mean_squared_error(prog: Program, output: str, values: np.ndarray, targets: np.ndarray,
                       grad: bool = True) -> tuple[float, Seeds]:
    """Mean over every element of ``(values − targets)²``, and (if ``grad``) its seed."""
    diff = values - targets.reshape(values.shape)
    loss = float(np.mean(diff * diff))
    return loss, ({prog.outputs[output]: (2.0 / diff.size) * diff} if grad else {})


LOSSES: dict[str, Loss] = {"ce": cross_entropy, "mse": mean_squared_error}


def bits(nats: float) -> float:
    """A cross-entropy in bits per item, as progress lines show it."""
    return nats / LN2
