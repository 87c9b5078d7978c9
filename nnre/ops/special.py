"""erf and erfc of NumPy arrays, to float64 accuracy, for the ``erf`` and ``gelu`` ops.

NumPy has no erf, and the runtime depends on nothing beyond NumPy (no SciPy); ``math.erf``
applied entry by entry costs a Python call per number. These are fdlibm's rational
approximations (Sun Microsystems, 1993; the ones most C libraries and CPython's fallback
use, error below 1 ulp), evaluated on whole arrays: each interval's polynomial is computed
on the arguments clipped into that interval (so nothing overflows) and the right one is
picked per entry. Checked against ``math.erf``/``math.erfc`` in tests/test_special.py.
"""

from __future__ import annotations

import numpy as np

from nnre.ops.base import Array

ERX = 8.45062911510467529297e-01  # erf(1) rounded to float: erf = ERX + P/Q near 1
# erf(x) = x + x·P(x²)/Q(x²) on [0, 0.84375]
_PP = (1.28379167095512558561e-01, -3.25042107247001499370e-01,
       -2.84817495755985104766e-02, -5.77027029648944159157e-03,
       -2.37630166566501626084e-05)
_QQ = (1.0, 3.97917223959155352819e-01, 6.50222499887672944485e-02,
       5.08130628187576562776e-03, 1.32494738004321644526e-04,
       -3.96022827877536812320e-06)
# erf(x) = ERX + P(x−1)/Q(x−1) on [0.84375, 1.25]
_PA = (-2.36211856075265944077e-03, 4.14856118683748331666e-01,
       -3.72207876035701323847e-01, 3.18346619901161753674e-01,
       -1.10894694282396677476e-01, 3.54783043256182359371e-02,
       -2.16637559486879084300e-03)
_QA = (1.0, 1.06420880400844228286e-01, 5.40397917702171048937e-01,
       7.18286544141962662868e-02, 1.26171219808761642112e-01,
       1.36370839120290507362e-02, 1.19844998467991074170e-02)
# erfc(x) = exp(−x² − 0.5625 + R(1/x²)/S(1/x²)) / x on [1.25, 1/0.35] …
_RA = (-9.86494403484714822705e-03, -6.93858572707181764372e-01,
       -1.05586262253232909814e+01, -6.23753324503260060396e+01,
       -1.62396669462573470355e+02, -1.84605092906711035994e+02,
       -8.12874355063065934246e+01, -9.81432934416914548592e+00)
_SA = (1.0, 1.96512716674392571292e+01, 1.37657754143519042600e+02,
       4.34565877475229228821e+02, 6.45387271733267880336e+02,
       4.29008140027567833386e+02, 1.08635005541779435134e+02,
       6.57024977031928170135e+00, -6.04244152148580987438e-02)
# … and on [1/0.35, 28]; beyond 28, erfc underflows to 0
_RB = (-9.86494292470009928597e-03, -7.99283237680523006574e-01,
       -1.77579549177547519889e+01, -1.60636384855821916062e+02,
       -6.37566443368389627722e+02, -1.02509513161107724954e+03,
       -4.83519191608651397019e+02)
_SB = (1.0, 3.03380607434824582924e+01, 3.25792512996573918826e+02,
       1.53672958608443695994e+03, 3.19985821950859553908e+03,
       2.55305040643316442583e+03, 4.74528541206955367215e+02,
       -2.24409524465858183362e+01)
_SMALL, _MID, _TAIL = 0.84375, 1.25, 28.0


def _poly(coeffs: tuple[float, ...], z: Array) -> Array:
    """c₀ + c₁z + c₂z² + … by Horner's rule."""
    acc = np.full_like(z, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        acc *= z
        acc += c
    return acc


def _pieces(x: Array) -> tuple[Array, Array, Array, Array]:
    """|x| and, per interval, what erf and erfc are made of: (|x|, x·P/Q on the first,
    P/Q on the second, erfc(|x|) on the tail)."""
    a = np.abs(x)
    s = np.minimum(a, _SMALL)
    z = s * s
    small = _poly(_PP, z) / _poly(_QQ, z)
    m = np.clip(a, _SMALL, _MID) - 1.0
    mid = _poly(_PA, m) / _poly(_QA, m)
    t = np.clip(a, _MID, _TAIL)
    w = 1.0 / (t * t)
    near = t < 1 / 0.35
    rs = np.where(near, _poly(_RA, w) / _poly(_SA, w), _poly(_RB, w) / _poly(_SB, w))
    # exp(−t²) as exp(−h²)·exp((h − t)(h + t)), h = t with its low 32 bits cleared: h² is
    # exact, so the large exponent loses nothing to rounding (fdlibm's trick)
    h = (np.ascontiguousarray(t).view(np.uint64) & np.uint64(0xFFFFFFFF00000000)).view(
        np.float64)
    tail = np.exp(-h * h - 0.5625) * np.exp((h - t) * (h + t) + rs) / t
    return a, small, mid, np.where(a >= _TAIL, 0.0, tail)


def erf(x: Array) -> Array:
    """erf of every entry, in float64."""
    x = np.asarray(x, dtype=np.float64)
    a, small, mid, tail = _pieces(x)
    big = np.copysign(np.where(a < _MID, ERX + mid, 1.0 - tail), x)
    near = np.clip(x, -_SMALL, _SMALL)  # so that no infinity meets the first interval's sum
    return np.where(a < _SMALL, near + near * small, big)


def erfc(x: Array) -> Array:
    """erfc = 1 − erf of every entry, in float64, accurate also where erf is near ±1."""
    x = np.asarray(x, dtype=np.float64)
    a, small, mid, tail = _pieces(x)
    near = np.clip(x, -_SMALL, _SMALL)
    near_zero = np.where(near < 0.25, 1.0 - (near + near * small),
                         0.5 - ((near - 0.5) + near * small))
    middle = np.where(x < 0, 1.0 + (ERX + mid), (1.0 - ERX) - mid)
    far = np.where(x < 0, 2.0 - tail, tail)
    return np.where(a < _SMALL, near_zero, np.where(a < _MID, middle, far))
