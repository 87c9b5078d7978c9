"""Dynamic batching of tensor requests: concurrent ``infer`` calls on one model run as one.

The first request waiting opens a batch; requests that can share it (any, for a model without
state; the same number of time steps, for a recurrent one) join until it holds ``max_batch``
examples or ``max_wait`` has passed since it opened (Triton's max queue delay), then it runs
as one ``Model.step`` (or ``Model.run`` over the sequence, the examples side by side on the
batch axis, each from its own initial state) and the outputs are cut back into requests. If a
batch fails (an input only the model can check, such as an id out of range), its requests
run again one by one, so one bad request never fails another.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from functools import partial

import numpy as np

from nnre.errors import NnreError
from nnre.model import Model
from nnre.serve import rows as staterows
from nnre.serve.errors import Busy
from nnre.serve.infer import Job
from nnre.serve.runner import Runner

Result = tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | NnreError


class InferBatcher:
    """The dynamic batcher of one model's tensor requests."""

    def __init__(self, model: Model, *, max_batch: int = 64, max_wait: float = 0.002,
                 batching: bool = True, max_waiting: int = 4096,
                 observe: Callable[[str, float], None] | None = None, name: str = "model"
                 ) -> None:
        self.model = model
        self.max_batch = max_batch
        self.max_wait = max_wait if batching else 0.0
        self.batching = batching
        self.max_waiting = max_waiting
        self.observe = observe or (lambda what, value: None)
        self.runner = Runner(f"{name}-infer")
        self.queue: deque[tuple[Job, asyncio.Future[Result]]] = deque()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def submit(self, job: Job) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The outputs and final state of one request (its own layout restored), or its
        NnreError raised."""
        if len(self.queue) >= self.max_waiting:
            raise Busy(f"{len(self.queue):,} requests are waiting for this model already")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self.queue.append((job, future))
        self.observe("queue", len(self.queue))
        self._arrived.set()
        if self._task is None:
            self._task = loop.create_task(self._run())
        result = await future
        if isinstance(result, NnreError):
            raise result
        return result

    async def _run(self) -> None:
        batch: list[tuple[Job, asyncio.Future[Result]]] = []
        try:
            while self.queue:
                batch = await self._gather()
                self.observe("queue", len(self.queue))
                self.observe("batch", sum(job.rows for job, _ in batch))
                results = await self.runner(partial(run_jobs, self.model, [j for j, _ in batch]))
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():  # its client may be gone
                        future.set_result(result)
        except Exception as err:  # a bug: answer everyone rather than leave them waiting
            for _, future in [*batch, *self.queue]:
                if not future.done():
                    future.set_result(NnreError(f"internal error in the batcher: {err!r}"))
            self.queue.clear()
            raise
        finally:
            self._task = None

    async def _gather(self) -> list[tuple[Job, asyncio.Future[Result]]]:
        first = self.queue.popleft()
        batch, size = [first], first[0].rows
        deadline = time.perf_counter() + self.max_wait
        while self.batching and size < self.max_batch:
            left_out: deque[tuple[Job, asyncio.Future[Result]]] = deque()
            for item in self.queue:
                job = item[0]
                if job.steps == first[0].steps and size + job.rows <= self.max_batch:
                    batch.append(item)
                    size += job.rows
                else:
                    left_out.append(item)
            self.queue = left_out
            left = deadline - time.perf_counter()
            if size >= self.max_batch or left <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except asyncio.TimeoutError:
                pass
        return batch


def run_jobs(model: Model, jobs: list[Job]) -> list[Result]:
    """Each job's (outputs, final state) in its own layout, or its error; one model call for
    all of them when it succeeds."""
    if len(jobs) > 1:
        try:
            return _together(model, jobs)
        except NnreError:
            pass  # some job is bad: find which, one by one
    out: list[Result] = []
    for job in jobs:
        try:
            out.extend(_together(model, [job]))
        except NnreError as err:
            out.append(err)
    return out


def _together(model: Model, jobs: list[Job]) -> list[Result]:
    sizes = [job.rows for job in jobs]
    if model.state:  # (time, batch, …): side by side on axis 1, each from its own state
        feeds = {n: np.concatenate([j.feeds[n] for j in jobs], axis=1) for n in model.inputs}
        init = staterows.join([j.init if j.init is not None else model.zero_state(j.rows)
                               for j in jobs])
        outputs, final = model.run(feeds, init)
        parts = _cut(outputs, sizes, axis=1)
        finals = staterows.split(final, sizes)
        return [({k: v if j.batched else v[:, 0] for k, v in p.items()}, f)
                for j, p, f in zip(jobs, parts, finals, strict=True)]
    feeds = {n: np.concatenate([j.feeds[n] for j in jobs]) for n in model.inputs}
    outputs, _ = model.step(feeds)
    return [({k: v if j.batched else v[0] for k, v in p.items()}, {})
            for j, p in zip(jobs, _cut(outputs, sizes, axis=0), strict=True)]


def _cut(arrays: dict[str, np.ndarray], sizes: list[int], axis: int
         ) -> list[dict[str, np.ndarray]]:
    bounds = np.cumsum(sizes)[:-1]
    pieces = {k: np.split(v, bounds, axis=axis) for k, v in arrays.items()}
    return [{k: pieces[k][i] for k in arrays} for i in range(len(sizes))]
