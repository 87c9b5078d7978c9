"""Convolution and pooling over 1 or 2 spatial axes: conv (with a bias or not), maxpool, avgpool.

Each block is the whole definition of one primitive (see ``nnre.ops.base.Op``). At run time
x is per example, (rows, C, *spatial); a conv's weight W (O, C/groups, *kernel) and bias b
(O,) are constants. Attributes are tuples in ONNX's order (``pads``: every begin, then every
end), so export writes them as they are; equations give scalars (``conv(W, x; pad=1)``) that
``conv_attrs``/``pool_attrs`` widen. A conv is im2col (channels last) and one matrix
product per group over every row and position at once; gradients of x go back with one
strided ``+=`` per kernel offset (col2im: a loop over the kernel, never over rows).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from nnre.ops.base import Array, Op, Shape

Ints = tuple[int, ...]
ROWS = (slice(None),)  # every row: an index's first place
LEAD = ROWS * 2  # every row and channel: an index's first two places
WIDE = 8  # channels per group from which im2col copies all windows at once (_columns)


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


def _pad(x: Array, pads: Ints, fill: float = 0.0) -> Array:
    r = x.ndim - 2
    if not any(pads):
        return x
    widths = [(0, 0), (0, 0), *zip(pads[:r], pads[r:], strict=True)]
    return np.pad(x, widths, constant_values=fill)


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
    position) and the product: a large kernel makes these far larger than x or the result."""
    std = _defaults(len(x) - 1, stride, pads, dilation)
    positions = math.prod(_out_sizes("conv", x[1:], w[2:], *std))
    return x[0] * (math.prod(_padded(x[1:], std[1])) + positions * math.prod(w[2:])) + \
        positions * w[0]


def _defaults(r: int, stride: Ints, pads: Ints, dilation: Ints) -> tuple[Ints, Ints, Ints]:
    return stride or (1,) * r, pads or (0,) * (2 * r), dilation or (1,) * r


def _columns(x: Array, kernel: Ints, stride: Ints, pads: Ints, dilation: Ints, groups: int,
             out: Ints) -> Array:
    """im2col, channels last: (rows, *out, groups, *kernel, C/groups), so that each group's
    columns are rows of one matrix (rows · positions, kernel · C/groups) for a single GEMM.
    Channels last because the copies then move runs of C entries, not of one
    (benchmarks/bench_conv.py: about 2× faster than (rows, C, *kernel, *out) at 16→32, 4×4).
    NumPy copies a strided view of all windows at once faster when those runs are long
    (0.08 against 0.21 ms at C=16) and slower when they are short (0.19 against 0.07 ms at
    C=1), hence one copy from ``WIDE`` channels per group up, else one per kernel offset."""
    r, (rows, channels) = len(kernel), x.shape[:2]
    padded = np.zeros((rows, *_padded(x.shape[2:], pads), channels), x.dtype)
    padded[ROWS + _inner(x.shape[2:], pads)] = np.moveaxis(x, 1, -1)
    per = channels // groups
    cols = np.empty((rows, *out, groups, *kernel, per), x.dtype)
    if per >= WIDE:  # one copy from a strided view of every window
        steps, item = padded.strides, padded.itemsize
        np.copyto(cols, as_strided(padded, cols.shape, (
            steps[0], *(steps[1 + i] * stride[i] for i in range(r)), per * item,
            *(steps[1 + i] * dilation[i] for i in range(r)), item), writeable=False))
        return cols
    every = (slice(None),) * (2 + r)
    for offset, place in _places(kernel, stride, dilation, out):
        cols[every + offset] = padded[ROWS + place].reshape(rows, *out, groups, per)
    return cols


