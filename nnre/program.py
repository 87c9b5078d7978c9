"""A compiled Program: plain data — slots and lists of instructions — plus its listing.

Stages: ``prologue`` depends on parameters only and runs once per set of weights; ``pre``
depends on inputs but not on state, so a whole sequence can go through it at once before the
time loops; ``loop`` is the recurrence and runs once per step; ``post`` is per-step work the
recurrences do not need (typically the read-out ``y = softmax(W h + b)``), run for all steps
at once after the loops on values captured from them. Slots of the per-example stages hold
2-D arrays (rows, n): rows is the batch, or time × batch in ``pre`` and ``post``.

Backward state (read at a later step, ``gₜ₊₁``) runs in **backward passes**, once per step
from the last step to the first. The time loops are numbered passes, backward and forward in
turn, each reading only what earlier ones computed: ``back`` (1), ``loop`` (2), ``back2`` (3),
``loop2`` (4), … (a second bidirectional layer's backward pass reads the first's forward
values). A program without backward state has only ``loop``, as it always had.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

STAGES = ("prologue", "pre", "back", "loop", "post")  # the stages every program has
_PASS = re.compile(r"^(back|loop)([2-9]|[1-9][0-9])?$")
MAX_PASSES = 2 * 99


def pass_name(k: int) -> str:
    """The stage of time pass k ≥ 1: back, loop, back2, loop2, … (odd k run backward)."""
    word = "back" if k % 2 else "loop"
    return word if k <= 2 else f"{word}{(k + 1) // 2}"


def pass_index(stage: str) -> int:
    """k of a time pass's stage (0 for a stage that is not a time pass)."""
    m = _PASS.match(stage)
    if m is None:
        return 0
    return 2 * int(m.group(2) or 1) - (m.group(1) == "back")


def stage_rank(stage: str) -> int:
    """The order stages run in: prologue, pre, the time passes, post."""
    if stage in ("prologue", "pre"):
        return 0 if stage == "prologue" else 1
    return 2 + MAX_PASSES if stage == "post" else 1 + pass_index(stage)


def backward(stage: str) -> bool:
    """Whether a time pass runs from the last step to the first."""
    return stage.startswith("back")


