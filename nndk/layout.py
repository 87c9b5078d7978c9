"""Parameter storage laid out the way the compiled program reads it.

The optimizer stacks sibling matmuls, so the prologue builds e.g. ``[U_fᵀ|U_iᵀ|U_oᵀ|U_cᵀ]``
from four parameters. A trainer that keeps those four as row blocks of one buffer ``A`` has
the stack for free as the view ``Aᵀ``: nothing to copy after each update, each parameter stays
contiguous, and the backward pass finds each parameter's gradient already in place inside the
gradient of the stack (see ``nndk.autodiff.Backward``). Concats of any other shape are left to
the prologue as before.
"""

from __future__ import annotations

import numpy as np

from nnre.program import Instr, Program


def place_params(prog: Program) -> tuple[dict[str, np.ndarray], dict[int, np.ndarray]]:
    """Zeroed parameter arrays, and the prologue slots whose buffers they already fill.

    Returns ``(params, placed)``: ``params[name]`` has the slot's shape (some are row blocks
    of a shared buffer); ``placed[slot]`` is the value of a prologue concat that is a view of
    such a buffer, so binding the prologue must use it and skip the concat.
    """
    made = {ins.out: ins for ins in prog.prologue}
    owner = {index: name for name, index in prog.params.items()}
    params: dict[str, np.ndarray] = {}
    placed: dict[int, np.ndarray] = {}
    for ins in prog.prologue:
        if ins.op != "concat":
            continue
        roots = [r for a in ins.args if (r := _root(a, made, owner)) is not None]
        names = [name for name, _ in roots]
        if len(roots) != len(ins.args) or len(set(names)) != len(names) \
                or any(n in params for n in names):
            continue
        layout = _stack(prog, ins, roots)
        if layout is not None:
            placed[ins.out], blocks = layout
            params.update(blocks)
    for name, index in prog.params.items():
        if name not in params:
            params[name] = np.zeros(prog.slots[index].shape, prog.dtype)
    return {name: params[name] for name in prog.params}, placed


def _root(slot: int, made: dict[int, Instr], owner: dict[int, str]
          ) -> tuple[str, list[str]] | None:
    """The parameter a prologue value is a view of, and the view ops from it (innermost last)."""
    ops: list[str] = []
    while slot not in owner:
        ins = made.get(slot)
        if ins is None or ins.op not in ("transpose", "reshape"):
            return None
        ops.append(ins.op)
        slot = ins.args[0]
    return owner[slot], ops


def _stack(prog: Program, ins: Instr, parts: list[tuple[str, list[str]]]
           ) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """One buffer holding every part as a contiguous row block, if the concat allows it."""
    shape = prog.slots[ins.out].shape
    axis = dict(ins.attrs).get("axis", -1) % len(shape)
    shapes = [prog.slots[prog.params[name]].shape for name, _ in parts]
    if len(shape) == 2 and axis == 1 and all(ops == ["transpose"] for _, ops in parts):
        buf = np.zeros((shape[1], shape[0]), prog.dtype)  # the stack is buf.T
        value = buf.T
    elif (len(shape) == 1 and all(max(p) == int(np.prod(p)) for p in shapes)) \
            or (axis == 0 and all(not ops for _, ops in parts)):  # vectors keep their order
        buf = value = np.zeros(shape, prog.dtype)
    else:
        return None
    blocks, row = {}, 0
    for (name, _), part in zip(parts, shapes, strict=True):
        rows = part[0] if len(shape) == 2 else int(np.prod(part))
        try:
            blocks[name] = np.reshape(buf[row:row + rows], part, copy=False)
        except ValueError:
            return None
        row += rows
    if row != buf.shape[0]:
        return None
    return value, blocks
