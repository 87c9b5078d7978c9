"""Which buffers of a bound stage hold the batch last: the results of convolution chains.

A per-example value is ``(rows, *axes)`` to every kernel, whatever its memory order. The
VM allocates most as NumPy does, rows first; the results of conv and pooling
(``Op.batch_last``), and of entry-by-entry ops reading one of those, it allocates as
``(*axes, rows)`` memory seen through a ``(rows, *axes)`` view. In that order a conv's
matrix product writes its result in place (no transposing copy after it), its im2col
copies runs of whole rows, and every ufunc over the result (bias, ReLU, the strided
views of max pooling) runs over long contiguous rows instead of rows of a few entries.
Measured on the digits CNN at batch 256 (``benchmarks/bench_cnn.py``), with the kernels'
bound forms (``Op.unfold``): a step went from 1.4 to ~0.6 ms on one thread. The Program
does not change: this is a binding decision.

A matrix product whose per-example argument is such a buffer (the read-out of a
flattened conv chain, ``Op.follows_batch_last``) writes its result batch last too: the
softmax after it then reduces along rows of the batch instead of rows of a few classes.

Views of such a buffer stay views (their axes after the rows keep their order among
themselves), so flatten and reshape still cost nothing; buffers the caller fills or reads
(inputs, outputs, state, values shared with another stage) keep the usual order.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from nnre.ops import OPS
from nnre.program import Instr


def batch_last_slots(instrs: list[Instr], fixed: Collection[int]) -> set[int]:
    """Slots of ``instrs`` to allocate batch last (views of those included); never one in
    ``fixed`` (given, shared, ring state, outputs)."""
    chosen: set[int] = set()
    for ins in instrs:
        op = OPS[ins.op]
        if ins.out in fixed:
            continue
        if op.view:
            if ins.args and ins.args[0] in chosen:
                chosen.add(ins.out)
        elif op.batch_last or (op.fusable and any(a in chosen for a in ins.args)) or \
                (op.follows_batch_last and ins.args[0] in chosen):
            chosen.add(ins.out)
    return chosen


def empty(rows: int, shape: tuple[int, ...], dtype: str, batch_last: bool) -> np.ndarray:
    """An uninitialised ``(rows, *shape)`` buffer, its memory batch last if asked."""
    if not batch_last:
        return np.empty((rows, *shape), dtype=dtype)
    return np.moveaxis(np.empty((*shape, rows), dtype=dtype), -1, 0)
