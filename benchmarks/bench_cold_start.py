"""Time to first character of ``nnre run``, cold (no compile cache: SymPy imported, equations
compiled) and warm (cached Program), against ``python -c "import numpy"``; and time to the
first answer of the serverless handler (``samples/serverless/handler.py``: import, load the
bundle at module level, answer one completion), with an empty cache folder and a warm one.

Each figure is the median over runs of a fresh process, from spawn until the first generated
character (or the handler's first answer) arrives on its stdout. Run:
python benchmarks/bench_cold_start.py [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "samples" / "lighthouse.bundle"
#: A cold start of the serverless sample: import the handler (loads the bundle), answer once.
HANDLER = f"""
import sys
sys.path.insert(0, {str(ROOT / "samples" / "serverless")!r})
import handler
answer = handler.handler({{"prompt": "T", "max_tokens": 1, "seed": 1}}, None)
sys.stdout.write(answer["body"])
"""


@contextmanager
def serving(folder: Path) -> Iterator[str]:
    """A plain HTTP server on 127.0.0.1 for ``folder`` (Python's own: no range requests)."""
    handler = partial(SimpleHTTPRequestHandler, directory=str(folder))
    SimpleHTTPRequestHandler.log_message = lambda *a: None  # type: ignore[method-assign]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


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
        handler = [sys.executable, "-c", HANDLER]
        subprocess.run(handler, env=env, capture_output=True, check=True)  # warm its cache
        results["serverless handler, warm cache"] = statistics.median(
            first_char(handler, 0, env) for _ in range(args.runs))
        colds = []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as empty:  # a new instance: nothing cached
                colds.append(first_char(handler, 0, {**env, "XDG_CACHE_HOME": empty}))
        results["serverless handler, empty cache"] = statistics.median(colds)
        with serving(BUNDLE.parent) as url:  # the model at a URL: fetched into the cache
            remote = {**env, "NNRE_MODEL": f"{url}/{BUNDLE.name}"}
            colds = []
            for _ in range(args.runs):
                with tempfile.TemporaryDirectory() as empty:
                    colds.append(first_char(handler, 0, {**remote, "XDG_CACHE_HOME": empty}))
            results["handler, http:// model, empty cache"] = statistics.median(colds)
            subprocess.run(handler, env=remote, capture_output=True, check=True)
            results["handler, http:// model, warm cache"] = statistics.median(
                first_char(handler, 0, remote) for _ in range(args.runs))
    base = results['python -c "import numpy"']
    for name, secs in results.items():
        print(f"{name:<38} {secs * 1e3:7.1f} ms  {secs / base:5.2f}× numpy import")


if __name__ == "__main__":
    main()
