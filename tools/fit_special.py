"""Fit the rational approximations nnre.ops.special uses for float32 erf, erfc and gelu.

Two fits, each minimising the largest relative error (Lawson's iteratively reweighted least
squares on the linearised problem P − f·Q, the Sanathanan–Koerner reweighting by 1/Q):

- erfcx(z) = e^(z²)·erfc(z) ≈ P(z)/Q(z), degrees 4/5, on [0, 10.4]: erfc of float32 is 0
  past 10.054, and gelu and its derivative are 0 below −14.541 = −10.282·√2;
- erf(x)/x ≈ P(x²)/Q(x²), degrees 6/5, on [0, 4]: erf of float32 is ±1 past 3.9192.

References come from mpmath (SymPy's own dependency) at 30 digits. Prints the coefficient
tuples (lowest degree first, Q(0) = 1) and the largest relative error on a grid 10× denser
than the fit's. Run: python tools/fit_special.py
"""

from __future__ import annotations

from collections.abc import Callable

import mpmath
import numpy as np

mpmath.mp.dps = 30


def erfcx(z: float) -> float:
    return float(mpmath.erfc(z) * mpmath.exp(mpmath.mpf(z) ** 2))


def erf_over_x(x: float) -> float:
    return float(mpmath.erf(x) / x) if x else float(2 / mpmath.sqrt(mpmath.pi))


def grid(lo: float, hi: float, n: int) -> np.ndarray:
    """Chebyshev points on [lo, hi]: dense at the ends, where minimax errors peak."""
    k = np.arange(n)
    return np.sort((lo + hi) / 2 + (hi - lo) / 2 * np.cos(np.pi * (k + 0.5) / n))


def fit(f: Callable[[float], float], lo: float, hi: float, n: int, m: int,
        var: Callable[[np.ndarray], np.ndarray], points: int = 3000, rounds: int = 200
        ) -> tuple[np.ndarray, np.ndarray]:
    """P (degree n) and Q (degree m, Q(0) = 1) in the variable v = var(x), with
    P(v)/Q(v) ≈ f(x) to a near-minimal largest relative error on [lo, hi]."""
    x = grid(lo, hi, points)
    fx = np.array([f(float(t)) for t in x])
    v = var(x)
    s = float(np.max(np.abs(v)))  # fit in v/s: the columns stay well scaled
    u = v / s
    cols = np.hstack([u[:, None] ** np.arange(n + 1),
                      -fx[:, None] * u[:, None] ** np.arange(1, m + 1)])
    weights, q_prev = np.ones_like(x), np.ones_like(x)
    best = (np.inf, np.zeros(n + 1), np.zeros(m + 1))
    for _ in range(rounds):
        w = weights / np.abs(fx * q_prev)
        c, *_ = np.linalg.lstsq(cols * w[:, None], fx * w, rcond=None)
        p, q = c[:n + 1], np.concatenate([[1.0], c[n + 1:]])
        q_prev = np.polynomial.polynomial.polyval(u, q)
        err = np.abs(np.polynomial.polynomial.polyval(u, p) / q_prev / fx - 1)
        if err.max() < best[0]:
            best = (err.max(), p / s ** np.arange(n + 1), q / s ** np.arange(m + 1))
        weights = weights * np.sqrt(err / err.max())  # Lawson: lean on the worst points
        weights /= weights.sum()
    return best[1], best[2]


def report(name: str, f: Callable[[float], float], lo: float, hi: float,
           var: Callable[[np.ndarray], np.ndarray], p: np.ndarray, q: np.ndarray) -> None:
    x = grid(lo, hi, 30_000)
    fx = np.array([f(float(t)) for t in x])
    v = var(x)
    got = np.polynomial.polynomial.polyval(v, p) / np.polynomial.polynomial.polyval(v, q)
    print(f"# {name}: largest relative error {np.max(np.abs(got / fx - 1)):.3g}")
    print(f"P = {tuple(float(c) for c in p)!r}")
    print(f"Q = {tuple(float(c) for c in q)!r}")


def main() -> None:
    ident, square = (lambda z: z), (lambda x: x * x)
    p, q = fit(erfcx, 0.0, 10.4, 4, 5, ident)
    report("erfcx(z) on [0, 10.4]", erfcx, 0.0, 10.4, ident, p, q)
    p, q = fit(erf_over_x, 0.0, 4.0, 6, 5, square)
    report("erf(x)/x in x² on [0, 4]", erf_over_x, 0.0, 4.0, square, p, q)


if __name__ == "__main__":
    main()
