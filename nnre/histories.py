"""Lowering what reads along the steps: histories, the masks of the steps present, and the
sequence form (formats/equations.md §4.1).

A history (``Kₜ = [Kₜ₋₁; kₜᵀ]``) is written in place at each stream's step in the step form,
and is every step's entry stacked in the sequence form; a value computed from one keeps the
axis along which it has an entry per step (``Value.ragged``), and what reads along that axis
sees only the steps up to the reader's own. These functions extend ``nnre.lowering.Lowering``
(``low``), which calls them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from nnre.equations import ast
from nnre.equations.roles import STEP, append_parts
from nnre.equations.to_sympy import state_symbol_name
from nnre.errors import EquationError
from nnre.ops import OPS
from nnre.value import Value, stored

if TYPE_CHECKING:
    from nnre.lowering import Lowering


def sequence_leaves(low: Lowering) -> None:
    """The sequence form has no state: a history is every step's entry at once (built
    by its equation), and ``t`` is the constant 0, 1, …, steps − 1."""
    plain = [n for n in low.roles.state if n not in low.roles.appends]
    if low.roles.back:
        name = next(iter(low.roles.back))
        raise EquationError(f"'{name}' is read at a later step (backward state), so the "
                            "equations have no form that runs all steps at once",
                            expected="state that only grows (Kₜ = [Kₜ₋₁; kₜᵀ]) or none")
    if plain:
        raise EquationError(f"'{plain[0]}' is read at an earlier step, so the equations "
                            "have no form that runs all steps at once",
                            expected="state that only grows (Kₜ = [Kₜ₋₁; kₜᵀ]) or none")
    for name in low.roles.appends:
        size = low.shapes.of[name][low.shapes.grown[name]]
        if size != low.steps:
            raise EquationError(f"'{name}' holds {size} steps; the sequence form runs "
                                f"{low.steps}", expected="histories as long as the context")
    if low.roles.step_index:
        low.t = low.slot("const", (low.steps, 1), "prologue", name="0…T-1")
        low.prog.literals[low.t] = np.arange(low.steps, dtype=low.prog.dtype)[:, None]
        low.timed.add(low.t)
        low.names[STEP] = Value(low.t, (1, 1))
    for name in low.roles.params:
        index = low.slot("param", low.shapes.of[name], "prologue", name)
        low.prog.params[name] = index
        low.names[name] = Value(index, low.shapes.of[name])


def whole(low: Lowering, name: str) -> Value:
    """A value that leaves the program (an output, next state): never a ragged one."""
    value = low.names[name]
    if value.ragged is not None and name not in low.roles.appends:
        raise EquationError(f"'{name}' has an entry for every step so far, so it cannot be "
                            "an output or state", expected="a value reduced along the steps, "
                            "e.g. by softmax(…) Vₜ or Σ(…; axis=k)")
    return value


def append(low: Lowering, eq: ast.Equation) -> Value:
    """``Kₜ = [Kₜ₋₁; r]``: r written at the step's index of the history, in place."""
    found = append_parts(eq)
    assert found is not None
    row = low.expr(found[0])
    if low.steps:
        return stacked(low, row, eq.target.name)
    previous = low.names[state_symbol_name(eq.target.name, 1)]
    axis = stored_axis(low, previous)
    out = low.emit("append", (previous.slot, like(low, row, previous), low.t),
                   stored(previous.shape), stage="loop", shared=False, axis=axis)
    return Value(out, previous.shape, previous.ragged, history=True)


