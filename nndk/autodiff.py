"""Reverse mode over a compiled Program: one vector-Jacobian product per op, BPTT over state.

The forward pass is the runtime's own evaluator (``nnre.vm.Unrolled``); this module only adds
gradients. Each VJP rule sits in ``VJPS`` keyed by the same op names as ``nnre.ops.OPS``.
Gradients accumulate with ``+=`` (a value read twice gets both contributions); the gradient
of a view (slice, reshape, transpose) is the same view of its base's gradient, so nothing
needs a rule for those. Ordering is a flat reverse loop, no recursion, however long the unroll.
Gradients for constants read by the loop (weights, biases) are taken once over all steps
after the step loop: one matmul per weight instead of one per step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from nnre.ops import OPS
from nnre.program import Instr, Program
from nnre.vm import Unrolled, row_block, transposed_product

Array = np.ndarray
# (gradient of the output, output value, argument values, attrs, which argument) → contribution
Rule = Callable[[Array, Array, list[Array], dict[str, Any], int], Array | None]
VIEW = "view"  # marker: the gradient of a view is the same view of the base's gradient


def _unary(fn: Callable[[Array, Array, Array], Array]) -> Rule:
    return lambda g, out, args, attrs, i: fn(g, out, args[0])


def _matmul(g: Array, out: Array, args: list[Array], attrs: dict[str, Any], i: int) -> Array:
    a, b = args
    if i == 0:
        return g @ b.T
    return a.reshape(-1, a.shape[-1]).T @ g.reshape(-1, g.shape[-1])


def _softmax(g: Array, out: Array, args: list[Array], attrs: dict[str, Any], i: int) -> Array:
    axis = attrs.get("axis", -1)
    return out * (g - np.add.reduce(g * out, axis=axis, keepdims=True))


def _log_softmax(g: Array, out: Array, args: list[Array], attrs: dict[str, Any], i: int
                 ) -> Array:
    axis = attrs.get("axis", -1)
    return g - np.exp(out) * np.add.reduce(g, axis=axis, keepdims=True)


def _concat(g: Array, out: Array, args: list[Array], attrs: dict[str, Any], i: int) -> Array:
    axis = attrs.get("axis", -1)
    start = sum(_width(a, axis) for a in args[:i])
    index: list[Any] = [slice(None)] * g.ndim
    index[axis] = slice(start, start + _width(args[i], axis))
    return g[tuple(index)]


def _width(a: Array, axis: int) -> int:
    return a.shape[axis] if a.ndim else 1


VJPS: dict[str, Rule | str | None] = {
    "add": lambda g, out, args, attrs, i: g,
    "sub": lambda g, out, args, attrs, i: g if i == 0 else -g,
    "mul": lambda g, out, args, attrs, i: g * args[1 - i],
    "div": lambda g, out, args, attrs, i: g / args[1] if i == 0 else -g * out / args[1],
    "matmul": _matmul,
    "rowdot": lambda g, out, args, attrs, i: g * args[1 - i],
    "neg": _unary(lambda g, out, x: -g),
    "tanh": _unary(lambda g, out, x: g * (1 - out * out)),
    "sigmoid": _unary(lambda g, out, x: g * out * (1 - out)),
    "relu": _unary(lambda g, out, x: g * (out > 0)),
    "exp": _unary(lambda g, out, x: g * out),
    "log": _unary(lambda g, out, x: g / x),
    "sqrt": _unary(lambda g, out, x: g / (2 * out)),
    "abs": _unary(lambda g, out, x: g * np.sign(x)),
    "softmax": _softmax,
    "log_softmax": _log_softmax,
    "pow": lambda g, out, args, attrs, i: g * attrs["exponent"] * np.power(
        args[0], attrs["exponent"] - 1),
    "copy": lambda g, out, args, attrs, i: g,
    "concat": _concat,
    "slice": VIEW,
    "reshape": VIEW,
    "transpose": VIEW,
}


def unbroadcast(contribution: Array, shape: tuple[int, ...]) -> Array:
    """Sum a contribution down to the shape of the operand that was broadcast."""
    while contribution.ndim > len(shape):
        contribution = np.add.reduce(contribution, axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and contribution.shape[axis] != 1:
            contribution = np.add.reduce(contribution, axis=axis, keepdims=True)
    return contribution


def _narrowed(rule: Rule, shape: tuple[int, ...], g: Array, out: Array, args: list[Any],
              attrs: dict[str, Any], i: int) -> Array:
    return unbroadcast(rule(g, out, args, attrs, i), shape)  # type: ignore[arg-type]


def _times_transposed(g: Array, out: Array, args: list[Any], attrs: dict[str, Any], i: int
                      ) -> Array:
    return g @ args[1]  # args[1] is the contiguous Wᵀ kept by Backward


def _transposed_product(weight: Array, buf: Array, g: Array, out: Array, args: list[Any],
                        attrs: dict[str, Any], i: int) -> Array:
    """``g @ Wᵀ`` as ``(W gᵀ)ᵀ`` (see ``nnre.vm.transposed_product``)."""
    return np.matmul(weight, g.T, out=buf).T


class Backward:
    """Gradients of one Unrolled forward pass, in buffers laid out like its values."""

    def __init__(self, run: Unrolled, differentiable: set[int]) -> None:
        self.run = run
        prog = self.prog = run.prog
        views = view_slots(prog)
        self.full: list[Any] = [None] * len(prog.slots)
        self.history = {name: np.zeros_like(buf) for name, buf in run.history.items()}
        for name, out in prog.state_out.items():  # same layout as the values' history
            k, b, steps = prog.max_lag_of(name), run.batch, run.steps
            self.full[out] = self.history[name][k * b:]
            for (state, lag), index in prog.state_in.items():
                if state == name:
                    self.full[index] = self.history[name][(k - lag) * b:(k - lag + steps) * b]
        for i, value in enumerate(run.full):
            if value is not None and self.full[i] is None and i in differentiable \
                    and i not in views:
                self.full[i] = np.zeros_like(value)
        self._share_stacked(run)
        for stage in ("const", "pre", "loop", "post"):
            for ins in prog.stage_list(stage):
                self._view(ins, self.full)
        # g @ Wᵀ per step runs ~2× faster with Wᵀ contiguous (OpenBLAS NN vs NT at batch 32)
        self.weights_t: dict[int, tuple[Array, Array, list[Array] | None]] = {}
        stacked = {ins.out: ins.args for ins in prog.prologue
                   if ins.op == "concat" and dict(ins.attrs).get("axis") == 1}
        for ins in prog.pre + prog.loop + prog.post:
            b = ins.args[1] if ins.op == "matmul" else -1
            if b >= 0 and prog.slots[b].stage == "const" and b not in self.weights_t:
                value = run.full[b]
                ready = value.T.flags.c_contiguous
                buf = value.T if ready else np.empty(value.T.shape, value.dtype)
                # [A|B|…]ᵀ is [Aᵀ; Bᵀ; …]: row blocks, fast to copy when each Aᵀ is contiguous
                parts = [run.full[a].T for a in stacked.get(b, ())] or None
                self.weights_t[b] = (value, buf, None if ready else parts)
        self._plans: list[list[tuple[Any, ...]]] | None = None
        self.at = []
        for t in range(run.steps):
            grads = row_block(prog, self.full, t, run.batch)
            for ins in prog.loop:
                self._view(ins, grads)
            self.at.append(grads)

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
                    self.full[index] = same_place(value, whole, grad)

    def _view(self, ins: Instr, grads: list[Any]) -> None:
        if VJPS[ins.op] == VIEW and grads[ins.args[0]] is not None:
            grads[ins.out] = OPS[ins.op].kernel(grads[ins.args[0]], **dict(ins.attrs))

    def param_grads(self) -> dict[str, Array]:
        return {name: self.full[i] for name, i in self.prog.params.items()}

    def init_grad(self, name: str, lag: int) -> Array:
        k, b = self.prog.max_lag_of(name), self.run.batch
        return self.history[name][(k - lag) * b:(k - lag + 1) * b]  # type: ignore[no-any-return]

    def zero(self) -> None:
        views = view_slots(self.prog)
        for i, g in enumerate(self.full):
            if g is not None and i not in views:
                g.fill(0)
        for g in self.history.values():
            g.fill(0)

    def backward(self, seeds: dict[int, Array]) -> None:
        """Propagate output gradients (slot → full-length array) back to every slot."""
        self.zero()
        for value, buf, parts in self.weights_t.values():
            if parts is not None:
                np.concatenate(parts, axis=0, out=buf)
            elif buf.base is None:
                np.copyto(buf, value.T)
        for index, seed in seeds.items():
            self.full[index] += seed
        run, prog = self.run, self.prog
        for ins in reversed(prog.post):
            self._apply(ins, run.full, self.full)
        for plan in reversed(self.step_plans()):
            for rule, g, out, args, attrs, i, target in plan:
                target += rule(g, out, args, attrs, i)
        for ins in reversed(prog.loop):  # constants read in the loop: once over all steps
            self._apply(ins, run.full, self.full, consts_only=True)
        for ins in reversed(prog.pre):
            self._apply(ins, run.full, self.full)
        for ins in reversed(prog.prologue):
            self._apply(ins, run.full, self.full)

    def step_plans(self) -> list[list[tuple[Any, ...]]]:
        """Per step, the loop's VJP calls with every array bound (built once).

        The step loop is the hot part of BPTT; binding its arrays once leaves one rule call
        and one ``+=`` per contribution (unbroadcast only where the target is narrower).
        """
        if self._plans is not None:
            return self._plans
        plans = []
        scratch: dict[int, Array] = {}
        for t in range(self.run.steps):
            values, grads, plan = self.run.at[t], self.at[t], []
            for ins in reversed(self.prog.loop):
                rule, g = VJPS[ins.op], grads[ins.out]
                if rule is None or rule == VIEW or g is None:
                    continue
                assert callable(rule)
                args, attrs = [values[a] for a in ins.args], dict(ins.attrs)
                for i, arg in enumerate(ins.args):
                    if grads[arg] is None or self.prog.slots[arg].stage == "const":
                        continue
                    call: Any = rule
                    weight = values[ins.args[1]] if ins.op == "matmul" else None
                    if i == 0 and weight is not None and \
                            transposed_product(self.run.batch, weight):
                        buf = scratch.setdefault(ins.out, np.empty(weight.shape[:1] + (
                            self.run.batch,), weight.dtype))
                        call = functools.partial(_transposed_product, weight, buf)
                    elif ins.op == "matmul" and i == 0 and ins.args[1] in self.weights_t:
                        call, args = _times_transposed, [None, self.weights_t[ins.args[1]][1]]
                    elif grads[arg].shape != g.shape:
                        call = functools.partial(_narrowed, rule, grads[arg].shape)
                    plan.append((call, g, values[ins.out], args, attrs, i, grads[arg]))
            plans.append(plan)
        self._plans = plans
        return plans

    def _apply(self, ins: Instr, values: list[Any], grads: list[Any],
               per_example_only: bool = False, consts_only: bool = False) -> None:
        rule = VJPS[ins.op]
        g = grads[ins.out]
        if rule is None or rule == VIEW or g is None:
            return
        assert callable(rule)
        args = [values[a] for a in ins.args]
        attrs = dict(ins.attrs)
        for i, arg in enumerate(ins.args):
            target = grads[arg]
            if target is None:
                continue
            is_const = self.prog.slots[arg].stage == "const"
            if (per_example_only and is_const) or (consts_only and not is_const):
                continue
            if ins.op == "matmul" and i == 0 and ins.args[1] in self.weights_t:
                target += g @ self.weights_t[ins.args[1]][1]
                continue
            if ins.op == "matmul" and i == 1 and target.T.flags.c_contiguous:
                a = args[0].reshape(-1, args[0].shape[-1])  # gᵀa: the target's own layout
                target.T[...] += g.reshape(-1, g.shape[-1]).T @ a
                continue
            contribution = rule(g, values[ins.out], args, attrs, i)
            if ins.op == "concat" and is_same_view(contribution, target):
                continue  # the part's gradient already lives inside the whole's
            if contribution is not None:
                target += unbroadcast(contribution, target.shape)


def same_place(view: Array, base: Array, other: Array) -> Array:
    """The view of ``other`` that sits where ``view`` sits in ``base`` (same layout)."""
    offset = view.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    start = base if base.flags.c_contiguous else base.T
    flat = (other if other.flags.c_contiguous else other.T).reshape(-1)
    assert start.flags.c_contiguous and flat.base is not None
    return np.lib.stride_tricks.as_strided(flat[offset // view.itemsize:], view.shape,
                                           view.strides)


def is_same_view(a: Array | None, b: Array) -> bool:
    return a is not None and a.shape == b.shape and a.strides == b.strides and \
        a.__array_interface__["data"][0] == b.__array_interface__["data"][0]


def view_slots(prog: Program) -> set[int]:
    """Slots produced by view ops (their gradient is a view too, never a buffer of its own)."""
    return {ins.out for stage in ("const", "pre", "loop", "post")
            for ins in prog.stage_list(stage) if VJPS[ins.op] == VIEW}


def differentiable_slots(prog: Program, inputs: bool = True) -> set[int]:
    """Slots whose gradient is wanted: parameters, state, and everything downstream of them
    (literal constants are left out); with ``inputs`` the inputs too (a trainer has no use
    for them, a gradient check does)."""
    live = set(prog.params.values()) | set(prog.state_in.values())
    if inputs:
        live |= set(prog.inputs.values())
    for stage in ("const", "pre", "loop", "post"):
        for ins in prog.stage_list(stage):
            if any(a in live for a in ins.args):
                live.add(ins.out)
    # gradients flow backwards too: a parameter's derived views need buffers
    return live
