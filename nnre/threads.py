"""BLAS threads: one by default, more only when the user asks (``--threads``).

OpenBLAS splits even a 1×128 · 128×512 product over every core, and after any threaded
product its worker spins waiting for the next: on 2 cores with the other one busy, one
threaded product in a run (the hoisted input projection) makes every later step ~10× slower,
even steps whose products run on one thread (``benchmarks/bench_threads.py``: H=128, batch 1,
11 µs/step on one thread against 112 µs with a threaded pre-stage). A per-product rule cannot
avoid that, so the default is one thread for every product nnre runs: the best or near it on
a busy machine; on an idle one, large products (H=512, batch 32) gain up to ~1.8× from
``--threads 2``. The CLIs set one thread for the process; a Model used as a library runs
each product between two ctypes calls (~0.15 µs each) that set one thread and restore the
host's count, so the host application's own NumPy is not affected. Fixing a count
(``set_blas_threads``, ``--threads``, ``$NNRE_THREADS``) turns that off. Finds the OpenBLAS
(or MKL) library NumPy loaded and calls its own setter; where none is found, nothing changes.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
            "openblas_set_num_threads64_", "openblas_set_num_threads", "MKL_Set_Num_Threads")
_GETTERS = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads",
            "openblas_get_num_threads64_", "openblas_get_num_threads", "MKL_Get_Max_Threads")


def _loaded_blas() -> list[str]:
    """Paths of BLAS libraries mapped into this process (Linux), else NumPy's bundled ones."""
    import numpy as np

    paths: list[str] = []
    maps = Path("/proc/self/maps")
    if maps.exists():
        for line in maps.read_text().splitlines():
            path = line.split()[-1]
            if ("openblas" in path or "mkl_rt" in path) and path not in paths:
                paths.append(path)
    if not paths:
        libs = Path(np.__file__).parent.parent / "numpy.libs"
        if libs.is_dir():
            paths = [str(p) for p in libs.iterdir() if "openblas" in p.name]
    # NumPy's own first: with SciPy imported (scikit-learn does) a second OpenBLAS is mapped,
    # and setting that one leaves NumPy's products on every core (30 ms instead of 1.4 for
    # the digits CNN on a busy machine)
    return sorted(paths, key=lambda p: "numpy" not in p)


@functools.lru_cache(maxsize=1)
def _functions() -> tuple[Callable[[int], Any], Callable[[], Any]] | None:
    """The BLAS library's own (setter, getter), looked up once (the libraries a process has
    mapped do not change), or None where no known library is loaded."""
    for path in _loaded_blas():
        try:
            lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD if hasattr(os, "RTLD_NOLOAD") else 0)
        except OSError:
            continue
        for setter, getter in zip(_SETTERS, _GETTERS, strict=True):
            if getattr(lib, setter, None) is not None and getattr(lib, getter, None) is not None:
                return getattr(lib, setter), getattr(lib, getter)
    return None


def set_blas_threads(count: int) -> bool:
    """Set how many threads BLAS uses for matrix products; True if a BLAS library took it.

    A count set here is used for every product from then on (see the module's docstring)."""
    global _fixed, _epoch
    if count < 1:
        raise ValueError(f"thread count must be at least 1, got {count}")
    _fixed = count
    _epoch += 1  # tapes bound under the old policy are bound again
    found = _functions()
    if found is not None:
        found[0](count)
    return found is not None


_fixed: int | None = None
_epoch = 0


def epoch() -> int:
    """Changes whenever the thread policy does: part of the key of every cached tape."""
    return _epoch


@functools.lru_cache(maxsize=1)
def _setter() -> tuple[Callable[[int], Any], int] | None:
    """The setter and the host's count at first use (what each product restores)."""
    found = _functions()
    return None if found is None else (found[0], int(found[1]() or 1))


def auto() -> bool:
    """Whether nnre picks the thread count itself (no count fixed by the user)."""
    return _fixed is None and not os.environ.get("NNRE_THREADS")


def single_threaded(calls: list[Callable[[], Any]]) -> list[Callable[[], Any]]:
    """The calls of one instruction that runs products: on one thread, restoring the host's
    count after, unless the user fixed a count (or BLAS already runs one thread)."""
    found = _setter() if auto() else None
    if found is None or found[1] <= 1:
        return calls
    setter, default = found
    return [functools.partial(setter, 1), *calls, functools.partial(setter, default)]


def get_blas_threads() -> int | None:
    """The BLAS thread count in force, or None where it cannot be read."""
    found = _functions()
    return None if found is None else int(found[1]() or 0)
