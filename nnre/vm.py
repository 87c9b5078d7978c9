"""Runs a Program: binds preallocated buffers once per batch size, then replays flat tapes.

A tape is a list of zero-argument callables with every array already bound, so one step costs
one Python call per instruction and no allocation. Next-state values rotate through a ring of
``max_lag + 1`` buffer sets (one tape per phase), so a step never writes into a buffer that
holds state it still reads, and the caller's state arrays are never written. In a program
with backward state every time pass is bound the same way, its own state as the ring's, and
swept over the sequence (:func:`sweep`), a backward pass from the last step to the first.
A conv whose result one max pool alone reads is bound with that pool, and the ReLU after
it (``Op.pooled``, :func:`pooled_convs`): a binding decision like the layout; the Program
does not change.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnre import layout
from nnre.ops import OPS
from nnre.program import Instr, Program, backward, pass_index, stage_rank, state_key
from nnre.threads import single_threaded

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


def bind_instr(ins: Instr, arrays: list[Any], rows: int, dtype: str, prog: Program,
               allocate: bool = True, batch_last: bool = False) -> functools.partial[Any] | None:
    """Allocate the output buffer of one instruction (or make its view) and bind a call;
    ``batch_last`` lays the buffer out rows last (``nnre.layout``)."""
    op = OPS[ins.op]
    args = [arrays[a] for a in ins.args]
    attrs = dict(ins.attrs)
    if op.view:
        view = arrays[ins.out] = op.kernel(*args, **attrs)
        if view.size and not np.may_share_memory(view, args[0]):
            # a copy made once here would never see the values written later
            raise RuntimeError(f"internal error: {ins.op} of slot {ins.args[0]} is not a view")
        return None
    if allocate or arrays[ins.out] is None:
        arrays[ins.out] = layout.empty(rows, prog.slots[ins.out].shape, dtype, batch_last)
    return functools.partial(op.ufunc or op.kernel, *args, out=arrays[ins.out], **attrs)


def bound_calls(ins: Instr, f: functools.partial[Any], arrays: list[Any]
                ) -> list[Callable[[], Any]]:
    """One bound instruction as the calls a tape makes: the kernel's unfolded calls when it
    has that form (one Python frame less each, scratch made once), and products on one BLAS
    thread (``nnre.threads``)."""
    op = OPS[ins.op]
    calls: list[Callable[[], Any]] = [f] if op.unfold is None else \
        op.unfold(*f.args, out=arrays[ins.out], **dict(ins.attrs))
    return single_threaded(calls) if op.products else calls


def _slot(ins: Instr, outs: dict[int, str], states: dict[str, list[np.ndarray]], phase: int,
          temps: dict[int, np.ndarray]) -> np.ndarray | None:
    """The buffer an instruction's result already has: its ring state, or the temporary
    an earlier phase made (temporaries are shared by all phases)."""
    return states[outs[ins.out]][phase] if ins.out in outs else temps.get(ins.out)


def _bind(ins: Instr, arrays: list[Any], rows: int, prog: Program, last: set[int],
          slot: np.ndarray | None) -> functools.partial[Any] | None:
    if slot is not None:
        arrays[ins.out] = slot
    return bind_instr(ins, arrays, rows, prog.dtype, prog, False, ins.out in last)


def pooled_convs(prog: Program, instrs: list[Instr], kept: Collection[int]
                 ) -> dict[int, list[Instr]]:
    """Instructions with a pooled form (``Op.pooled``: conv) whose result one max pool of
    ``instrs`` reads and nothing else does (no other instruction of any stage, no output,
    nothing in ``kept``), with the ReLU that alone reads that pool's result if there is
    one (``nnre.optimize`` moves ReLU after pooling), by the last one's result:
    :func:`bind_stage` binds each chain as one (the product writes the pool's windows as
    blocks, the ReLU is the pool's floor), the results before the last never stored."""
    reads = Counter(a for stage in prog.stages() for ins in prog.stage_list(stage)
                    for a in ins.args)
    kept = {*kept, *prog.outputs.values()}
    makers = {ins.out: ins for ins in instrs if OPS[ins.op].pooled is not None}
    chains = {ins.out: [makers[ins.args[0]], ins] for ins in instrs
              if ins.op == "maxpool" and ins.args[0] in makers
              and reads[ins.args[0]] == 1 and ins.args[0] not in kept}
    for ins in instrs:
        if ins.op == "relu" and ins.args[0] in chains and reads[ins.args[0]] == 1 \
                and ins.args[0] not in kept:
            chains[ins.out] = [*chains.pop(ins.args[0]), ins]
    return chains


@dataclass
class Stage:
    """Instructions bound at a row count: one tape and slot table per phase of the state ring.

    ``given`` are the buffers the caller fills before a run (inputs, loop windows, post-loop
    captures), by slot. Without state (pre, post) there is one phase.
    """

    tapes: list[Tape]
    arrays: list[list[Any]]
    ring: dict[str, list[np.ndarray]]
    given: dict[int, np.ndarray]

    @property
    def phases(self) -> int:
        return len(self.tapes)


def bind_stage(prog: Program, consts: list[Any], instrs: list[Instr], rows: int,
               given: list[int], shared: dict[int, np.ndarray] | None = None,
               ring: bool = False) -> Stage:
    """The one way a stage is bound: buffers for ``instrs`` at ``rows`` rows, one tape per
    ring phase.

    ``given`` slots get buffers of their own for the caller to fill; ``shared`` slots are
    read from another stage's buffers (post reads what pre computed). With ``ring``, next
    state rotates through ``max_lag + 1`` buffer sets: phase p writes ``ring[·][p]`` and
    reads lag-k state from ``ring[·][p - k]``, so a step never overwrites state it still
    reads; temporaries are shared by all phases. Kernels with an unfolded form are bound as
    their ufunc calls (one Python frame less per call).
    """
    phases = prog.max_lag() + 1 if ring else 1
    inplace = prog.inplace_states()
    states = {name: [np.zeros((rows, *prog.slots[i].shape), prog.dtype)] * phases
              if name in inplace else
              [np.zeros((rows, *prog.slots[i].shape), prog.dtype) for _ in range(phases)]
              for name, i in prog.state_out.items()} if ring else {}
    fixed = {i: np.zeros((rows, *prog.slots[i].shape), prog.dtype) for i in given}
    outs = {idx: name for name, idx in prog.state_out.items()} if ring else {}
    last = layout.batch_last_slots(instrs, {*fixed, *(shared or {}), *outs,
                                            *prog.outputs.values()})
    pooled = pooled_convs(prog, instrs, {*fixed, *(shared or {}), *outs})
    temps: dict[int, np.ndarray] = {}
    tapes: list[Tape] = []
    tables: list[list[Any]] = []
    for phase in range(phases):
        arrays = list(consts)
        for index, buf in {**(shared or {}), **fixed}.items():
            arrays[index] = buf
        for (name, lag), index in prog.state_in.items() if ring else ():
            arrays[index] = states[name][(phase - lag) % phases]
        tape: Tape = []
        deferred = {ins.out for chain in pooled.values() for ins in chain[:-1]}
        for ins in instrs:
            if ins.out in deferred:
                continue
            f = _bind(ins, arrays, rows, prog, last, _slot(ins, outs, states, phase, temps))
            if f is None:
                continue
            chain = pooled.get(ins.out, [])
            calls = None if not chain else OPS[chain[0].op].pooled(  # type: ignore[misc]
                *[arrays[a] for a in chain[0].args], out=arrays[ins.out],
                pool=dict(chain[1].attrs), floor=0.0 if len(chain) > 2 else None,
                **dict(chain[0].attrs))
            if calls is not None:
                calls = single_threaded(calls)
            elif chain:  # bound apart after all, in order
                del pooled[ins.out]
                for before in chain[:-1]:
                    g = _bind(before, arrays, rows, prog, last,
                              _slot(before, outs, states, phase, temps))
                    assert g is not None
                    tape.extend(bound_calls(before, g, arrays))
                    temps.setdefault(before.out, arrays[before.out])
                f = _bind(ins, arrays, rows, prog, last, arrays[ins.out])
                assert f is not None
            tape.extend(calls if calls is not None else bound_calls(ins, f, arrays))
            temps.setdefault(ins.out, arrays[ins.out])
        tapes.append(tape)
        tables.append(arrays)
    return Stage(tapes, tables, states, fixed)


def loop_windows(prog: Program) -> list[int]:
    """The pre-stage values the loop reads: each step copies row block t into a window."""
    return pass_windows(prog, "loop")


def pass_windows(prog: Program, stage: str) -> list[int]:
    """The values of earlier stages (pre, earlier time passes) a time pass reads: each step
    copies row block t into a window."""
    used = {a for ins in prog.stage_list(stage) for a in ins.args}
    rank = stage_rank(stage)
    return sorted(i for i in used if prog.slots[i].stage != "prologue"
                  and stage_rank(prog.slots[i].stage) < rank)


def kept_for_later(prog: Program) -> list[int]:
    """In a program with backward state, the values of each time pass read after it (by a
    later pass, post, or as outputs): each step copies them into row block t of a buffer for
    the whole sequence, bound with ``pre``. Without backward state, none: the loop's values
    reach ``post`` through its own captures (:func:`post_captures`)."""
    if not prog.back_out:
        return []
    kept: set[int] = set(prog.outputs.values())
    for stage in prog.time_passes():
        kept |= set(pass_windows(prog, stage))
    kept |= {a for ins in prog.post for a in ins.args}
    return sorted(i for i in kept if pass_index(prog.slots[i].stage))


def pass_program(prog: Program, stage: str) -> Program:
    """The program as :func:`bind_stage` sees it when binding a time pass: that pass's state
    as its ring's state (a backward state's lead rotates through the ring as a lag does)."""
    keys, out = (prog.back_in, prog.back_out) if backward(stage) else \
        (prog.state_in, prog.state_out)
    return dataclasses.replace(
        prog, state_in={k: i for k, i in keys.items() if prog.slots[i].stage == stage},
        state_out={n: i for n, i in out.items() if prog.slots[i].stage == stage})


def run_steps(bound: Stage, state: Iterable[tuple[str, int]], init: Mapping[str, np.ndarray],
              sources: Sequence[tuple[np.ndarray, np.ndarray]],
              captures: Sequence[tuple[np.ndarray, list[np.ndarray]]], steps: int,
              sign: int = 1) -> dict[str, np.ndarray]:
    """Drive a bound time pass over ``steps`` steps (from the last one when ``sign`` is −1):
    the ring starts from ``init`` (keyed as the API names state), each step copies
    ``sources[t]`` into the pass's input windows, runs the tape of its phase and copies
    the captured buffers into row block t. Returns the state at the end. The one loop the
    single forward pass (``Model``) and each pass of :func:`sweep` share."""
    phases = bound.phases
    state = list(state)
    for name, lag in state:
        np.copyto(bound.ring[name][(-lag) % phases], init[state_key(name, sign * lag)])
    tapes = bound.tapes
    for k in range(steps):
        t, phase = (steps - 1 - k if sign < 0 else k), k % phases
        for win, src in sources:
            np.copyto(win, src[t])
        for f in tapes[phase]:
            f()
        for out, bufs in captures:
            np.copyto(out[t], bufs[phase])
    return {state_key(name, sign * lag): bound.ring[name][(steps - lag) % phases].copy()
            for name, lag in state}


def sweep(prog: Program, stage: str, bound: Stage, pre: Stage, steps: int, batch: int,
          init: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One time pass of a program with backward state over a whole sequence, from the last
    step for a backward pass, reading earlier stages' values from ``pre``'s buffers and
    keeping what later ones read there (:func:`kept_for_later`). ``init`` holds the state at
    the start (backward state: after the last step), keyed as the API names it; returns the
    pass's state at the end (backward state: at the first steps)."""
    full = pre.arrays[0]
    sources = [(win, full[i].reshape(steps, batch, *win.shape[1:]))
               for i, win in bound.given.items()]
    kept = [(full[i].reshape(steps, batch, *prog.slots[i].shape),
             [arrays[i] for arrays in bound.arrays])
            for i in kept_for_later(prog) if prog.slots[i].stage == stage]
    return run_steps(bound, pass_program(prog, stage).state_in, init, sources, kept, steps,
                     -1 if backward(stage) else 1)


def post_captures(prog: Program) -> list[int]:
    """The loop values the post stage reads: each step copies them into row block t. (With
    backward state, the passes keep them in ``pre``'s buffers instead: :func:`sweep`.)"""
    if prog.back_out:
        return []
    moved = {ins.out for ins in prog.post}
    return sorted({a for ins in prog.post for a in ins.args
                   if prog.slots[a].stage == "loop" and a not in moved})