def stacked(low: Lowering, row: Value, name: str) -> Value:
    """The sequence form of a history: the entry of every step, the steps moved into
    the growing axis (where the entry has size 1)."""
    shape, axis = low.shapes.of[name], low.shapes.grown[name]
    if row.slot not in low.timed:
        raise EquationError(f"the entry '{name}' appends is the same at every step",
                            expected="an entry computed from the step's input")
    full = low.full(row)  # (rows, steps, …, 1 at axis, …)
    rank = len(shape)
    order = (*range(1, axis + 1), 0, *range(axis + 2, rank + 1), axis + 1)
    moved = low.emit("permute", (full,), (*shape, 1), timed=False, axes=order)
    out = low.emit("reshape", (low.contiguous(moved),), stored(shape),
                   shape=(-1, *stored(shape)))
    return Value(out, shape, axis - rank, history=True)


def like(low: Lowering, v: Value, other: Value) -> int:
    """v in the layout other is stored in (a vector flat or with all its axes)."""
    return low.flat(v) if len(other.shape) == 2 and other.shape[1] == 1 else low.full(v)


def stored_axis(low: Lowering, v: Value) -> int:
    """v's ragged axis in its stored layout (a vector's entries are its last axis)."""
    assert v.ragged is not None
    return -1 if len(v.shape) == 2 and v.shape[1] == 1 else v.ragged


def present(low: Lowering, v: Value, slot: int) -> int:
    """A 1/0 mask of the entries of v present at each row's step (j ≤ t along the ragged
    axis), shaped to broadcast against ``slot`` (v in some stored layout)."""
    layout = low.step_shape(slot)
    axis = stored_axis(low, v) if len(layout) == len(stored(v.shape)) else v.ragged
    assert axis is not None
    size = layout[axis]
    shape = tuple(size if i == len(layout) + axis else 1 for i in range(len(layout)))
    if low.steps:  # all steps at once: step t sees entries 0 … t, a constant
        key: tuple[Any, ...] = ("causal", shape)
        if key not in low.memo:
            index = low.slot("const", (low.steps, *shape), "prologue", name="j≤t")
            causal = np.arange(size)[None, :] <= np.arange(low.steps)[:, None]
            low.prog.literals[index] = causal.astype(low.prog.dtype).reshape(
                (low.steps, *shape))
            low.timed.add(index)
            low.memo[key] = index
        return low.memo[key]
    key = ("present", size)
    if key not in low.memo:
        steps = low.slot("const", (size,), "prologue", name=f"0…{size - 1}")
        low.prog.literals[steps] = np.arange(size, dtype=low.prog.dtype)
        low.memo[key] = low.emit("less_equal", (steps, low.t), (size,), stage="loop")
    return low.emit("reshape", (low.memo[key],), shape, shape=(-1, *shape))


def masked(low: Lowering, v: Value, fill: float, flat: bool = False) -> int:
    """v with absent entries set to ``fill``: the neutral value of the op that reads
    along the steps (0 for sums, −∞ for softmax and max); its entries (n,) if ``flat``.
    In the sequence form the mask differs from step to step, so the result is timed."""
    low.in_timed = low.in_timed or bool(low.steps)
    slot = low.flat(v) if flat else low.full(v)
    mask = present(low, v, slot)
    return low.emit("where", (mask, slot, low.literal(fill)), low.step_shape(slot),
                    timed=bool(low.steps))


def plain(low: Lowering, v: Value, what: str) -> Value:
    """v, which an op is about to read in a way that mixes its steps: refused if ragged."""
    if v.ragged is not None:
        raise EquationError(f"{what} in the equation for '{low.current}' would mix the "
                            "entries of every step so far", expected="softmax, Σ, max or a "
                            "matrix product along the steps, or elementwise operations")
    return v


def summed(low: Lowering, a: Value, b: Value) -> tuple[Value, Value]:
    """The operands of a product that sums along the steps (``softmax(…) Vₜ``), with the
    absent entries of one side set to 0 (a history's own are finite, so the other side's
    mask suffices)."""
    over = [v for v, summed in ((a, a.ragged == -1), (b, b.ragged == -2)) if summed]
    mask = [v for v in over if not v.history] or over[:1]
    a, b = (Value(masked(low, v, 0.0), v.shape) if any(v is m for m in mask) else v
            for v in (a, b))
    return a, b


