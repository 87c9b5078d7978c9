"""ONNX Attention (opset 23) as equations: ``softmax(s ⊙ Q Kᵀ + M) V`` per example.

Per example, 4-D inputs are stacks of heads ``(H, S, D)``, which the product handles head by
head. 3-D inputs ``(S, H·D)`` are split into heads and merged back with constant 0/1 weights
(``Q E`` with ``E`` of shape ``(H, H·D, D)``; the merge sums products with one nonzero term
each), so every step is exact. A past key or value is stacked before the new one with two
0/1 matrices (``A Kₚ + C K``); grouped heads repeat each key head (``[K[0:1]; K[0:1]; …]``).
The mask, causal and window terms become one constant bias when they do not vary per example
(−∞ as the dtype's most negative number: a bundle holds finite weights); a row with every
entry masked gives 0, as ONNX says, by a constant 0/1 factor after the softmax. A float mask
given per example is added as it is. Lengths per example (``nonpad_kv_seqlen``) are refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nndk.onnx import expr as ex
from nndk.onnx.axes import reshaped
from nndk.onnx.graph import Importer
from nndk.onnx.ops import _dyn, per_example
from nndk.onnx.values import Const, Dyn, Unsupported, Value

Args = list[Value | None]


def _elem_type(imp: Importer, name: str) -> int | None:
    """The ONNX element type the graph declares for a value, if it does."""
    graph = imp.proto.graph
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        if vi.name == name:
            return int(vi.type.tensor_type.elem_type)
    return None


def _name(imp: Importer, x: Dyn) -> ex.Expr:
    return imp.define(x).expr


def _heads(imp: Importer, x: Dyn, heads: int, what: str) -> Dyn:
    """(S, H·D) → (H, S, D): ``X E`` with E[h] picking columns h·D … (h+1)·D − 1."""
    seq, width = x.shape
    if heads <= 0 or width % heads:
        raise Unsupported(f"Attention with 3-D {what} of width {width} and {heads} heads")
    size = width // heads
    pick = np.zeros((heads, width, size), imp.dtype)
    for h in range(heads):
        pick[h, h * size:(h + 1) * size, :] = np.eye(size, dtype=imp.dtype)
    w = imp.weight(pick, "E", ("heads", heads, width))
    return Dyn(ex.Bin("·", _name(imp, x), ex.Name(w)), (heads, seq, size), False)


def _merge(imp: Importer, y: Dyn) -> Dyn:
    """(H, S, Dv) → (S, H·Dv): Σ over heads of ``Y F`` with F[h] placing columns h·Dv …."""
    heads, seq, size = y.shape
    place = np.zeros((heads, size, heads * size), imp.dtype)
    for h in range(heads):
        place[h, :, h * size:(h + 1) * size] = np.eye(size, dtype=imp.dtype)
    w = ex.Name(imp.weight(place, "F", ("merge", heads, size)))
    total = ex.Call("Σ", ex.Bin("·", _name(imp, y), w), (("axis", 0.0),))
    return reshaped(imp, Dyn(total, (1, seq, heads * size), False), (seq, heads * size))


def _after(imp: Importer, past: Dyn, new: Dyn) -> Dyn:
    """The past stacked before the new along the sequence: ``A Kₚ + C K`` (0/1 matrices)."""
    h, p, d = past.shape
    length = new.shape[1]
    first = np.eye(p + length, p, dtype=imp.dtype)
    then = np.eye(p + length, length, -p, dtype=imp.dtype)
    a = ex.Name(imp.weight(first, "A", ("past", p, length)))
    c = ex.Name(imp.weight(then, "C", ("new", p, length)))
    both = ex.add(ex.Bin("·", a, _name(imp, past)), ex.Bin("·", c, _name(imp, new)))
    return imp.define(Dyn(both, (h, p + length, d), False), stem="K")


def _repeat(imp: Importer, x: Dyn, times: int) -> Dyn:
    """Each head ``times`` times in a row (np.repeat along the heads)."""
    name = _name(imp, x)
    parts = tuple(ex.Part(name, h, h + 1) for h in range(x.shape[0]) for _ in range(times))
    return Dyn(ex.Stack(parts), (x.shape[0] * times, *x.shape[1:]), False)


def _constant_bias(imp: Importer, mask: Value | None, at: dict[str, Any], seq: int,
                   total: int, past: int, scores: Dyn) -> np.ndarray | None:
    """Mask, causal and window terms as one (…, S, L) array of 0 and −∞ (and mask values),
    or None when nothing is masked."""
    bias = np.zeros((seq, total))
    if isinstance(mask, Const):
        value = np.asarray(mask.value)
        if value.dtype == np.bool_:
            value = np.where(value, 0.0, -np.inf)
        pad = total - value.shape[-1]
        if pad < 0:
            raise Unsupported("Attention with a mask longer than the keys")
        if pad:
            widths = [(0, 0)] * (value.ndim - 1) + [(0, pad)]
            value = np.pad(value.astype(np.float64), widths, constant_values=-np.inf)
        bias = bias + per_example(imp, Const(value), scores, spread=False)
    i, j = np.arange(seq)[:, None] + past, np.arange(total)[None, :]
    if int(at.get("is_causal", 0)):
        bias = bias + np.where(j <= i, 0.0, -np.inf)
    left, right = int(at.get("left_window_size", -1)), int(at.get("right_window_size", -1))
    if left >= 0:
        bias = bias + np.where(i - j <= left, 0.0, -np.inf)
    if right >= 0:
        bias = bias + np.where(j - i <= right, 0.0, -np.inf)
    return None if not np.any(bias) else bias


def _inputs(imp: Importer, args: Args, at: dict[str, Any]) -> tuple[Dyn, Dyn, Dyn]:
    q, k, v = (_dyn(a, f"{w} of Attention") for a, w in zip(args[:3], "QKV", strict=True))
    if not all(x.tensor for x in (q, k, v)) or len({len(x.shape) for x in (q, k, v)}) != 1 \
            or len(q.shape) not in (2, 3):
        raise Unsupported("Attention of inputs other than per-example (S, H·D) matrices or "
                          "(H, S, D) stacks of heads")
    if len(q.shape) == 2:
        hq, hk = int(at.get("q_num_heads", 0)), int(at.get("kv_num_heads", 0))
        q, k, v = _heads(imp, q, hq, "Q"), _heads(imp, k, hk, "K"), _heads(imp, v, hk, "V")
    if k.shape[2] != q.shape[2] or k.shape[:2] != v.shape[:2] or q.shape[0] % k.shape[0]:
        raise Unsupported(f"Attention of heads that do not fit: Q {q.shape}, K {k.shape}, "
                          f"V {v.shape}")
    return q, k, v


def attention(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    mask, past_k, past_v, lengths = (args[i] if len(args) > i else None for i in (3, 4, 5, 6))
    if lengths is not None:
        raise Unsupported("Attention with nonpad_kv_seqlen (key lengths that differ between "
                          "examples)")
    q, k, v = _inputs(imp, args, at)
    past = 0
    if past_k is not None or past_v is not None:
        pk, pv = _dyn(past_k, "past_key of Attention"), _dyn(past_v, "past_value of Attention")
        if len(pk.shape) != 3 or pk.shape[::2] != k.shape[::2] or pv.shape[::2] != v.shape[::2]:
            raise Unsupported("Attention with a past that does not fit the keys")
        past = pk.shape[1]
        k, v = _after(imp, pk, k), _after(imp, pv, v)
    present = (k, v)
    if q.shape[0] != k.shape[0]:
        k, v = _repeat(imp, k, q.shape[0] // k.shape[0]), _repeat(imp, v, q.shape[0] // k.shape[0])
    heads, seq, size = q.shape
    total = k.shape[1]
    scale = float(at["scale"]) if "scale" in at else 1.0 / np.sqrt(size)
    shape = (heads, seq, total)
    qk = imp.define(Dyn(ex.Bin("⊙", imp.num(float(np.float32(scale))), ex.Bin(
        "·", _name(imp, q), ex.Tr(_name(imp, k)))), shape, False), stem="A")
    cap = float(at.get("softcap", 0.0))
    if cap > 0:
        c = imp.num(cap)
        qk = imp.define(qk.like(ex.Bin("⊙", c, ex.Call("tanh", ex.Bin("/", qk.expr, c)))),
                        stem="A")
    mode = int(at.get("qk_matmul_output_mode", 0))
    scores, keep = qk, None
    if isinstance(mask, Dyn):
        if _elem_type(imp, node.input[3]) != 1 and _elem_type(imp, node.input[3]) != 11:
            raise Unsupported("Attention with a per-example mask that is not of floats (a "
                              "boolean one may mask whole rows, which ONNX sets to 0)")
        if mask.flat or mask.shape[-1] != total or len(mask.shape) > 3:
            raise Unsupported("Attention with a per-example mask that does not fit the scores")
        scores = qk.like(ex.add(qk.expr, mask.expr))
    elif mask is not None and not isinstance(mask, Const):
        raise Unsupported("Attention with a mask that is neither constant nor per example")
    bias = _constant_bias(imp, mask if isinstance(mask, Const) else None, at, seq, total,
                          past, qk)
    if bias is not None:
        if mode == 2 and np.isneginf(bias).any():
            raise Unsupported("Attention's qk_matmul_output with masked entries (−∞ is not a "
                              "weight a bundle can hold)")
        full = np.broadcast_to(bias, np.broadcast_shapes(bias.shape, shape[-bias.ndim:]))
        rows = ~np.all(np.isneginf(full), axis=-1, keepdims=True)
        if not rows.all():
            keep = ex.Name(imp.weight(rows.astype(imp.dtype), "keep"))
        finite = np.where(np.isneginf(bias), np.finfo(imp.dtype).min, bias)
        scores = scores.like(ex.add(scores.expr, ex.Name(imp.weight(finite, "M"))))
    scores = imp.define(scores, stem="A")
    probs = scores.like(ex.Call("softmax", scores.expr))
    if keep is not None:
        probs = probs.like(ex.Bin("⊙", probs.expr, keep))
    probs = imp.define(probs, stem="P")
    y = Dyn(ex.Bin("·", probs.expr, _name(imp, v)), (heads, seq, v.shape[2]), False)
    out = _merge(imp, y) if len(_dyn(args[0], "Q").shape) == 2 else y
    return [out, *present, {0: qk, 1: qk, 2: scores, 3: probs}.get(mode, qk)]


RULES = {"Attention": attention}
