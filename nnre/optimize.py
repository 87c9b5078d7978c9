"""Program rewrites that cut the number of NumPy calls per step without changing results.

Also, 3. sinking: loop work the recurrence does not need moves after the loop (``post``),
and 4. ReLU after max pooling: ``maxpool(relu(h))`` becomes ``relu(maxpool(h))``.

1. Stacking: matrix products of one per-example operand with several constant matrices
   (``U_i·h``, ``U_f·h``, …) become one product with the matrices side by side, made once
   in the prologue; each original result becomes a slice view of the stacked result.
2. Sibling fusion: the same elementwise op applied to adjacent slices of one buffer
   (the four gate pre-activations, the three sigmoid gates) becomes one op over the union,
   with constant operands stacked once in the prologue.

Both are measured choices (see ``benchmarks/bench_step.py``): at small sizes the cost of a
step is the number of Python → NumPy calls, so fewer, wider calls win.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace

from nnre.ops import OPS
from nnre.program import Instr, Program, Slot


@dataclass(frozen=True)
class _View:
    base: int
    start: int
    stop: int


def optimize(prog: Program) -> Program:
    """Apply stacking, then sibling fusion to a fixpoint; returns the same Program object."""
    for stage in ("pre", "loop"):
        _rewrite(prog, stage)
    _drop_dead(prog)
    if _sink(prog):
        _rewrite(prog, "post")
    _drop_dead(prog)
    return prog


def _rewrite(prog: Program, stage: str) -> None:
    _stack_matmuls(prog, stage)
    while _fuse_siblings(prog, stage):
        pass
    _relu_after_pool(prog, stage)


def _relu_after_pool(prog: Program, stage: str) -> None:
    """``maxpool(relu(h))`` → ``relu(maxpool(h))`` where the ReLU's result is read by that
    pool alone: the maximum commutes with any non-decreasing function, so the ReLU runs over
    the pooled value (a quarter of the entries for 2×2 windows; 45 against 10 µs at the
    digits CNN's first layer, batch 256). Gradients are the same too: where a window's
    maximum is positive both send g to its first maximum, and where it is not ReLU's VJP
    gives 0 either way (maxpool's VJP picks the first maximum, which ReLU's zeros would
    otherwise tie)."""
    instrs = prog.stage_list(stage)
    reads: dict[int, int] = defaultdict(int)
    for ins in (*prog.prologue, *prog.pre, *prog.loop, *prog.post):
        for a in ins.args:
            reads[a] += 1
    kept = set(prog.outputs.values()) | set(prog.state_out.values())
    relus = {ins.out: ins for ins in instrs if ins.op == "relu"}
    swapped: dict[int, list[Instr]] = {}
    for pos, ins in enumerate(instrs):
        relu = relus.get(ins.args[0]) if ins.op == "maxpool" else None
        if relu is None or reads[relu.out] != 1 or relu.out in kept:
            continue
        pooled = _new_slot(prog, replace(prog.slots[ins.out], name=f"%{len(prog.slots)}",
                                         kind="temp"))
        swapped[pos] = [Instr("maxpool", pooled, relu.args, ins.attrs),
                        Instr("relu", ins.out, (pooled,))]
    _splice(instrs, swapped)  # the ReLU before the pool is now dead (_drop_dead)


def _sink(prog: Program) -> bool:
    """Move loop work the recurrence does not need into ``post``, if that saves calls.

    Each loop value that post work reads must be captured once per step (one copy), so the
    move pays only when it takes out more compute instructions than it adds captures.
    """
    needed = set(prog.state_out.values())
    keep: list[Instr] = []
    move: list[Instr] = []
    for ins in reversed(prog.loop):
        if ins.out in needed:
            keep.append(ins)
            needed.update(ins.args)
        else:
            move.append(ins)
    moved = {ins.out for ins in move}
    captures = {a for ins in move for a in ins.args
                if prog.slots[a].stage == "loop" and a not in moved}
    computes = sum(1 for ins in move if not OPS[ins.op].view)
    inplace = prog.inplace_states()
    histories = {prog.state_out[n] for n in inplace} | \
        {i for (n, _), i in prog.state_in.items() if n in inplace}
    if computes <= len(captures) or captures & histories:
        return False  # (capturing a history at every step would copy all of it each step)
    prog.loop[:] = keep[::-1]
    prog.post[:] = move[::-1]
    for index in moved:
        prog.slots[index] = replace(prog.slots[index], stage="post")
    return True


def _drop_dead(prog: Program) -> None:
    """Remove instructions whose results nothing reads (left over after rewrites)."""
    live = set(prog.outputs.values()) | set(prog.state_out.values())
    for stage in ("post", "loop", "pre", "prologue"):
        instrs = prog.stage_list(stage)
        kept = []
        for ins in reversed(instrs):
            if ins.out in live:
                kept.append(ins)
                live.update(ins.args)
        instrs[:] = kept[::-1]


def _new_slot(prog: Program, slot: Slot) -> int:
    prog.slots.append(slot)
    return len(prog.slots) - 1


def _vectors(prog: Program, ins: Instr) -> bool:
    """Both rewrites lay values out as rows of vectors; a tensor's (rows, a, b) is left as
    it is (stacking its products would need the same axes)."""
    return len(prog.slots[ins.out].shape) == 1 and all(
        len(prog.slots[a].shape) <= 1 or prog.slots[a].stage == "prologue" and
        len(prog.slots[a].shape) == 2 and ins.op == "matmul" for a in ins.args)


def _width(prog: Program, index: int) -> int:
    shape = prog.slots[index].shape
    return shape[-1] if shape else 1  # a number (a literal of the tensor reading) is one wide


def _stack_matmuls(prog: Program, stage: str) -> None:
    instrs = prog.stage_list(stage)
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for pos, ins in enumerate(instrs):
        if ins.op == "matmul" and prog.slots[ins.args[1]].stage == "prologue" and \
                _vectors(prog, ins):
            rows = prog.slots[ins.args[1]].shape[0]
            groups[(ins.args[0], rows)].append(pos)
    replace: dict[int, list[Instr]] = {}
    for (operand, rows), members in groups.items():
        if len(members) < 2:
            continue
        copies = {ins.out: ins.args[0] for ins in prog.prologue if ins.op == "copy"}
        # the concat makes its own contiguous copy: stack the views, not copies of them
        mats = [copies.get(instrs[p].args[1], instrs[p].args[1]) for p in members]
        total = sum(prog.slots[m].shape[1] for m in mats)
        stacked = _new_slot(prog, Slot("[" + "|".join(prog.slots[m].name for m in mats) + "]",
                                       "temp", (rows, total), "prologue"))
        prog.prologue.append(Instr("concat", stacked, tuple(mats), (("axis", 1),)))
        out = _new_slot(prog, Slot(f"%{len(prog.slots)}", "temp", (total,), stage))
        new = [Instr("matmul", out, (operand, stacked))]
        offset = 0
        for p in members:
            width = _width(prog, instrs[p].out)
            new.append(Instr("slice", instrs[p].out, (out,),
                             (("start", offset), ("stop", offset + width))))
            offset += width
        replace[members[0]] = new
        for p in members[1:]:
            replace[p] = []
    _splice(instrs, replace)


def _splice(instrs: list[Instr], replace: dict[int, list[Instr]]) -> None:
    out: list[Instr] = []
    for pos, ins in enumerate(instrs):
        out.extend(replace.get(pos, [ins]))
    instrs[:] = out


def _views(prog: Program) -> dict[int, _View]:
    views = {}
    for stage in ("prologue", "pre", "loop", "post"):
        for ins in prog.stage_list(stage):
            if ins.op == "slice" and dict(ins.attrs).get("axis", -1) == -1 and \
                    len(prog.slots[ins.out].shape) == 1:
                attrs = dict(ins.attrs)
                views[ins.out] = _View(ins.args[0], attrs["start"], attrs["stop"])
    return views


def _arg_key(prog: Program, views: dict[int, _View], arg: int, width: int
             ) -> tuple[str, int] | None:
    """How one operand can take part in a fused op: a slice of a base, a constant, or shared."""
    if arg in views:
        return ("slice", views[arg].base)
    slot = prog.slots[arg]
    if slot.stage == "prologue":
        size = 1
        for d in slot.shape:
            size *= d
        if size == 1:
            return ("same", arg)
        if size == width and len(slot.shape) == 1:
            return ("const", 0)
        return None
    return None


def _fuse_siblings(prog: Program, stage: str) -> bool:
    instrs = prog.stage_list(stage)
    views = _views(prog)
    fixed = set(prog.state_out.values())
    groups: dict[tuple, list[int]] = defaultdict(list)
    for pos, ins in enumerate(instrs):
        if not OPS[ins.op].fusable or ins.out in fixed or not _vectors(prog, ins):
            continue
        width = _width(prog, ins.out)
        keys = [_arg_key(prog, views, a, width) for a in ins.args]
        if any(k is None for k in keys) or not any(k[0] == "slice" for k in keys if k):
            continue
        groups[(ins.op, ins.attrs, tuple(keys))].append(pos)
    replace: dict[int, list[Instr]] = {}
    pending: list[Instr] = []  # slice views to place right after their base
    for members in groups.values():
        for run in _adjacent_runs(prog, views, instrs, members):
            _fuse_run(prog, views, instrs, run, replace, pending)
    if not replace:
        return False
    _splice(instrs, replace)
    for view in pending:
        base = view.args[0]
        target = prog.stage_list(prog.slots[base].stage)
        at = next((i + 1 for i, ins in enumerate(target) if ins.out == base), 0)
        target.insert(at, view)
    return True


def _adjacent_runs(prog: Program, views: dict[int, _View], instrs: list[Instr],
                   members: list[int]) -> list[list[int]]:
    """Split members into runs whose sliced operands sit side by side in the same order."""
    first = [i for i, a in enumerate(instrs[members[0]].args) if a in views]
    order = sorted(members, key=lambda p: views[instrs[p].args[first[0]]].start)
    runs: list[list[int]] = [[order[0]]]
    for pos in order[1:]:
        prev = instrs[runs[-1][-1]]
        cur = instrs[pos]
        adjacent = all(views[prev.args[i]].stop == views[cur.args[i]].start for i in first)
        if adjacent:
            runs[-1].append(pos)
        else:
            runs.append([pos])
    return [r for r in runs if len(r) > 1]


def _fuse_run(prog: Program, views: dict[int, _View], instrs: list[Instr], run: list[int],
              replace: dict[int, list[Instr]], pending: list[Instr]) -> None:
    stage = prog.slots[instrs[run[0]].out].stage
    head = instrs[run[0]]
    total = sum(_width(prog, instrs[p].out) for p in run)
    args = []
    for i, arg in enumerate(head.args):
        if arg in views:
            start = views[arg].start
            stop = views[instrs[run[-1]].args[i]].stop
            args.append(_slice_of(prog, views[arg].base, start, stop, pending))
        elif prog.slots[arg].stage == "prologue" and _width(prog, arg) > 1:
            parts = tuple(instrs[p].args[i] for p in run)
            stacked = _new_slot(prog, Slot("[" + "|".join(prog.slots[a].name for a in parts) + "]",
                                           "temp", (total,), "prologue"))
            prog.prologue.append(Instr("concat", stacked, parts, (("axis", 0),)))
            args.append(stacked)
        else:
            args.append(arg)
    out = _new_slot(prog, Slot(f"%{len(prog.slots)}", "temp", (total,), stage))
    new = [Instr(head.op, out, tuple(args), head.attrs)]
    offset = 0
    for p in run:
        width = _width(prog, instrs[p].out)
        new.append(Instr("slice", instrs[p].out, (out,),
                         (("start", offset), ("stop", offset + width))))
        offset += width
    first = min(run)
    replace[first] = new
    for p in run:
        if p != first:
            replace[p] = []


def _slice_of(prog: Program, base: int, start: int, stop: int, pending: list[Instr]) -> int:
    """The base itself when the range covers it, else a new slice view (placed later)."""
    if start == 0 and stop == _width(prog, base):
        return base
    slot = prog.slots[base]
    view = _new_slot(prog, Slot(f"{slot.name}[{start}:{stop}]", "temp", (stop - start,),
                                slot.stage))
    pending.append(Instr("slice", view, (base,), (("start", start), ("stop", stop))))
    return view
