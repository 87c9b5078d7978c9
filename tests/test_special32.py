"""float32 erf, erfc, gelu and gelu's gradient (nnre.ops.special32) against Python's math
module in float64, and the ways the runtime and the trainer call them."""

from __future__ import annotations

import math
import threading
import warnings

import numpy as np
import pytest

from nndk.gradcheck import make_problem
from nnre.model import Model
from nnre.ops import OPS, special, special32

F32 = np.float32
# Where float32 results turn to ±1, 0 or 2 and where the kernels clip their arguments
EDGES = [0.0, 0.84375, 1.25, 1 / 0.35, 3.919205843636722, special32.ERF_ONE, 5.41998,
         10.054194928818095, special32.ERFC_ZERO, 13.16, 14.356067982158693,
         14.541349078589003, special32.GELU_ZERO]


def _points() -> np.ndarray:
    """A dense grid, random points, the edges and their float32 neighbours, and tiny values
    down to the smallest subnormal, all with both signs."""
    rng = np.random.default_rng(0)
    near = [np.nextafter(F32(e), F32(np.inf * s)) if s else F32(e)
            for e in EDGES for s in (-1, 0, 1)]
    steps = [v for e in EDGES for v in F32(e) + np.arange(-3, 4, dtype=F32) * np.spacing(F32(e))]
    tiny = F32(2.0) ** -np.arange(1, 150, dtype=F32)
    x = np.concatenate([np.linspace(-16, 16, 200_001, dtype=F32),
                        (rng.standard_normal(100_000) * 3).astype(F32),
                        (rng.standard_normal(20_000) * 1e-3).astype(F32), near, steps, tiny])
    return np.concatenate([x, -x])


POINTS = _points()
EXACT = POINTS.astype(np.float64)


def _reference(fn: object) -> np.ndarray:
    return np.array([fn(v) for v in EXACT.tolist()])  # type: ignore[operator]


def _gelu(v: float) -> float:
    return 0.5 * v * math.erfc(-v * math.sqrt(0.5))  # erfc: relative accuracy in the tail


def _gelu_grad(v: float) -> float:
    return 0.5 * math.erfc(-v * math.sqrt(0.5)) + v * math.exp(-v * v / 2) / math.sqrt(2 * math.pi)


