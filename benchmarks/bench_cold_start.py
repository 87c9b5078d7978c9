"""Time to first character of ``nnre run``, cold (no compile cache: SymPy imported, equations
compiled) and warm (cached Program), against ``python -c "import numpy"``.

Each figure is the median over runs of a fresh process, from spawn until the first generated
character arrives on its stdout. Run: python benchmarks/bench_cold_start.py [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "samples" / "lighthouse.bundle"


def first_char(cmd: list[str], skip: int, env: dict[str, str]) -> float:
    """Seconds until ``skip`` + 1 bytes are on the child's stdout (or it exits)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    proc.stdout.read(skip + 1)
    took = time.perf_counter() - start
    proc.communicate()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": cache}
        run = [sys.executable, "-m", "nnre", "run", str(BUNDLE), "--prime", "T", "-n", "5"]
        cases = {
            'python -c "import numpy"': ([sys.executable, "-c", "import numpy"], env),
            "nnre run, cold (NNRE_NO_CACHE=1)": (run, {**env, "NNRE_NO_CACHE": "1"}),
            "nnre run, warm (cached Program)": (run, env),
        }
        subprocess.run(run, env=env, capture_output=True, check=True)  # fill the cache
        results = {}
        for name, (cmd, e) in cases.items():
            skip = 1 if "nnre" in name else 0  # the echoed prime, then the first character
            results[name] = statistics.median(first_char(cmd, skip, e) for _ in range(args.runs))
    base = results['python -c "import numpy"']
    for name, secs in results.items():
        print(f"{name:<36} {secs * 1e3:7.1f} ms  {secs / base:5.2f}× numpy import")


if __name__ == "__main__":
    main()
