"""A compiled Program: plain data — slots and three lists of instructions — plus its listing.

Stages: ``prologue`` depends on parameters only and runs once per set of weights; ``pre``
depends on inputs but not on state, so a whole sequence can go through it at once before the
time loop; ``loop`` is the recurrence and runs once per step; ``post`` is per-step work the
recurrence does not need (typically the read-out ``y = softmax(W h + b)``), run for all steps
at once after the loop on values captured from it. Slots of the per-example stages hold 2-D
arrays (rows, n): rows is the batch, or time × batch in ``pre`` and ``post``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

STAGES = ("const", "pre", "loop", "post")


@dataclass(frozen=True)
class Slot:
    name: str  # 'x', 'h@t-1', 'W_i', or '%7' for temporaries
    kind: str  # input | state | param | const | temp
    shape: tuple[int, ...]  # const stage: full shape; per-example stages: shape of one row
    stage: str  # const | pre | loop


@dataclass(frozen=True)
class Instr:
    op: str  # key of nnre.ops.OPS
    out: int
    args: tuple[int, ...]
    attrs: tuple[tuple[str, Any], ...] = ()


@dataclass
class Program:
    """What the compiler produces and the VM runs; no behaviour beyond describing itself."""

    dtype: str
    slots: list[Slot] = field(default_factory=list)
    literals: dict[int, np.ndarray] = field(default_factory=dict)  # const slots with values
    prologue: list[Instr] = field(default_factory=list)
    pre: list[Instr] = field(default_factory=list)
    loop: list[Instr] = field(default_factory=list)
    post: list[Instr] = field(default_factory=list)
    inputs: dict[str, int] = field(default_factory=dict)
    params: dict[str, int] = field(default_factory=dict)
    state_in: dict[tuple[str, int], int] = field(default_factory=dict)  # (name, lag) → slot
    state_out: dict[str, int] = field(default_factory=dict)
    outputs: dict[str, int] = field(default_factory=dict)

    def stage_list(self, stage: str) -> list[Instr]:
        return {"const": self.prologue, "pre": self.pre, "loop": self.loop,
                "post": self.post}[stage]

    def max_lag(self) -> int:
        return max((lag for _, lag in self.state_in), default=0)

    def max_lag_of(self, name: str) -> int:
        return max(lag for state, lag in self.state_in if state == name)

    def listing(self) -> str:
        """One instruction per line with shapes: the program as a person can read it."""
        lines = [f"# dtype {self.dtype}; B is the batch, or time × batch in 'pre' and 'post'"]
        for stage, instrs in (("prologue (once per weights)", self.prologue),
                              ("pre (all steps at once)", self.pre),
                              ("loop (each step)", self.loop),
                              ("post (all steps at once, after the loop)", self.post)):
            lines.append(f"{stage}: {len(instrs)} instructions")
            lines.extend("  " + self.show_instr(ins) for ins in instrs)
        outs = ", ".join(f"{n} ← {self.slots[s].name}" for n, s in self.outputs.items())
        lines.append(f"outputs: {outs}")
        if self.state_out:
            st = ", ".join(f"{n} ← {self.slots[s].name}" for n, s in self.state_out.items())
            lines.append(f"next state: {st}")
        return "\n".join(lines)

    def show_slot(self, index: int) -> str:
        slot = self.slots[index]
        dims = ", ".join(str(d) for d in slot.shape)
        if slot.stage == "const":
            return f"{slot.name}[{dims}]"
        return f"{slot.name}[B, {dims}]"

    def show_instr(self, ins: Instr) -> str:
        args = ", ".join(self.show_slot(a) for a in ins.args)
        attrs = "".join(f" {k}={v}" for k, v in ins.attrs)
        return f"{self.show_slot(ins.out)} = {ins.op}({args}){attrs}"
