"""Per-step product ``h @ W`` (W = [4H stacked gates]) plain vs transposed, as run in training.

``nndk.unrolled.transposed_product`` picks ``(Wᵀ hᵀ)ᵀ`` + one copy over ``h @ W`` by a fixed rule
on the weight size and the batch; this prints the ratio (transposed / plain time, < 1 means
the transposed form is faster) so the rule can be re-checked on another machine or BLAS.

Run: python benchmarks/bench_layout.py [--threads 1 2]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from nndk.unrolled import transposed_product
from nnre.threads import set_blas_threads


def best(fn: Callable[[], object], repeats: int = 200) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def measure(h: np.ndarray, stacked: np.ndarray, plain_w: np.ndarray) -> tuple[float, float]:
    out = np.empty((h.shape[0], plain_w.shape[1]), np.float32)
    buf = np.empty(out.shape[::-1], np.float32)
    plain = best(lambda: np.matmul(h, plain_w, out=out))
    flipped = best(lambda: (np.matmul(stacked, h.T, out=buf), np.copyto(out, buf.T)))
    return plain, flipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'threads':>7} {'H':>5} {'B':>4} {'plain µs':>9} {'transposed µs':>14} "
          f"{'ratio':>6} {'rule':>6}")
    for threads in args.threads:
        set_blas_threads(threads)
        for hidden in (128, 256, 512, 768):
            stacked = rng.normal(size=(4 * hidden, hidden)).astype(np.float32)  # params
            weight = stacked.T  # what the program reads: [W_fᵀ|W_iᵀ|W_oᵀ|W_cᵀ]
            plain_w = np.ascontiguousarray(weight)
            for batch in (1, 8, 32, 64, 128):
                plain, flipped = measure(rng.normal(size=(batch, hidden)).astype(np.float32),
                                         stacked, plain_w)
                rule = "T" if transposed_product(batch, weight) else "plain"
                print(f"{threads:>7} {hidden:>5} {batch:>4} {plain * 1e6:>9.1f} "
                      f"{flipped * 1e6:>14.1f} {flipped / plain:>6.2f} {rule:>6}")


if __name__ == "__main__":
    main()
