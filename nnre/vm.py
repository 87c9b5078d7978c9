"""Runs a Program: binds preallocated buffers once per batch size, then replays flat tapes.

A tape is a list of zero-argument callables with every array already bound, so one step costs
one Python call per instruction and no allocation. Next-state values rotate through a ring of
``max_lag + 1`` buffer sets (one tape per phase), so a step never writes into a buffer that
holds state it still reads, and the caller's state arrays are never written.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection
from typing import Any

import numpy as np

from nnre.ops import OPS
from nnre.program import Instr, Program

Tape = list[Callable[[], Any]]


def run_prologue(prog: Program, params: dict[str, np.ndarray]) -> list[np.ndarray | None]:
    """Constant slots: parameters, literals, and everything computed from them (once)."""
    return bind_prologue(prog, params)[0]


def bind_prologue(prog: Program, params: dict[str, np.ndarray],
                  placed: dict[int, np.ndarray] | None = None) -> tuple[list[Any], Tape]:
    """Constant slots and a tape that recomputes them in place.

    Parameters are bound by reference (reshaped views where possible), so a trainer that
    updates its arrays in place only has to replay the tape to refresh stacked weights.
    ``placed`` values are already up to date (a trainer stores the parameters inside them).
    """
    arrays: list[Any] = [None] * len(prog.slots)
    for index, value in prog.literals.items():
        arrays[index] = value
    for name, index in prog.params.items():
        arrays[index] = params[name].reshape(prog.slots[index].shape)
    tape: Tape = []
    for ins in prog.prologue:
        op = OPS[ins.op]
        if placed and ins.out in placed:
            arrays[ins.out] = placed[ins.out]
            continue
        if op.view:
            arrays[ins.out] = op.kernel(*[arrays[a] for a in ins.args], **dict(ins.attrs))
            continue
        arrays[ins.out] = np.empty(prog.slots[ins.out].shape, dtype=prog.dtype)
        call = functools.partial(op.kernel, *[arrays[a] for a in ins.args],
                                 out=arrays[ins.out], **dict(ins.attrs))
        call()
        tape.append(call)
    return arrays, tape


def _bind(ins: Instr, arrays: list[Any], rows: int, dtype: str, prog: Program,
          allocate: bool = True) -> functools.partial[Any] | None:
    """Allocate the output buffer of one instruction (or make its view) and bind a call."""
    op = OPS[ins.op]
    args = [arrays[a] for a in ins.args]
    attrs = dict(ins.attrs)
    if op.view:
        arrays[ins.out] = op.kernel(*args, **attrs)
        return None
    if allocate or arrays[ins.out] is None:
        arrays[ins.out] = np.empty((rows, *prog.slots[ins.out].shape), dtype=dtype)
    return functools.partial(op.ufunc or op.kernel, *args, out=arrays[ins.out], **attrs)


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
    if ins.op != "matmul" or prog.slots[ins.args[1]].stage != "const" \
            or not transposed_product(batch, arrays[ins.args[1]]):
        return None
    weight = arrays[ins.args[1]]
    out = arrays[ins.out]
    buf = scratch.setdefault(ins.out, np.empty(out.shape[::-1], prog.dtype))
    product = functools.partial(np.matmul, weight.T, arrays[ins.args[0]].T, out=buf)
    if ins.out in transient:
        arrays[ins.out] = buf.T
        return [product]
    return [product, functools.partial(np.copyto, out, buf.T)]


class PreStage:
    """Buffers and tape for the hoisted stage at a given row count (time × batch)."""

    def __init__(self, prog: Program, consts: list[Any], rows: int) -> None:
        self.arrays = list(consts)
        for index in prog.inputs.values():
            self.arrays[index] = np.empty((rows, *prog.slots[index].shape), dtype=prog.dtype)
        self.tape: Tape = [f for ins in prog.pre
                           if (f := _bind(ins, self.arrays, rows, prog.dtype, prog)) is not None]


class PostStage:
    """Buffers and tape for the work after the loop, at time × batch rows.

    ``captures`` are the loop values it reads: the loop copies each into row block t of
    its capture buffer at every step.
    """

    def __init__(self, prog: Program, consts: list[Any], rows: int, pre: PreStage) -> None:
        self.arrays = list(consts)
        for index, slot in enumerate(prog.slots):
            if slot.stage == "pre":
                self.arrays[index] = pre.arrays[index]
        moved = {ins.out for ins in prog.post}
        self.captures = sorted({a for ins in prog.post for a in ins.args
                                if prog.slots[a].stage == "loop" and a not in moved})
        for index in self.captures:
            self.arrays[index] = np.empty((rows, *prog.slots[index].shape), dtype=prog.dtype)
        self.tape: Tape = [f for ins in prog.post
                           if (f := _bind(ins, self.arrays, rows, prog.dtype, prog)) is not None]


class LoopStage:
    """Buffers and one tape per phase of the state ring for a given batch size."""

    def __init__(self, prog: Program, consts: list[Any], batch: int) -> None:
        dtype = prog.dtype
        self.phases = prog.max_lag() + 1
        self.ring = _ring(prog, batch, self.phases)
        used = {a for ins in prog.loop for a in ins.args}
        self.windows = {i: np.empty((batch, *prog.slots[i].shape), dtype) for i in sorted(used)
                        if prog.slots[i].stage == "pre"}
        self.tapes, self.arrays = _phase_tapes(prog, consts, batch, prog.loop, self.windows,
                                               self.ring)


class StepStage:
    """The lean path for one time step (``Model.step``, generation): one flat tape per ring
    phase running pre, loop and post back to back at ``batch`` rows.

    At T=1 the hoisting of the sequence path buys nothing, so there are no windows to copy
    into and no post-stage captures: the tape reads ``inputs[name]`` directly and its outputs
    are read in place from ``arrays[phase]``. State lives in the ring, so a generator steps
    by running ``tapes[t % phases]`` with nothing copied at all.
    """

    def __init__(self, prog: Program, consts: list[Any], batch: int) -> None:
        self.phases = prog.max_lag() + 1
        self.ring = _ring(prog, batch, self.phases)
        self.inputs = {name: np.zeros((batch, *prog.slots[i].shape), prog.dtype)
                       for name, i in prog.inputs.items()}
        fixed = {prog.inputs[name]: buf for name, buf in self.inputs.items()}
        self.tapes, self.arrays = _phase_tapes(prog, consts, batch,
                                               [*prog.pre, *prog.loop, *prog.post], fixed,
                                               self.ring)


def _ring(prog: Program, batch: int, phases: int) -> dict[str, list[np.ndarray]]:
    return {name: [np.zeros((batch, *prog.slots[idx].shape), prog.dtype)
                   for _ in range(phases)] for name, idx in prog.state_out.items()}


def _phase_tapes(prog: Program, consts: list[Any], batch: int, instrs: list[Instr],
                 fixed: dict[int, np.ndarray], ring: dict[str, list[np.ndarray]]
                 ) -> tuple[list[Tape], list[list[Any]]]:
    """One tape and slot table per ring phase. Phase p writes next state into ``ring[·][p]``
    and reads lag-k state from ``ring[·][p - k]``; temporaries are shared by all phases."""
    phases = len(next(iter(ring.values()))) if ring else 1
    outs = {idx: name for name, idx in prog.state_out.items()}
    temps: dict[int, np.ndarray] = {}
    tapes: list[Tape] = []
    tables: list[list[Any]] = []
    for phase in range(phases):
        arrays = list(consts)
        for index, buf in fixed.items():
            arrays[index] = buf
        for (name, lag), index in prog.state_in.items():
            arrays[index] = ring[name][(phase - lag) % phases]
        tape: Tape = []
        for ins in instrs:
            if ins.out in outs:
                arrays[ins.out] = ring[outs[ins.out]][phase]
            elif ins.out in temps:
                arrays[ins.out] = temps[ins.out]
            f = _bind(ins, arrays, batch, prog.dtype, prog, allocate=False)
            if f is not None:
                unfold = OPS[ins.op].unfold
                if unfold is None:
                    tape.append(f)
                else:  # the kernel's ufunc calls, bound once
                    tape.extend(unfold(*f.args, out=arrays[ins.out], **dict(ins.attrs)))
                temps.setdefault(ins.out, arrays[ins.out])
        tapes.append(tape)
        tables.append(arrays)
    return tapes, tables


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
        for ins in prog.pre:
            f = _bind(ins, self.full, rows, dtype, prog)
            if f is None:
                continue
            self.pre.append(f)
            name = by_slot.get(ins.args[0]) if ins.op == "matmul" else None
            if name is not None and prog.slots[ins.args[1]].stage == "const":
                f = functools.partial(np.take, self.full[ins.args[1]], self.codes[name], axis=0,
                                      out=self.full[ins.out])
                self.coded.add(name)
            self.pre_coded.append(f)
        self.history = _histories(prog, self.full, steps, batch)
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
                f = _bind(ins, arrays, batch, dtype, prog, False)
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
                     if (f := _bind(ins, self.full, rows, dtype, prog)) is not None]

    def init_block(self, name: str, lag: int) -> Any:
        """Where the state value of time -lag lives (before step 0)."""
        k, b = self.prog.max_lag_of(name), self.batch
        return self.history[name][(k - lag) * b:(k - lag + 1) * b]

    def forward(self, feeds: dict[str, np.ndarray], init: dict[tuple[str, int], Any],
                codes: dict[str, np.ndarray] | None = None) -> None:
        """Run all steps; ``feeds`` are (steps·batch, n) arrays, ``init`` (batch, n) arrays.

        ``codes[name]`` (steps·batch integers), when given, says that ``feeds[name]`` is one-hot
        with a 1 at those columns, so products with it can gather rows instead.
        """
        for name, index in self.prog.inputs.items():
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


def _histories(prog: Program, full: list[Any], steps: int, batch: int) -> dict[str, Any]:
    """One buffer per state: k initial blocks then one block per step; slots view into it."""
    history = {}
    for name, out in prog.state_out.items():
        k = prog.max_lag_of(name)
        buf = np.zeros(((steps + k) * batch, *prog.slots[out].shape), prog.dtype)
        history[name] = buf
        full[out] = buf[k * batch:]
        for (state, lag), index in prog.state_in.items():
            if state == name:
                full[index] = buf[(k - lag) * batch:(k - lag + steps) * batch]
    return history


def row_block(prog: Program, full: list[Any], t: int, batch: int) -> list[Any]:
    """The slot table of step t: row block t of every per-example slot of pre and loop."""
    arrays = list(full)
    for i, slot in enumerate(prog.slots):
        if slot.stage in ("pre", "loop") and full[i] is not None:
            arrays[i] = full[i][t * batch:(t + 1) * batch]
    return arrays
