"""ONNX ops that are linear maps of one per-example value, imported as a constant matrix.

Resize, GridSample with a constant grid, average pooling, convolutions with constant weights,
padding, DepthToSpace, DFT and the like compute, per example, ``y = M x + c`` for a matrix
``M`` their constant inputs and attributes fix. The matrix is read off onnx's own reference
implementation (the definition of the op), one basis vector of the first example at a time;
the other examples must come out unchanged and a random batch must give ``M x + c`` for
every example, or the op is refused as not such a map. Only ops listed here are tried, each
with a guard that its attributes leave the batch axis alone: an op that mixes examples can
look linear in a batch of one. The equations read ``y = M₁ flatten(X) + c₁``: right, but a
table rather than a formula, so the sizes are bounded (``MAX_ENTRIES``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from nndk.onnx import expr as ex
from nndk.onnx.axes import reshaped
from nndk.onnx.graph import Importer
from nndk.onnx.ops import flat_expr
from nndk.onnx.values import Const, Dyn, Unsupported, Value

Args = list[Value | None]
MAX_INPUT = 1024  # entries per example, each read through the reference (~5 ms a call)
MAX_ENTRIES = 1 << 22  # entries of M


def _ints(arg: Value | None) -> list[int] | None:
    if arg is None:
        return None
    if not isinstance(arg, Const):
        raise Unsupported("a shape, size or index computed per example")
    return [int(v) for v in np.asarray(arg.value).reshape(-1)]


def _floats(arg: Value | None) -> list[float] | None:
    if arg is None or (isinstance(arg, Const) and np.asarray(arg.value).size == 0):
        return None
    if not isinstance(arg, Const):
        raise Unsupported("scales computed per example")
    return [float(v) for v in np.asarray(arg.value).reshape(-1)]


def _resize(n: int, rank: int, args: Args, at: dict[str, Any]) -> bool:
    """The batch axis is neither resized nor cropped."""
    axes = [a % rank for a in at.get("axes", range(rank))]
    if 0 not in axes:
        return True
    first = axes.index(0)
    if len(args) == 2:  # Resize-10 and Upsample-9: (X, scales)
        scales, sizes, roi = _floats(args[1]) or [], None, None
    else:
        scales = _floats(args[2] if len(args) > 2 else None) or list(at.get("scales", []))
        sizes = _ints(args[3] if len(args) > 3 else None)
        roi = _floats(args[1] if len(args) > 1 else None)
    if roi and at.get("coordinate_transformation_mode") == "tf_crop_and_resize" and \
            (roi[first], roi[first + len(axes)]) != (0.0, 1.0):
        return False
    if sizes:
        return sizes[first] == n and at.get("keep_aspect_ratio_policy", "stretch") == "stretch"
    return bool(scales) and scales[first] == 1.0


def _pad(n: int, rank: int, args: Args, at: dict[str, Any]) -> bool:
    pads = _ints(args[1] if len(args) > 1 else None) or list(at.get("pads", []))
    axes = _ints(args[3] if len(args) > 3 else None) or list(range(rank))
    axes = [a % rank for a in axes]
    return 0 not in axes or (pads[axes.index(0)] == 0 and pads[axes.index(0) + len(axes)] == 0)


def _crop(n: int, rank: int, args: Args, at: dict[str, Any]) -> bool:
    shape = _ints(args[1]) or []
    axes = [a % rank for a in at.get("axes", range(rank))]
    return 0 not in axes or shape[axes.index(0)] == n


def _axis_not_batch(key: str, default: int) -> Callable[..., bool]:
    def guard(n: int, rank: int, args: Args, at: dict[str, Any]) -> bool:
        return int(at.get(key, default)) % rank != 0
    return guard


def _dft(n: int, rank: int, args: Args, at: dict[str, Any]) -> bool:
    """Forward only: an inverse transform's float32 matrix misses ONNX's own tolerance
    (atol 1e-7) on the near-zero imaginary parts it should cancel."""
    axis = _ints(args[2] if len(args) > 2 else None)
    axis_ = axis[0] if axis else int(at.get("axis", 1 if len(args) <= 2 else -2))
    return axis_ % rank != 0 and (len(args) < 2 or args[1] is None) and \
        not int(at.get("inverse", 0))


def _expand(n: int, rank: int, args: Args, at: dict[str, Any]) -> bool:
    """The batch axis stays first and is not broadcast from one example to many."""
    shape = _ints(args[1]) or []
    return len(shape) <= rank and (len(shape) < rank or shape[0] in (1, n))


def _einsum(n: int, rank: int, args: Args, at: dict[str, Any]) -> bool:
    """One operand whose first index (or ``...``) leads the output too."""
    terms, _, out = str(at.get("equation", "")).replace(" ", "").partition("->")
    if "," in terms or not out:
        return False
    lead = "..." if terms.startswith("...") else terms[:1]
    return bool(lead) and out.startswith(lead) and (lead == "..." or terms.count(lead) == 1)


def _scatter(n: int, rank: int, args: Args, at: dict[str, Any]) -> bool:
    """Along an axis of each example, replacing, adding or multiplying (max and min are not
    linear, and a random check may not show it)."""
    return int(at.get("axis", 0)) % rank != 0 and at.get("reduction", "none") in (
        "none", "add", "mul")


def _transpose(n: int, rank: int, args: Args, at: dict[str, Any]) -> bool:
    return [int(p) for p in at.get("perm", [rank - 1])][0] == 0


def _always(n: int, rank: int, args: Args, at: dict[str, Any]) -> bool:
    return True


#: op type → a guard: True when the attributes and constant inputs leave the batch alone.
GUARDS: dict[str, Callable[[int, int, Args, dict[str, Any]], bool]] = {
    "Resize": _resize, "Upsample": _resize, "GridSample": _always,
    "AveragePool": _always, "GlobalAveragePool": _always, "Conv": _always,
    "ConvTranspose": _always, "Col2Im": _always, "SpaceToDepth": _always,
    "DepthToSpace": _always, "Pad": _pad, "CenterCropPad": _crop,
    "DFT": _dft, "STFT": _always, "AffineGrid": _always,
    "Compress": _axis_not_batch("axis", 0), "Gather": _axis_not_batch("axis", 0),
    "GatherElements": _axis_not_batch("axis", 0), "Scatter": _scatter,
    "ScatterElements": _scatter, "Expand": _expand, "Einsum": _einsum,
    "Transpose": _transpose,  # when permute cannot tell axes of equal sizes apart
}


def _evaluate(imp: Importer, node: Any, args: Args, where: int, x: np.ndarray) -> np.ndarray:
    from onnx.reference import ReferenceEvaluator

    feeds = {name: (x if i == where else np.asarray(a.value))  # type: ignore[union-attr]
             for i, (name, a) in enumerate(zip(node.input, args, strict=True)) if name}
    try:
        outs = ReferenceEvaluator(node, opsets={"": imp.opset}).run(None, feeds)
        out = outs[0] if isinstance(outs, list) else next(iter(outs.values()))
    except Exception as err:  # the reference raises many types; all mean "cannot evaluate"
        raise Unsupported(f"{node.op_type} could not be evaluated on its inputs "
                          f"({type(err).__name__})") from None
    return np.asarray(out, dtype=np.float64)


def linear(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    dyns = [i for i, a in enumerate(args) if isinstance(a, Dyn)]
    if len(dyns) != 1 or any(a is not None and not isinstance(a, Dyn | Const) for a in args):
        raise Unsupported(f"{node.op_type} of more than one per-example value")
    where = dyns[0]
    x = args[where]
    assert isinstance(x, Dyn)
    n = imp.lead_sizes[0] if imp.lead == 1 and imp.lead_sizes else None
    if n is None:
        raise Unsupported(f"{node.op_type} in a graph whose batch size is not fixed")
    if not GUARDS[node.op_type](n, 1 + len(x.shape), args, at):
        raise Unsupported(f"{node.op_type} whose attributes resize, pad or read along the "
                          "batch axis, or make it other than a linear map")
    if x.size > MAX_INPUT:
        raise Unsupported(f"{node.op_type} of {x.size} entries per example as a matrix "
                          f"(at most {MAX_INPUT})")
    dtype = np.float64
    zero = np.zeros((n, *x.shape), dtype)
    base = _evaluate(imp, node, args, where, zero)
    if base.shape[0] != n or np.any(base != base[:1]):
        raise Unsupported(f"{node.op_type} that changes the batch axis")
    out_size = base[0].size
    if out_size * x.size > MAX_ENTRIES:
        raise Unsupported(f"{node.op_type} as a {out_size} × {x.size} matrix (at most "
                          f"{MAX_ENTRIES} entries)")
    m = np.empty((out_size, x.size))
    for i in range(x.size):
        unit = zero.copy()
        unit.reshape(n, -1)[0, i] = 1.0
        got = _evaluate(imp, node, args, where, unit)
        if got.shape != base.shape or np.any(got[1:] != base[1:]):
            raise Unsupported(f"{node.op_type} that mixes examples")
        m[:, i] = (got[0] - base[0]).reshape(-1)
    _check(imp, node, args, where, m, base, x.shape, dtype)
    expr: ex.Expr = ex.Bin("·", ex.Name(imp.weight(m, "M")), _operand(imp, x))
    if np.any(base[0] != 0):
        expr = ex.add(expr, ex.Name(imp.weight(base[0].reshape(-1), "c")))
    return [reshaped(imp, Dyn(expr, (out_size,), False), base.shape[1:])]


def _operand(imp: Importer, x: Dyn) -> ex.Expr:
    flat = flat_expr(x)
    return flat if isinstance(flat, ex.Name) else imp.define(Dyn(flat, x.shape, True)).expr


def _check(imp: Importer, node: Any, args: Args, where: int, m: np.ndarray, base: np.ndarray,
           shape: tuple[int, ...], dtype: Any) -> None:
    """A random batch must give M x + c for every example: linear, and the same per example."""
    rng = np.random.default_rng(0)
    sample = rng.standard_normal((base.shape[0], *shape)).astype(dtype)
    got = _evaluate(imp, node, args, where, sample).reshape(base.shape[0], -1)
    want = sample.reshape(base.shape[0], -1) @ m.T + base.reshape(base.shape[0], -1)
    if got.shape != want.shape or not np.allclose(got, want, rtol=1e-5, atol=1e-6):
        raise Unsupported(f"{node.op_type} with these attributes is not a linear map of its "
                          "input (or not the same one for every example)")


RULES = {op: linear for op in GUARDS}


def _windows(imp: Importer, node: Any, args: Args, x: Dyn, copies: int = 1
             ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Which input entries each output entry of a pooling reads (0/1, from the reference on
    basis vectors), and the reference's output on a random batch for the check."""
    n = imp.lead_sizes[0] if imp.lead == 1 and imp.lead_sizes else None
    if n is None or len(node.output) > 1 and any(node.output[1:]):
        raise Unsupported(f"{node.op_type} with indices, or in a graph whose batch size is "
                          "not fixed")
    if x.size > MAX_INPUT:
        raise Unsupported(f"{node.op_type} of {x.size} entries per example as matrices "
                          f"(at most {MAX_INPUT})")
    zero = np.zeros((n, *x.shape))
    out_size = _evaluate(imp, node, args, 0, zero)[0].size
    if copies * out_size * x.size > MAX_ENTRIES:
        raise Unsupported(f"{node.op_type} as {copies} × {out_size} × {x.size} matrix entries "
                          f"(at most {MAX_ENTRIES})")
    rows = []
    for i in range(x.size):
        unit = zero.copy()
        unit.reshape(n, -1)[:, i] = 1.0
        got = _evaluate(imp, node, args, 0, unit).reshape(n, -1)
        if np.any(got != got[:1]) or not np.isin(got, (0.0, 1.0)).all():
            raise Unsupported(f"{node.op_type} that is not a pooling of each example")
        rows.append(got[0])
    member = np.stack(rows, axis=1)  # (out, in)
    if member.size > MAX_ENTRIES or not member.any(axis=1).all():
        raise Unsupported(f"{node.op_type} with windows that read nothing, or too large")
    sample = np.random.default_rng(0).standard_normal((n, *x.shape))
    return member, (sample, _evaluate(imp, node, args, 0, sample))