def fold_steps(low: Lowering, a: Value, b: Value, shape: tuple[int, ...]) -> Value | None:
    """In the sequence form, a product of a value per step that has one row (or one
    column) with a value per sequence (attention's ``q̃ₜ Kₜᵀ`` and ``p Vₜ``) as one
    product per sequence, the steps in place of that row: BLAS then sees
    (steps × k)(k × n) instead of steps products of one row each."""
    left = a.slot in low.timed
    step, other = (a, b) if left else (b, a)
    if len(step.shape) < 2 or step.shape[-2 if left else -1] != 1:
        return None
    rank, steps = len(shape), low.steps
    lead = rank - 2
    m = low.full(step, rank)  # (rows, steps, *lead, 1, k) or (rows, steps, *lead, k, 1)
    per = low.step_shape(m)
    if left:  # (*lead, steps, 1, k) → (*lead, steps, k)
        order = (*range(1, lead + 1), 0, lead + 1, lead + 2)
        rows_of = (*per[:lead], steps, per[-1])
    else:  # (*lead, k, steps, 1) → (*lead, k, steps)
        order = (*range(1, lead + 1), lead + 1, 0, lead + 2)
        rows_of = (*per[:lead], per[-2], steps)
    whole = (steps, *per)
    moved = low.emit("permute", (m,), tuple(whole[i] for i in order), timed=False,
                     axes=order)
    packed = low.emit("reshape", (low.contiguous(moved),), rows_of, timed=False,
                      shape=(-1, *rows_of))
    low.in_timed = False  # the value per sequence keeps its own rows (no axis of 1)
    other_slot = low.full(other, rank)
    pair = (packed, other_slot) if left else (other_slot, packed)
    out = shape[:-2] + ((steps, shape[-1]) if left else (shape[-2], steps))
    product = low.emit("matmul", pair, out, timed=False)
    if left:  # (*lead, steps, n) → (*lead, steps, 1, n) → (steps, *lead, 1, n)
        back = (*shape[:-2], steps, 1, shape[-1])
        order = (lead, *range(lead), lead + 1, lead + 2)
    else:  # (*lead, m, steps) → (*lead, m, steps, 1) → (steps, *lead, m, 1)
        back = (*shape[:-2], shape[-2], steps, 1)
        order = (lead + 1, *range(lead + 1), lead + 2)
    spread = low.emit("reshape", (product,), back, timed=False, shape=(-1, *back))
    low.in_timed = True
    return Value(low.emit("permute", (spread,), shape, timed=True, axes=order), shape)


def along_steps(low: Lowering, op: str, v: Value, shape: tuple[int, ...], **params: Any
                ) -> Value:
    """An op along the steps so far: on the present entries only, the absent ones set to
    the op's neutral value first (softmax over the past is attention's causal mask)."""
    if op not in _NEUTRAL:
        raise EquationError(f"{OPS[op].spellings[0]} along the steps in the equation for "
                            f"'{low.current}' is not defined", expected="softmax, "
                            "log_softmax, Σ, max or min along the steps")
    neutral = masked(low, v, _NEUTRAL[op], flat=len(v.shape) == 2 and v.shape[1] == 1)
    layout = low.step_shape(neutral)
    out = low.emit(op, (neutral,), layout if not OPS[op].reduces else
                   _kept(layout, stored_axis(low, v)), axis=stored_axis(low, v), **params)
    return Value(out, shape, None if OPS[op].reduces else v.ragged)


#: What an op along the steps sets the absent entries to: a value that changes nothing.
_NEUTRAL = {"softmax": -np.inf, "log_softmax": -np.inf, "sum": 0.0, "max": -np.inf,
            "min": np.inf}


def _kept(shape: tuple[int, ...], axis: int) -> tuple[int, ...]:
    return tuple(1 if i == len(shape) + axis else n for i, n in enumerate(shape))