@dataclass(frozen=True)
class Slot:
    name: str  # 'x', 'h@t-1', 'W_i', or '%7' for temporaries
    kind: str  # input | state | param | const | temp
    shape: tuple[int, ...]  # prologue: full shape; per-example stages: shape of one row
    stage: str  # prologue | pre | a time pass (back, loop, back2, loop2, …) | post


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
    back: list[Instr] = field(default_factory=list)
    loop: list[Instr] = field(default_factory=list)
    post: list[Instr] = field(default_factory=list)
    passes: dict[str, list[Instr]] = field(default_factory=dict)  # back2, loop2, … if any
    inputs: dict[str, int] = field(default_factory=dict)
    params: dict[str, int] = field(default_factory=dict)
    state_in: dict[tuple[str, int], int] = field(default_factory=dict)  # (name, lag) → slot
    state_out: dict[str, int] = field(default_factory=dict)
    outputs: dict[str, int] = field(default_factory=dict)
    back_in: dict[tuple[str, int], int] = field(default_factory=dict)  # (name, lead) → slot
    back_out: dict[str, int] = field(default_factory=dict)  # backward state → its value at t
    ids: dict[str, int] = field(default_factory=dict)  # ids input → ids it may take (0 … n−1)
    #: The most steps a state can take (its state ``t`` counts them): the size of the
    #: histories it appends to and of the tables it reads at ``t``; 0 for no limit.
    context: int = 0

    def stage_list(self, stage: str) -> list[Instr]:
        fixed = {"prologue": self.prologue, "pre": self.pre, "back": self.back,
                 "loop": self.loop, "post": self.post}
        if stage in fixed:
            return fixed[stage]
        if pass_index(stage) <= 2:
            raise KeyError(stage)
        return self.passes.setdefault(stage, [])

    def stages(self) -> list[str]:
        """Every stage in the order it runs."""
        return ["prologue", "pre", *self.time_passes(everything=True), "post"]

    def time_passes(self, everything: bool = False) -> list[str]:
        """The time passes in the order they run: those with instructions or state (with
        ``everything``, ``back`` and ``loop`` always)."""
        states = {self.slots[i].stage for i in (*self.state_in.values(), *self.back_in.values())}
        names = ["back", "loop", *sorted(self.passes, key=pass_index)]
        return [n for n in names if everything and n in ("back", "loop")
                or self.stage_list(n) or n in states]

    def inplace_states(self) -> set[str]:
        """State updated in its own buffer: an ``append`` writing the step's entry into the
        history it reads (the VM gives such state one buffer, not a ring of copies)."""
        found = set()
        for ins in self.loop:
            if ins.op == "append":
                for name, out in self.state_out.items():
                    if out == ins.out and self.state_in.get((name, 1)) == ins.args[0]:
                        found.add(name)
        return found

    def max_lag(self) -> int:
        return max((lag for _, lag in self.state_in), default=0)

    def max_lag_of(self, name: str) -> int:
        return max(lag for state, lag in self.state_in if state == name)

    def max_lead(self) -> int:
        """The deepest later step a backward state is read at (0: no backward state)."""
        return max((lead for _, lead in self.back_in), default=0)

    def max_lead_of(self, name: str) -> int:
        return max(lead for state, lead in self.back_in if state == name)

    def listing(self) -> str:
        """One instruction per line with shapes: the program as a person can read it."""
        lines = [f"# dtype {self.dtype}; B is the batch, or time × batch in 'pre' and 'post'"]
        titles = {"prologue": "prologue (once per weights)", "pre": "pre (all steps at once)",
                  "loop": "loop (each step)",
                  "post": "post (all steps at once, after the loop)"}
        for stage in self.stages():
            if stage == "back" and not self.back_in and not self.back:
                continue  # a program without backward state lists as it always did
            title = titles.get(stage) or (f"{stage} (each step, from the last to the first)"
                                          if backward(stage) else f"{stage} (each step)")
            instrs = self.stage_list(stage)
            lines.append(f"{title}: {len(instrs)} instructions")
            lines.extend("  " + self.show_instr(ins) for ins in instrs)
        outs = ", ".join(f"{n} ← {self.slots[s].name}" for n, s in self.outputs.items())
        lines.append(f"outputs: {outs}")
        if self.state_out:
            st = ", ".join(f"{n} ← {self.slots[s].name}" for n, s in self.state_out.items())
            lines.append(f"next state: {st}")
        if self.back_out:
            st = ", ".join(f"{n} ← {self.slots[s].name}" for n, s in self.back_out.items())
            lines.append(f"backward state (the step before): {st}")
        return "\n".join(lines)

    def show_slot(self, index: int) -> str:
        slot = self.slots[index]
        dims = ", ".join(str(d) for d in slot.shape)
        if slot.stage == "prologue":
            return f"{slot.name}[{dims}]"
        return f"{slot.name}[B, {dims}]"

    def show_instr(self, ins: Instr) -> str:
        args = ", ".join(self.show_slot(a) for a in ins.args)
        attrs = "".join(f" {k}={v}" for k, v in ins.attrs)
        return f"{self.show_slot(ins.out)} = {ins.op}({args}){attrs}"


def state_key(name: str, lag: int) -> str:
    """A state's name in the API: ``h`` (lag 1), ``h@t-2``; backward state, read at later
    steps (lag −k), ``g`` (lead 1), ``g@t+2``."""
    if lag in (1, -1):
        return name
    return f"{name}@t-{lag}" if lag > 0 else f"{name}@t+{-lag}"


# -- plain data: what the compile cache stores (msgpack/JSON types only, never pickle) ------

class ProgramDataError(ValueError):
    """Serialized program data that is malformed or inconsistent (never trusted: rebuild)."""


