"""The memory budget: what a file, an equation, an input or a flag may make nnre allocate.

A few hundred bytes of equation text can declare a 10⁵×10⁵ value, and a bundle can ask for a
product of two parameters that is larger than both; such sizes are computed here with Python
ints *before* anything is allocated, and refused with the project's own error naming the
value, its shape and the total. The budget defaults to half the physical memory; set it with
``NNRE_MAX_BYTES`` (bytes, or with a K/M/G/T suffix) or ``nnre --max-bytes``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np

from nnre.errors import NnreError

if TYPE_CHECKING:
    from nnre.program import Program

ENV = "NNRE_MAX_BYTES"
FRACTION = 0.5  # of physical memory, when nothing is set
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_override: int | None = None


def parse_bytes(text: str) -> int:
    """``"1073741824"``, ``"512M"``, ``"2G"``, ``"1.5G"`` → bytes; ValueError otherwise."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text.upper())
    if m is None or len(m.group(1)) > 20:
        raise ValueError(f"{text!r} is not a size in bytes (such as 4G or 512M)")
    value = int(float(m.group(1)) * _UNITS[m.group(2)])
    if value <= 0:
        raise ValueError(f"{text!r}: the memory budget must be positive")
    return value


def set_limit(value: int | None) -> None:
    """The budget for this process (the CLI's ``--max-bytes``); None: back to the default."""
    global _override
    _override = value


def limit() -> int:
    """The budget in bytes: the override, else $NNRE_MAX_BYTES, else half the RAM."""
    if _override is not None:
        return _override
    text = os.environ.get(ENV, "").strip()
    if text:
        try:
            return parse_bytes(text)
        except ValueError as err:  # never silently another limit than the one asked for
            raise NnreError(f"{ENV}: {err}") from None
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") * FRACTION)
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def size(shape: Iterable[int], itemsize: int) -> int:
    """Bytes of an array of this shape, computed with Python ints (never overflows)."""
    total = itemsize
    for d in shape:
        total *= int(d)
    return total


def show(n: int) -> str:
    """Bytes for a person: 1.5 GiB, 12 MiB, 300 bytes."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n} bytes"


def check(total: int, what: str, error: Callable[[str], Exception]) -> None:
    """Raise ``error(message)`` when ``total`` bytes would pass the budget."""
    budget = limit()
    if total > budget:
        raise error(f"{what}: {show(total)} in all, past the memory budget of {show(budget)} "
                    f"(set {ENV} or --max-bytes to allow more)")


def program_split(prog: Program) -> tuple[int, int]:
    """(bytes made once, bytes per row) of running ``prog`` besides its parameters: literals
    and computed prologue values; every per-example value (next state once per ring phase),
    the inputs, and the scratch of every kernel (``Op.scratch``): a bound tape keeps each
    instruction's scratch for as long as it lives (``Op.unfold``), so they add up."""
    from nnre.ops import OPS

    item = np.dtype(prog.dtype).itemsize
    phases = prog.max_lag() + 1
    ring = set(prog.state_out.values())
    fixed = sum(size(a.shape, item) for a in prog.literals.values())
    per_row = sum(size(prog.slots[i].shape, item) for i in prog.inputs.values())
    scratch = 0
    for ins in (*prog.prologue, *prog.pre, *prog.loop, *prog.post):
        rule = OPS[ins.op].scratch
        if rule is not None:
            entries = rule(*[prog.slots[a].shape for a in ins.args], **dict(ins.attrs))
            scratch += size((entries,), item)
        if OPS[ins.op].view:
            continue
        slot = prog.slots[ins.out]
        if slot.stage == "prologue":
            fixed += size(slot.shape, item)
        else:
            per_row += size(slot.shape, item) * (phases if ins.out in ring else 1)
    return fixed, per_row + scratch


def program_bytes(prog: Program, rows: int = 1) -> int:
    """What running ``prog`` at ``rows`` rows allocates besides its parameters."""
    fixed, per_row = program_split(prog)
    return fixed + per_row * rows
