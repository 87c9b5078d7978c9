"""The backward pass bound into a flat tape of calls, with no zero-fill where none is needed.

A gradient buffer receives contributions in a fixed order, known when the tape is bound. The
first contribution to each element can simply be *written* (``np.multiply(g, x, out=dest)``)
instead of added to zeros, so the buffer needs no zero-fill and no temporary; only later
contributions are added (through one scratch buffer). ``Written`` tracks, element by element,
what has been set so far; a buffer some part of which is read or kept before being set is
zero-filled at the start of each pass, which is always correct.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from nndk.unrolled import transposed_product
from nnre.ops import Op

Array = np.ndarray
Call = Callable[[], Any]


class Written:
    """Which elements of the gradient buffers (``roots``) the tape has set so far."""

    def __init__(self, roots: list[Array]) -> None:
        self.roots = roots
        self.masks = [np.zeros(r.nbytes // r.itemsize, f"u{r.itemsize}") for r in roots]
        self.dirty: set[int] = set()

    def _mask(self, view: Array) -> tuple[int, Array]:
        ptr = _address(view)
        for k, root in enumerate(self.roots):
            if _address(root) <= ptr < _address(root) + max(root.nbytes, 1):
                return k, same_place(view, root, self.masks[k])
        raise AssertionError("a gradient view outside every gradient buffer")

    def claim(self, view: Array) -> bool:
        """Mark ``view`` as set; True if none of it was set before (the caller may write)."""
        k, mask = self._mask(view)
        if mask.size == 0:
            return False
        fresh = not mask.any()
        if not fresh and not mask.all():
            self.dirty.add(k)  # partly set: add everywhere, on a zeroed buffer
        mask[...] = 1
        return fresh

    def read(self, view: Array) -> None:
        k, mask = self._mask(view)
        if not mask.all():
            self.dirty.add(k)

    def to_zero(self) -> list[Array]:
        """Buffers to zero-fill before each pass: read or kept with parts never set."""
        return [r for k, r in enumerate(self.roots) if k in self.dirty or not self.masks[k].all()]


def same_place(view: Array, base: Array, other: Array) -> Array:
    """The view of ``other`` at the bytes ``view`` occupies in ``base`` (``other`` is
    contiguous, as large as ``base``, with the same item size and memory order)."""
    return np.ndarray(view.shape, other.dtype, buffer=other,
                      offset=_address(view) - _address(base), strides=view.strides)


def _address(a: Array) -> int:
    return int(a.__array_interface__["data"][0])


class Scratch:
    """One temporary per shape, shared by every call of the tape (they run one at a time)."""

    def __init__(self) -> None:
        self.bufs: dict[tuple[tuple[int, ...], str], Array] = {}

    def __call__(self, shape: tuple[int, ...], dtype: Any) -> Array:
        key = (tuple(shape), np.dtype(dtype).str)
        if key not in self.bufs:
            self.bufs[key] = np.empty(shape, dtype)
        return self.bufs[key]


def _then(*calls: Call) -> Call:
    if len(calls) == 1:
        return calls[0]

    def run() -> None:
        for call in calls:
            call()
    return run


def _into(dest: Array, write: bool, scratch: Scratch,
          compute: Callable[[Array], list[Call]]) -> Call:
    """Write the contribution straight into ``dest``, or compute it in scratch and add it."""
    if write:
        return _then(*compute(dest))
    tmp = scratch(dest.shape, dest.dtype)
    return _then(*compute(tmp), functools.partial(np.add, dest, tmp, out=dest))


def fused(op: Op, i: int, g: Array, out: Array, args: list[Array], dest: Array, write: bool,
          scratch: Scratch) -> Call | None:
    """A contribution as ufunc calls on bound buffers, or None (use the generic rule).

    From the op's definition: an argument whose gradient is ±g (``passes``) is a copy or an
    add; an op with ``vjp_calls`` writes its contribution straight into a buffer. Only for
    contributions of the target's own shape that do not overlap what they read.
    """
    if dest.shape != g.shape or any(np.may_share_memory(dest, a) for a in (g, out, *args)):
        return None
    if op.passes:
        positive = op.passes[i] > 0
        if write:
            return functools.partial(np.copyto, dest, g) if positive else \
                functools.partial(np.negative, g, out=dest)
        return functools.partial(np.add if positive else np.subtract, dest, g, out=dest)
    if op.vjp_calls is not None:
        make = op.vjp_calls
        return _into(dest, write, scratch, lambda d: make(i, g, out, args, d))
    return None


def times_weight_t(g: Array, weight: Array, weight_t: Array, dest: Array, write: bool,
                   scratch: Scratch) -> Call:
    """``dest (+)= g @ Wᵀ``: per step in transposed form where that is faster (``nndk.unrolled``),
    else with the contiguous ``weight_t``."""
    if transposed_product(g.shape[0], weight) and g.ndim == 2:
        buf = scratch((weight.shape[0], g.shape[0]), g.dtype)
        product = functools.partial(np.matmul, weight, g.T, out=buf)
        if write:
            return _then(product, functools.partial(np.copyto, dest, buf.T))
        return _then(product, functools.partial(np.add, dest, buf.T, out=dest))
    return _into(dest, write, scratch,
                 lambda d: [functools.partial(np.matmul, g, weight_t, out=d)])


def weight_grad(a: Array, g: Array, dest: Array, write: bool, scratch: Scratch) -> Call:
    """``dest (+)= aᵀ g`` over all rows, computed in ``dest``'s own memory order."""
    a2, g2 = a.reshape(-1, a.shape[-1]), g.reshape(-1, g.shape[-1])
    if not (np.may_share_memory(a2, a) and np.may_share_memory(g2, g)):
        # a strided value (a transpose, a slice of a matrix per example): its rows are a
        # copy, made once here, so the tape would reuse the first pass's values forever
        return _into(dest, write, scratch, lambda d: [functools.partial(_rows_product, a, g, d)])
    if dest.T.flags.c_contiguous and not dest.flags.c_contiguous:
        return _into(dest.T, write, scratch,
                     lambda d: [functools.partial(np.matmul, g2.T, a2, out=d)])
    return _into(dest, write, scratch, lambda d: [functools.partial(np.matmul, a2.T, g2, out=d)])


def _rows_product(a: Array, g: Array, out: Array) -> None:
    np.matmul(a.reshape(-1, a.shape[-1]).T, g.reshape(-1, g.shape[-1]), out=out)
