"""Convolution and pooling over 1 or 2 spatial axes: conv (with a bias or not), maxpool, avgpool.

Each block is the whole definition of one primitive (see ``nnre.ops.base.Op``). At run time
x is per example, (rows, C, *spatial); a conv's weight W (O, C/groups, *kernel) and bias b
(O,) are constants. Attributes are tuples in ONNX's order (``pads``: every begin, then every
end), so export writes them as they are; equations give scalars (``conv(W, x; pad=1)``) that
``conv_attrs``/``pool_attrs`` widen. A conv is im2col (batch last) and one matrix
product per group over every row and position at once; bound once (``Op.unfold``), it
skips the kernel taps that fall on padding where that saves a quarter of the product (a
product per border class: corners, edges, inside). Gradients of x go back with one
strided ``+=`` per kernel offset (col2im: a loop over the kernel, never over rows). Kernels
take any memory order; the VM lays conv and pooling results out batch last
(``nnre.layout``), the order in which they run fastest.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from nnre.ops.base import Array, Call, Op, Shape

Ints = tuple[int, ...]
ROWS = (slice(None),)  # every row: an index's first place
LEAD = ROWS * 2  # every row and channel: an index's first two places
CHANNELS = ROWS  # every channel: a batch-last (C, *spatial, rows) index's first place


# -- geometry: one place checks sizes and computes the output's ------------------------
def _whole(name: str, value: float, low: int) -> int:
    """An equation parameter (a number) as the whole number ≥ ``low`` an attribute needs."""
    if not math.isfinite(value) or value != int(value) or int(value) < low:
        raise ValueError(f"{name}={value:g}: expected a whole number ≥ {low}")
    return int(value)


def _spatial(x: Shape, op: str) -> int:
    if len(x) not in (2, 3):
        raise ValueError(f"{op} of a value of shape {x}: expected (channels, length) or "
                         "(channels, height, width)")
    return len(x) - 1


def _out_sizes(op: str, sizes: Ints, kernel: Ints, stride: Ints, pads: Ints,
               dilation: Ints) -> Ints:
    """⌊(n + pad_begin + pad_end − dilation·(k − 1) − 1) / stride⌋ + 1 along each axis."""
    r = len(sizes)
    for name, value, count, low in (("kernel", kernel, r, 1), ("stride", stride, r, 1),
                                    ("pads", pads, 2 * r, 0), ("dilation", dilation, r, 1)):
        if len(value) != count or any(v < low for v in value):
            raise ValueError(f"{op}: {name}={value} over {r} spatial axes: expected {count} "
                             f"whole numbers ≥ {low}")
    out = []
    for i, n in enumerate(sizes):
        if max(pads[i], pads[r + i]) > n:  # the padded copy stays within 3× the input
            raise ValueError(f"{op}: pads={pads} on {n} entries along spatial axis {i}: a pad "
                             "may be at most the input's size (more only adds windows of "
                             "padding)")
        padded, reach = n + pads[i] + pads[r + i], dilation[i] * (kernel[i] - 1) + 1
        if reach > padded:
            raise ValueError(f"{op}: the kernel spans {reach} entries along spatial axis {i} "
                             f"but the padded input has {padded}")
        out.append((padded - reach) // stride[i] + 1)
    return tuple(out)


def _full_like(x: Array, shape: Ints, fill: float) -> Array:
    """A filled (rows, *shape) array in x's memory order: batch last if x is so laid out
    (``nnre.layout``), else rows first. Mixing the two orders in one ufunc call costs up
    to 10× (a transposition of the whole batch)."""
    if batch_last(x) is None:
        return np.full(shape, fill, x.dtype)
    return np.moveaxis(np.full((*shape[1:], shape[0]), fill, x.dtype), -1, 0)


def _padded_copy(x: Array, pads: Ints, fill: float = 0.0) -> tuple[Array, Array]:
    """A padded buffer for x in x's memory order, and the view of it that x fills (x itself
    and the same view when there is no padding)."""
    if not any(pads):
        return x, x
    sizes = x.shape[2:]
    padded = _full_like(x, (*x.shape[:2], *_padded(sizes, pads)), fill)
    return padded, padded[LEAD + _inner(sizes, pads)]


def _padded(sizes: Ints, pads: Ints) -> Ints:
    """Spatial sizes with the padding: n + pad_begin + pad_end along each axis."""
    return tuple(n + pads[i] + pads[len(sizes) + i] for i, n in enumerate(sizes))


def _inner(sizes: Ints, pads: Ints) -> tuple[slice, ...]:
    """Where the input sits inside its padded copy, along each spatial axis."""
    return tuple(slice(p, p + n) for p, n in zip(pads[:len(sizes)], sizes, strict=True))


def _places(kernel: Ints, stride: Ints, dilation: Ints, out: Ints
            ) -> list[tuple[Ints, tuple[slice, ...]]]:
    """Each kernel offset, and the strided slice of the padded input it reads for every
    output position: a loop over the kernel (9 for 3×3), never over rows."""
    return [(offset, tuple(slice(k * d, k * d + s * (o - 1) + 1, s) for k, s, d, o
                           in zip(offset, stride, dilation, out, strict=True)))
            for offset in np.ndindex(*kernel)]


# -- conv ------------------------------------------------------------------------------
def conv_attrs(spatial_rank: int, stride: float = 1, pad: float = 0, dilation: float = 1,
               groups: float = 1) -> dict[str, Any]:
    """The attributes of ``conv(W, x; stride=…, pad=…, dilation=…, groups=…)``: each scalar
    the same along every spatial axis, ``pad`` on both sides."""
    s, p = _whole("stride", stride, 1), _whole("pad", pad, 0)
    d, g = _whole("dilation", dilation, 1), _whole("groups", groups, 1)
    return {"stride": (s,) * spatial_rank, "pads": (p,) * (2 * spatial_rank),
            "dilation": (d,) * spatial_rank, "groups": g}


def _conv_shape(w: Shape, x: Shape, *bias: Shape, stride: Ints = (), pads: Ints = (),
                dilation: Ints = (), groups: int = 1) -> Shape:
    r = _spatial(x, "conv")
    if len(w) != r + 2:
        raise ValueError(f"conv of x {x} with a weight of shape {w}: expected "
                         f"(filters, channels/groups, {', '.join(['k'] * r)})")
    if groups < 1 or x[0] % groups or w[0] % groups or w[1] * groups != x[0]:
        raise ValueError(f"conv with groups={groups}: x has {x[0]} channels and W {w} takes "
                         f"{w[1]} per group of {w[0]} filters; channels and filters must "
                         "split into the groups")
    if bias and bias[0] != (w[0],):
        raise ValueError(f"conv bias of shape {bias[0]}: expected ({w[0]},), one per filter")
    std = _defaults(r, stride, pads, dilation)
    return (w[0], *_out_sizes("conv", x[1:], w[2:], *std))


def _conv_scratch(w: Shape, x: Shape, *bias: Shape, stride: Ints = (), pads: Ints = (),
                  dilation: Ints = (), groups: int = 1) -> int:
    """Entries per row of the padded input, the im2col columns (kernel · C per output
    position, and a row of ones per group with a bias) and the product (when ``out`` is not
    batch last): a large kernel makes these far larger than x or the result."""
    std = _defaults(len(x) - 1, stride, pads, dilation)
    positions = math.prod(_out_sizes("conv", x[1:], w[2:], *std))
    columns = positions * (x[0] * math.prod(w[2:]) + (groups if bias else 0))
    return x[0] * math.prod(_padded(x[1:], std[1])) + columns + positions * w[0]


def _defaults(r: int, stride: Ints, pads: Ints, dilation: Ints) -> tuple[Ints, Ints, Ints]:
    return stride or (1,) * r, pads or (0,) * (2 * r), dilation or (1,) * r


def _window_view(padded: Array, kernel: Ints, stride: Ints, dilation: Ints, groups: int,
                 out: Ints) -> Array:
    """Every window of a batch-last padded input (C, *padded, rows) as a strided view
    (groups, C/groups, *kernel, *out, rows): no copy."""
    r, channels = len(kernel), padded.shape[0]
    step = padded.strides
    shape = (groups, channels // groups, *kernel, *out, padded.shape[-1])
    strides = (channels // groups * step[0], step[0],
               *(step[1 + i] * dilation[i] for i in range(r)),
               *(step[1 + i] * stride[i] for i in range(r)), step[-1])
    return as_strided(padded, shape, strides, writeable=False)


def _batch_last_input(x: Array, pads: Ints) -> tuple[Array, list[Call]]:
    """x as a batch-last padded buffer (C, *padded, rows) made once, and the call that
    copies x into it (the padding stays 0); x itself, read in place, when it is already
    batch last and needs no padding (a conv or pool before it wrote it so)."""
    moved = np.moveaxis(x, 0, -1)  # (C, *sizes, rows): a view
    if not any(pads) and moved.flags.c_contiguous:
        return moved, []
    padded = np.zeros((x.shape[1], *_padded(x.shape[2:], pads), x.shape[0]), x.dtype)
    inner = padded[CHANNELS + _inner(x.shape[2:], pads)]
    return padded, _transposing_copies(inner, moved)


#: A copy that moves the rows last reads one entry of each of ``block`` rows per output
#: position: blocks of rows spanning about an L1 cache (and never fewer than 32 rows, or
#: NumPy's inner loop runs too short) stay cached from one position to the next. Measured
#: into a padded buffer at batch 256: 1×8×8 (the digits) 11 → 5 µs, 3×32×32 1.5 → 0.6 ms,
#: 16×8×8 0.49 → 0.20 ms, 1×28×28 57 → 62 µs (rows of 3 KiB: blocks of 32 are short).
CACHED = 32 * 1024


def _transposing_copies(into: Array, moved: Array) -> list[Call]:
    """Copies of ``moved`` (…, rows), a view of rows-first memory, into ``into``, a block
    of rows at a time if its rows are not already last in memory (``CACHED``)."""
    rows, row = moved.shape[-1], abs(moved.strides[-1])
    block = 1 << max(5, (CACHED // max(row, 1)).bit_length() - 1)
    if block >= rows or row == moved.itemsize:  # one block, or the rows already last
        return [functools.partial(np.copyto, into, moved)]
    return [functools.partial(np.copyto, into[..., i:i + block], moved[..., i:i + block])
            for i in range(0, rows, block)]


def _columns_calls(x: Array, kernel: Ints, stride: Ints, pads: Ints, dilation: Ints,
                   groups: int, out: Ints, ones: bool = False) -> tuple[Array, list[Call]]:
    """im2col, batch last: columns (groups, C/groups · kernel, positions · rows) and the
    calls that fill them from x (any memory order), with the padded copy made once here;
    ``ones`` adds a last row of ones to each group's columns (a bias column in the filters
    then adds the bias inside the product).

    The batch last because every copy then moves runs of (output width × rows) entries and
    every later pass (bias, ReLU, pooling) runs over whole rows of one channel: at batch 256
    the columns of the digits CNN's 1→16 conv cost 8 µs instead of 220 with channels last
    (whose runs are C = 1 entry long), 34 instead of 66 at 16→32 (``benchmarks/bench_conv.py``).
    """
    padded, calls = _batch_last_input(x, pads)
    windows = _window_view(padded, kernel, stride, dilation, groups, out)
    per = math.prod(windows.shape[1:2 + len(kernel)])  # C/groups · kernel
    cols = np.empty((groups, per + ones, math.prod(out) * x.shape[0]), x.dtype)
    cols[:, per:] = 1.0
    calls.append(functools.partial(np.copyto, _view(cols[:, :per], windows.shape), windows))
    return cols, calls


def _view(a: Array, shape: Ints) -> Array:
    """``a`` reshaped without a copy (a copy made at bind time would never be refilled)."""
    view = a.reshape(shape)
    if not np.may_share_memory(view, a):
        raise AssertionError(f"a reshape of {a.shape} to {shape} copied")
    return view


def _columns(x: Array, kernel: Ints, stride: Ints, pads: Ints, dilation: Ints, groups: int,
             out: Ints) -> Array:
    cols, calls = _columns_calls(x, kernel, stride, pads, dilation, groups, out)
    for call in calls:
        call()
    return cols


def batch_last(a: Array) -> Array | None:
    """``a`` (rows, *axes) as its batch-last memory (*axes, rows), or None if it is not
    laid out that way (``nnre.layout`` allocates conv and pooling results so)."""
    moved = np.moveaxis(a, 0, -1)
    return moved if moved.flags.c_contiguous else None


def _geometry(w: Array, x: Array, attrs: dict[str, Any]
              ) -> tuple[Ints, Ints, Ints, int, Ints]:
    r, groups = x.ndim - 2, int(attrs.get("groups", 1))
    stride, pads, dilation = _defaults(r, attrs.get("stride", ()), attrs.get("pads", ()),
                                       attrs.get("dilation", ()))
    out = _out_sizes("conv", x.shape[2:], w.shape[2:], stride, pads, dilation)
    return stride, pads, dilation, groups, out


#: The unfolded conv skips the kernel taps that fall on padding when that saves at least
#: this share of the product's multiply-adds (``_border_calls``). Measured at batch 256
#: (``benchmarks/bench_conv.py``): the digits CNN's 16→32 conv on 4×4 with pad 1 skips 31%
#: and runs in 0.30 ms instead of 0.39; its 1→16 conv on 8×8 skips 16%, and its products
#: of 5 to 10 taps gain less than the 9 calls cost.
SKIP = 0.25


def _tap_runs(n: int, k: int, s: int, pad: int, d: int, o: int
              ) -> list[tuple[slice, slice]] | None:
    """Along one spatial axis: runs of output positions whose kernel taps inside the input
    are the same, as (outputs, taps) slice pairs; None if some output reads padding only."""
    i = np.arange(o)
    first = np.clip(-((i * s - pad) // d), 0, k)  # ⌈(pad − i·s) / d⌉: the first tap inside
    stop = np.clip((n - 1 + pad - i * s) // d + 1, 0, k)
    if np.any(stop <= first):
        return None
    starts = [0, *(np.flatnonzero(np.diff(first) | np.diff(stop)) + 1).tolist(), o]
    return [(slice(u, v), slice(int(first[u]), int(stop[u])))
            for u, v in zip(starts, starts[1:], strict=False)]


Run = tuple[slice, slice]  # outputs along one axis, and the kernel taps they read inside x
Class = tuple[tuple[Run, ...], ...]  # per spatial axis, runs alike in size taken as one


def _border_classes(x: Shape, kernel: Ints, stride: Ints, pads: Ints, dilation: Ints,
                    out: Ints) -> list[Class] | None:
    """Output blocks that read the same kernel taps inside x (rows, C, *sizes), as (outputs,
    taps) runs per spatial axis, when skipping the taps on padding saves ``SKIP`` of the
    product; else None (one product over everything: ``_conv_calls``). Runs alike in size
    along an axis (the first and last output of a 3×3 kernel with pad 1) form one class,
    batched in its product (``_alike``)."""
    r = len(kernel)
    runs = [_tap_runs(x[2 + i], kernel[i], stride[i], pads[i], dilation[i], out[i])
            for i in range(r)]
    if any(axis is None or len(axis) == 1 for axis in runs):
        return None  # an output of padding only, or nothing to skip along an axis
    kept = sum(math.prod((o.stop - o.start) * (t.stop - t.start) for o, t in c)
               for c in itertools.product(*runs))  # type: ignore[arg-type]
    if kept > (1 - SKIP) * math.prod(out) * math.prod(kernel):
        return None
    return list(itertools.product(*(_alike(axis, stride[i], dilation[i], pads[i])  # type: ignore[arg-type]
                                    for i, axis in enumerate(runs))))


def _alike(runs: list[Run], s: int, d: int, pad: int) -> list[tuple[Run, ...]]:
    """Runs along one axis grouped where they have as many outputs and as many taps, and
    their outputs and first inputs are evenly spaced: one batched product each instead of
    one per run (the 4 corners of a 3×3 conv with pad 1 in one call: 55 → 51 µs for the
    digits CNN's 16→32 conv)."""
    def start(run: Run) -> int:
        return run[0].start * s + run[1].start * d - pad

    alike: dict[tuple[int, int], list[Run]] = {}
    for run in runs:
        alike.setdefault((run[0].stop - run[0].start, run[1].stop - run[1].start),
                         []).append(run)
    grouped: list[tuple[Run, ...]] = []
    for same in alike.values():
        outs, firsts = np.diff([u.start for u, _ in same]), np.diff([start(u) for u in same])
        even = len(same) < 3 or (len(set(outs.tolist())) == 1 and len(set(firsts.tolist())) == 1)
        grouped += [tuple(same)] if even else [(u,) for u in same]
    return grouped


def _filter_calls(w: Array, bias: tuple[Array, ...], groups: int
                  ) -> tuple[Array, list[Call]]:
    """W and b as (groups, C/g · kernel + 1 if b, O/g), copied in at each call (a trainer
    updates them in place): the transposed filters a row gather picks taps from."""
    o, per = w.shape[0] // groups, math.prod(w.shape[1:])
    both = np.empty((groups, per + len(bias), o), w.dtype)
    into = _view(both[:, :per], (groups, *w.shape[1:], o))
    calls: list[Call] = [functools.partial(
        np.copyto, np.moveaxis(into, -1, 1), w.reshape(groups, o, *w.shape[1:]))]
    if bias:
        calls.append(functools.partial(np.copyto, both[:, per], bias[0].reshape(groups, o)))
    return both, calls


def _even(offsets: list[int]) -> int | None:
    """The one step between evenly spaced offsets (0 for one), or None."""
    steps = set(np.diff(offsets).tolist())
    return steps.pop() if len(steps) == 1 else 0 if not steps else None


def _border_calls(w: Array, x: Array, bias: tuple[Array, ...], product: Array,
                  geometry: tuple[Ints, Ints, Ints, int, Ints], classes: list[Class],
                  pool: Ints = ()) -> list[Call] | None:
    """The conv without the taps that fall on padding: per class of output positions that
    read the same taps (corners, edges, the inside for a 3×3 kernel with pad 1), the
    columns of those taps alone and one product into that block of the batch-last
    ``product``, batched over the class's alike runs and all but its last spatial axis.
    The columns are copied from x itself (no padded copy: no class reads the padding), the
    filters of every class gathered by one ``take`` from W and b (bias column included).

    ``product`` is (O, *out, rows), or with ``pool`` (O, *pool, *out / pool, rows): each
    offset in the pool's windows a block of its own (``_pooled_calls``); then a run of
    more than two outputs is not evenly spaced in memory, and the calls are None."""
    stride, pads, dilation, groups, size = geometry
    rows, r = x.shape[0], x.ndim - 2
    o, per = w.shape[0] // groups, w.shape[1]  # filters and channels per group
    at, to = x.itemsize, product.strides  # strides of product in bytes

    def place(i: int, u: int) -> int:  # where output u along spatial axis i is written
        if not pool:
            return u * to[1 + i]
        return u % pool[i] * to[1 + i] + u // pool[i] * to[1 + r + i]

    flat = _view(product, (product.size,))
    inside, calls = _batch_last_input(x, (0,) * (2 * r))  # the classes read x alone
    both, filter_calls = _filter_calls(w, bias, groups)
    calls += filter_calls
    taps = np.arange(per * math.prod(w.shape[2:])).reshape(per, *w.shape[2:])
    step = inside.strides  # (C, *sizes, rows)
    picks: list[int] = []  # per class and alike run, its taps' rows of W and b
    products: list[tuple[int, tuple[int, ...], int, Array, Array]] = []
    for alike in classes:
        items = tuple(len(runs) for runs in alike)
        counts = [runs[0][0].stop - runs[0][0].start for runs in alike]
        nk = tuple(t.stop - t.start for _, t in (runs[0] for runs in alike))
        within = [_even([place(i, v) for v in range(u.start, u.stop)])
                  for i, runs in enumerate(alike) for u, _ in runs]
        apart = [_even([place(i, u.start) for u, _ in runs]) for i, runs in enumerate(alike)]
        if None in within or None in apart:
            return None
        inner = [within[sum(items[:i])] for i in range(r)]  # one step per axis
        if any(v != inner[i] for i in range(r)
               for v in within[sum(items[:i]):sum(items[:i + 1])]):
            return None
        merged = counts[-1] == 1 or inner[-1] == to[-1] * rows  # last axis and rows as N
        lead, n = (counts[:-1], counts[-1] * rows) if merged else (counts, rows)
        k = per * math.prod(nk)
        cols = np.empty((groups, *items, *lead, k + len(bias), n), x.dtype)
        cols[..., k:, :] = 1.0
        starts = [[u.start * s + t.start * d - p for u, t in runs]
                  for runs, s, d, p in zip(alike, stride, dilation, pads, strict=False)]
        source = as_strided(  # (groups, *items, C/g, *taps, *outs, rows): inside x only
            inside[CHANNELS + tuple(slice(f[0], None) for f in starts)],
            (groups, *items, per, *nk, *counts, rows),
            (per * step[0], *((f[-1] - f[0]) // max(len(f) - 1, 1) * step[1 + i]
                              for i, f in enumerate(starts)), step[0],
             *(dilation[i] * step[1 + i] for i in range(r)),
             *(stride[i] * step[1 + i] for i in range(r)), step[-1]), writeable=False)
        outs = range(2 + 2 * r, 2 + 3 * r)
        order = [0, *range(1, 1 + r), *outs[:len(lead)], 1 + r, *range(2 + r, 2 + 2 * r),
                 *outs[len(lead):], 2 + 3 * r]
        calls.append(functools.partial(np.copyto, _view(cols[..., :k, :], tuple(
            source.shape[i] for i in order)), source.transpose(order)))
        first = sum(place(i, runs[0][0].start) for i, runs in enumerate(alike)) // at
        block = as_strided(flat[first:], (w.shape[0], *items, *counts, rows),
                           (to[0], *apart, *inner, to[-1]))  # type: ignore[arg-type]
        products.append((len(picks), items, k + len(bias), cols, np.moveaxis(
            _view(block, (groups, o, *items, *lead, n)), 1, 1 + r + len(lead))))
        for combo in itertools.product(*alike):
            picks += taps[CHANNELS + tuple(t for _, t in combo)].ravel().tolist()
            picks += [taps.size] * len(bias)
    gathered = np.empty((groups, len(picks), o), w.dtype)
    calls.append(functools.partial(np.take, both, np.array(picks), axis=1, out=gathered,
                                   mode="clip"))
    for start, items, k, cols, block in products:
        filters = gathered[:, start:start + math.prod(items) * k]  # (groups, *items, k, O/g)
        filters = np.swapaxes(filters.reshape(groups, *items, k, o), -1, -2)
        if all(c == 1 for c in block.shape[:-2]):  # a 2-D product
            one = (0,) * (block.ndim - 2)
            calls.append(functools.partial(np.matmul, filters[one[:1 + r]], cols[one],
                                           out=block[one]))
        else:
            filters = filters.reshape(groups, *items, *(1,) * (block.ndim - 3 - r), o, k)
            calls.append(functools.partial(np.matmul, filters, cols, out=block))
    return calls


def _conv_calls(w: Array, x: Array, *bias: Array, out: Array, border: bool = True,
                **attrs: Any) -> list[Call]:
    """The conv as calls over scratch made once: im2col, then one matrix product per group
    that writes (filters, positions · rows) with the bias added inside it (a column of the
    filters times a row of ones: ~3 µs more in the product against ~20 for a pass over the
    result at 16→32, batch 256). A batch-last ``out`` is that product's own memory, so
    nothing is copied after it; any other is filled from a scratch product. With
    ``border`` (the bound form), a product per border class where that skips enough taps
    on padding (``_border_classes``)."""
    geometry = _geometry(w, x, attrs)
    stride, pads, dilation, groups, size = geometry
    moved = batch_last(out)
    product = moved if moved is not None else np.empty(np.moveaxis(out, 0, -1).shape, out.dtype)
    classes = _border_classes(x.shape, w.shape[2:], stride, pads, dilation, size) \
        if border else None
    if classes is not None:
        border_calls = _border_calls(w, x, bias, product, geometry, classes)
        assert border_calls is not None  # every run evenly spaced in (O, *out, rows)
        calls = border_calls
    else:
        calls = _whole_calls(w, x, bias, product, geometry)
    if moved is None:
        calls.append(functools.partial(np.copyto, out, np.moveaxis(product, -1, 0)))
    return calls


def _whole_calls(w: Array, x: Array, bias: tuple[Array, ...], product: Array,
                 geometry: tuple[Ints, Ints, Ints, int, Ints]) -> list[Call]:
    """im2col and one product per group over every position (``_conv_calls``)."""
    stride, pads, dilation, groups, size = geometry
    cols, calls = _columns_calls(x, w.shape[2:], stride, pads, dilation, groups, size,
                                 ones=bool(bias))
    filters, filter_calls = _filters(w, bias, groups)
    return calls + filter_calls + _product_calls(filters, cols, product)


def _filters(w: Array, bias: tuple[Array, ...], groups: int) -> tuple[Array, list[Call]]:
    """W as (groups, O/g, C/g · kernel), with b as a last column: copied in at each call
    (a trainer updates them in place) unless W's own memory already is that."""
    filters = w.reshape(groups, w.shape[0] // groups, -1)
    if not bias and np.may_share_memory(filters, w):
        return filters, []
    per = filters.shape[-1]
    filters = np.empty((*filters.shape[:2], per + len(bias)), w.dtype)
    calls: list[Call] = [functools.partial(np.copyto, _view(filters[..., :per], w.shape), w)]
    if bias:
        calls.append(functools.partial(np.copyto, _view(filters[..., per], bias[0].shape),
                                       bias[0]))
    return filters, calls


def _product_calls(filters: Array, cols: Array, product: Array) -> list[Call]:
    """(groups, O/g, k) times columns (groups, k, n) into ``product``'s memory."""
    flat = _view(product, (*filters.shape[:2], cols.shape[-1]))
    if filters.shape[0] == 1:  # a 2-D product: NumPy's batched matmul loop costs more per call
        return [functools.partial(np.matmul, filters[0], cols[0], out=flat[0])]
    return [functools.partial(np.matmul, filters, cols, out=flat)]


def _pooled_calls(w: Array, x: Array, *bias: Array, out: Array, pool: dict[str, Any],
                  floor: float | None = None, **attrs: Any) -> list[Call] | None:
    """The conv and a max pool that alone reads its result, bound as one (``Op.pooled``):
    the product writes the positions at each offset in the pool's windows as one block
    (filters, pooled positions · rows), so the pool is a maximum of whole blocks instead of
    strided views. Measured on the digits CNN at batch 256, one thread: its 1→16 conv on
    8×8 and its 2×2 pool 146 → 133 µs (im2col orders the columns by window offset); its
    16→32 conv on 4×4 and pool ~12 µs less (the border classes write into the blocks).
    The pool is one reduce over the blocks; ``floor`` (0: a ReLU after the pool) starts
    it, so that ReLU costs no pass of its own (pool and ReLU at 16→32: 17 → 13 µs).
    ``out`` is the pool's (or that ReLU's) result. None where this does not apply:
    windows that overlap or pad or do not tile the conv's result, a result not batch
    last, border classes whose runs are not evenly spaced among the blocks
    (``_border_calls``)."""
    geometry = _geometry(w, x, attrs)
    stride, pads, dilation, groups, size = geometry
    kernel, step, border = (tuple(pool.get(k) or ()) for k in ("kernel", "stride", "pads"))
    pooled = batch_last(out)
    if pooled is None or (step and step != kernel) or any(border) or \
            any(n % k for n, k in zip(size, kernel, strict=True)):
        return None
    r, rows, channels = len(kernel), x.shape[0], x.shape[1] // groups
    counts = tuple(n // k for n, k in zip(size, kernel, strict=True))
    product = np.empty((w.shape[0], *kernel, *counts, rows), x.dtype)
    classes = _border_classes(x.shape, w.shape[2:], stride, pads, dilation, size)
    if classes is not None:
        found = _border_calls(w, x, bias, product, geometry, classes, pool=kernel)
        if found is None:
            return None
        calls = found
    else:  # im2col with the columns in the blocks' order
        padded, calls = _batch_last_input(x, pads)
        at = padded.strides  # (C, *padded, rows)
        windows = as_strided(padded, (groups, channels, *w.shape[2:], *kernel, *counts, rows), (
            channels * at[0], at[0], *(at[1 + i] * dilation[i] for i in range(r)),
            *(at[1 + i] * stride[i] for i in range(r)),
            *(at[1 + i] * stride[i] * kernel[i] for i in range(r)), at[-1]), writeable=False)
        per = channels * math.prod(w.shape[2:])
        cols = np.empty((groups, per + len(bias), math.prod(size) * rows), x.dtype)
        cols[:, per:] = 1.0
        calls.append(functools.partial(np.copyto, _view(cols[:, :per], windows.shape),
                                       windows))
        filters, filter_calls = _filters(w, bias, groups)
        calls += filter_calls + _product_calls(filters, cols, product)
    blocks = _view(product, (w.shape[0], math.prod(kernel), math.prod(counts) * rows))
    flat = _view(pooled, (w.shape[0], math.prod(counts) * rows))
    extra = {} if floor is None else {"initial": floor}
    return [*calls, functools.partial(np.maximum.reduce, blocks, axis=1, out=flat, **extra)]


def _conv(w: Array, x: Array, *bias: Array, out: Array, **attrs: Any) -> Array:
    """Called afresh each time (training's forward): one product over everything, whose
    calls cost less to set up than the border classes'."""
    for call in _conv_calls(w, x, *bias, out=out, border=False, **attrs):
        call()
    return out


def _conv_vjp(g: Array, out: Array, args: list[Array], attrs: dict[str, Any], i: int
              ) -> Array:
    w, x = args[0], args[1]
    if i == 2:  # the bias: g summed over all but its filter axis
        moved = batch_last(g)
        if moved is not None:  # one reduce along contiguous rows
            return np.add.reduce(moved.reshape(g.shape[1], -1), axis=1)
        # rows first: over rows, then positions (10× one reduce over both)
        return np.add.reduce(np.add.reduce(g, axis=0).reshape(g.shape[1], -1), axis=1)
    stride, pads, dilation, groups, size = _geometry(w, x, attrs)
    rows, kernel = x.shape[0], w.shape[2:]
    # g batch last, (groups, O/g, positions · rows): the forward product's layout
    gg = np.ascontiguousarray(np.moveaxis(g, 0, -1)).reshape(groups, w.shape[0] // groups, -1)
    filters = w.reshape(groups, w.shape[0] // groups, -1)
    if i == 0:  # W: g · columnsᵀ per group, summed over rows and positions by the product
        cols = _columns(x, kernel, stride, pads, dilation, groups, size)
        return np.matmul(gg, cols.transpose(0, 2, 1)).reshape(w.shape)
    # x: each column's share of g, (C, *kernel, *out, rows), added back into the padded
    # input one kernel offset at a time (col2im: a loop over the kernel, never over rows)
    parts = np.matmul(filters.transpose(0, 2, 1), gg)
    parts = parts.reshape(x.shape[1], *kernel, *size, rows)
    padded = np.zeros((x.shape[1], *_padded(x.shape[2:], pads), rows), g.dtype)
    for offset, place in _places(kernel, stride, dilation, size):
        padded[CHANNELS + place] += parts[CHANNELS + offset]
    inside = padded[CHANNELS + _inner(x.shape[2:], pads)]
    return np.moveaxis(inside, -1, 0)


def _conv_onnx(e: Any, ins: Any, args: list[str], out: str) -> None:
    attrs = dict(ins.attrs)
    w = e.prog.slots[ins.args[0]].shape
    r = len(w) - 2
    stride, pads, dilation = _defaults(r, attrs.get("stride", ()), attrs.get("pads", ()),
                                       attrs.get("dilation", ()))
    e.node("Conv", [args[1], args[0], *args[2:]], out, kernel_shape=list(w[2:]),
           strides=list(stride), pads=list(pads), dilations=list(dilation),
           group=int(attrs.get("groups", 1)))


def _conv_op(name: str, arity: int) -> Op:
    """conv(W, x) and conv(W, x, b): one spelling, two arities (``nnre.ops.BY_ARITY``)."""
    return Op(
        name, _conv, _conv_shape,
        attrs={"stride": tuple, "pads": tuple, "dilation": tuple, "groups": int},
        spellings=("conv",), arity=arity, tensor=True, tensor_input=1, products=True,
        batch_last=True, scratch=_conv_scratch, unfold=_conv_calls, pooled=_pooled_calls,
        params={"stride": 1, "pad": 0, "dilation": 1, "groups": 1}, param_attrs=conv_attrs,
        vjp=_conv_vjp, reads=frozenset({"args"}),
        onnx=_conv_onnx, onnx_import=("Conv",) if arity == 2 else (),  # with B or not
    )


CONV = _conv_op("conv", 2)
CONV_BIAS = _conv_op("conv_bias", 3)


# -- pooling ---------------------------------------------------------------------------
def pool_attrs(spatial_rank: int, size: float = 2, stride: float = 0, pad: float = 0
               ) -> dict[str, Any]:
    """The attributes of ``maxpool(x; size=…, stride=…, pad=…)``; ``stride=0`` (the
    default) means a stride equal to ``size``: windows side by side."""
    k, p = _whole("size", size, 1), _whole("pad", pad, 0)
    s = _whole("stride", stride, 0) or k
    return {"kernel": (k,) * spatial_rank, "stride": (s,) * spatial_rank,
            "pads": (p,) * (2 * spatial_rank)}


def _pool_shape(x: Shape, kernel: Ints = (), stride: Ints = (), pads: Ints = ()) -> Shape:
    r = _spatial(x, "pool")
    stride, pads = stride or kernel, pads or (0,) * (2 * r)
    out = _out_sizes("pool", x[1:], kernel, stride, pads, (1,) * r)
    if any(p >= kernel[i % r] for i, p in enumerate(pads)):
        # a window of padding alone would have no maximum and nothing to average
        raise ValueError(f"pool: pads={pads} with kernel={kernel}: each pad must be smaller "
                         "than the kernel")
    return (x[0], *out)


def _pool_sizes(x: Shape, kernel: Ints, stride: Ints, pads: Ints) -> tuple[int, int]:
    """(entries per row of the padded copy, entries per row of the result)."""
    r = len(x) - 1
    stride, pads = stride or kernel, pads or (0,) * (2 * r)
    out = _out_sizes("pool", x[1:], kernel, stride, pads, (1,) * r)
    return x[0] * math.prod(_padded(x[1:], pads)), x[0] * math.prod(out)


def _pool_scratch(x: Shape, kernel: Ints = (), stride: Ints = (), pads: Ints = ()) -> int:
    """The padded copy of x (−∞ or 0 around it), when there is padding."""
    return _pool_sizes(x, kernel, stride, pads)[0] if any(pads) else 0


def _maxpool_vjp_scratch(x: Shape, kernel: Ints = (), stride: Ints = (), pads: Ints = ()
                         ) -> int:
    """The padded copy of x, the padded gradient it returns a view of, and per window offset
    a comparison, a mask and g where it hits (result-sized, booleans counted as entries)."""
    padded, out = _pool_sizes(x, kernel, stride, pads)
    return (2 if any(pads) else 1) * padded + 3 * out


def _avgpool_vjp_scratch(x: Shape, kernel: Ints = (), stride: Ints = (), pads: Ints = ()
                         ) -> int:
    """g's share per window entry (result-sized) and the padded gradient it returns a view of."""
    padded, out = _pool_sizes(x, kernel, stride, pads)
    return padded + out


def _pool_geometry(x: Array, attrs: dict[str, Any]) -> tuple[Ints, Ints, Ints]:
    r, kernel = x.ndim - 2, tuple(attrs["kernel"])
    return kernel, tuple(attrs.get("stride") or kernel), tuple(attrs.get("pads") or
                                                               (0,) * (2 * r))


def _pool_places(x: Array, out: Ints, attrs: dict[str, Any]
                 ) -> tuple[Ints, list[tuple[Ints, tuple[slice, ...]]]]:
    """Pads, and each window offset with the strided slice of the padded input it reads
    for every output: pooling is a loop over the window (4 for 2×2) of whole-array ufunc
    calls, ~30× faster than a reduce over a strided view of the windows (whose inner loop
    is the window's 2 entries; benchmarks/bench_cnn.py)."""
    kernel, stride, pads = _pool_geometry(x, attrs)
    return pads, _places(kernel, stride, (1,) * len(kernel), out)


def _pool_calls(x: Array, out: Array, attrs: dict[str, Any], fill: float,
                combine: Any) -> list[Call]:
    """Pooling as calls over views bound once: x copied into its padded buffer (made here,
    the padding filled once) if there is padding, then ``combine`` over the window
    offsets (the first two in one call: no pass that only copies)."""
    pads, places = _pool_places(x, out.shape[2:], attrs)
    padded, inner = _padded_copy(x, pads, fill)
    calls: list[Call] = [functools.partial(np.copyto, inner, x)] if padded is not x else []
    views = [padded[LEAD + place] for _, place in places]
    if len(views) == 1:
        return [*calls, functools.partial(np.copyto, out, views[0])]
    calls.append(functools.partial(combine, views[0], views[1], out=out))
    return calls + [functools.partial(combine, out, view, out=out) for view in views[2:]]


def _maxpool_calls(x: Array, out: Array, **attrs: Any) -> list[Call]:
    return _pool_calls(x, out, attrs, -np.inf, np.maximum)


def _maxpool(x: Array, out: Array, **attrs: Any) -> Array:
    for call in _maxpool_calls(x, out, **attrs):
        call()
    return out


def _maxpool_vjp(g: Array, out: Array, args: list[Array], attrs: dict[str, Any], i: int
                 ) -> Array:
    """All of g to each window's first maximum (row-major order: PyTorch's choice)."""
    x = args[0]
    pads, places = _pool_places(x, g.shape[2:], attrs)
    xp, inner = _padded_copy(x, pads, -np.inf)
    if xp is not x:
        np.copyto(inner, x)
    grad = _full_like(x, xp.shape, 0.0)
    taken = np.zeros_like(g, bool)
    for _, place in places:
        hit = xp[LEAD + place] == out
        hit &= ~taken
        grad[LEAD + place] += np.where(hit, g, 0)
        taken |= hit
    return grad[LEAD + _inner(x.shape[2:], pads)]


def _counts(x: Shape, kernel: Ints, stride: Ints, pads: Ints, out: Ints) -> Array:
    """Real (not padded) entries in each window, (*out): ONNX's count_include_pad=0."""
    r, total = len(kernel), np.ones((), np.int64)
    for i in range(r):
        start = np.arange(out[i]) * stride[i] - pads[i]
        real = np.minimum(start + kernel[i], x[2 + i]) - np.maximum(start, 0)
        total = np.multiply.outer(total, real)
    return total


def _avgpool_calls(x: Array, out: Array, **attrs: Any) -> list[Call]:
    kernel, stride, pads = _pool_geometry(x, attrs)
    counts = _counts(x.shape, kernel, stride, pads, out.shape[2:]).astype(out.dtype)
    return [*_pool_calls(x, out, attrs, 0.0, np.add),
            functools.partial(np.divide, out, counts, out=out)]


def _avgpool(x: Array, out: Array, **attrs: Any) -> Array:
    for call in _avgpool_calls(x, out, **attrs):
        call()
    return out


def _avgpool_vjp(g: Array, out: Array, args: list[Array], attrs: dict[str, Any], i: int
                 ) -> Array:
    """g / count to every entry of the window (the padding's share is dropped)."""
    x = args[0]
    kernel, stride, pads = _pool_geometry(x, attrs)
    share = g / _counts(x.shape, kernel, stride, pads, g.shape[2:])
    _, places = _pool_places(x, g.shape[2:], attrs)
    grad = _full_like(x, (*x.shape[:2], *_padded(x.shape[2:], pads)), 0.0)
    for _, place in places:
        grad[LEAD + place] += share
    return grad[LEAD + _inner(x.shape[2:], pads)]


def _pool_onnx(op_type: str, **extra: Any) -> Any:
    def rule(e: Any, ins: Any, args: list[str], out: str) -> None:
        attrs = dict(ins.attrs)
        r = len(e.prog.slots[ins.args[0]].shape) - 1
        kernel = tuple(attrs["kernel"])
        e.node(op_type, args, out, kernel_shape=list(kernel),
               strides=list(attrs.get("stride") or kernel),
               pads=list(attrs.get("pads") or (0,) * (2 * r)), **extra)
    return rule


def _pool_op(name: str, kernel: Any, unfold: Any, vjp: Any, vjp_scratch: Any,
             reads: frozenset[str], onnx_type: str, **onnx_attrs: Any) -> Op:
    return Op(
        name, kernel, _pool_shape, unfold=unfold, scratch=_pool_scratch,
        attrs={"kernel": tuple, "stride": tuple, "pads": tuple},
        spellings=(name,), tensor=True, batch_last=True,
        params={"size": 2, "stride": 0, "pad": 0}, param_attrs=pool_attrs,
        vjp=vjp, reads=reads, vjp_scratch=vjp_scratch,
        onnx=_pool_onnx(onnx_type, **onnx_attrs), onnx_import=(onnx_type,),
    )


MAXPOOL = _pool_op("maxpool", _maxpool, _maxpool_calls, _maxpool_vjp, _maxpool_vjp_scratch,
                   frozenset({"args", "out"}), "MaxPool")
AVGPOOL = _pool_op("avgpool", _avgpool, _avgpool_calls, _avgpool_vjp, _avgpool_vjp_scratch,
                   frozenset(), "AveragePool", count_include_pad=0)

OPS = [CONV, CONV_BIAS, MAXPOOL, AVGPOOL]
