"""ONNX Conv, MaxPool and AveragePool → ``conv(W, x; …)``, ``maxpool(x; …)``, ``avgpool(x; …)``.

The converters of ``nndk.onnx.ops.RULES`` for the ops whose equation parameters are not their
attributes as written (``Op.param_attrs``): equations give one number per parameter for
every spatial axis, and one pad for both sides, so a node whose strides, pads or dilations
differ between axes or sides is refused by name. ``auto_pad`` becomes the pads it means.
The output's shape comes from the op's own shape rule, fed the attributes the parameters
make, so the import and the runtime cannot disagree about sizes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from nndk.onnx import expr as ex
from nndk.onnx.graph import Importer
from nndk.onnx.values import Const, Dyn, Unsupported, Value
from nnre.ops import BY_ARITY, OPS

Args = list[Value | None]
Rule = Callable[[Importer, Any, Args, dict[str, Any]], list[Value]]


def _x(node: Any, args: Args) -> Dyn:
    x = args[0]
    if not isinstance(x, Dyn) or len(x.shape) not in (2, 3) or x.flat:
        raise Unsupported(f"{node.op_type} of anything but a per-example (channels, length) "
                          "or (channels, height, width) value")
    return x


def _one(node: Any, what: str, values: Sequence[int]) -> float:
    if len(set(values)) != 1:
        raise Unsupported(f"{node.op_type} with {what}={list(values)}: equations write one "
                          f"{what} for every axis and side")
    return float(values[0])


def _pads(node: Any, at: dict[str, Any], sizes: tuple[int, ...], reach: Sequence[int],
          strides: Sequence[int]) -> list[int]:
    """ONNX's pads (begins, then ends), from ``auto_pad`` when it is set."""
    mode = at.get("auto_pad", "NOTSET")
    r = len(sizes)
    if mode == "NOTSET":
        return [int(p) for p in at.get("pads", [0] * (2 * r))]
    if mode == "VALID":
        return [0] * (2 * r)
    if mode not in ("SAME_UPPER", "SAME_LOWER"):
        raise Unsupported(f"{node.op_type} with auto_pad={mode}")
    begins, ends = [], []
    for n, k, s in zip(sizes, reach, strides, strict=True):
        total = max((-(-n // s) - 1) * s + k - n, 0)
        small, big = total // 2, total - total // 2
        begins.append(small if mode == "SAME_UPPER" else big)
        ends.append(big if mode == "SAME_UPPER" else small)
    return begins + ends


def _shape(imp: Importer, node: Any, func: str, shapes: list[tuple[int, ...]],
           params: tuple[tuple[str, float], ...], spatial: int) -> tuple[int, ...]:
    op = OPS[BY_ARITY[(func, len(shapes))]]
    assert op.param_attrs is not None
    try:
        return op.shape(*shapes, **op.param_attrs(spatial, **dict(params)))
    except ValueError as err:
        raise Unsupported(f"{node.op_type}: {err}") from None


def _weight(imp: Importer, c: Const, stem: str) -> ex.Name:
    value = np.asarray(c.value)
    if c.ref is not None:
        return ex.Name(imp.use_ref(c.ref, value))
    return ex.Name(imp.weight(value, stem, (c.source, "as is") if c.source else None))


def _conv(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    x = _x(node, args)
    w, b = args[1], args[2] if len(args) > 2 else None
    r = len(x.shape) - 1
    if not isinstance(w, Const) or np.ndim(w.value) != r + 2:
        raise Unsupported(f"Conv with a weight that is not a constant of {r + 2} axes")
    if b is not None and not isinstance(b, Const):
        raise Unsupported("Conv with a bias that is not constant")
    kernel = tuple(int(k) for k in np.shape(w.value)[2:])
    if tuple(at.get("kernel_shape", kernel)) != kernel:
        raise Unsupported(f"Conv with kernel_shape={at['kernel_shape']} and a weight of "
                          f"shape {np.shape(w.value)}")
    strides, dilations = at.get("strides", [1] * r), at.get("dilations", [1] * r)
    reach = [d * (k - 1) + 1 for d, k in zip(dilations, kernel, strict=True)]
    pads = _pads(node, at, x.shape[1:], reach, strides)
    params = (("stride", _one(node, "stride", strides)), ("pad", _one(node, "pad", pads)),
              ("dilation", _one(node, "dilation", dilations)),
              ("groups", float(at.get("group", 1))))
    shapes = [tuple(np.shape(w.value)), x.shape, *([np.shape(b.value)] if b else [])]
    shape = _shape(imp, node, "conv", shapes, params, r)
    more = (x.expr, *([_weight(imp, b, "b")] if b else []))
    return [Dyn(ex.Call("conv", _weight(imp, w, "W"), params, more), shape, False)]


def _pool(func: str) -> Rule:
    def rule(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
        x = _x(node, args)
        r = len(x.shape) - 1
        if at.get("ceil_mode", 0) or any(d != 1 for d in at.get("dilations", [1] * r)):
            raise Unsupported(f"{node.op_type} with ceil_mode or dilations")
        kernel = [int(k) for k in at["kernel_shape"]]
        strides = at.get("strides", [1] * r)
        pads = _pads(node, at, x.shape[1:], kernel, strides)
        if node.op_type == "AveragePool" and at.get("count_include_pad", 0) and any(pads):
            # PyTorch writes count_include_pad=1 even without padding, where it changes nothing
            raise Unsupported("AveragePool with count_include_pad=1 and padding (avgpool "
                              "divides by the entries that are not padding)")
        params = (("size", _one(node, "kernel size", kernel)),
                  ("stride", _one(node, "stride", strides)), ("pad", _one(node, "pad", pads)))
        shape = _shape(imp, node, func, [x.shape], params, r)
        return [Dyn(ex.Call(func, x.expr, params), shape, False)]
    return rule


#: Converters by op name (``nnre.ops``): RULES maps each op's ``onnx_import`` to one.
SPATIAL: dict[str, Rule] = {"conv": _conv, "maxpool": _pool("maxpool"),
                            "avgpool": _pool("avgpool")}
