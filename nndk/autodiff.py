"""Reverse mode over a compiled Program: one vector-Jacobian product per op, BPTT over state.

The forward pass runs the runtime's own Program (``nndk.unrolled.Unrolled``); this module only adds
gradients. Each VJP rule sits in its op's definition (``nnre.ops``), beside the forward.
Gradients accumulate with ``+=`` (a value read twice gets both contributions); the gradient
of a view (slice, reshape, transpose) is the same view of its base's gradient, so nothing
needs a rule for those. Ordering is a flat reverse loop, no recursion, however long the unroll.
Gradients for constants read by the loop (weights, biases) are taken once over all steps
after the step loop: one matmul per weight instead of one per step. With backward state the
time passes are differentiated in the reverse of the order they ran, each pass's steps in the
reverse of its own order (a backward pass's from the first step to the last).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from nndk.plan import Scratch, Written, fused, same_place, times_weight_t, weight_grad
from nndk.unrolled import Unrolled, history_rows, initial_time, row_block, state_keys
from nnre.ops import OPS
from nnre.ops.base import Vjp
from nnre.program import Instr, Program, backward

Array = np.ndarray


def transient_slots(prog: Program) -> set[int]:
    """Loop values no VJP reads: the forward pass need not keep them for every step."""
    kept = set(prog.state_out.values()) | set(prog.outputs.values())
    kept |= {a for stage in prog.stages() if stage != "loop"  # post, and later passes
             for ins in prog.stage_list(stage) for a in ins.args}
    for ins in prog.loop:
        reads = OPS[ins.op].reads
        kept |= set(ins.args) if "args" in reads else set()
        kept |= {ins.out} if "out" in reads else set()
    for ins in reversed(prog.loop):  # a view's value lives in its base
        if OPS[ins.op].view and ins.out in kept:
            kept.add(ins.args[0])
    return {ins.out for ins in prog.loop} - kept


def unbroadcast(contribution: Array, shape: tuple[int, ...]) -> Array:
    """Sum a contribution down to the shape of the operand that was broadcast."""
    while contribution.ndim > len(shape):
        contribution = np.add.reduce(contribution, axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and contribution.shape[axis] != 1:
            contribution = np.add.reduce(contribution, axis=axis, keepdims=True)
    return contribution


class Backward:
    """Gradients of one Unrolled forward pass, in buffers laid out like its values.

    The pass is bound once into a flat tape (``nndk.plan``): per step, one call or a few
    ufunc calls per contribution on preallocated buffers. A value consumed only by an
    addition shares its sum's gradient buffer (the contribution would be a copy).
    """

    def __init__(self, run: Unrolled, differentiable: set[int]) -> None:
        self.run = run
        prog = self.prog = run.prog
        views = view_slots(prog)
        self.roots: list[Array] = []
        self.full: list[Any] = [None] * len(prog.slots)
        self.history = {name: self._own(np.zeros_like(buf)) for name, buf in run.history.items()}
        keys = state_keys(prog)
        for name, out in (*prog.state_out.items(), *prog.back_out.items()):  # as the values'
            b, steps = run.batch, run.steps
            self.full[out] = self.history[name][history_rows(prog, name, 0, b, steps)]
            for (state, lag), index in keys.items():
                if state == name:
                    rows = history_rows(prog, name, -lag, b, steps)
                    self.full[index] = self.history[name][rows]
        shared = sums_shared(prog, differentiable, views)
        for i, value in enumerate(run.full):
            if value is not None and self.full[i] is None and i in differentiable \
                    and i not in views and i not in shared:
                self.full[i] = self._own(np.zeros_like(value))
        for i in shared:
            total = shared[i]
            while total in shared:  # a sum that is itself a term of a sum
                total = shared[total]
            self.full[i] = self.full[total]
        self._share_stacked(run)
        for stage in prog.stages():
            for ins in prog.stage_list(stage):
                self._view(ins, self.full)
        # g @ Wᵀ per step runs ~2× faster with Wᵀ contiguous (OpenBLAS NN vs NT at batch 32)
        self.weights_t: dict[int, tuple[Array, Array, list[Array] | None]] = {}
        stacked = {ins.out: ins.args for ins in prog.prologue
                   if ins.op == "concat" and dict(ins.attrs).get("axis") == 1}
        for ins in (ins for stage in prog.stages()[1:] for ins in prog.stage_list(stage)):
            b = ins.args[1] if ins.op == "matmul" else -1
            if b >= 0 and prog.slots[b].stage == "prologue" and len(prog.slots[b].shape) == 2 \
                    and b not in self.weights_t:
                value = run.full[b]
                ready = value.T.flags.c_contiguous
                buf = value.T if ready else np.empty(value.T.shape, value.dtype)
                # [A|B|…]ᵀ is [Aᵀ; Bᵀ; …]: row blocks, fast to copy when each Aᵀ is contiguous
                parts = [run.full[a].T for a in stacked.get(b, ())] or None
                self.weights_t[b] = (value, buf, None if ready else parts)
        self.at = []
        for t in range(run.steps):
            grads = row_block(prog, self.full, t, run.batch)
            for ins in (ins for stage in run.passes for ins in prog.stage_list(stage)):
                self._view(ins, grads)
            self.at.append(grads)
        self._tapes: dict[frozenset[int], tuple[dict[int, bool], list[Array], list[Any]]] = {}

    def _own(self, buf: Array) -> Array:
        self.roots.append(buf)
        return buf

    def _share_stacked(self, run: Unrolled) -> None:
        """A parameter stored inside a stacked weight (``nndk.layout``) gets its gradient
        inside the stack's gradient, at the same place: the concat's VJP becomes nothing."""
        for ins in self.prog.prologue:
            whole, grad = run.full[ins.out], self.full[ins.out]
            if ins.op != "concat" or grad is None or grad.strides != whole.strides:
                continue
            for index in self.prog.params.values():
                value = run.full[index]
                if self.full[index] is not None and np.shares_memory(value, whole):
                    self.roots = [r for r in self.roots if r is not self.full[index]]
                    self.full[index] = same_place(value, whole, grad)

    def _view(self, ins: Instr, grads: list[Any]) -> None:
        if OPS[ins.op].view and grads[ins.args[0]] is not None:
            grads[ins.out] = OPS[ins.op].kernel(grads[ins.args[0]], **dict(ins.attrs))

    def param_grads(self) -> dict[str, Array]:
        return {name: self.full[i] for name, i in self.prog.params.items()}

    def init_grad(self, name: str, lag: int) -> Array:
        """The gradient of state key (name, lag)'s initial value (lag −k: backward state)."""
        t = initial_time(self.prog, name, lag, self.run.steps)
        rows = history_rows(self.prog, name, t, self.run.batch)
        return self.history[name][rows]  # type: ignore[no-any-return]

    def backward(self, seeds: dict[int, Array]) -> None:
        """Propagate output gradients (slot → full-length array) back to every slot."""
        key = frozenset(seeds)
        if key not in self._tapes:
            self._tapes[key] = self._bind(key)
        writes, to_zero, tape = self._tapes[key]
        for buf in to_zero:
            buf.fill(0)
        for value, buf, parts in self.weights_t.values():
            if parts is not None:
                np.concatenate(parts, axis=0, out=buf)
            elif buf.base is None:
                np.copyto(buf, value.T)
        for index in sorted(seeds):  # the order _bind claimed them: a write before adds
            seed = seeds[index]
            if writes[index]:
                np.copyto(self.full[index], seed)
            else:
                self.full[index] += seed
        for call in tape:
            call()

    def _bind(self, seeded: frozenset[int]) -> tuple[dict[int, bool], list[Array], list[Any]]:
        """The tape, in the order contributions are made: read-out; each time pass from the
        last that ran, its steps in reverse (the loop's last to first), then the constants
        it reads (one product over all steps); pre, prologue."""
        run, prog = self.run, self.prog
        written, scratch = Written(self.roots), Scratch()
        writes = {index: written.claim(self.full[index]) for index in sorted(seeded)}
        tape: list[Any] = []
        for ins in reversed(prog.post):
            tape += self._calls(ins, run.full, self.full, written, scratch, None)
        for stage in reversed(run.passes):
            instrs = prog.stage_list(stage)
            steps = range(run.steps) if backward(stage) else reversed(range(run.steps))
            for t in steps:
                for ins in reversed(instrs):
                    tape += self._calls(ins, run.at[t], self.at[t], written, scratch, False)
            for ins in reversed(instrs):  # constants read in the pass: once over all steps
                tape += self._calls(ins, run.full, self.full, written, scratch, True)
        for ins in reversed(prog.prologue + prog.pre):
            tape += self._calls(ins, run.full, self.full, written, scratch, None)
        for value in self.full:
            if value is not None:
                written.read(value)  # kept: everything a caller may look at
        return writes, written.to_zero(), tape

    def _calls(self, ins: Instr, values: list[Any], grads: list[Any], written: Written,
               scratch: Scratch, consts: bool | None) -> list[Any]:
        """One bound call per contribution of ``ins``; ``consts`` picks constant or per-step
        arguments only (None: all)."""
        op, g = OPS[ins.op], grads[ins.out]
        rule = op.vjp
        if rule is None or g is None:
            return []
        written.read(g)
        args, out, attrs = [values[a] for a in ins.args], values[ins.out], dict(ins.attrs)
        calls = []
        for i, arg in enumerate(ins.args):
            target = grads[arg]
            if target is None or (consts is not None
                                  and consts != (self.prog.slots[arg].stage == "prologue")):
                continue
            if op.grad_views and is_same_view(rule(g, out, args, attrs, i), target):
                continue  # the part's gradient already lives inside the whole's
            if op.passes and op.passes[i] == 1 and is_same_view(g, target):
                continue  # a shared buffer (sums_shared)
            write = written.claim(target)
            if ins.op == "matmul" and i == 0 and ins.args[1] in self.weights_t:
                calls.append(times_weight_t(g, args[1], self.weights_t[ins.args[1]][1],
                                            target, write, scratch))
            elif ins.op == "matmul" and i == 1 and args[1].ndim == 2:
                calls.append(weight_grad(args[0], g, target, write, scratch))
            else:
                calls.append(fused(op, i, g, out, args, target, write, scratch)
                             or functools.partial(_generic, rule, g, out, args, attrs, i,
                                                  target, write))
        return calls


