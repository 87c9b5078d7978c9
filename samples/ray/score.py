"""Score a large JSON Lines or Parquet file of texts on Ray Data with nnre.ray, and write
the results (Parquet, or JSON Lines for an output ending in .jsonl).

Each row's ``text`` (``--column``) gets ``bits_per_char`` and ``chars``; every other column
(an id, say) is kept beside it. The model is loaded once per worker, from a path or an
https:// or s3:// URL. ``--make N`` first writes N rows of pieces of samples/corpus.txt to
the input file, to try it on.

Run: python samples/ray/score.py MODEL IN.jsonl|IN.parquet OUT [--workers 2] [--batch-size 256]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def make(path: Path, count: int) -> None:
    """``count`` rows of 40–400 characters from the sample corpus, with an id each."""
    import numpy as np

    corpus = (HERE.parent / "corpus.txt").read_text(encoding="utf-8")
    rng = np.random.default_rng(0)
    with path.open("w", encoding="utf-8") as f:
        for i in range(count):
            size = int(rng.integers(40, 400))
            start = int(rng.integers(0, len(corpus) - size))
            f.write(json.dumps({"id": i, "text": corpus[start:start + size]}) + "\n")


def summary(folder: Path) -> tuple[int, int, float]:
    """Rows, characters scored and mean bits per character of the results Ray wrote."""
    import pyarrow.parquet as pq

    if folder.name.endswith(".jsonl"):
        rows = [json.loads(line) for f in sorted(folder.glob("*.json*"))
                for line in f.read_text(encoding="utf-8").splitlines() if line]
        chars = [r["chars"] for r in rows]
        bits = [r["bits_per_char"] for r in rows]
    else:
        table = pq.read_table(folder, columns=["chars", "bits_per_char"]).to_pydict()
        chars, bits = table["chars"], table["bits_per_char"]
    return len(chars), sum(chars), sum(bits) / len(bits) if bits else float("nan")


def nnre_error(err: BaseException) -> BaseException | None:
    """nnre's own error inside what Ray raised (Ray wraps a worker's exception)."""
    from nnre.errors import NnreError

    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, NnreError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__  # type: ignore[assignment]
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--column", default="text")
    parser.add_argument("--make", type=int, metavar="N", help="first write N rows to INPUT")
    args = parser.parse_args()
    import ray

    import nnre
    import nnre.ray

    if args.make:
        make(Path(args.input), args.make)
    try:  # here first, for one clear error (and a URL's download) before any worker starts
        nnre.ray.Predictor(args.model, text_column=args.column)
    except (nnre.NnreError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    try:
        start = time.perf_counter()
        ds = nnre.ray.map_dataset(nnre.ray.read(args.input), args.model, workers=args.workers,
                                  batch_size=args.batch_size, text_column=args.column)
        nnre.ray.write(ds, args.output)
        took = time.perf_counter() - start
        rows, chars, mean = summary(Path(args.output))
    except Exception as err:  # one line, nnre's message when it is nnre's error
        inner = nnre_error(err)
        print(f"error: {inner if inner is not None else str(err).splitlines()[0]}",
              file=sys.stderr)
        return 1
    finally:
        ray.shutdown()
    print(f"{rows:,} rows, {chars:,} characters scored in {took:.1f} s "
          f"({chars / took:,.0f} characters/s, {args.workers} workers); mean bits per "
          f"character {mean:.3f}; results in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
