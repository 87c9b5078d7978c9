"""Throughput of batch scoring on Ray Data (``nnre.ray``) at 1 and 2 workers, against the
same Predictor called in this process without Ray.

The job scores texts (pieces of ``samples/corpus.txt``) with ``samples/lighthouse.bundle``,
the rows of each batch run as one (``nnre.scoring.score_batch``). Each Ray figure is one job
from the dataset to materialized results on a local instance started once
(``ray.init(num_cpus=2)``): actor start-up and each worker's load of the bundle included,
Ray's own start-up not. Figures are characters scored per second, best of ``--repeats``.
Run: python benchmarks/bench_ray.py [--texts 4000] [--length 200] [--batch 256]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "samples" / "lighthouse.bundle"
sys.path.insert(0, str(ROOT))


def texts(count: int, length: int) -> list[str]:
    corpus = (ROOT / "samples" / "corpus.txt").read_text(encoding="utf-8")
    starts = np.random.default_rng(0).integers(0, len(corpus) - length, count)
    return [corpus[s:s + length] for s in starts]


def direct(rows: list[str], batch: int, repeats: int) -> float:
    """Seconds for the Predictor over every batch in this process (best of ``repeats``)."""
    from nnre.ray import Predictor

    predict = Predictor(str(BUNDLE))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for lo in range(0, len(rows), batch):
            predict({"text": np.array(rows[lo:lo + batch], dtype=object)})
        best = min(best, time.perf_counter() - start)
    return best


def on_ray(rows: list[str], batch: int, workers: int, repeats: int) -> float:
    import ray.data

    import nnre.ray

    best = float("inf")
    for _ in range(repeats):
        ds = ray.data.from_items([{"text": t} for t in rows], override_num_blocks=8)
        start = time.perf_counter()
        out = nnre.ray.map_dataset(ds, str(BUNDLE), workers=workers, batch_size=batch)
        scored = out.materialize()
        best = min(best, time.perf_counter() - start)
        assert scored.count() == len(rows)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=4000)
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    import ray

    rows = texts(args.texts, args.length)
    chars = args.texts * args.length
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    base = direct(rows, args.batch, args.repeats)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        results = {w: on_ray(rows, args.batch, w, args.repeats) for w in (1, 2)}
    finally:
        ray.shutdown()
    load = os.getloadavg()[0]
    print(f"{args.texts} texts of {args.length} characters, batches of {args.batch}, "
          f"{os.cpu_count()} cores, load average {load:.1f}")
    print(f"{'in this process, no Ray':<28} {base:6.2f} s  {chars / base:10,.0f} chars/s")
    for w, secs in results.items():
        print(f"{f'Ray Data, {w} worker(s)':<28} {secs:6.2f} s  {chars / secs:10,.0f} chars/s"
              f"  {base / secs:5.2f}× in-process")
    print(f"2 workers vs 1: {results[1] / results[2]:.2f}× the throughput")


if __name__ == "__main__":
    main()
