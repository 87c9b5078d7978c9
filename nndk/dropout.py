"""Dropout in training: each ``dropout(x)`` of the training Program becomes ``x ⊙ mask``.

nnre runs ``dropout`` as the identity (a view op), so a packed model needs nothing for it.
Training with ``--dropout P`` rewrites the Program before the optimizer sees it: each
dropout instruction becomes ``mul(x, m)``, with ``m`` a new input of x's shape, refilled for
every training batch with entries 0 (probability P) or 1/(1−P) (inverted dropout, as
``torch.nn.Dropout``: every entry keeps its expectation, so evaluation needs no rescaling and
runs with masks of ones). The gradient is mul's. The masks are drawn from a generator seeded
by the run's seed and the step alone, so ``--resume`` draws the same ones. With P = 0 the
instructions are removed instead (their readers read x), so the Program is the one a model
without dropout() compiles to and trains bit for bit like it.
"""

from __future__ import annotations

import copy

import numpy as np

from nnre.errors import NnreError
from nnre.program import Instr, Program, Slot

DROPOUT_STREAM = 0xD209  # keeps the masks apart from other seeded choices
MASK = "dropout#{}"  # a mask's input name: '#' starts a comment, so no equation has it


class DropoutError(NnreError):
    """``--dropout`` on a model that cannot take it."""

    code = "bad-dropout"


def _instructions(prog: Program) -> list[tuple[str, Instr]]:
    return [(stage, ins) for stage in prog.stages()
            for ins in prog.stage_list(stage) if ins.op == "dropout"]


def count(prog: Program) -> int:
    """How many dropout instructions ``prog`` has."""
    return len(_instructions(prog))


def without(prog: Program) -> Program:
    """A copy of ``prog`` without its dropout instructions: each reader of one reads its
    argument instead (what nnre computes, with one view fewer)."""
    prog = copy.deepcopy(prog)
    alias: dict[int, int] = {}
    for _, ins in _instructions(prog):
        alias[ins.out] = alias.get(ins.args[0], ins.args[0])
    for stage in prog.stages():
        kept = [Instr(ins.op, ins.out, tuple(alias.get(a, a) for a in ins.args), ins.attrs)
                for ins in prog.stage_list(stage) if ins.op != "dropout"]
        prog.stage_list(stage)[:] = kept
    for table in (prog.outputs, prog.state_out, prog.back_out):
        for name, index in table.items():
            table[name] = alias.get(index, index)
    return prog


def with_masks(prog: Program, where: str) -> tuple[Program, dict[str, int]]:
    """A copy of ``prog`` where each dropout(x) is mul(x, m) with ``m`` a new input; returns
    it and the masks' input names → slots. ``where`` (the model's file) names an error."""
    prog = copy.deepcopy(prog)
    masks: dict[str, int] = {}
    for stage in prog.stages():
        instrs = prog.stage_list(stage)
        for k, ins in enumerate(instrs):
            if ins.op != "dropout":
                continue
            source = prog.slots[ins.args[0]]
            if stage == "prologue":
                raise DropoutError(f"{where}: dropout of {source.name}, a value made from "
                                   "parameters alone: training drops entries of values that "
                                   "vary per example (activations), not of weights")
            name = MASK.format(len(masks))
            masks[name] = len(prog.slots)
            prog.slots.append(Slot(name, "input", source.shape, "pre"))
            prog.inputs[name] = masks[name]
            instrs[k] = Instr("mul", ins.out, (ins.args[0], masks[name]))
    return prog, masks


def fill(masks: list[np.ndarray], p: float, rng: np.random.Generator | None) -> None:
    """Fill the mask arrays in place: Bernoulli(1 − p)/(1 − p) entries from ``rng``, drawn
    in order, or ones (no ``rng``: evaluation)."""
    for mask in masks:
        if rng is None or p == 0:
            mask.fill(1)
            continue
        rng.random(out=mask, dtype=mask.dtype)  # uniform in [0, 1): kept when ≥ p
        keep = mask >= p
        np.multiply(keep, mask.dtype.type(1 / (1 - p)), out=mask)


def generator(seed: int, step: int) -> np.random.Generator:
    """The masks' generator for training step ``step`` (0-based) of a run seeded ``seed``."""
    return np.random.default_rng([seed, step, DROPOUT_STREAM])
