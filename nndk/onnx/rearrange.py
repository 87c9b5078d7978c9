"""Entries moved across per-example axes and the batch axis: followed by a probe, then written.

Exporters move a value's entries around with Transpose, Reshape, Gather, Slice and Split over
*every* axis: PyTorch's multi-head attention turns ``[N, T, E]`` into ``[T, N, E]``, then
``[T, N·H, d]`` (the batch merged with the heads), ``[N·H, T, d]``, and finally ``[N, H, T, d]``,
where the batch leads again. Such a value is kept as a :class:`~nndk.onnx.values.Lazy`: a
*probe* (an integer tensor of the ONNX shape whose entries say which example and which entry
of a named per-example value sit there) that each of those ops rearranges as it would the
numbers (onnx's reference runs it). When another op reads the value:

- with the batch leading again, the per-example entries are written from the named value by
  the cheapest exact form that fits: itself or a reshape (``R = reshape(X)``), ``Xᵀ``,
  ``permute``, a run of rows ``X[a:b]``, or a product with a 0/1 weight that picks columns
  per head (``X E``, E of shape (H, E, d)), rows (``S X``), or merges heads side by side
  (``Σ(Y F; axis=0)``); each output entry is one product with 1, so every form is exact;
- with the batch elsewhere (``[T, N, E]``, ``[T·N, E]``), an op that works entry by entry or
  along the last axis (a Linear, a softmax, a layer norm) is the same op on each example's
  entries in their own order, so it is written over those and the result keeps the layout.

A graph input that only Gemm's ``transA`` reads (``[K, N]``, an example per column) starts as
such a value: the model takes its transpose.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np

from nndk.onnx import expr as ex
from nndk.onnx.axes import reshaped
from nndk.onnx.graph import Importer
from nndk.onnx.values import WHAT, Const, Dims, Dyn, Lazy, Unsupported, Value
from nnre import budget

Args = list[Value | None]
#: Ops that only move entries: run on the probe.
LAYOUT = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Gather",
          "Slice", "Split"}
#: Layout ops that name no size or index along an axis (so not the batch's either): the
#: only ones followed without the graph's own batch size.
SIZELESS = {"Transpose", "Squeeze", "Unsqueeze", "Identity"}
#: Ops entry by entry: the same over each example's entries in any order.
ENTRYWISE = {"Abs", "Add", "Sub", "Mul", "Div", "Neg", "Relu", "Sigmoid", "Tanh", "Exp", "Log",
             "Sqrt", "Erf", "Gelu", "Pow", "LeakyRelu", "Elu", "Softplus", "Where", "Max", "Min",
             "Clip", "Reciprocal", "Dropout", "HardSigmoid", "HardSwish", "Mish", "Sin", "Cos"}
#: Ops along one axis (``axis``, or the axes from it on): written per example when that
#: axis is not the one holding the batch.
ALONG = {"Softmax", "LogSoftmax", "LayerNormalization"}
MAX_MATRIX = 1 << 22  # entries of the last resort, a 0/1 matrix over every entry


# -- starting and moving -----------------------------------------------------------------
def probe_batch(imp: Importer) -> tuple[int, bool]:
    """Examples in a probe, and whether that is the graph's own batch size (a fixed batch;
    otherwise 2, and ops whose sizes or indices may name examples are refused). A graph
    exported with a batch of 1 computes one example: what it does to that one is the model,
    wherever the batch axis goes."""
    size = imp.lead_sizes[0] if imp.lead_sizes else None
    return (size, True) if size is not None else (2, False)


def _check_size(imp: Importer, entries: int) -> None:
    if 8 * entries > budget.limit():
        raise Unsupported(f"rearranging {entries} entries (more than the memory budget)")


def start(imp: Importer, x: Dyn, reason: str, axis: int = 0) -> Lazy:
    """A per-example value as a probe, its batch axis at ONNX ``axis`` (0: first)."""
    batch, exact = probe_batch(imp)
    _check_size(imp, batch * x.size)
    x = _base(imp, x)
    probe = np.arange(batch * x.size, dtype=np.int64).reshape(batch, *x.shape)
    return Lazy(x, np.moveaxis(probe, 0, axis), batch, exact, reason)


def _layout(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    """A layout op over a Lazy value: the same op over its probe (onnx's reference). Without
    the graph's own batch size, it runs over probes of 2 and of 3 examples too, which must
    agree on where each example's entries go: a size or index that names examples (a
    literal batch size, a slice of the batch axis) does not do the same to both."""
    x = args[0]
    assert isinstance(x, Lazy)
    unfixed = Unsupported(f"{node.op_type} of {WHAT['Lazy']} ({x.reason}) in a graph whose "
                          "batch size is not fixed, with sizes or indices that name examples "
                          "(export with a fixed batch size)")
    try:
        outs = _run(imp, node, x.probe, _consts(node, args, x.batch))
    except Unsupported:
        if x.exact:
            raise
        raise unfixed from None
    done = [Lazy(x.base, o, x.batch, x.exact, x.reason) for o in outs]
    if x.exact or node.op_type in SIZELESS:
        return list(done)
    place = placement(x)
    try:
        more = _run(imp, node, lay(natural(x, place), x.base.size, place, 3),
                    _consts(node, args, 3))
    except Unsupported:
        raise unfixed from None
    if not all(_same_layout(a, Lazy(x.base, b, 3, False)) for a, b in
               zip(done, more, strict=True)):
        raise unfixed
    return list(done)


def _consts(node: Any, args: Args, batch: int) -> dict[str, np.ndarray]:
    """The op's other inputs: constants, or a shape whose unknown entry is the batch size."""
    out: dict[str, np.ndarray] = {}
    for name, arg in zip(node.input[1:], args[1:], strict=True):
        if isinstance(arg, Dims):
            out[name] = np.array([batch if d is None else d for d in arg.dims], np.int64)
        elif isinstance(arg, Const):
            out[name] = np.asarray(arg.value)
        elif arg is not None:
            raise Unsupported(f"{node.op_type} of {WHAT['Lazy']} at places that vary per "
                              "example")
    return out


