"""The training forward pass: every step's values kept, state in one history buffer per name.

This is nndk's binding of the runtime's Program (the same instructions, the same kernels via
``nnre.vm.bind_instr``), laid out for backpropagation: per-example slots hold all steps
(``steps·batch`` rows, step t in row block t), each state lives in one history buffer with
its initial values first, so every lag is a view and no step copies anything. Large per-step
products with a constant weight may run transposed (``transposed_product``). Conv chains
are laid out batch last, as the runtime binds them (``nnre.layout``); their gradients keep
that order (``np.zeros_like``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection
from typing import Any

import numpy as np

from nnre.layout import batch_last_slots
from nnre.ops import OPS
from nnre.program import Instr, Program
from nnre.vm import Tape, bind_instr


def history_rows(prog: Program, name: str, t: int, batch: int, count: int = 1) -> slice:
    """Rows of ``name``'s history buffer holding its values at steps t … t+count−1.

    The buffer holds the initial values first (times −k … −1 for a maximum lag k), then one
    block of ``batch`` rows per step; every index into it is written here and nowhere else.
    """
    start = (prog.max_lag_of(name) + t) * batch
    return slice(start, start + count * batch)


def transposed_product(batch: int, weight: np.ndarray) -> bool:
    """Whether a per-step ``x @ W`` is faster computed as ``(Wᵀ xᵀ)ᵀ`` plus one copy.

    OpenBLAS splits a short, wide product with a large W badly; its transpose (W's rows
    times the batch columns) runs 10–45 % faster for H = 256–768 at batch 8–32, but is slower
    for small weights or large batches (``benchmarks/bench_layout.py`` prints the table). A
    fixed rule rather than a timing at bind time keeps training bit for bit reproducible.
    """
    return 2 <= batch <= 32 and weight.ndim == 2 and weight.size >= TRANSPOSED_MIN_WEIGHT


TRANSPOSED_MIN_WEIGHT = 1 << 18  # elements (1 MB of float32)


def bind_step_matmul(ins: Instr, arrays: list[Any], batch: int, prog: Program,
                     scratch: dict[int, np.ndarray], transient: Collection[int] = ()
                     ) -> list[Callable[[], Any]] | None:
    """The calls of one step's ``x @ W`` (W constant) in transposed form, or None if the
    plain product is the faster one. ``scratch`` holds one buffer per instruction. A
    ``transient`` result is not copied back: later instructions read the transposed buffer."""
    if ins.op != "matmul" or prog.slots[ins.args[1]].stage != "prologue" \
            or arrays[ins.args[0]].ndim != 2 \
            or not transposed_product(batch, arrays[ins.args[1]]):
        return None  # rows of vectors only: .T of a batch of matrices reverses every axis
    weight = arrays[ins.args[1]]
    out = arrays[ins.out]
    buf = scratch.setdefault(ins.out, np.empty(out.shape[::-1], prog.dtype))
    product = functools.partial(np.matmul, weight.T, arrays[ins.args[0]].T, out=buf)
    if ins.out in transient:
        arrays[ins.out] = buf.T
        return [product]
    return [product, functools.partial(np.copyto, out, buf.T)]


class Unrolled:
    """A forward pass that keeps every slot's value at every step: what training differentiates.

    Per-example slots hold ``(steps·batch, n)`` arrays (``full``), step t being row block t;
    ``at[t]`` is the slot table of step t. Each state lives in one history buffer with its
    initial values first, so a state input at every lag is a contiguous view of it and no
    step copies anything. Binding is done once per (steps, batch); :meth:`forward` replays.
    """

    def __init__(self, prog: Program, consts: list[Any], steps: int, batch: int,
                 transient: set[int] | None = None) -> None:
        """``transient``: loop slots whose per-step values nobody reads after the step (the
        trainer knows which); they live in one reused buffer, not in ``full``."""
        self.prog, self.steps, self.batch = prog, steps, batch
        kept = set(prog.state_out.values()) | set(prog.outputs.values())
        transient = {i for i in transient or () if prog.slots[i].stage == "loop"} - kept
        rows, dtype = steps * batch, prog.dtype
        self.full: list[Any] = list(consts)
        for index in prog.inputs.values():
            self.full[index] = np.zeros((rows, *prog.slots[index].shape), dtype)
        # inputs given as codes (``forward(codes=...)``): x @ W for a one-hot x is a row gather
        self.codes = {name: np.zeros(rows, np.intp) for name in prog.inputs}
        by_slot = {index: name for name, index in prog.inputs.items()}
        self.pre: Tape = []
        self.pre_coded: Tape = []
        self.coded: set[str] = set()
        last = batch_last_slots(prog.pre, {*prog.inputs.values(), *prog.outputs.values(),
                                           *(a for ins in prog.loop + prog.post
                                             for a in ins.args)})
        for ins in prog.pre:  # conv chains batch last, as the runtime binds them
            f = bind_instr(ins, self.full, rows, dtype, prog, batch_last=ins.out in last)
            if f is None:
                continue
            self.pre.append(f)
            name = by_slot.get(ins.args[0]) if ins.op == "matmul" else None
            if name is not None and prog.slots[ins.args[1]].stage == "prologue":
                f = functools.partial(np.take, self.full[ins.args[1]], self.codes[name], axis=0,
                                      out=self.full[ins.out])
                self.coded.add(name)
            self.pre_coded.append(f)
        self.history = histories(prog, self.full, steps, batch)
        for ins in prog.loop:
            if not OPS[ins.op].view and self.full[ins.out] is None:
                self.full[ins.out] = np.zeros((rows, *prog.slots[ins.out].shape), dtype)
        self.at: list[list[Any]] = []
        self.tapes: list[Tape] = []
        scratch: dict[int, np.ndarray] = {}
        temps = {ins.out: np.zeros((batch, *prog.slots[ins.out].shape), dtype)
                 for ins in prog.loop if ins.out in transient and not OPS[ins.op].view}
        for t in range(steps):
            arrays = row_block(prog, self.full, t, batch)
            tape: Tape = []
            for ins in prog.loop:
                if ins.out in temps:
                    arrays[ins.out] = temps[ins.out]
                f = bind_instr(ins, arrays, batch, dtype, prog, False)
                if f is not None:
                    tape.extend(bind_step_matmul(ins, arrays, batch, prog, scratch, transient)
                                or [f])
            self.tapes.append(tape)
            self.at.append(arrays)
        for ins in prog.loop:  # full-length views of loop views, for the post stage
            if OPS[ins.op].view:
                self.full[ins.out] = OPS[ins.op].kernel(self.full[ins.args[0]],
                                                        **dict(ins.attrs))
        self.post = [f for ins in prog.post
                     if (f := bind_instr(ins, self.full, rows, dtype, prog)) is not None]

    def init_block(self, name: str, lag: int) -> Any:
        """Where the state value of time -lag lives (before step 0)."""
        return self.history[name][history_rows(self.prog, name, -lag, self.batch)]

    def forward(self, feeds: dict[str, np.ndarray], init: dict[tuple[str, int], Any],
                codes: dict[str, np.ndarray] | None = None) -> None:
        """Run all steps; ``feeds`` are (steps·batch, n) arrays, ``init`` (batch, n) arrays.

        ``codes[name]`` (steps·batch integers), when given, says that ``feeds[name]`` is one-hot
        with a 1 at those columns, so products with it can gather rows instead.
        """
        for name, index in self.prog.inputs.items():
            if feeds[name] is not self.full[index]:  # else filled in place (dropout masks)
                np.copyto(self.full[index], feeds[name])
        for (name, lag), value in init.items():
            np.copyto(self.init_block(name, lag), value)
        for name, value in (codes or {}).items():
            np.copyto(self.codes[name], value, casting="unsafe")
        for f in self.pre_coded if codes and self.coded <= set(codes) else self.pre:
            f()
        for tape in self.tapes:
            for call in tape:
                call()
        for f in self.post:
            f()


def histories(prog: Program, full: list[Any], steps: int, batch: int) -> dict[str, Any]:
    """One buffer per state: k initial blocks then one block per step; slots view into it."""
    history = {}
    for name, out in prog.state_out.items():
        k = prog.max_lag_of(name)
        buf = np.zeros(((steps + k) * batch, *prog.slots[out].shape), prog.dtype)
        history[name] = buf
        full[out] = buf[history_rows(prog, name, 0, batch, steps)]
        for (state, lag), index in prog.state_in.items():
            if state == name:
                full[index] = buf[history_rows(prog, name, -lag, batch, steps)]
    return history


def row_block(prog: Program, full: list[Any], t: int, batch: int) -> list[Any]:
    """The slot table of step t: row block t of every per-example slot of pre and loop."""
    arrays = list(full)
    for i, slot in enumerate(prog.slots):
        if slot.stage in ("pre", "loop") and full[i] is not None:
            arrays[i] = full[i][t * batch:(t + 1) * batch]
    return arrays
