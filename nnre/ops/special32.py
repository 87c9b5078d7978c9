"""erf, erfc, gelu and gelu's derivative for float32 arrays: rational approximations whose
error is below float32's rounding, evaluated in float64 by blocks of 2¹⁶ entries.

Why this shape. fdlibm's float64 pieces (``nnre.ops.special``) pick an interval per entry,
and picking per entry in NumPy costs more than the arithmetic (``np.where`` on a random mask
runs ~8 ns per entry, a multiply ~0.1 ns). One formula over the whole range needs no
picking: ``erfcx(z) = e^(z²)·erfc(z) ≈ P(z)/Q(z)`` (degrees 4/5, relative error 6.1e-9 on
[0, 10.4]) gives erfc and Φ(−|x|) = ½·erfc(|x|/√2) everywhere, and ``erf(x)/x ≈ P(x²)/Q(x²)``
(degrees 6/5, 2.0e-9 on [0, 4]) gives erf; both fitted by ``tools/fit_special.py``. The
arithmetic is float64: float32's own ``exp`` is off by up to 2.4 ulp and the erf rational
loses ~7 ulp to float32 rounding, while in float64 the square of a float32 is exact, so
e^(−x²) is too, and what is left is the fit's error plus the final rounding to float32.
Blocks keep the float64 scratch small (rows of 512 KiB, reused per thread) instead of
several full-size temporaries.

Bounds (tests/test_special32.py checks them on dense grids, random points, the edges below
and subnormals): erf, erfc and gelu within 0.61 ulp of float32 (½ ulp of rounding plus the
fits' ≤ 0.102 ulp; measured 0.534, 0.601, 0.601), relative where the result is a normal
number, in subnormal steps (2⁻¹⁴⁹) where it is not. gelu's derivative within 1 ulp, or 2⁻²⁶
absolute near its zero at x ≈ −0.75 where Φ(x) and x·φ(x) cancel.

Each function takes its block's arrays and scratch rows and returns the ufunc calls that
compute it (``nnre.ops.base.calls``), so the same definition runs at once or is bound once
into a tape (``blocked``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from nnre.ops.base import Array, Call, calls

# erfcx(z) ≈ P(z)/Q(z) on [0, 10.4], and erf(x)/x ≈ P(x²)/Q(x²) on [0, 4]: tools/fit_special.py
_ERFCX_P = (1.000000006067682, 1.2408673703555573, 0.734180682474559, 0.2304481294422988,
            0.03305497598068019)
_ERFCX_Q = (1.0, 2.369247146918587, 2.407580003735958, 1.3301787011514745,
            0.40848389649755634, 0.05858776175540906)
_ERF_P = (1.128379169375527, 0.18520335449924327, 0.05431690663716606, 0.0038496142368778744,
          0.0003796079451729527, 4.684748900482342e-06, -1.320208936520907e-08)
_ERF_Q = (1.0, 0.49746561326079003, 0.1139584512540871, 0.015462091811999597,
          0.0013075692118619765, 6.311031204247847e-05)
# Past these, float32 rounds erf to ±1 (from 3.9192), erfc to 0 (from 10.054), gelu and its
# derivative to 0 (below −14.541): arguments are clipped there, inside the fitted ranges.
ERF_ONE, ERFC_ZERO, GELU_ZERO = 4.0, 10.1, 14.6
INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)


def _scaled(p: tuple[float, ...], q: tuple[float, ...], k: float, c: float
            ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """c·P(k·v)/Q(k·v) as P'(v)/Q'(v) with Q' monic (its leading coefficient 1 saves a
    multiply)."""
    lead = q[-1] * k ** (len(q) - 1)
    return (tuple(c * pi * k**i / lead for i, pi in enumerate(p)),
            (*(qi * k**i / lead for i, qi in enumerate(q[:-1])), 1.0))


_C_P, _C_Q = _scaled(_ERFCX_P, _ERFCX_Q, 1.0, 0.5)  # ½·erfcx(a)
_R_P, _R_Q = _scaled(_ERFCX_P, _ERFCX_Q, math.sqrt(0.5), 0.5)  # e^(a²/2)·Φ(−a) = ½·erfcx(a/√2)
_E_P, _E_Q = _scaled(_ERF_P, _ERF_Q, 1.0, 1.0)  # erf(x)/x in x²


def _poly(c: tuple[float, ...], v: Array, acc: Array) -> list[Call]:
    """acc = c₀ + c₁v + c₂v² + … by Horner's rule; one multiply less when the top is 1."""
    first = [(np.add, (v, c[-2], acc))] if c[-1] == 1 else \
        [(np.multiply, (v, c[-1], acc)), (np.add, (acc, c[-2], acc))]
    rest = [step for k in reversed(range(len(c) - 2))
            for step in ((np.multiply, (acc, v, acc)), (np.add, (acc, c[k], acc)))]
    return calls(*first, *rest)