def _run(imp: Importer, node: Any, probe: np.ndarray, consts: dict[str, np.ndarray]
         ) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    try:
        outs = ReferenceEvaluator(node, opsets={"": imp.opset}).run(
            None, {node.input[0]: probe, **consts})
    except Exception as err:  # the reference raises many types; all mean "not this way"
        raise Unsupported(f"{node.op_type} of {WHAT['Lazy']} could not be followed "
                          f"({type(err).__name__})") from None
    if any(np.asarray(o).size == 0 for o in outs):
        raise Unsupported(f"{node.op_type} that leaves no entries")
    return [np.asarray(o, np.int64) for o in outs]


def _same_layout(a: Lazy, b: Lazy) -> bool:
    """Two probes of different batch sizes put the examples' entries alike."""
    try:
        place = placement(a)
        return placement(b) == place and np.array_equal(natural(a, place), natural(b, place))
    except Unsupported:
        return False


def leading(x: Lazy) -> bool:
    """The batch is the first axis again, alone: the value is per example as ONNX lays out."""
    p = x.probe
    if p.ndim == 0 or p.shape[0] != x.batch:
        return False
    size = x.base.size
    first = p[0]
    return bool(np.all((first >= 0) & (first < size))) and all(
        np.array_equal(p[n], first + n * size) for n in range(1, x.batch))


# -- where the batch is ------------------------------------------------------------------
def placement(x: Lazy) -> tuple[int, int, bool]:
    """(ONNX axis holding the batch, entries of other values merged with it, whether the
    batch is the inner factor of that axis: ``[T·N]`` rather than ``[N·H]``)."""
    n = x.probe // x.base.size
    for j in range(x.probe.ndim):
        along = np.moveaxis(n, j, 0).reshape(n.shape[j], -1)
        if along.size == 0 or not np.all(along == along[:, :1]):
            continue
        seq, size = along[:, 0], n.shape[j]
        if size % x.batch:
            break
        m = size // x.batch
        if np.array_equal(seq, np.repeat(np.arange(x.batch), m)):
            return j, m, False
        if np.array_equal(seq, np.tile(np.arange(x.batch), m)):
            return j, m, True
        break
    raise Unsupported(f"{WHAT['Lazy']} ({x.reason}) whose examples are spread over several "
                      "axes")


