"""The BLAS thread count as a setting: OpenBLAS on 2 cores can thrash, so let users choose.

Finds the OpenBLAS (or MKL) library NumPy loaded and calls its own setter through ctypes;
returns False where no known library is found, and changes nothing then.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

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
    return paths


def _call(names: tuple[str, ...], *args: int) -> int | None:
    for path in _loaded_blas():
        try:
            lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD if hasattr(os, "RTLD_NOLOAD") else 0)
        except OSError:
            continue
        for name in names:
            fn = getattr(lib, name, None)
            if fn is not None:
                return int(fn(*args) or 0)
    return None


def set_blas_threads(count: int) -> bool:
    """Set how many threads BLAS uses for matrix products; True if a BLAS library took it."""
    if count < 1:
        raise ValueError(f"thread count must be at least 1, got {count}")
    return _call(_SETTERS, count) is not None


def get_blas_threads() -> int | None:
    """The BLAS thread count in force, or None where it cannot be read."""
    return _call(_GETTERS)