def _generic(rule: Vjp, g: Array, out: Array, args: list[Array], attrs: dict[str, Any],
             i: int, target: Array, write: bool) -> None:
    contribution = unbroadcast(rule(g, out, args, attrs, i), target.shape)  # type: ignore
    if write:
        np.copyto(target, contribution)
    else:
        target += contribution


def sums_shared(prog: Program, differentiable: set[int], views: set[int]) -> dict[int, int]:
    """Temporaries whose only use is as an argument whose gradient is g itself (``Op.passes``:
    a term of a sum, the left of a difference, a copy) of their own shape: they can share the
    sum's gradient buffer (slot → sum's slot)."""
    uses: dict[int, int] = {}
    for stage in prog.stages():
        for ins in prog.stage_list(stage):
            for a in ins.args:
                uses[a] = uses.get(a, 0) + 1
    kept = set(prog.outputs.values()) | set(prog.state_out.values()) \
        | set(prog.back_out.values())
    shared = {}
    for stage in prog.stages():
        for ins in prog.stage_list(stage):
            passes = OPS[ins.op].passes
            if ins.out not in differentiable:
                continue
            for a, sign in zip(ins.args, passes, strict=False):  # gradient g itself
                if sign != 1:
                    continue
                slot, sum_slot = prog.slots[a], prog.slots[ins.out]
                per_example = "prologue" not in (slot.stage, sum_slot.stage)
                if uses[a] == 1 and slot.kind == "temp" and a not in views and a not in kept \
                        and a in differentiable and slot.shape == sum_slot.shape \
                        and (per_example or slot.stage == sum_slot.stage == "prologue"):
                    shared[a] = ins.out
    return shared


def is_same_view(a: Array | None, b: Array) -> bool:
    return a is not None and a.shape == b.shape and a.strides == b.strides and \
        a.__array_interface__["data"][0] == b.__array_interface__["data"][0]


def view_slots(prog: Program) -> set[int]:
    """Slots produced by view ops (their gradient is a view too, never a buffer of its own)."""
    return {ins.out for stage in prog.stages()
            for ins in prog.stage_list(stage) if OPS[ins.op].view}


def differentiable_slots(prog: Program, inputs: bool = True) -> set[int]:
    """Slots whose gradient is wanted: parameters, state, and everything downstream of them
    (literal constants are left out); with ``inputs`` the inputs too (a trainer has no use
    for them, a gradient check does)."""
    live = set(prog.params.values()) | set(prog.state_in.values()) | set(prog.back_in.values())
    if inputs:
        live |= set(prog.inputs.values())
    for stage in prog.stages():
        for ins in prog.stage_list(stage):
            if any(a in live for a in ins.args):
                live.add(ins.out)
    # gradients flow backwards too: a parameter's derived views need buffers
    return live
