"""erf, erfc and gelu (x·Φ(x)) of NumPy arrays, exact to the dtype they are written in.

NumPy has no erf, and the runtime depends on nothing beyond NumPy (no SciPy); ``math.erf``
applied entry by entry costs a Python call per number. Two ways, picked by the dtype of the
result:

- float64: fdlibm's rational approximations (Sun Microsystems, 1993; the ones most C
  libraries and CPython's fallback use, error below 1 ulp), one per interval of |x|, each
  evaluated only on the entries in its interval: their indices come from ``np.flatnonzero``
  and values are gathered with ``take`` (a boolean mask or ``np.where`` over random data
  costs ~8 ns per entry, more than the arithmetic). By blocks of 2¹⁶ entries, in scratch
  rows reused per thread (``special32.scratch``), so no temporary grows with the array.
- float32 (and narrower): ``nnre.ops.special32``, one rational over the whole range in
  float64 arithmetic, within 0.61 ulp of float32.

Without ``out``, ``erf``/``erfc`` return float64 (the fdlibm way). ``*_calls`` give the same
computation as ufunc calls bound once to the caller's buffers, for the runtime's tapes.
Checked against ``math.erf``/``math.erfc`` in tests/test_special.py and test_special32.py;
``benchmarks/bench_activations.py`` times them against PyTorch.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np

from nnre.ops import special32
from nnre.ops.base import Array, Call

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
_SMALL, _MID, _NEAR, _TAIL = 0.84375, 1.25, 1 / 0.35, 28.0
SQRT_HALF = math.sqrt(0.5)
BLOCK64 = 1 << 16


def _poly(coeffs: tuple[float, ...], z: Array, acc: Array) -> Array:
    """acc = c₀ + c₁z + c₂z² + … by Horner's rule."""
    np.multiply(z, coeffs[-1], out=acc)
    acc += coeffs[-2]
    for c in reversed(coeffs[:-2]):
        acc *= z
        acc += c
    return acc


def _ratio(p: tuple[float, ...], q: tuple[float, ...], z: Array, num: Array, den: Array
           ) -> Array:
    return np.divide(_poly(p, z, num), _poly(q, z, den), out=num)


def _bands(a: Array, row: Array) -> list[Array]:
    """Indices of the entries of |x| (``a``) in [0, 0.84375) (and NaN), [0.84375, 1.25),
    [1.25, 1/0.35), [1/0.35, 28) and [28, ∞]: each entry's band number (the edges it is
    past, counted in a scratch ``row``), then one search per band."""
    n = a.size
    band, past = row.view(np.int8)[:n], row.view(np.bool_)[n:2 * n]
    np.greater_equal(a, _SMALL, out=band)  # NaN is past no edge: the first band passes it on
    for edge in (_MID, _NEAR, _TAIL):
        np.add(band, np.greater_equal(a, edge, out=past), out=band)
    return [np.flatnonzero(np.equal(band, k, out=past)) for k in range(5)]


# Each piece maps the values of its band to erf (or erfc, ``complement``) in one of its
# scratch rows ``r`` (the band's length), and returns that row.
def _small(x: Array, complement: bool, r: Array) -> Array:
    """|x| < 0.84375: erf = x + x·P(x²)/Q(x²); erfc = 1 − erf, or from ¼ on
    ½ − ((x − ½) + x·P/Q), where the subtraction x − ½ is exact."""
    xy = _ratio(_PP, _QQ, np.multiply(x, x, out=r[1]), r[0], r[2])
    xy *= x
    if not complement:
        return np.add(x, xy, out=xy)
    half = np.greater_equal(x, 0.25, out=r[1])
    half *= 0.5
    np.subtract(x, half, out=r[2])
    r[2] += xy
    np.subtract(1.0, half, out=half)
    return np.subtract(half, r[2], out=half)


