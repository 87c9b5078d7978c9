"""Convolution and pooling (nnre/ops/conv.py) against independent oracles.

Oracles: direct nested loops written from the definitions (tiny sizes, no torch needed);
PyTorch's functional conv/pool forward and autograd where installed; float64 central
differences of each kernel against its VJP (⟨J·t, c⟩ ≈ ⟨t, Jᵀ·c⟩); and the shape rules'
errors on impossible parameters. ONNX export and import: tests/test_onnx_conv.py.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from nnre.ops import BY_ARITY, OPS, Op
from nnre.ops.conv import batch_last, conv_attrs, pool_attrs

# (C, spatial sizes, O, kernel, stride, pads, dilation, groups, bias)
CONV_CASES: dict[str, tuple[Any, ...]] = {
    "1d": (3, (9,), 4, (3,), (1,), (0, 0), (1,), 1, False),
    "1d-stride2-pad1-bias": (2, (10,), 3, (3,), (2,), (1, 1), (1,), 1, True),
    "1d-dilation2-asym": (4, (11,), 4, (3,), (1,), (2, 0), (2,), 2, True),
    "1d-depthwise": (3, (7,), 3, (2,), (2,), (0, 1), (1,), 3, False),
    "2d": (3, (5, 6), 4, (3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 1, False),
    "2d-pad1-bias": (2, (5, 5), 3, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, True),
    "2d-stride2-odd": (3, (7, 9), 2, (3, 2), (2, 2), (1, 0, 1, 0), (1, 1), 1, True),
    "2d-asym-pads": (2, (6, 5), 2, (2, 3), (1, 2), (0, 2, 1, 1), (1, 1), 1, False),
    "2d-dilation2": (2, (7, 7), 3, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 1, True),
    "2d-groups2": (4, (5, 6), 6, (3, 3), (2, 1), (1, 1, 1, 1), (1, 2), 2, True),
    "2d-depthwise": (3, (6, 6), 6, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 3, False),
    "2d-1x1": (5, (3, 4), 2, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, True),
    # 8 channels per group and more: im2col's one strided copy (conv.WIDE)
    "1d-wide": (8, (9,), 2, (3,), (2,), (1, 2), (2,), 1, True),
    "2d-wide-groups2": (16, (6, 5), 4, (3, 2), (2, 1), (1, 0, 2, 1), (2, 1), 2, True),
    # the bound form skips taps on padding, one product per border class (conv.SKIP)
    "1d-border": (3, (2,), 4, (3,), (1,), (1, 1), (1,), 1, True),
    "1d-border-groups2": (4, (3,), 6, (3,), (1,), (2, 1), (2,), 2, False),
    "2d-border": (5, (4, 4), 3, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, True),
    "2d-border-stride2": (2, (4, 5), 3, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1, True),
    "2d-border-groups2-asym": (4, (3, 4), 6, (3, 2), (1, 1), (1, 0, 2, 1), (1, 1), 2, True),
    # outputs that read padding alone (the bias): no border classes
    "1d-padding-only-ends": (2, (3,), 2, (1,), (1,), (1, 1), (1,), 1, True),
}
BORDER = {c for c in CONV_CASES if "border" in c} | {"2d-asym-pads", "2d-dilation2",
                                                      "2d-groups2", "2d-wide-groups2"}
# (C, spatial sizes, kernel, stride, pads)
POOL_CASES: dict[str, tuple[Any, ...]] = {
    "1d": (2, (9,), (2,), (2,), (0, 0)),
    "1d-overlap-pad": (3, (8,), (3,), (1,), (1, 1)),
    "1d-asym": (2, (7,), (3,), (2,), (0, 2)),
    "2d": (2, (6, 6), (2, 2), (2, 2), (0, 0, 0, 0)),
    "2d-odd-pad1": (3, (7, 5), (3, 3), (2, 2), (1, 1, 1, 1)),
    "2d-rect": (2, (5, 8), (2, 3), (1, 2), (1, 0, 1, 1)),
    "2d-asym": (1, (5, 5), (3, 2), (2, 1), (0, 1, 2, 0)),
}
ROWS = 3


def conv_case(case: str, seed: int = 0) -> tuple[Op, list[np.ndarray], dict[str, Any]]:
    c, sizes, o, kernel, stride, pads, dilation, groups, bias = CONV_CASES[case]
    rng = np.random.default_rng(seed)
    args = [rng.normal(size=(o, c // groups, *kernel)), rng.normal(size=(ROWS, c, *sizes))]
    if bias:
        args.append(rng.normal(size=o))
    attrs = {"stride": stride, "pads": pads, "dilation": dilation, "groups": groups}
    return OPS["conv_bias" if bias else "conv"], args, attrs


def pool_case(case: str, seed: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    c, sizes, kernel, stride, pads = POOL_CASES[case]
    x = np.random.default_rng(seed).normal(size=(ROWS, c, *sizes))
    return x, {"kernel": kernel, "stride": stride, "pads": pads}


def run_kernel(op: Op, args: list[np.ndarray], attrs: dict[str, Any]) -> np.ndarray:
    """The kernel as the VM calls it: shapes by the rule (rows left out), into ``out``."""
    x = 0 if op.arity == 1 else 1  # the per-example argument; W and b are constants
    shapes = [a.shape[1:] if k == x else a.shape for k, a in enumerate(args)]
    out = np.full((args[x].shape[0], *op.shape(*shapes, **attrs)), np.nan, args[0].dtype)
    assert op.kernel(*args, out=out, **attrs) is out
    return out


def _as_2d(x: np.ndarray, attrs: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """A 1-D case as a 2-D one of height 1: the loops below are written once, for 2-D."""
    if x.ndim == 4:
        return x, attrs
    lifted = {k: (1, *v) for k, v in attrs.items() if k in ("stride", "dilation", "kernel")}
    lifted["pads"] = (0, attrs["pads"][0], 0, attrs["pads"][1])
    return x[:, :, None], {**attrs, **lifted}


# -- direct loops: the definitions, one output entry at a time -----------------------------
def loop_conv(w: np.ndarray, x: np.ndarray, b: np.ndarray | None, stride: tuple[int, ...],
              pads: tuple[int, ...], dilation: tuple[int, ...], groups: int) -> np.ndarray:
    spatial = x.ndim - 2
    if spatial == 1:
        w = w[:, :, None]
    x, at = _as_2d(x, {"stride": stride, "pads": pads, "dilation": dilation})
    (sh, sw), (ph, pw, _, _), (dh, dw) = at["stride"], at["pads"], at["dilation"]
    rows, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    oh = (h + at["pads"][0] + at["pads"][2] - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + at["pads"][1] + at["pads"][3] - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((rows, o, oh, ow))
    for n, f, i, j in itertools.product(range(rows), range(o), range(oh), range(ow)):
        total = b[f] if b is not None else 0.0
        group = f // (o // groups)
        for ci, u, v in itertools.product(range(cg), range(kh), range(kw)):
            y, z = i * sh - ph + u * dh, j * sw - pw + v * dw
            if 0 <= y < h and 0 <= z < wd:
                total += w[f, ci, u, v] * x[n, group * cg + ci, y, z]
        out[n, f, i, j] = total
    return out[:, :, 0] if spatial == 1 else out


def loop_pool(x: np.ndarray, kind: str, kernel: tuple[int, ...], stride: tuple[int, ...],
              pads: tuple[int, ...]) -> np.ndarray:
    spatial = x.ndim - 2
    x, at = _as_2d(x, {"kernel": kernel, "stride": stride, "pads": pads})
    (kh, kw), (sh, sw), (ph, pw, qh, qw) = at["kernel"], at["stride"], at["pads"]
    rows, c, h, wd = x.shape
    oh, ow = (h + ph + qh - kh) // sh + 1, (wd + pw + qw - kw) // sw + 1
    out = np.zeros((rows, c, oh, ow))
    for n, ch, i, j in itertools.product(range(rows), range(c), range(oh), range(ow)):
        real = [x[n, ch, y, z] for y in range(i * sh - ph, i * sh - ph + kh)
                for z in range(j * sw - pw, j * sw - pw + kw) if 0 <= y < h and 0 <= z < wd]
        out[n, ch, i, j] = max(real) if kind == "max" else sum(real) / len(real)
    return out[:, :, 0] if spatial == 1 else out


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_conv_matches_direct_loops(case: str) -> None:
    op, args, attrs = conv_case(case)
    want = loop_conv(args[0], args[1], args[2] if len(args) > 2 else None, **attrs)
    np.testing.assert_allclose(run_kernel(op, args, attrs), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("case", sorted(POOL_CASES))
def test_pool_matches_direct_loops(case: str, kind: str) -> None:
    x, attrs = pool_case(case)
    want = loop_pool(x, kind, **attrs)
    np.testing.assert_allclose(run_kernel(OPS[kind + "pool"], [x], attrs), want, rtol=1e-12,
                               atol=1e-12)


def test_float32_stays_float32() -> None:
    op, args, attrs = conv_case("2d-groups2")
    args32 = [a.astype(np.float32) for a in args]
    got = run_kernel(op, args32, attrs)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, run_kernel(op, args, attrs), rtol=1e-4, atol=1e-4)
    x, at = pool_case("2d-odd-pad1")
    for kind in ("max", "avg"):
        assert run_kernel(OPS[kind + "pool"], [x.astype(np.float32)], at).dtype == np.float32


# -- PyTorch: forward and autograd --------------------------------------------------------
def _torch_conv(torch: Any, w: Any, x: Any, b: Any, attrs: dict[str, Any]) -> Any:
    f = torch.nn.functional
    r = x.dim() - 2
    pads = attrs["pads"]
    # F.pad takes (last axis begin, end, previous axis begin, end, …)
    widths = [p for i in reversed(range(r)) for p in (pads[i], pads[r + i])]
    conv = f.conv1d if r == 1 else f.conv2d
    return conv(f.pad(x, widths), w, b, stride=attrs["stride"], dilation=attrs["dilation"],
                groups=attrs["groups"])


def _torch_pool(torch: Any, x: Any, kind: str, attrs: dict[str, Any]) -> Any:
    """PyTorch pools pad both sides alike (at most half the kernel): symmetric cases only."""
    f, r = torch.nn.functional, x.dim() - 2
    kernel, stride, pads = attrs["kernel"], attrs["stride"], attrs["pads"]
    if kind == "max":
        pool = f.max_pool1d if r == 1 else f.max_pool2d
        return pool(x, kernel, stride, padding=pads[:r])
    pool = f.avg_pool1d if r == 1 else f.avg_pool2d
    return pool(x, kernel, stride, padding=pads[:r], count_include_pad=False)


def _torch_pool_fits(attrs: dict[str, Any]) -> bool:
    r, pads = len(attrs["kernel"]), attrs["pads"]
    return pads[:r] == pads[r:] and all(2 * p <= k for p, k in zip(pads, attrs["kernel"] * 2,
                                                                   strict=True))


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_conv_forward_and_vjp_match_torch(case: str) -> None:
    torch = pytest.importorskip("torch")
    op, args, attrs = conv_case(case, seed=1)
    leaves = [torch.tensor(a, requires_grad=True) for a in args]
    want = _torch_conv(torch, leaves[0], leaves[1], leaves[2] if len(args) > 2 else None,
                       attrs)
    out = run_kernel(op, args, attrs)
    np.testing.assert_allclose(out, want.detach().numpy(), rtol=1e-10, atol=1e-10)
    g = np.random.default_rng(2).normal(size=out.shape)
    want.backward(torch.tensor(g))
    for i, leaf in enumerate(leaves):
        assert op.vjp is not None
        np.testing.assert_allclose(op.vjp(g, out, args, attrs, i), leaf.grad.numpy(),
                                   rtol=1e-10, atol=1e-10, err_msg=f"argument {i}")


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("case", sorted(c for c in POOL_CASES
                                        if _torch_pool_fits(pool_case(c)[1])))
def test_pool_forward_and_vjp_match_torch(case: str, kind: str) -> None:
    torch = pytest.importorskip("torch")
    op = OPS[kind + "pool"]
    x, attrs = pool_case(case, seed=1)
    leaf = torch.tensor(x, requires_grad=True)
    want = _torch_pool(torch, leaf, kind, attrs)
    out = run_kernel(op, [x], attrs)
    np.testing.assert_allclose(out, want.detach().numpy(), rtol=1e-12, atol=1e-12)
    g = np.random.default_rng(2).normal(size=out.shape)
    want.backward(torch.tensor(g))
    assert op.vjp is not None
    np.testing.assert_allclose(op.vjp(g, out, [x], attrs, 0), leaf.grad.numpy(), rtol=1e-12,
                               atol=1e-12)


def test_maxpool_sends_ties_to_the_first_maximum_as_torch_does() -> None:
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 1:3, 1:3] = 1.0  # each 3×3 window below holds several equal maxima
    attrs = {"kernel": (3, 3), "stride": (1, 1), "pads": (0, 0, 0, 0)}
    op = OPS["maxpool"]
    out = run_kernel(op, [x], attrs)
    assert op.vjp is not None
    got = op.vjp(np.ones_like(out), out, [x], attrs, 0)
    want = np.zeros_like(x)
    want[0, 0, 1, 1] = 4.0  # row-major first of every window: (1, 1)
    np.testing.assert_array_equal(got, want)
    torch = pytest.importorskip("torch")
    leaf = torch.tensor(x, requires_grad=True)
    torch.nn.functional.max_pool2d(leaf, 3, 1).sum().backward()
    np.testing.assert_array_equal(got, leaf.grad.numpy())


# -- central differences ------------------------------------------------------------------
def _check_vjp(op: Op, args: list[np.ndarray], attrs: dict[str, Any]) -> None:
    rng = np.random.default_rng(9)
    out = run_kernel(op, args, attrs)
    c = rng.normal(size=out.shape)
    assert op.vjp is not None
    for i, arg in enumerate(args):
        t, eps = rng.normal(size=arg.shape), 1e-6
        plus = [a + eps * t if k == i else a for k, a in enumerate(args)]
        minus = [a - eps * t if k == i else a for k, a in enumerate(args)]
        jt = (run_kernel(op, plus, attrs) - run_kernel(op, minus, attrs)) / (2 * eps)
        got = op.vjp(c, out, args, attrs, i)
        assert got.shape == arg.shape, (i, got.shape)
        assert np.sum(jt * c) == pytest.approx(np.sum(t * got), rel=1e-7, abs=1e-9), i


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_conv_vjp_against_central_differences(case: str) -> None:
    _check_vjp(*conv_case(case, seed=3))


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("case", sorted(POOL_CASES))
def test_pool_vjp_against_central_differences(case: str, kind: str) -> None:
    x, attrs = pool_case(case, seed=3)
    _check_vjp(OPS[kind + "pool"], [x], attrs)


# -- the equation-level parameters and the spellings ---------------------------------------
def test_parameters_become_attributes() -> None:
    assert conv_attrs(2, pad=1, stride=2.0) == {"stride": (2, 2), "pads": (1, 1, 1, 1),
                                               "dilation": (1, 1), "groups": 1}
    assert conv_attrs(1, dilation=2, groups=3) == {"stride": (1,), "pads": (0, 0),
                                                  "dilation": (2,), "groups": 3}
    assert pool_attrs(2, size=3) == {"kernel": (3, 3), "stride": (3, 3), "pads": (0,) * 4}
    assert pool_attrs(1, size=3, stride=1, pad=1) == {"kernel": (3,), "stride": (1,),
                                                      "pads": (1, 1)}
    for op in ("conv", "conv_bias", "maxpool", "avgpool"):
        assert OPS[op].param_attrs is not None
        assert set(OPS[op].param_attrs(2, **OPS[op].params)) == set(OPS[op].attrs)


def test_conv_has_one_spelling_with_two_arities() -> None:
    assert BY_ARITY[("conv", 2)] == "conv" and BY_ARITY[("conv", 3)] == "conv_bias"
    assert OPS["conv"].params == OPS["conv_bias"].params  # the parser reads either


@pytest.mark.parametrize("params, message", [
    ({"stride": 0}, "stride=0: expected a whole number ≥ 1"),
    ({"pad": -1}, "pad=-1: expected a whole number ≥ 0"),
    ({"dilation": 1.5}, "dilation=1.5: expected a whole number ≥ 1"),
    ({"groups": 0}, "groups=0: expected a whole number ≥ 1"),
    ({"pad": float("inf")}, "pad=inf: expected a whole number ≥ 0"),
    ({"stride": float("nan")}, "stride=nan: expected a whole number ≥ 1"),
])
def test_bad_conv_parameters_are_named(params: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        conv_attrs(2, **params)


def test_bad_pool_parameters_are_named() -> None:
    with pytest.raises(ValueError, match="size=0: expected a whole number ≥ 1"):
        pool_attrs(2, size=0)
    with pytest.raises(ValueError, match="stride=-2: expected a whole number ≥ 0"):
        pool_attrs(2, size=2, stride=-2)


SHAPE_ERRORS = [
    ("conv", [(4, 3, 5, 5), (3, 4, 4)], {}, "the kernel spans 5 entries along spatial axis 0 "
     "but the padded input has 4"),
    ("conv", [(4, 3, 3, 3), (3, 4, 4)], {"dilation": (2, 2)}, "the kernel spans 5 entries"),
    ("conv", [(4, 2, 3, 3), (3, 5, 5)], {"groups": 2}, "x has 3 channels"),
    ("conv", [(3, 2, 3, 3), (4, 5, 5)], {"groups": 2}, "must split into the groups"),
    ("conv", [(4, 2, 3, 3), (3, 5, 5)], {}, "must split into the groups"),
    ("conv", [(4, 3, 3, 3), (3, 5, 5)], {"stride": (0, 1)}, r"stride=\(0, 1\) over 2 "
     r"spatial axes: expected 2 whole numbers ≥ 1"),
    ("conv", [(4, 3, 3, 3), (3, 5, 5)], {"pads": (1, 1)}, r"pads=\(1, 1\) over 2 spatial "
     "axes: expected 4"),
    ("conv", [(4, 3, 3), (3, 5, 5)], {}, r"expected \(filters, channels/groups, k, k\)"),
    ("conv", [(4, 3, 3, 3, 3), (3, 5, 5, 5)], {}, "expected .channels, length. or"),
    ("conv_bias", [(4, 3, 3, 3), (3, 5, 5), (3,)], {}, r"expected \(4,\), one per filter"),
    ("maxpool", [(2, 5, 5)], {"kernel": (2, 2), "pads": (2, 0, 0, 0)},
     "each pad must be smaller than the kernel"),
    ("avgpool", [(2, 3, 3)], {"kernel": (4, 4)}, "the kernel spans 4 entries"),
    ("conv", [(1, 1, 3, 3), (1, 4, 4)], {"pads": (5, 0, 5, 0), "stride": (9, 1)},
     r"pads=\(5, 0, 5, 0\) on 4 entries along spatial axis 0: a pad may be at most"),
    ("avgpool", [(2, 3, 3)], {"kernel": (2,)}, r"kernel=\(2,\) over 2 spatial axes"),
]


@pytest.mark.parametrize("name, shapes, attrs, message", SHAPE_ERRORS)
def test_shape_rules_refuse_impossible_parameters(name: str, shapes: list[tuple[int, ...]],
                                                  attrs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OPS[name].shape(*shapes, **attrs)


@pytest.mark.parametrize("kind", ["maxpool", "avgpool"])
@pytest.mark.parametrize("sizes, kernel, stride, pads", [
    ((64, 64), (3, 3), (2, 2), (1, 1, 1, 1)), ((64, 64), (2, 2), (2, 2), (0, 0, 0, 0)),
    ((3000,), (3,), (3,), (2, 1))])
def test_pool_scratch_rules_count_what_the_kernel_and_vjp_allocate(
        kind: str, sizes: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...],
        pads: tuple[int, ...]) -> None:
    """tracemalloc's peak while the kernel (and then the VJP) runs is at most what
    ``Op.scratch`` (``Op.vjp_scratch``) says per row, and with padding at least the padded
    copy: the memory budgets count these (nnre.budget, nndk.budget). Beyond them, NumPy's
    ufuncs buffer a strided operand in blocks of ``np.getbufsize()`` entries, a bounded few."""
    import tracemalloc

    op, rows, channels = OPS[kind], 16, 3
    slack = 4 * np.getbufsize() * 8
    attrs = {"kernel": kernel, "stride": stride, "pads": pads}
    x = np.random.default_rng(1).normal(size=(rows, channels, *sizes))
    padded = channels * int(np.prod([n + pads[i] + pads[len(sizes) + i]
                                     for i, n in enumerate(sizes)])) * rows * 8
    out = np.empty((rows, *op.shape(x.shape[1:], **attrs)))
    g = np.random.default_rng(2).normal(size=out.shape)
    for call, rule in ((lambda: op.kernel(x, out=out, **attrs), op.scratch),
                       (lambda: op.vjp(g, out, [x], attrs, 0), op.vjp_scratch)):
        assert rule is not None
        tracemalloc.start()
        try:
            call()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        counted = rule(x.shape[1:], **attrs) * rows * 8
        assert peak <= counted + slack, (peak, counted)
        if any(pads) or rule is op.vjp_scratch:
            assert peak >= padded, (peak, padded)
# -- memory order: the VM lays conv and pooling results out batch last (nnre.layout) --------
def _batch_last(a: np.ndarray) -> np.ndarray:
    """The same values, rows last in memory, seen as (rows, …) as the VM binds them."""
    return np.moveaxis(np.ascontiguousarray(np.moveaxis(a, 0, -1)), -1, 0)


def _empty_batch_last(shape: tuple[int, ...]) -> np.ndarray:
    return np.moveaxis(np.full((*shape[1:], shape[0]), np.nan), -1, 0)


def _both_forms(op: Op, args: list[np.ndarray], attrs: dict[str, Any], x: int,
                out_last: bool) -> list[np.ndarray]:
    """The kernel's result and the unfolded calls' result (run twice: scratch made once
    must be refilled from the current x), into an ``out`` rows-first or batch-last."""
    shapes = [a.shape[1:] if k == x else a.shape for k, a in enumerate(args)]
    shape = (args[x].shape[0], *op.shape(*shapes, **attrs))
    results = []
    for unfold in (False, True):
        out = _empty_batch_last(shape) if out_last else np.full(shape, np.nan)
        if not unfold:
            op.kernel(*args, out=out, **attrs)
        else:
            assert op.unfold is not None
            live = args[x].copy()  # the bound buffer; its values change between runs
            bound = [live if k == x else a for k, a in enumerate(args)]
            calls = op.unfold(*bound, out=out, **attrs)
            live[...] = 0.0
            for call in calls:
                call()
            live[...] = args[x]
            for call in calls:
                call()
        assert batch_last(out) is not None if out_last else out.flags.c_contiguous
        results.append(out)
    return results


@pytest.mark.parametrize("x_last, out_last", [(True, True), (False, True), (True, False)])
@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_conv_in_either_memory_order(case: str, x_last: bool, out_last: bool) -> None:
    op, args, attrs = conv_case(case, seed=5)
    want = loop_conv(args[0], args[1], args[2] if len(args) > 2 else None, **attrs)
    if x_last:
        args[1] = _batch_last(args[1])
    for got in _both_forms(op, args, attrs, 1, out_last):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("x_last, out_last", [(True, True), (False, True), (True, False)])
@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("case", sorted(POOL_CASES))
def test_pool_in_either_memory_order(case: str, kind: str, x_last: bool, out_last: bool
                                     ) -> None:
    x, attrs = pool_case(case, seed=5)
    want = loop_pool(x, kind, **attrs)
    for got in _both_forms(OPS[kind + "pool"], [_batch_last(x) if x_last else x], attrs, 0,
                           out_last):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name, case", [*(("conv", c) for c in sorted(CONV_CASES)),
                                        *(("maxpool", c) for c in sorted(POOL_CASES)),
                                        *(("avgpool", c) for c in sorted(POOL_CASES))])
def test_vjps_of_batch_last_values_equal_the_rows_first_ones(name: str, case: str) -> None:
    """Training binds the same layout (nndk.unrolled): the gradients must not depend on the
    memory order, and x's gradient keeps x's (no later ufunc then mixes two orders)."""
    if name == "conv":
        op, args, attrs = conv_case(case, seed=6)
    else:
        x, attrs = pool_case(case, seed=6)
        op, args = OPS[name], [x]
    k = 1 if name == "conv" else 0
    out = run_kernel(op, args, attrs)
    g = np.random.default_rng(7).normal(size=out.shape)
    last = [_batch_last(a) if i == k else a for i, a in enumerate(args)]
    assert op.vjp is not None
    for i in range(len(args)):
        want = op.vjp(g, out, args, attrs, i)
        got = op.vjp(_batch_last(g), _batch_last(out), last, attrs, i)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=f"argument {i}")
        if i == k:
            assert np.moveaxis(got, 0, -1).strides[-1] == got.itemsize, "x's order kept"


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_bound_conv_uses_border_classes_where_they_skip_enough(case: str) -> None:
    """The cases above cover both forms: the border classes where skipping the taps on
    padding saves ``SKIP`` of the product, one product over everything elsewhere."""
    from nnre.ops import conv

    op, args, attrs = conv_case(case)
    stride, pads, dilation, _, out = conv._geometry(args[0], args[1], attrs)
    classes = conv._border_classes(args[1].shape, args[0].shape[2:], stride, pads, dilation,
                                   out)
    assert (classes is not None) == (case in BORDER)
    if classes is not None:  # every output position in exactly one class and run
        covered = np.zeros(out, int)
        for alike in classes:
            for runs in itertools.product(*alike):
                covered[tuple(u for u, _ in runs)] += 1
        assert (covered == 1).all()


@pytest.mark.parametrize("rows", [1, 7, 256])
def test_bound_digits_convs_match_torch_in_float32(rows: int) -> None:
    """The digits CNN's two convs (1→16 on 8×8, 16→32 on 4×4, 3×3, pad 1, a bias) as the
    VM binds them (batch last, the bound calls run twice) against PyTorch in float32."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    for c, o, n in ((1, 16, 8), (16, 32, 4)):
        x = rng.normal(size=(rows, c, n, n)).astype(np.float32)
        w = (rng.normal(size=(o, c, 3, 3)) / 3).astype(np.float32)
        b = rng.normal(size=o).astype(np.float32)
        want = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(b),
                                          padding=1).numpy()
        attrs = {"stride": (1, 1), "pads": (1, 1, 1, 1), "dilation": (1, 1), "groups": 1}
        live = _batch_last(np.zeros_like(x))
        out = _empty_batch_last(want.shape).astype(np.float32)
        calls = OPS["conv_bias"].unfold(w, live, b, out=out, **attrs)  # type: ignore[misc]
        for values in (x + 1, x):  # scratch made once is refilled from the current x
            live[...] = values
            for call in calls:
                call()
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