def _ulps(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Error in units of float32's spacing at the exact value: relative where that is a
    normal number, in subnormal steps (2⁻¹⁴⁹) where it is not."""
    spacing = np.spacing(np.abs(want).astype(F32)).astype(np.float64)
    return np.abs(got.astype(np.float64) - want) / spacing


@pytest.mark.parametrize("name,fn,exact", [
    ("erf", special.erf, math.erf), ("erfc", special.erfc, math.erfc),
    ("gelu", special.gelu, _gelu)])
def test_within_the_stated_bound_of_float32(name: str, fn: object, exact: object) -> None:
    got = np.empty_like(POINTS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fn(POINTS, out=got)  # type: ignore[operator]
    err = _ulps(got, _reference(exact))
    worst = int(np.argmax(err))
    # ½ ulp of rounding plus the fits' relative error (≤ 6.1e-9, 0.102 ulp): special32's bound
    assert err[worst] <= 0.61, (name, POINTS[worst], got[worst], err[worst])


def test_gelu_gradient_within_one_ulp_or_cancellation() -> None:
    got = np.empty_like(POINTS)
    special.gelu_grad(POINTS, np.ones_like(POINTS), got)
    want = _reference(_gelu_grad)
    # near its zero at x ≈ −0.75 Φ(x) and x·φ(x) cancel: there an absolute 2⁻²⁶
    slack = np.maximum(np.spacing(np.abs(want).astype(F32)).astype(np.float64), 2.0**-26)
    err = np.abs(got - want) / slack
    worst = int(np.argmax(err))
    assert err[worst] <= 1.0, (POINTS[worst], got[worst], want[worst])
    g = np.random.default_rng(1).standard_normal(POINTS.size).astype(F32)  # times g, rounded
    special.gelu_grad(POINTS, g, got)
    np.testing.assert_allclose(got, want * g, rtol=2e-7, atol=2.0**-25)


def test_special_values_exactly_and_without_warnings() -> None:
    x = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e30, -1e30, 3.4e38, -3.4e38], F32)
    outs = [np.empty_like(x) for _ in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        special.erf(x, out=outs[0])
        special.erfc(x, out=outs[1])
        special.gelu(x, outs[2])
        special.gelu_grad(x, np.ones_like(x), outs[3])
    e, c, y, d = outs
    np.testing.assert_array_equal(e[[0, 1, 3, 5, 6, 7, 8]], [1, -1, 0, 1, -1, 1, -1])
    np.testing.assert_array_equal(c[[0, 1, 3, 5, 6, 7, 8]], [0, 2, 1, 0, 2, 0, 2])
    np.testing.assert_array_equal(y[[0, 1, 3, 5, 6, 7, 8]], [np.inf, 0, 0, x[5], 0, x[7], 0])
    np.testing.assert_array_equal(d[[0, 1, 3, 5, 6]], [1, 0, 0.5, 1, 0])
    assert all(np.isnan(v[2]) for v in outs)
    assert np.signbit(e[4]) and np.signbit(y[4]) and np.signbit(y[1])
    assert all(v.dtype == F32 for v in outs)


@pytest.mark.parametrize("size", [1, 999, 2 * special32.BLOCK + 321])
def test_bound_calls_equal_the_kernels(size: int) -> None:
    rng = np.random.default_rng(size)
    x = (rng.standard_normal(size) * 4).astype(F32).reshape(-1, 1)
    g = rng.standard_normal(x.shape).astype(F32)
    for kernel, bound, ins in [(special.erf, special.erf_calls, (x,)),
                               (special.gelu, special.gelu_calls, (x,)),
                               (special.gelu_grad, special.gelu_grad_calls, (x, g))]:
        want = kernel(*ins, out=np.empty_like(x))  # type: ignore[operator]
        out = np.full_like(x, np.nan)
        calls = bound(*ins, out=out)  # type: ignore[operator]
        assert len(calls) >= 10  # ufunc calls, not the kernel in one
        x[...] += 0  # the calls read the buffers when run, not when bound
        for call in calls:
            call()
        np.testing.assert_array_equal(out, want)
    gelu, erf = OPS["gelu"], OPS["erf"]
    assert gelu.unfold is special.gelu_calls and erf.unfold is special.erf_calls
    assert gelu.vjp is not None and gelu.vjp_calls is not None
    d = np.empty_like(x)
    for call in gelu.vjp_calls(0, g, x, [x], d):
        call()
    np.testing.assert_array_equal(d, gelu.vjp(g, x, [x], {}, 0))


@pytest.mark.parametrize("dtype", [F32, np.float64])
def test_strided_overlapping_and_mixed_buffers(dtype: type) -> None:
    rng = np.random.default_rng(3)
    base = (rng.standard_normal((40, 30)) * 4).astype(dtype)
    want = special.gelu(base, np.empty_like(base))
    t = np.empty_like(base.T)
    np.testing.assert_array_equal(special.gelu(base.T, t), want.T)  # strided in
    wide = np.zeros((40, 60), dtype)
    special.gelu(base, wide[:, ::2])  # strided out
    np.testing.assert_array_equal(wide[:, ::2], want)
    assert not wide[:, 1::2].any()
    same = base.copy()
    special.gelu(same, same)  # in place
    np.testing.assert_array_equal(same, want)
    grad_want = special.gelu_grad(base, base, np.empty_like(base))
    same = base.copy()
    np.testing.assert_array_equal(special.gelu_grad(same, same, same), grad_want)
    calls = special.gelu_calls(base.T, t)  # a strided buffer: bound as one call, still right
    for call in calls:
        call()
    np.testing.assert_array_equal(t, want.T)


def test_threads_do_not_share_scratch() -> None:
    rng = np.random.default_rng(4)
    xs = [(rng.standard_normal(3 * special32.BLOCK) * 3).astype(F32) for _ in range(4)]
    wants = [special.gelu(x, np.empty_like(x)) for x in xs]
    bad: list[int] = []

    def work(k: int) -> None:
        out = np.empty_like(xs[k])
        for _ in range(5):
            if not np.array_equal(special.gelu(xs[k], out), wants[k]):
                bad.append(k)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad


TEXT = """
    X ∈ ℝ^(64×512)
    W ∈ ℝ^(64×64)
    Y = gelu(W X ⊙ 0.3) + erf(X) ⊙ 0.5
    """


def test_float32_models_run_the_fast_way() -> None:
    rng = np.random.default_rng(5)
    w = rng.standard_normal((64, 64)).astype(F32)
    x = (rng.standard_normal((3, 64, 512)) * 2).astype(F32)  # 98 304 entries: 2 blocks
    model = Model.from_equations(TEXT, {"W": w}, dtype="float32")
    got = model.step({"X": x})[0]["Y"]
    assert got.dtype == F32
    u = (w.astype(np.float64) @ x.astype(np.float64)) * 0.3
    want = np.vectorize(_gelu)(u) + np.vectorize(math.erf)(x.astype(np.float64)) * 0.5
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)  # float32 products inside


def test_float32_gradients_agree_with_float64() -> None:
    text = "xₜ ∈ ℝ^3\nuₜ ∈ ℝ^H\nuₜ = W xₜ + b\nyₜ = gelu(uₜ ⊙ 3) ⊙ xₜ[0] + erf(uₜ)"
    dims = {"H": 512}
    wide = make_problem(text, dims, steps=2, batch=70, dtype="float64")
    narrow = make_problem(text, dims, steps=2, batch=70, dtype="float32")
    # the same numbers in both: the float32 ones, widened
    wide.params = {k: v.astype(np.float64) for k, v in narrow.params.items()}
    wide.feeds = {k: v.astype(np.float64) for k, v in narrow.feeds.items()}
    wide.out_weights = {k: v.astype(np.float64) for k, v in narrow.out_weights.items()}
    want, got = wide.gradients().param_grads(), narrow.gradients().param_grads()
    assert set(got) == set(want) and all(v.dtype == F32 for v in got.values())
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-4 * np.abs(want[k]).max())