def _mid(x: Array, complement: bool, r: Array) -> Array:
    """0.84375 ≤ |x| < 1.25: erf = ±(ERX + P(|x| − 1)/Q(|x| − 1)); 1 ∓ ERX is exact."""
    s = np.abs(x, out=r[1])
    s -= 1.0
    y = _ratio(_PA, _QA, s, r[0], r[2])
    sign = np.copysign(1.0, x, out=r[1])
    if not complement:
        y += ERX
        return np.multiply(y, sign, out=y)
    y *= sign
    np.multiply(sign, -ERX, out=r[2])
    r[2] += 1.0
    return np.subtract(r[2], y, out=r[2])


def _tail(x: Array, complement: bool, r: Array, num: tuple[float, ...],
          den: tuple[float, ...]) -> Array:
    """1.25 ≤ |x| < 28: erfc(|x|) = exp(−x² − 0.5625 + R(1/x²)/S(1/x²)) / |x|."""
    t = np.abs(x, out=r[4])
    w = np.multiply(t, t, out=r[1])
    np.divide(1.0, w, out=w)
    rs = _ratio(num, den, w, r[0], r[2])
    # exp(−t²) as exp(−h²)·exp((h − t)(h + t)), h = t with its low 32 bits cleared: h² is
    # exact, so the large exponent loses nothing to rounding (fdlibm's trick)
    h = r[1]
    np.bitwise_and(t.view(np.uint64), np.uint64(0xFFFFFFFF00000000), out=h.view(np.uint64))
    np.subtract(h, t, out=r[2])
    r[2] *= np.add(h, t, out=r[3])
    rs += r[2]
    np.exp(rs, out=rs)
    np.multiply(h, h, out=r[3])
    np.subtract(-0.5625, r[3], out=r[3])
    rs *= np.exp(r[3], out=r[3])
    tail = np.divide(rs, t, out=rs)
    sign = np.copysign(1.0, x, out=r[1])
    if complement:  # (1 − sign) + sign·tail: tail, or 2 − tail
        tail *= sign
        np.subtract(1.0, sign, out=sign)
        return np.add(sign, tail, out=sign)
    np.subtract(1.0, tail, out=tail)
    return np.multiply(tail, sign, out=tail)


def _huge(x: Array, complement: bool, r: Array) -> Array:
    """|x| ≥ 28: erf is ±1 and erfc 0 or 2 in float64."""
    sign = np.copysign(1.0, x, out=r[0])
    return np.subtract(1.0, sign, out=sign) if complement else sign


_PIECES: list[Callable[[Array, bool, Array], Array]] = [
    _small, _mid, functools.partial(_tail, num=_RA, den=_SA),
    functools.partial(_tail, num=_RB, den=_SB), _huge]


def _fdlibm(x: Array, out: Array, complement: bool) -> None:
    """erf (or erfc) of the 1-D float64 ``x`` into ``out`` (which may be ``x``): each band
    is read before it is written, and bands do not overlap."""
    rows = special32.scratch(6, x.size)
    bands = _bands(np.abs(x, out=rows[0]), rows[1])
    for idx, piece in zip(bands, _PIECES, strict=True):
        if idx.size:
            k = idx.size
            out[idx] = piece(x.take(idx, out=rows[0, :k]), complement, rows[1:, :k])


def _erf64(x: Array, out: Array) -> None:
    _fdlibm(x, out, False)


def _erfc64(x: Array, out: Array) -> None:
    _fdlibm(x, out, True)


def _gelu64(x: Array, out: Array) -> None:
    """½·x·erfc(−x/√2): erfc keeps its relative accuracy where Φ is tiny."""
    np.multiply(x, -SQRT_HALF, out=out)
    _fdlibm(out, out, True)
    out *= x
    out *= 0.5


def _gelu_grad64(x: Array, g: Array, out: Array) -> None:
    """g·(Φ(x) + x·φ(x)), Φ as in ``_gelu64``."""
    np.multiply(x, -SQRT_HALF, out=out)
    _fdlibm(out, out, True)
    out *= 0.5
    phi = special32.scratch(1, x.size)[0]
    np.multiply(x, x, out=phi)
    phi *= -0.5
    np.exp(phi, out=phi)
    phi *= x
    phi *= special32.INV_SQRT_2PI
    out += phi
    out *= g


