"""The one timer the benchmarks share: best of N runs after a warm-up, in seconds.

The minimum, not the mean: on a shared machine other processes only ever add time, so the
fastest run is the closest to the code's own cost. Benchmarks import it as a sibling module
(``python benchmarks/bench_x.py`` puts this folder on the path).
"""

from __future__ import annotations

import time
from collections.abc import Callable


def best_of(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm up: buffers, caches, bound tapes
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best