def to_data(prog: Program) -> dict[str, Any]:
    """The Program as nested lists/dicts of str, int, float and bytes."""
    def instrs(lst: list[Instr]) -> list[Any]:
        return [[i.op, i.out, list(i.args), [[k, _attr_out(v)] for k, v in i.attrs]]
                for i in lst]
    return {
        "dtype": prog.dtype,
        "slots": [[s.name, s.kind, list(s.shape), s.stage] for s in prog.slots],
        "literals": [[i, str(a.dtype), list(a.shape), a.tobytes()]
                     for i, a in sorted(prog.literals.items())],
        **{stage: instrs(prog.stage_list(stage)) for stage in STAGES},
        "passes": [[name, instrs(lst)] for name, lst in sorted(prog.passes.items())],
        "inputs": sorted(prog.inputs.items()),
        "params": sorted(prog.params.items()),
        "state_in": [[n, lag, i] for (n, lag), i in prog.state_in.items()],
        "state_out": sorted(prog.state_out.items()),
        "outputs": sorted(prog.outputs.items()),
        "ids": sorted(prog.ids.items()),
        "back_in": [[n, lead, i] for (n, lead), i in prog.back_in.items()],
        "back_out": sorted(prog.back_out.items()),
        "context": prog.context,
    }


def _attr_out(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def from_data(data: Any) -> Program:
    """Rebuild a Program from :func:`to_data` output and check it (:func:`check_program`).

    Any malformed piece raises ProgramDataError; nothing is evaluated or imported by name.
    """
    try:
        prog = Program(dtype=data["dtype"])
        prog.slots = [Slot(str(n), str(k), tuple(int(d) for d in shape), str(st))
                      for n, k, shape, st in data["slots"]]
        for index, dtype, shape, raw in data["literals"]:
            if dtype not in ("float32", "float64") or not isinstance(raw, bytes):
                raise ProgramDataError(f"literal {index}: bad dtype or bytes")
            arr = np.frombuffer(raw, dtype=dtype).reshape([int(d) for d in shape])
            prog.literals[int(index)] = arr
        more = [(str(name), lst) for name, lst in data["passes"]]
        if any(pass_index(name) <= 2 for name, _ in more):
            raise ProgramDataError("a time pass that is not back2, loop2, …")
        for stage, lst in [*((st, data[st]) for st in STAGES), *more]:
            prog.stage_list(stage).extend(
                Instr(str(op), int(out), tuple(int(a) for a in args),
                      tuple((str(k), _attr_in(v)) for k, v in attrs))
                for op, out, args, attrs in lst)
        prog.inputs = {str(n): int(i) for n, i in data["inputs"]}
        prog.params = {str(n): int(i) for n, i in data["params"]}
        prog.state_in = {(str(n), int(lag)): int(i) for n, lag, i in data["state_in"]}
        prog.state_out = {str(n): int(i) for n, i in data["state_out"]}
        prog.outputs = {str(n): int(i) for n, i in data["outputs"]}
        prog.ids = {str(n): int(count) for n, count in data.get("ids", [])}
        prog.back_in = {(str(n), int(lead)): int(i) for n, lead, i in data["back_in"]}
        prog.back_out = {str(n): int(i) for n, i in data["back_out"]}
        prog.context = int(data.get("context", 0))
        if prog.context < 0:
            raise ProgramDataError("a negative context")
        if not set(prog.ids) <= set(prog.inputs) or any(c < 1 for c in prog.ids.values()):
            raise ProgramDataError("ids declared for something that is not an input")
    except ProgramDataError:
        raise
    except (KeyError, TypeError, ValueError) as err:
        raise ProgramDataError(f"malformed program data: {err}") from err
    check_program(prog)
    return prog


def _attr_in(v: Any) -> Any:
    if isinstance(v, bool) or not isinstance(v, (int, float, list)):
        raise ProgramDataError(f"attribute value {v!r:.40} is not a number or a shape")
    if isinstance(v, list):
        return tuple(int(d) for d in v)
    return v


def check_program(prog: Program) -> None:
    """Every instruction: a known op, arguments defined earlier in an earlier-or-same stage,
    and the op's shape rule giving the output slot's shape. Raises ProgramDataError."""
    from nnre.ops import OPS  # the op table is plain NumPy: no cycle at run time

    if prog.dtype not in ("float32", "float64") or any(
            s.stage not in STAGES and pass_index(s.stage) <= 2 for s in prog.slots):
        raise ProgramDataError("bad dtype or stage name")
    roots = (set(prog.literals) | set(prog.inputs.values()) | set(prog.params.values())
             | set(prog.state_in.values()) | set(prog.back_in.values()))
    defined = set(roots)
    for stage in prog.stages():
        for ins in prog.stage_list(stage):
            op = OPS.get(ins.op)
            slots = [*ins.args, ins.out]
            if op is None or not all(0 <= i < len(prog.slots) for i in slots):
                raise ProgramDataError(f"unknown op or slot in {ins}")
            _check_attrs(ins, op.attrs)
            if ins.out in defined or not all(a in defined for a in ins.args):
                raise ProgramDataError(f"instruction out of order: {ins}")
            if any(stage_rank(prog.slots[a].stage) > stage_rank(stage) for a in ins.args) \
                    or prog.slots[ins.out].stage != stage:
                raise ProgramDataError(f"instruction in the wrong stage: {ins}")
            try:
                shape = op.shape(*[prog.slots[a].shape for a in ins.args], **dict(ins.attrs))
            except (TypeError, ValueError, IndexError) as err:
                raise ProgramDataError(f"{ins}: {err}") from err
            if not _fits(tuple(shape), prog.slots[ins.out].shape):
                raise ProgramDataError(f"{ins}: shape {shape} ≠ slot {prog.slots[ins.out]}")
            defined.add(ins.out)
    named = [*prog.outputs.values(), *prog.state_out.values(), *prog.back_out.values()]
    if not all(i in defined for i in named):
        raise ProgramDataError("an output or next state is never computed")
    _check_state(prog)


def _check_state(prog: Program) -> None:
    """State slots sit in a time pass of their direction (all of one name in one pass, the
    next value too), lags and leads from 1 without gaps; the directions share no name."""
    every = [*prog.state_in.values(), *prog.state_out.values(), *prog.back_in.values(),
             *prog.back_out.values()]
    if not all(0 <= i < len(prog.slots) for i in every):
        raise ProgramDataError("a state slot out of range")
    for keys, out, back in ((prog.state_in, prog.state_out, False),
                            (prog.back_in, prog.back_out, True)):
        for name in {n for n, _ in keys} | set(out):
            slots = [i for (n, _), i in keys.items() if n == name]
            depth = {k for n, k in keys if n == name}
            stages = {prog.slots[i].stage for i in [*slots, out.get(name, -1)] if i >= 0}
            stage = stages.pop() if len(stages) == 1 else ""
            if not slots or name not in out or depth != set(range(1, 1 + len(depth))) \
                    or any(prog.slots[i].kind != "state" for i in slots) \
                    or not pass_index(stage) or backward(stage) != back:
                raise ProgramDataError(f"malformed {'backward ' if back else ''}state '{name}'")
    if set(prog.back_out) & set(prog.state_out):
        raise ProgramDataError("a name is state in both directions")


def _check_attrs(ins: Instr, declared: Any) -> None:
    """Only the attributes the op declares, each of its declared type (they become keyword
    arguments of NumPy calls, so an unchecked one could change what a kernel does)."""
    for key, value in ins.attrs:
        kind = declared.get(key)
        ok = kind is not None and not isinstance(value, bool) and (
            isinstance(value, int) if kind is int else
            isinstance(value, (int, float)) if kind is float else
            isinstance(value, tuple) and all(isinstance(d, int) and not isinstance(d, bool)
                                             for d in value))
        if not ok:
            raise ProgramDataError(f"{ins}: attribute {key}={value!r:.40} is not one the op "
                                   "takes")


def _fits(got: tuple[int, ...], slot: tuple[int, ...]) -> bool:
    """Whether a shape rule's result can be written into the slot, as NumPy does at run
    time: a constant (1, 1) against a row (n,) gives (1, n), and a copy broadcasts."""
    while len(got) > 1 and got[0] == 1:
        got = got[1:]
    try:
        return tuple(np.broadcast_shapes(got, slot)) == slot
    except ValueError:
        return False