# (C, spatial sizes, O, conv kernel, pads, groups, bias, pool kernel, pool stride, pool pads)
POOLED_CASES: dict[str, tuple[Any, ...]] = {
    "2d-digits": (1, (8, 8), 4, (3, 3), (1, 1, 1, 1), 1, True, (2, 2), (2, 2), (0,) * 4),
    "2d-groups2-3x3-windows": (4, (6, 6), 6, (3, 3), (1, 1, 1, 1), 2, False, (3, 3), (3, 3),
                               (0,) * 4),
    "2d-rect-windows": (2, (7, 8), 3, (2, 3), (0, 1, 0, 1), 1, True, (3, 2), (), (0,) * 4),
    "1d": (3, (12,), 2, (3,), (1, 1), 1, True, (2,), (2,), (0, 0)),
    # border classes writing into the blocks (runs of at most two outputs)
    "2d-border-digits": (16, (4, 4), 4, (3, 3), (1, 1, 1, 1), 1, True, (2, 2), (2, 2),
                         (0,) * 4),
    "2d-border-groups2": (4, (4, 4), 6, (3, 3), (1, 1, 1, 1), 2, False, (2, 2), (), (0,) * 4),
    "2d-border-5x5": (2, (6, 6), 3, (5, 5), (2, 2, 2, 2), 1, True, (2, 2), (2, 2), (0,) * 4),
    "1d-border": (3, (2,), 2, (3,), (1, 1), 1, True, (2,), (2,), (0, 0)),
}
UNPOOLED_CASES: dict[str, tuple[Any, ...]] = {  # bound apart: None
    "overlapping": (1, (8, 8), 4, (3, 3), (1, 1, 1, 1), 1, True, (3, 3), (2, 2), (0,) * 4),
    "padded": (1, (8, 8), 4, (3, 3), (1, 1, 1, 1), 1, True, (2, 2), (2, 2), (1,) * 4),
    "untiled": (1, (7, 8), 4, (3, 3), (1, 1, 1, 1), 1, True, (2, 2), (2, 2), (0,) * 4),
    # border classes with a run of 4 outputs: not evenly spaced among the blocks
    "border-uneven": (2, (8, 8), 3, (5, 5), (2, 2, 2, 2), 1, True, (2, 2), (2, 2), (0,) * 4),
}


