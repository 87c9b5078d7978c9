"""Where a model's work runs: on the event loop while it is quick, else on its own thread.

A character LSTM steps 32 streams in ~0.2 ms: a thread hop (~0.05–0.1 ms each way) would cost
a third of that, so quick work runs inline on the event loop, between the server's reads and
writes. A step or a batch that took longer than ``INLINE_LIMIT`` (CPU time) would hold up every
other request for that long, so the next one runs on a thread of its own (one per model and kind,
so a model's calls never overlap and keep their per-thread buffers); the first call, whose
cost is unknown, runs there too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

INLINE_LIMIT = 0.002  # seconds: the longest the event loop is held by one call


class Runner:
    """Runs calls one at a time, inline or on a private thread by the last call's duration."""

    def __init__(self, name: str, inline_limit: float = INLINE_LIMIT) -> None:
        self.name = name
        self.inline_limit = inline_limit
        self.last = float("inf")  # unknown: the first call goes to the thread
        self._pool: ThreadPoolExecutor | None = None

    async def __call__(self, fn: Callable[[], T]) -> T:
        if self.last <= self.inline_limit:
            return self._timed(fn)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"nnre-{self.name}")
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._timed, fn)

    def _timed(self, fn: Callable[[], T]) -> T:
        """Run ``fn``, keeping the CPU time it took in ``last``: CPU, not wall time, so that
        on a busy machine a call the scheduler paused is not taken for a slow one."""
        start = time.thread_time()
        try:
            return fn()
        finally:
            self.last = time.thread_time() - start

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