def natural(x: Lazy, place: tuple[int, int, bool]) -> np.ndarray:
    """Each example's entries (indices into the base) in the order ONNX holds them, the batch
    taken out of its axis: ``[T, N, E]`` → (T, E), ``[T, N·H, d]`` → (T, H, d)."""
    j, m, inner = place
    size, p = x.base.size, x.probe
    picks = [np.take(p, np.arange(n, p.shape[j], x.batch) if inner else
                     np.arange(n * m, (n + 1) * m), axis=j) for n in range(x.batch)]
    first = picks[0]
    if not (np.all((first >= 0) & (first < size)) and all(
            np.array_equal(q, first + n * size) for n, q in enumerate(picks))):
        raise Unsupported(f"{WHAT['Lazy']} ({x.reason}) whose examples are laid out unlike "
                          "each other")
    return np.squeeze(first, axis=j) if m == 1 else first


def relaid(imp: Importer, x: Lazy, value: Dyn, place: tuple[int, int, bool]) -> Lazy:
    """``value`` (per example, in natural order) laid out as ``place`` says."""
    value = _base(imp, value)
    index = np.arange(value.size, dtype=np.int64).reshape(value.shape)
    return Lazy(value, lay(index, value.size, place, x.batch), x.batch, x.exact, x.reason)


def lay(index: np.ndarray, size: int, place: tuple[int, int, bool], batch: int
        ) -> np.ndarray:
    """The probe of ``batch`` examples whose entries (``index`` into ``size`` each, in
    natural order) are laid out as ``place`` says."""
    j, m, inner = place
    parts = [index + n * size for n in range(batch)]
    if m == 1:
        probe = np.stack(parts, axis=j)
    elif not inner:
        probe = np.concatenate(parts, axis=j)
    else:
        both = np.stack(parts, axis=j + 1)
        probe = both.reshape(*both.shape[:j], -1, *both.shape[j + 2:])
    return probe


# -- writing the entries -----------------------------------------------------------------
Build = Callable[[], Dyn]


def written(imp: Importer, x: Lazy) -> Dyn:
    """The value of a Lazy whose batch leads, as an equation expression."""
    if not leading(x):
        raise Unsupported(f"{x.reason}, and no later node puts each example's entries back "
                          "together behind the first axis")
    return build(imp, x.base, x.probe[0] % x.base.size)


def build(imp: Importer, base: Dyn, index: np.ndarray) -> Dyn:
    """A per-example value of ``index.shape`` whose entries are ``base``'s at ``index``
    (row-major): the cheapest form that fits, written once per base and index."""
    digest = hashlib.sha256(np.ascontiguousarray(index).tobytes()).hexdigest()
    key = (ex.show(base.expr), base.shape, index.shape, digest)
    if key in imp.made:
        return imp.made[key]
    shape = tuple(int(d) for d in index.shape)
    options = [o for f in _FORMS for o in [f(imp, base, index, shape)] if o is not None]
    if not options:
        raise Unsupported(f"a rearrangement of per-example entries {base.shape} → {shape} "
                          "that the equations have no form for (a transpose of axes of equal "
                          "sizes, neither the last two nor heads side by side)")
    cost, make = min(options, key=lambda o: o[0])
    _check_size(imp, cost)  # the 0/1 weight, as float64 at most
    out = make()
    imp.made[key] = out
    return out


def _base(imp: Importer, x: Dyn) -> Dyn:
    """The value named (it is read once per part taken from it, so it is computed once)."""
    return x if isinstance(x.expr, ex.Name) else imp.define(x)


def _arange(shape: tuple[int, ...]) -> np.ndarray:
    return np.arange(int(np.prod(shape, dtype=np.int64)), dtype=np.int64).reshape(shape)


def _view(imp: Importer, base: Dyn, shape: tuple[int, ...]) -> ex.Expr:
    """``base``'s entries in ``shape`` (row-major), named: itself, the value it was reshaped
    from, or a declared reshape."""
    if base.shape != shape and isinstance(base.expr, ex.Name) and \
            (base.expr.text, shape) in imp.views:
        return _named(imp, imp.views[(base.expr.text, shape)])
    return _named(imp, reshaped(imp, base, shape))