def _blocks64(fn: Callable[..., None], ins: tuple[Array, ...], out: Array) -> None:
    flat = [v.reshape(-1) for v in ins]
    dest = out.reshape(-1)
    for i in range(0, dest.size, BLOCK64):
        fn(*(v[i:i + BLOCK64] for v in flat), dest[i:i + BLOCK64])


def _prepared(ins: tuple[Array, ...], out: Array, dtype: type | None, in_place: bool
              ) -> tuple[Array, ...]:
    """The arguments as C-contiguous arrays of ``out``'s shape, sharing no memory with it,
    or, when ``in_place`` (the float32 ways read an entry before writing it), being it."""
    ready = []
    for v in ins:
        v = np.ascontiguousarray(np.broadcast_to(np.asarray(v, dtype), out.shape))
        same = v.ctypes.data == out.ctypes.data and v.dtype == out.dtype
        if np.may_share_memory(v, out) and not (in_place and same):
            v = v.copy()
        ready.append(v)
    return tuple(ready)


def _single(out: Array) -> bool:
    return out.dtype.itemsize <= 4


def _run(fast: Callable[..., list[Call]], slow: Callable[..., None], ins: tuple[Array, ...],
         out: Array | None) -> Array:
    if out is None:
        out = np.empty(np.shape(ins[0]), np.float64)
    dest = out if out.flags.c_contiguous else np.empty(out.shape, out.dtype)
    if _single(dest):
        for call in special32.blocked(fast, _prepared(ins, dest, None, True), dest):
            call()
    else:  # the float64 ways read their arguments after writing out
        _blocks64(slow, _prepared(ins, dest, np.float64, False), dest)
    if dest is not out:
        np.copyto(out, dest)
    return out


def _bound(fast: Callable[..., list[Call]], slow: Callable[..., None], ins: tuple[Array, ...],
           out: Array) -> list[Call]:
    """``_run`` as calls bound to these buffers: block by block for float32 buffers that are
    contiguous, of out's shape and not overlapping it; else one call."""
    if (_single(out) and out.flags.c_contiguous
            and all(v.shape == out.shape and v.flags.c_contiguous
                    and not np.may_share_memory(v, out) for v in ins)):
        return special32.blocked(fast, ins, out)
    return [functools.partial(_run, fast, slow, ins, out)]


def erf(x: Array, out: Array | None = None) -> Array:
    """erf of every entry, into ``out`` (exact to its dtype) or a new float64 array."""
    return _run(special32.erf, _erf64, (x,), out)


def erfc(x: Array, out: Array | None = None) -> Array:
    """erfc = 1 − erf of every entry, accurate also where erf is near ±1; into ``out`` (exact
    to its dtype) or a new float64 array."""
    return _run(special32.erfc, _erfc64, (x,), out)


def gelu(x: Array, out: Array) -> Array:
    """x·Φ(x) of every entry into ``out``, Φ the standard normal distribution function."""
    return _run(special32.gelu, _gelu64, (x,), out)


def gelu_grad(x: Array, g: Array, out: Array) -> Array:
    """g·(Φ(x) + x·φ(x)), the gradient through gelu, into ``out``."""
    return _run(special32.gelu_grad, _gelu_grad64, (x, g), out)


def erf_calls(x: Array, out: Array) -> list[Call]:
    return _bound(special32.erf, _erf64, (x,), out)


def gelu_calls(x: Array, out: Array) -> list[Call]:
    return _bound(special32.gelu, _gelu64, (x,), out)


def gelu_grad_calls(x: Array, g: Array, out: Array) -> list[Call]:
    return _bound(special32.gelu_grad, _gelu_grad64, (x, g), out)