def _pooled(case: tuple[Any, ...], out_last: bool = True, floor: float | None = None
            ) -> tuple[list[np.ndarray], dict[str, Any], dict[str, Any], np.ndarray, Any]:
    c, sizes, o, kernel, pads, groups, bias, pk, ps, pp = case
    rng = np.random.default_rng(9)
    args = [rng.normal(size=(o, c // groups, *kernel)), rng.normal(size=(ROWS, c, *sizes))]
    args += [rng.normal(size=o)] if bias else []
    r = len(sizes)
    attrs = {"stride": (1,) * r, "pads": pads, "dilation": (1,) * r, "groups": groups}
    pool = {"kernel": pk, "stride": ps, "pads": pp}
    h = run_kernel(OPS["conv_bias" if bias else "conv"], args, attrs)
    want = loop_pool(h, "max", pk, ps or pk, pp)
    want = want if floor is None else np.maximum(want, floor)  # a ReLU after the pool
    out = _empty_batch_last(want.shape) if out_last else np.full(want.shape, np.nan)
    op = OPS["conv_bias" if bias else "conv"]
    assert op.pooled is not None
    return args, attrs, pool, want, lambda x: op.pooled(  # type: ignore[misc]
        args[0], x, *args[2:], out=out, pool=pool, floor=floor, **attrs)


@pytest.mark.parametrize("floor", [None, 0.0])
@pytest.mark.parametrize("case", sorted(POOLED_CASES))
def test_conv_bound_with_its_max_pool_equals_the_two_apart(case: str, floor: float | None
                                                           ) -> None:
    """The conv and a max pool that alone reads it (and a ReLU after it: ``floor``), bound
    as one (nnre.vm): the pool of the direct loops' conv, with the calls run twice over a
    changing bound x."""
    args, attrs, pool, want, bind = _pooled(POOLED_CASES[case], floor=floor)
    live = _batch_last(np.zeros_like(args[1]))
    calls = bind(live)
    assert calls is not None
    for values in (args[1][::-1], args[1]):
        live[...] = values
        for call in calls:
            call()
    out = calls[-1].keywords["out"]
    np.testing.assert_allclose(np.moveaxis(out.reshape(want.shape[1], *want.shape[2:], ROWS),
                                           -1, 0), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", sorted(UNPOOLED_CASES))
def test_a_conv_and_pool_that_do_not_tile_are_bound_apart(case: str) -> None:
    args, _, _, _, bind = _pooled(UNPOOLED_CASES[case])
    assert bind(args[1]) is None
    args, _, _, _, bind = _pooled(POOLED_CASES["2d-digits"], out_last=False)
    assert bind(args[1]) is None  # a pool result not batch last


@pytest.mark.parametrize("rows, sizes, blocks", [(100, (3, 9, 9), 4), (256, (1, 8, 8), 2),
                                                 (5, (2, 4, 4), 1)])
def test_rows_first_input_copied_batch_last_in_blocks_of_rows(
        rows: int, sizes: tuple[int, ...], blocks: int) -> None:
    """A rows-first x is moved rows last a block of rows at a time (conv.CACHED): every
    row lands, the last partial block too, and the padding stays 0."""
    from nnre.ops import conv

    x = np.random.default_rng(10).normal(size=(rows, *sizes)).astype(np.float32)
    padded, calls = conv._batch_last_input(x, (1, 2, 0, 1))
    assert len(calls) == blocks  # 32 rows of 972 bytes, 128 of 256 bytes, all 5
    for call in calls:
        call()
    want = np.pad(np.moveaxis(x, 0, -1), ((0, 0), (1, 0), (2, 1), (0, 0)))
    np.testing.assert_array_equal(padded, want)


def test_alike_runs_share_a_product_only_when_evenly_spaced() -> None:
    """Runs with as many outputs and taps are batched in one product only where their
    outputs and first inputs are evenly spaced (one stride each in a strided view)."""
    from nnre.ops.conv import _alike

    top, bottom = (slice(0, 1), slice(1, 3)), (slice(3, 4), slice(0, 2))
    inside = (slice(1, 3), slice(0, 3))
    assert _alike([top, inside, bottom], 1, 1, 1) == [(top, bottom), (inside,)]
    even = [(slice(i, i + 1), slice(0, 2)) for i in (0, 2, 4)]
    assert _alike(even, 1, 1, 0) == [tuple(even)]
    uneven = [(slice(i, i + 1), slice(0, 2)) for i in (0, 2, 5)]
    assert _alike(uneven, 1, 1, 0) == [(run,) for run in uneven]
