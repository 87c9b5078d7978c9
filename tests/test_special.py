"""erf, erfc and gelu of float64 arrays (nnre.ops.special) against math.erf and math.erfc."""

from __future__ import annotations

import math
import warnings

import numpy as np

from nnre.ops.special import erf, erfc, gelu, gelu_grad


def _points() -> np.ndarray:
    rng = np.random.default_rng(0)
    edges = [0.0, 0.25, 0.84375, 1.25, 1 / 0.35, 6.0, 27.5, 28.0]  # the intervals' ends
    near = [e * (1 + k * 1e-15) for e in edges for k in (-2, 0, 2)]
    return np.concatenate([np.linspace(-30, 30, 60_001), rng.standard_normal(20_000) * 3,
                           near, np.negative(near), [1e-300, 5e-324, 1e-10]])


def test_erf_and_erfc_are_float64_accurate() -> None:
    x = _points()
    for ours, theirs in ((erf, math.erf), (erfc, math.erfc)):
        got, want = ours(x), np.array([theirs(float(v)) for v in x])
        ok = np.abs(got - want) <= 4 * np.spacing(np.abs(want))  # a few units in the last place
        assert ok.all(), (ours.__name__, x[~ok][:5], got[~ok][:5], want[~ok][:5])


def test_edges_without_warnings() -> None:
    x = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e308, -1e308])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        e, c = erf(x), erfc(x)
    np.testing.assert_array_equal(e[[0, 1, 3, 5, 6]], [1, -1, 0, 1, -1])
    np.testing.assert_array_equal(c[[0, 1, 3, 5, 6]], [0, 2, 1, 0, 2])
    assert np.isnan(e[2]) and np.isnan(c[2]) and np.signbit(e[4])
    assert erf(np.float32(0.5)).dtype == np.float64
    assert erf(np.array(0.5)) == math.erf(0.5)


def test_float64_gelu_and_its_gradient() -> None:
    x = _points()
    got, grad = np.empty_like(x), np.empty_like(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gelu(x, got)
        gelu_grad(x, np.full_like(x, 2.0), grad)
    half = math.sqrt(0.5)
    want = np.array([0.5 * v * math.erfc(-v * half) for v in x.tolist()])  # exact in the tail
    ok = np.abs(got - want) <= 4 * np.spacing(np.abs(want))
    assert ok.all(), (x[~ok][:5], got[~ok][:5], want[~ok][:5])
    slope = np.array([math.erfc(-v * half) + 2 * v * math.exp(-v * v / 2) / math.sqrt(2 * math.pi)
                      for v in x.tolist()])
    np.testing.assert_allclose(grad, slope, rtol=1e-15, atol=1e-15)  # cancels near −0.75
