"""Runs a Program: binds preallocated buffers once per batch size, then replays flat tapes.

A tape is a list of zero-argument callables with every array already bound, so one step costs
one Python call per instruction and no allocation. Next-state values rotate through a ring of
``max_lag + 1`` buffer sets (one tape per phase), so a step never writes into a buffer that
holds state it still reads, and the caller's state arrays are never written.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from nnre.ops import OPS
from nnre.program import Instr, Program

Tape = list[Callable[[], Any]]


def run_prologue(prog: Program, params: dict[str, np.ndarray]) -> list[np.ndarray | None]:
    """Constant slots: parameters, literals, and everything computed from them (once)."""
    arrays: list[np.ndarray | None] = [None] * len(prog.slots)
    for index, value in prog.literals.items():
        arrays[index] = value
    for name, index in prog.params.items():
        arrays[index] = params[name].reshape(prog.slots[index].shape)
    for ins in prog.prologue:
        _execute(ins, arrays, len(prog.slots))
    return arrays


def _execute(ins: Instr, arrays: list[np.ndarray | None], _n: int) -> None:
    op = OPS[ins.op]
    args = [arrays[a] for a in ins.args]
    attrs = dict(ins.attrs)
    if op.view:
        arrays[ins.out] = op.kernel(*args, **attrs)
        return
    shapes = [a.shape for a in args if a is not None]
    out_shape = op.shape(*shapes, **attrs) if op.arity != 0 else ()
    out = np.empty(out_shape, dtype=np.result_type(*args) if args else None)
    op.kernel(*args, out=out, **attrs)
    arrays[ins.out] = out


def _bind(ins: Instr, arrays: list[Any], rows: int, dtype: str, prog: Program,
          allocate: bool = True) -> Callable[[], Any] | None:
    """Allocate the output buffer of one instruction (or make its view) and bind a call."""
    op = OPS[ins.op]
    args = [arrays[a] for a in ins.args]
    attrs = dict(ins.attrs)
    if op.view:
        arrays[ins.out] = op.kernel(*args, **attrs)
        return None
    if allocate or arrays[ins.out] is None:
        arrays[ins.out] = np.empty((rows, *prog.slots[ins.out].shape), dtype=dtype)
    return functools.partial(op.kernel, *args, out=arrays[ins.out], **attrs)


class PreStage:
    """Buffers and tape for the hoisted stage at a given row count (time × batch)."""

    def __init__(self, prog: Program, consts: list[Any], rows: int) -> None:
        self.arrays = list(consts)
        for index in prog.inputs.values():
            self.arrays[index] = np.empty((rows, *prog.slots[index].shape), dtype=prog.dtype)
        self.tape: Tape = [f for ins in prog.pre
                           if (f := _bind(ins, self.arrays, rows, prog.dtype, prog)) is not None]


class LoopStage:
    """Buffers and one tape per phase of the state ring for a given batch size."""

    def __init__(self, prog: Program, consts: list[Any], batch: int) -> None:
        dtype = prog.dtype
        self.phases = prog.max_lag() + 1
        shape = {i: (batch, *prog.slots[i].shape) for i in range(len(prog.slots))}
        self.ring = {name: [np.zeros(shape[idx], dtype) for _ in range(self.phases)]
                     for name, idx in prog.state_out.items()}
        used = {a for ins in prog.loop for a in ins.args}
        self.windows = {i: np.empty(shape[i], dtype) for i in sorted(used)
                        if prog.slots[i].stage == "pre"}
        temps: dict[int, np.ndarray] = {}
        self.tapes: list[Tape] = []
        self.arrays: list[list[Any]] = []
        for phase in range(self.phases):
            arrays = list(consts)
            for index, win in self.windows.items():
                arrays[index] = win
            for (name, lag), index in prog.state_in.items():
                arrays[index] = self.ring[name][(phase - lag) % self.phases]
            outs = {idx: name for name, idx in prog.state_out.items()}
            tape: Tape = []
            for ins in prog.loop:
                if ins.out in outs:
                    arrays[ins.out] = self.ring[outs[ins.out]][phase]
                elif ins.out in temps:
                    arrays[ins.out] = temps[ins.out]
                f = _bind(ins, arrays, batch, dtype, prog, allocate=False)
                if f is not None:
                    tape.append(f)
                    temps.setdefault(ins.out, arrays[ins.out])
            self.tapes.append(tape)
            self.arrays.append(arrays)