def _max_pool(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    """max over each window: max(S₁ v, S₂ v, …), S_k picking the k-th entry of every window
    (a window with fewer entries repeats one: max does not mind)."""
    x = args[0]
    if not isinstance(x, Dyn) or any(isinstance(a, Dyn) for a in args[1:]):
        raise Unsupported("MaxPool of anything but one per-example value")
    kernel = int(np.prod(at.get("kernel_shape", [1])))  # at least the widest window
    member, (sample, want) = _windows(imp, node, args, x, copies=kernel)
    width = int(member.sum(axis=1).max())
    if width * member.size > MAX_ENTRIES:
        raise Unsupported(f"MaxPool as {width} matrices of {member.shape[0]} × "
                          f"{member.shape[1]} (at most {MAX_ENTRIES} entries in all)")
    picks = []
    for k in range(width):
        s = np.zeros_like(member)
        for o, row in enumerate(member):
            idx = np.flatnonzero(row)
            s[o, idx[min(k, len(idx) - 1)]] = 1.0
        picks.append(s)
    flat = sample.reshape(len(sample), -1)
    if not np.allclose(np.max([flat @ s.T for s in picks], axis=0),
                       want.reshape(len(sample), -1)):
        raise Unsupported("MaxPool that is not the largest entry of each window")
    v = _operand(imp, x)
    out: ex.Expr = ex.Bin("·", ex.Name(imp.weight(picks[0], "S")), v)
    for s in picks[1:]:
        out = ex.Call("max", out, more=(ex.Bin("·", ex.Name(imp.weight(s, "S")), v),))
    return [reshaped(imp, Dyn(out, (member.shape[0],), False), want.shape[1:])]


def _lp_pool(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    """(W |v|^p)^(1/p): the sum of |x|^p over each window, W its 0/1 membership."""
    x = args[0]
    if not isinstance(x, Dyn):
        raise Unsupported("LpPool of anything but a per-example value")
    p = float(at.get("p", 2))
    member, (sample, want) = _windows(imp, node, args, x)
    flat = np.abs(sample.reshape(len(sample), -1)) ** p
    if not np.allclose((flat @ member.T) ** (1 / p), want.reshape(len(sample), -1)):
        raise Unsupported("LpPool that is not the p-norm of each window")
    powered = ex.Pow(ex.Call("abs", _operand(imp, x)), p)
    out = ex.Pow(ex.Bin("·", ex.Name(imp.weight(member, "W")), powered), 1 / p)
    return [reshaped(imp, Dyn(out, (member.shape[0],), False), want.shape[1:])]


RULES.update({"MaxPool": _max_pool, "LpPool": _lp_pool})