def _filters(w: Array, groups: int) -> Array:
    """W (O, C/g, *kernel) as (groups, kernel · C/g, O/g), the columns' order."""
    r = w.ndim - 2
    per = w.reshape(groups, w.shape[0] // groups, *w.shape[1:])
    order = (0, *range(3, 3 + r), 2, 1)
    return per.transpose(order).reshape(groups, -1, w.shape[0] // groups)


def _geometry(w: Array, x: Array, attrs: dict[str, Any]
              ) -> tuple[Ints, Ints, Ints, int, Ints]:
    r, groups = x.ndim - 2, int(attrs.get("groups", 1))
    stride, pads, dilation = _defaults(r, attrs.get("stride", ()), attrs.get("pads", ()),
                                       attrs.get("dilation", ()))
    out = _out_sizes("conv", x.shape[2:], w.shape[2:], stride, pads, dilation)
    return stride, pads, dilation, groups, out


def _conv(w: Array, x: Array, *bias: Array, out: Array, **attrs: Any) -> Array:
    stride, pads, dilation, groups, size = _geometry(w, x, attrs)
    cols = _columns(x, w.shape[2:], stride, pads, dilation, groups, size)
    rows, positions = x.shape[0], math.prod(size)
    matrices = cols.reshape(rows * positions, groups, -1).transpose(1, 0, 2)
    product = np.matmul(matrices, _filters(w, groups))  # (groups, rows · positions, O/g)
    flat = out.reshape(rows, groups, -1, positions)
    result = product.reshape(groups, rows, positions, -1).transpose(1, 0, 3, 2)
    if bias:  # added on the way into out: one pass fewer over it
        np.add(result, bias[0].reshape(groups, -1, 1), out=flat)
    else:
        np.copyto(flat, result)
    return out


def _conv_vjp(g: Array, out: Array, args: list[Array], attrs: dict[str, Any], i: int
              ) -> Array:
    w, x = args[0], args[1]
    r = x.ndim - 2
    if i == 2:  # the bias: summed over rows, then positions (10× one reduce over both)
        return np.add.reduce(np.add.reduce(g, axis=0).reshape(g.shape[1], -1), axis=1)
    stride, pads, dilation, groups, size = _geometry(w, x, attrs)
    rows, positions, kernel = x.shape[0], math.prod(size), w.shape[2:]
    # g as (groups, rows · positions, O/g), the product's layout in the forward
    gg = np.ascontiguousarray(g.reshape(rows, groups, -1, positions).transpose(1, 0, 3, 2))
    gg = gg.reshape(groups, rows * positions, -1)
    if i == 0:  # W: columnsᵀ · g per group, summed over rows and positions by the product
        cols = _columns(x, kernel, stride, pads, dilation, groups, size)
        matrices = cols.reshape(rows * positions, groups, -1).transpose(1, 2, 0)
        grad = np.matmul(matrices, gg)  # (groups, kernel · C/g, O/g)
        per = grad.reshape(groups, *kernel, -1, w.shape[0] // groups)
        return per.transpose(0, r + 2, r + 1, *range(1, r + 1)).reshape(w.shape)
    # x: each kernel offset's share of g, (*kernel, groups, rows · positions, C/g), so that
    # col2im adds contiguous blocks (0.59 against 0.91 ms at 16→32, 4×4 with the columns'
    # (rows, *out, groups, *kernel, C/g) order)
    per = w.reshape(groups, w.shape[0] // groups, w.shape[1], -1)
    parts = np.matmul(gg, np.ascontiguousarray(per.transpose(3, 0, 1, 2)))
    parts = parts.reshape(*kernel, groups, rows, *size, -1)
    padded = np.zeros((rows, *_padded(x.shape[2:], pads), groups, x.shape[1] // groups),
                      g.dtype)
    for offset, place in _places(kernel, stride, dilation, size):  # col2im
        padded[ROWS + place] += np.moveaxis(parts[offset], 0, -2)
    inside = padded[ROWS + _inner(x.shape[2:], pads)]
    return np.moveaxis(inside.reshape(rows, *x.shape[2:], -1), -1, 1)


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
        scratch=_conv_scratch,
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


def _maxpool(x: Array, out: Array, **attrs: Any) -> Array:
    pads, places = _pool_places(x, out.shape[2:], attrs)
    xp = _pad(x, pads, -np.inf)
    np.copyto(out, xp[LEAD + places[0][1]])
    for _, place in places[1:]:
        np.maximum(out, xp[LEAD + place], out=out)
    return out


def _maxpool_vjp(g: Array, out: Array, args: list[Array], attrs: dict[str, Any], i: int
                 ) -> Array:
    """All of g to each window's first maximum (row-major order: PyTorch's choice)."""
    x = args[0]
    pads, places = _pool_places(x, g.shape[2:], attrs)
    xp = _pad(x, pads, -np.inf)
    grad = np.zeros(xp.shape, g.dtype)
    taken = np.zeros(g.shape, bool)
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


def _avgpool(x: Array, out: Array, **attrs: Any) -> Array:
    kernel, stride, pads = _pool_geometry(x, attrs)
    _, places = _pool_places(x, out.shape[2:], attrs)
    xp = _pad(x, pads)
    np.copyto(out, xp[LEAD + places[0][1]])
    for _, place in places[1:]:
        np.add(out, xp[LEAD + place], out=out)
    return np.divide(out, _counts(x.shape, kernel, stride, pads, out.shape[2:]), out=out)


def _avgpool_vjp(g: Array, out: Array, args: list[Array], attrs: dict[str, Any], i: int
                 ) -> Array:
    """g / count to every entry of the window (the padding's share is dropped)."""
    x = args[0]
    kernel, stride, pads = _pool_geometry(x, attrs)
    share = g / _counts(x.shape, kernel, stride, pads, g.shape[2:])
    _, places = _pool_places(x, g.shape[2:], attrs)
    grad = np.zeros((*x.shape[:2], *_padded(x.shape[2:], pads)), g.dtype)
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


def _pool_op(name: str, kernel: Any, vjp: Any, vjp_scratch: Any, reads: frozenset[str],
             onnx_type: str, **onnx_attrs: Any) -> Op:
    return Op(
        name, kernel, _pool_shape, attrs={"kernel": tuple, "stride": tuple, "pads": tuple},
        scratch=_pool_scratch, spellings=(name,), tensor=True,
        params={"size": 2, "stride": 0, "pad": 0}, param_attrs=pool_attrs,
        vjp=vjp, reads=reads, vjp_scratch=vjp_scratch,
        onnx=_pool_onnx(onnx_type, **onnx_attrs), onnx_import=(onnx_type,),
    )


MAXPOOL = _pool_op("maxpool", _maxpool, _maxpool_vjp, _maxpool_vjp_scratch,
                   frozenset({"args", "out"}), "MaxPool")
AVGPOOL = _pool_op("avgpool", _avgpool, _avgpool_vjp, _avgpool_vjp_scratch, frozenset(),
                   "AveragePool", count_include_pad=0)

OPS = [CONV, CONV_BIAS, MAXPOOL, AVGPOOL]