def _named(imp: Importer, x: Dyn) -> ex.Expr:
    return x.expr if isinstance(x.expr, ex.Name) else imp.define(x).expr


def _weight(imp: Importer, value: np.ndarray, stem: str) -> ex.Expr:
    key = ("0/1", stem, value.shape, hashlib.sha256(value.tobytes()).hexdigest())
    return ex.Name(imp.weight(value, stem, key))


def _shaped(imp: Importer, e: ex.Expr, have: tuple[int, ...], shape: tuple[int, ...]) -> Dyn:
    return reshaped(imp, Dyn(e, have, False), shape)


def _same(imp: Importer, base: Dyn, index: np.ndarray, shape: tuple[int, ...]
          ) -> tuple[int, Build] | None:
    if index.size != base.size or not np.array_equal(index, _arange(shape)):
        return None
    return 0, lambda: reshaped(imp, base, shape)


def _swapped(imp: Importer, base: Dyn, index: np.ndarray, shape: tuple[int, ...]
             ) -> tuple[int, Build] | None:
    """``Xᵀ`` (the last two axes swapped) of base's entries in some shape."""
    if len(shape) < 2 or index.size != base.size:
        return None
    inner = (*shape[:-2], shape[-1], shape[-2])
    if not np.array_equal(index, _arange(inner).swapaxes(-1, -2)):
        return None
    return 0, lambda: Dyn(ex.Tr(_view(imp, base, inner)), shape, False)


def _permuted(imp: Importer, base: Dyn, index: np.ndarray, shape: tuple[int, ...]
              ) -> tuple[int, Build] | None:
    """``permute(X)``: base's own axes reordered, each found by its size (all distinct)."""
    have = base.shape
    if len(have) != len(shape) or len(set(have)) != len(have) or sorted(have) != sorted(shape) \
            or not base.tensor:
        return None
    order = [have.index(d) for d in shape]
    if not np.array_equal(index, _arange(have).transpose(order)):
        return None

    def make() -> Dyn:
        target = ex.Name(imp.names.numbered("p"))
        imp.declarations.append(f"{ex.show(target)} ∈ ℝ^({'×'.join(map(str, shape))})")
        imp.equations.append((target, ex.Call("permute", _named(imp, base))))
        return Dyn(target, shape, False)
    return 0, make


