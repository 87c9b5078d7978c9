"""Convolution and pooling over 1 or 2 spatial axes: conv (with a bias or not), maxpool, avgpool.

Each block is the whole definition of one primitive (see ``nnre.ops.base.Op``). At run time
x is per example, (rows, C, *spatial); a conv's weight W (O, C/groups, *kernel) and bias b
(O,) are constants. Attributes are tuples in ONNX's order (``pads``: every begin, then every
end), so export writes them as they are; equations give scalars (``conv(W, x; pad=1)``) that
``conv_attrs``/``pool_attrs`` widen. The forward is im2col and one batched product over
(rows, groups); gradients of x scatter the columns back with one strided ``+=`` per kernel
offset (a loop over the kernel, never over rows).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from nnre.ops.base import Array, Op, Shape

Ints = tuple[int, ...]
LEAD = (slice(None), slice(None))  # every row and channel: an index's first two places


# -- geometry: one place checks sizes and computes the output's ------------------------
def _whole(name: str, value: float, low: int) -> int:
    """An equation parameter (a number) as the whole number ≥ ``low`` an attribute needs."""
    if value != int(value) or int(value) < low:
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


def _windows(xp: Array, kernel: Ints, stride: Ints, dilation: Ints) -> Array:
    """A read-only view (rows, C, *out, *kernel) of a padded input: window entries in place."""
    r = len(kernel)
    out = [(xp.shape[2 + i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1
           for i in range(r)]
    steps = xp.strides[2:]
    return as_strided(xp, (*xp.shape[:2], *out, *kernel),
                      (*xp.strides[:2], *(steps[i] * stride[i] for i in range(r)),
                       *(steps[i] * dilation[i] for i in range(r))), writeable=False)


def _scatter(parts: Array, shape: Ints, pads: Ints, stride: Ints, dilation: Ints) -> Array:
    """col2im: per-window entries (rows, C, *kernel, *out) added back at their input place
    (rows, C, *spatial); entries that fell on padding are dropped."""
    r = len(stride)
    kernel, out = parts.shape[2:2 + r], parts.shape[2 + r:]
    padded = [n + pads[i] + pads[r + i] for i, n in enumerate(shape[2:])]
    grad = np.zeros((*shape[:2], *padded), parts.dtype)
    for offset in np.ndindex(*kernel):
        place = tuple(slice(k * dilation[i], k * dilation[i] + stride[i] * (out[i] - 1) + 1,
                            stride[i]) for i, k in enumerate(offset))
        grad[LEAD + place] += parts[LEAD + offset]
    inner = tuple(slice(pads[i], pads[i] + n) for i, n in enumerate(shape[2:]))
    return grad[LEAD + inner]


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


def _defaults(r: int, stride: Ints, pads: Ints, dilation: Ints) -> tuple[Ints, Ints, Ints]:
    return stride or (1,) * r, pads or (0,) * (2 * r), dilation or (1,) * r


def _columns(w: Array, x: Array, stride: Ints, pads: Ints, dilation: Ints, groups: int
             ) -> Array:
    """im2col: (rows, groups, C/groups · kernel, out positions), contiguous."""
    r = x.ndim - 2
    view = _windows(_pad(x, pads), w.shape[2:], stride, dilation)
    rows, channels, out = x.shape[0], x.shape[1], view.shape[2:2 + r]
    order = (0, 1, *range(2 + r, 2 + 2 * r), *range(2, 2 + r))  # (rows, C, *kernel, *out)
    cols = np.ascontiguousarray(view.transpose(order))
    return cols.reshape(rows, groups, channels // groups * math.prod(w.shape[2:]),
                        math.prod(out))


def _conv(w: Array, x: Array, *bias: Array, out: Array, stride: Ints = (), pads: Ints = (),
          dilation: Ints = (), groups: int = 1) -> Array:
    r = x.ndim - 2
    stride, pads, dilation = _defaults(r, stride, pads, dilation)
    cols = _columns(w, x, stride, pads, dilation, groups)
    filters = w.reshape(groups, w.shape[0] // groups, -1)
    flat = out.reshape(out.shape[0], groups, w.shape[0] // groups, -1)
    np.matmul(filters, cols, out=flat)  # one batched product over (rows, groups)
    if bias:
        out += bias[0].reshape(-1, *(1,) * r)
    return out


def _conv_vjp(g: Array, out: Array, args: list[Array], attrs: dict[str, Any], i: int
              ) -> Array:
    w, x = args[0], args[1]
    r, groups = x.ndim - 2, attrs.get("groups", 1)
    stride, pads, dilation = _defaults(r, attrs.get("stride", ()), attrs.get("pads", ()),
                                       attrs.get("dilation", ()))
    if i == 2:  # the bias: summed over rows and positions
        return np.add.reduce(g, axis=(0, *range(2, 2 + r)))
    rows, per = g.shape[0], w.shape[0] // groups
    gg = g.reshape(rows, groups, per, -1)  # (rows, groups, filters/group, positions)
    if i == 0:  # W: Σ over rows and positions of g ⊗ columns, as one product per group
        cols = _columns(w, x, stride, pads, dilation, groups)
        left = gg.transpose(1, 2, 0, 3).reshape(groups, per, -1)
        right = cols.transpose(1, 0, 3, 2).reshape(groups, -1, cols.shape[2])
        return np.matmul(left, right).reshape(w.shape)
    filters = w.reshape(groups, per, -1)
    parts = np.matmul(filters.transpose(0, 2, 1), gg)  # (rows, groups, C/g · kernel, pos)
    parts = parts.reshape(rows, x.shape[1], *w.shape[2:], *g.shape[2:])
    return _scatter(parts, x.shape, pads, stride, dilation)


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
        spellings=("conv",), arity=arity,
        params={"stride": 1, "pad": 0, "dilation": 1, "groups": 1}, param_attrs=conv_attrs,
        vjp=_conv_vjp, reads=frozenset({"args"}),
        onnx=_conv_onnx,
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


def _pool_geometry(x: Array, attrs: dict[str, Any]) -> tuple[Ints, Ints, Ints]:
    r, kernel = x.ndim - 2, tuple(attrs["kernel"])
    return kernel, tuple(attrs.get("stride") or kernel), tuple(attrs.get("pads") or
                                                               (0,) * (2 * r))


def _last(r: int) -> Ints:
    return tuple(range(-r, 0))


def _maxpool(x: Array, out: Array, **attrs: Any) -> Array:
    kernel, stride, pads = _pool_geometry(x, attrs)
    view = _windows(_pad(x, pads, -np.inf), kernel, stride, (1,) * len(kernel))
    return np.maximum.reduce(view, axis=_last(len(kernel)), out=out)


def _maxpool_vjp(g: Array, out: Array, args: list[Array], attrs: dict[str, Any], i: int
                 ) -> Array:
    """All of g to each window's first maximum (row-major order: PyTorch's choice)."""
    x = args[0]
    kernel, stride, pads = _pool_geometry(x, attrs)
    r = len(kernel)
    view = _windows(_pad(x, pads, -np.inf), kernel, stride, (1,) * r)
    first = np.argmax(view.reshape(*view.shape[:2 + r], -1), axis=-1)
    parts = np.zeros((*x.shape[:2], *kernel, *g.shape[2:]), g.dtype)
    for j, offset in enumerate(np.ndindex(*kernel)):
        np.copyto(parts[LEAD + offset], g, where=first == j)
    return _scatter(parts, x.shape, pads, stride, (1,) * r)


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
    view = _windows(_pad(x, pads), kernel, stride, (1,) * len(kernel))
    np.add.reduce(view, axis=_last(len(kernel)), out=out)
    return np.divide(out, _counts(x.shape, kernel, stride, pads, out.shape[2:]), out=out)


def _avgpool_vjp(g: Array, out: Array, args: list[Array], attrs: dict[str, Any], i: int
                 ) -> Array:
    """g / count to every entry of the window (the padding's share is dropped)."""
    x = args[0]
    kernel, stride, pads = _pool_geometry(x, attrs)
    share = g / _counts(x.shape, kernel, stride, pads, g.shape[2:])
    parts = np.broadcast_to(share.reshape(*share.shape[:2], *(1,) * len(kernel),
                                          *share.shape[2:]),
                            (*share.shape[:2], *kernel, *share.shape[2:]))
    return _scatter(parts, x.shape, pads, stride, (1,) * len(kernel))


def _pool_onnx(op_type: str, **extra: Any) -> Any:
    def rule(e: Any, ins: Any, args: list[str], out: str) -> None:
        attrs = dict(ins.attrs)
        r = len(e.prog.slots[ins.args[0]].shape) - 1
        kernel = tuple(attrs["kernel"])
        e.node(op_type, args, out, kernel_shape=list(kernel),
               strides=list(attrs.get("stride") or kernel),
               pads=list(attrs.get("pads") or (0,) * (2 * r)), **extra)
    return rule


def _pool_op(name: str, kernel: Any, vjp: Any, reads: frozenset[str], onnx: Any) -> Op:
    return Op(
        name, kernel, _pool_shape, attrs={"kernel": tuple, "stride": tuple, "pads": tuple},
        spellings=(name,), params={"size": 2, "stride": 0, "pad": 0}, param_attrs=pool_attrs,
        vjp=vjp, reads=reads, onnx=onnx,
    )


MAXPOOL = _pool_op("maxpool", _maxpool, _maxpool_vjp, frozenset({"args"}),
                   _pool_onnx("MaxPool"))
AVGPOOL = _pool_op("avgpool", _avgpool, _avgpool_vjp, frozenset(),
                   _pool_onnx("AveragePool", count_include_pad=0))

OPS = [CONV, CONV_BIAS, MAXPOOL, AVGPOOL]
