"""The one timer the benchmarks share: best of N runs after a warm-up, in seconds.

The minimum, not the mean: on a shared machine other processes only ever add time, so the
fastest run is the closest to the code's own cost. Benchmarks import it as a sibling module
(``python benchmarks/bench_x.py`` puts this folder on the path).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence


def best_of(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm up: buffers, caches, bound tapes
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def best_of_each(fns: Sequence[Callable[[], object]], repeats: int, turn: int = 10
                 ) -> list[float]:
    """Best of N runs of each, taken in turns of ``turn`` runs: the ratio of two of them
    then compares the same minutes of a machine whose load comes and goes, where best_of
    one after the other can compare a quiet minute with a busy one. Runs of one stay
    together within a turn, so thread pools that spin after a run (OpenBLAS's,
    onnxruntime's) only slow the first run of the next turn."""
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(-(-repeats // turn)):
        for i, fn in enumerate(fns):
            for _ in range(turn):
                start = time.perf_counter()
                fn()
                best[i] = min(best[i], time.perf_counter() - start)
    return best


def blas_kernel() -> str:
    """numpy's BLAS and the kernels it runs (OPENBLAS_CORETYPE can force older ones): what a
    figure of matrix products depends on, printed beside it."""
    import os

    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "BLAS kernel unknown (threadpoolctl is not installed)"
    import numpy  # noqa: F401  (loads numpy's BLAS, so threadpoolctl sees it)

    found = [f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')}"
             for i in threadpool_info() if i.get("user_api") == "blas"]
    forced = os.environ.get("OPENBLAS_CORETYPE")
    return "BLAS: " + (", ".join(found) or "none found") + \
        (f" (OPENBLAS_CORETYPE={forced} in the environment)" if forced else "")