def _ratio(p: tuple[float, ...], q: tuple[float, ...], v: Array, num: Array, den: Array
           ) -> list[Call]:
    """num = P(v)/Q(v); den is scratch."""
    return [*_poly(p, v, num), *_poly(q, v, den), *calls((np.divide, (num, den, num)))]


def erf(x: Array, out: Array, c: Array, z: Array, p: Array, q: Array) -> list[Call]:
    """erf(x) = x·P(x²)/Q(x²), x clipped to ±4 where erf is ±1 in float32."""
    return [*calls((np.clip, (x, -ERF_ONE, ERF_ONE, c)), (np.multiply, (c, c, z))),
            *_ratio(_E_P, _E_Q, z, p, q), *calls((np.multiply, (p, c, out)))]


def erfc(x: Array, out: Array, a: Array, e: Array, p: Array, q: Array) -> list[Call]:
    """erfc(x) = |2k − erfc(|x|)|, k = 1 for x < 0: erfc(|x|) itself for x ≥ 0 (full relative
    accuracy where it is tiny), 2 − erfc(|x|) for x < 0; erfc(|x|) = P(|x|)/(Q(|x|)·e^(x²))."""
    return [*calls((np.abs, (x, a)), (np.clip, (a, 0.0, ERFC_ZERO, a)),
                   (np.multiply, (a, a, e)), (np.exp, (e, e))),
            *_poly(_C_P, a, p), *_poly(_C_Q, a, q),
            *calls((np.multiply, (q, e, q)), (np.divide, (p, q, p)),  # ½·erfc(|x|)
                   (np.less, (x, 0, q)), (np.subtract, (q, p, q)), (np.abs, (q, q)),
                   (np.multiply, (q, 2.0, out)))]


def _tail(x: Array, a: Array, e: Array, p: Array, q: Array) -> list[Call]:
    """a = |x| (clipped where gelu is 0), e = e^(−x²/2), p = e^(x²/2)·Φ(−|x|)."""
    return [*calls((np.abs, (x, a)), (np.clip, (a, 0.0, GELU_ZERO, a)),
                   (np.multiply, (a, a, e)), (np.multiply, (e, -0.5, e)), (np.exp, (e, e))),
            *_ratio(_R_P, _R_Q, a, p, q)]


def gelu(x: Array, out: Array, a: Array, e: Array, p: Array, q: Array) -> list[Call]:
    """x·Φ(x) = max(x, 0) − |x|·Φ(−|x|): no cancellation on either side of 0."""
    return [*_tail(x, a, e, p, q),
            *calls((np.multiply, (p, e, p)), (np.multiply, (p, a, p)),
                   (np.clip, (x, 0.0, np.inf, q)), (np.subtract, (q, p, out)))]


def gelu_grad(x: Array, g: Array, out: Array, a: Array, e: Array, p: Array, q: Array
              ) -> list[Call]:
    """g·(Φ(x) + x·φ(x)) with the same Φ: d = e^(−x²/2)·(R − |x|/√(2π)) is Φ(x) + x·φ(x) for
    x < 0 and 1 minus it for x ≥ 0; picked as d + h·(1 − 2d), h = [x ≥ 0]."""
    return [*_tail(x, a, e, p, q),
            *calls((np.multiply, (a, INV_SQRT_2PI, q)), (np.subtract, (p, q, p)),
                   (np.multiply, (p, e, p)),  # d
                   (np.greater_equal, (x, 0, q)), (np.multiply, (p, -2.0, e)),
                   (np.add, (e, 1.0, e)), (np.multiply, (e, q, e)), (np.add, (e, p, e)),
                   (np.multiply, (e, g, out)))]


BLOCK = 1 << 16  # entries: 4 float64 rows of 512 KiB; the calls' own overhead stays ~5 %
_local = threading.local()


def scratch(rows: int, size: int) -> Array:
    """rows × size float64, one buffer per thread shared by every call made on it: they run
    one at a time, and each writes its scratch before reading it. Reused, not allocated per
    call: a fresh temporary past glibc's mmap threshold (128 KiB at first) is mapped and
    page-faulted in again each time, which on a VM can cost more than the arithmetic."""
    buf = getattr(_local, "buf", None)
    if buf is None or buf.shape[0] < rows or buf.shape[1] < size:
        shape = (max(rows, 0 if buf is None else buf.shape[0]),
                 max(size, 0 if buf is None else buf.shape[1]))
        buf = _local.buf = np.empty(shape)
    return buf[:rows, :size]


def blocked(build: Callable[..., list[Call]], ins: tuple[Array, ...], out: Array) -> list[Call]:
    """The calls of ``build`` block by block over C-contiguous ``ins`` and ``out`` (flat
    views: the calls stay bound to the caller's buffers)."""
    flat: list[Any] = [v.reshape(-1) for v in ins]
    dest = out.reshape(-1)
    n = dest.size
    rows = scratch(4, min(n, BLOCK))
    bound: list[Call] = []
    for i in range(0, n, BLOCK):
        j = min(i + BLOCK, n)
        bound += build(*(v[i:j] for v in flat), dest[i:j], *(r[:j - i] for r in rows))
    return bound