def _columns(imp: Importer, base: Dyn, index: np.ndarray, shape: tuple[int, ...]
             ) -> tuple[int, Build] | None:
    """Rows kept, columns picked per leading index (heads split, a part of a packed q, k, v):
    ``X E`` with base as (A, K) and E (…, K, C) of 0s and 1s."""
    if len(shape) < 2 or base.size % shape[-2]:
        return None
    rows, cols = shape[-2], shape[-1]
    lead = int(np.prod(shape[:-2], dtype=np.int64))
    k = base.size // rows
    idx = index.reshape(lead, rows, cols)
    col = idx % k
    if not (np.array_equal(idx // k, np.broadcast_to(np.arange(rows)[None, :, None], idx.shape))
            and np.all(col == col[:, :1, :])):
        return None
    pick = np.zeros((lead, k, cols))
    for h in range(lead):
        pick[h, col[h, 0], np.arange(cols)] = 1.0

    def make() -> Dyn:
        w = _weight(imp, pick[0] if lead == 1 else pick, "E")
        product = ex.Bin("·", _view(imp, base, (rows, k)), w)
        have = (rows, cols) if lead == 1 else (lead, rows, cols)
        return _shaped(imp, product, have, shape)
    return lead * k * cols, make


def _rows(imp: Importer, base: Dyn, index: np.ndarray, shape: tuple[int, ...]
          ) -> tuple[int, Build] | None:
    """Columns kept, rows picked per leading index: a run ``X[a:b]``, or ``S X`` with S of
    0s and 1s."""
    if len(shape) < 2 or base.size % shape[-1]:
        return None
    rows, cols = shape[-2], shape[-1]
    lead = int(np.prod(shape[:-2], dtype=np.int64))
    r = base.size // cols
    idx = index.reshape(lead, rows, cols)
    row = idx // cols
    if not (np.array_equal(idx % cols, np.broadcast_to(np.arange(cols), idx.shape))
            and np.all(row == row[:, :, :1])):
        return None
    picked = row[:, :, 0]
    if lead == 1 and np.array_equal(picked[0], np.arange(picked[0, 0], picked[0, 0] + rows)):
        a = int(picked[0, 0])
        return 1, lambda: _shaped(imp, ex.Part(_view(imp, base, (r, cols)), a, a + rows),
                                  (rows, cols), shape)
    pick = np.zeros((lead, rows, r))
    for h in range(lead):
        pick[h, np.arange(rows), picked[h]] = 1.0

    def make() -> Dyn:
        w = _weight(imp, pick[0] if lead == 1 else pick, "S")
        have = (rows, cols) if lead == 1 else (lead, rows, cols)
        return _shaped(imp, ex.Bin("·", w, _view(imp, base, (r, cols))), have, shape)
    return lead * rows * r, make


def _merged(imp: Importer, base: Dyn, index: np.ndarray, shape: tuple[int, ...]
            ) -> tuple[int, Build] | None:
    """Heads put side by side (A, K) from base as (B, A, C): ``Σ(Y F; axis=0)`` with F of
    shape (B, C, K), one 1 per column; the smallest F that fits."""
    if len(shape) != 2 or base.size % shape[0]:
        return None
    rows, width = shape
    per = base.size // rows
    best: tuple[int, Build] | None = None
    for c in (d for d in range(1, per + 1) if per % d == 0):
        heads = per // c
        a, h, k = (index // c) % rows, index // (rows * c), index % c
        if not (np.array_equal(a, np.broadcast_to(np.arange(rows)[:, None], shape))
                and np.all(h == h[:1]) and np.all(k == k[:1])) or heads == 1:
            continue
        place = np.zeros((heads, c, width))
        place[h[0], k[0], np.arange(width)] = 1.0
        cost = heads * c * width
        if best is None or cost < best[0]:
            def make(place: np.ndarray = place, heads: int = heads, c: int = c) -> Dyn:
                w = _weight(imp, place, "F")
                total = ex.Call("Σ", ex.Bin("·", _view(imp, base, (heads, rows, c)), w),
                                (("axis", 0.0),))
                return _shaped(imp, total, (1, rows, width), shape)
            best = (cost, make)
    return best


def _transposed(form: Callable[..., tuple[int, Build] | None]) -> Callable[..., Any]:
    """A form for the value with its last two axes swapped, then ``ᵀ``."""
    def found(imp: Importer, base: Dyn, index: np.ndarray, shape: tuple[int, ...]
              ) -> tuple[int, Build] | None:
        if len(shape) < 2:
            return None
        other = (*shape[:-2], shape[-1], shape[-2])
        got = form(imp, base, np.ascontiguousarray(index.swapaxes(-1, -2)), other)
        if got is None:
            return None
        cost, make = got
        return cost, lambda: Dyn(ex.Tr(_named(imp, make())), shape, False)
    return found


def _matrix(imp: Importer, base: Dyn, index: np.ndarray, shape: tuple[int, ...]
            ) -> tuple[int, Build] | None:
    """The last resort: a 0/1 matrix over every entry, ``M flatten(X)``, if small enough."""
    if index.size * base.size > MAX_MATRIX:
        return None
    m = np.zeros((index.size, base.size))
    m[np.arange(index.size), index.reshape(-1)] = 1.0

    def make() -> Dyn:
        flat = ex.Call("flatten", base.expr) if base.tensor else base.expr
        out = Dyn(ex.Bin("·", _weight(imp, m, "M"), flat), (index.size,), False)
        return reshaped(imp, out, shape)
    return index.size * base.size + 1, make


_FORMS = (_same, _swapped, _permuted, _columns, _rows, _merged, _transposed(_columns),
          _transposed(_rows), _transposed(_merged), _matrix)
