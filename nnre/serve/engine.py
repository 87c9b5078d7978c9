"""Continuous batching: the text streams of one model stepped together, one batch row each.

Orca's iteration-level scheduling, for recurrent state (as vLLM's Mamba state slots and
llama.cpp's per-slot state): every step advances every active stream by one character, each
through its own rows of the state; a new stream joins at the next step (its prompt fed one
character per step, exactly as ``Model.generate`` feeds a prime, so a stream's text is the one
``nnre run`` gives alone with the same seed and settings), and a finished or cancelled one
leaves before the next step. Each stream draws with its own ``Sampler`` (settings and seed);
the rows that draw in a step are drawn together (:func:`nnre.draws.draw_rows`). A stream of a model
with a context (a transformer) that would step past it shifts it as ``Model.generate``
does: it starts again from the zero state, fed its last ``context // 2`` characters.

The engine needs of a model only :class:`Stepper`: ``step`` over a batch with state as a dict
of arrays whose batch axis leads, and ``zero_state`` (``nnre.Model`` has both); rows are
moved with :mod:`nnre.serve.rows` and never looked into, so a model whose state is a key/value
cache per stream batches the same way.

It runs on the event loop in slices: steps back to back until it has used ``IO_RATIO`` times
the CPU time the server took on its last turn (sending what the streams drew, reading
requests), at most ``MAX_SLICE``, then yields: sending stays a small part of the work, each
chunk carrying what a stream drew since its last one, and a new request is read within a
few slices.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from nnre import budget
from nnre.codecs import Sampler, rows, text_io
from nnre.draws import draw_rows
from nnre.errors import NnreError, OutputError
from nnre.generate import SAMPLER_BYTES
from nnre.serve import rows as staterows
from nnre.serve.errors import Busy
from nnre.serve.runner import Runner
from nnre.serve.steps import steps_for

Arrays = dict[str, np.ndarray]

IO_RATIO = 10.0  # engine time per unit of the server's own time, when both have work
MAX_SLICE = 0.005  # seconds the engine may hold the event loop at most


class Stepper(Protocol):
    """A model that steps a batch of streams, each with its own state rows (``nnre.Model``)."""

    def zero_state(self, batch: int | None = None) -> Arrays: ...

    def step(self, feeds: Mapping[str, Any], state: Mapping[str, Any] | None = None
             ) -> tuple[Arrays, Arrays]: ...


class StopFilter:
    """Text as it may be shown: held back while it could be the start of a stop string, cut
    before the first stop string (OpenAI's rule: the stop sequence is not returned)."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stops)
        self.held = ""

    def push(self, ch: str) -> tuple[str, bool]:
        """(text that can be shown now, whether a stop string came)."""
        held = self.held + ch
        found = [i for i in (held.find(s) for s in self.stops) if i >= 0]
        if found:
            self.held = ""
            return held[:min(found)], True
        keep = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(held)), keep, -1):
                if held.endswith(s[:k]):
                    keep = k
                    break
        self.held = held[len(held) - keep:]
        return held[:len(held) - keep], False

    def flush(self) -> str:
        held, self.held = self.held, ""
        return held


@dataclass(eq=False)
class TextStream:
    """One generation. The engine feeds ``feed`` (the prompt, then each character drawn),
    draws up to ``max_new`` characters and appends the text to ``text`` (never shortened:
    readers keep their own position); ``done`` is set after the last text is appended."""

    feed: deque[int]
    sampler: Sampler
    max_new: int
    stops: Sequence[str] = ()
    init: Arrays | None = None  # state rows (batch 1) to start from; None: the zero state
    keep_state: bool = False  # keep the final state and the last drawn code (sessions)
    notify_text: bool = True  # wake the reader at every character, not only at the end
    waker: asyncio.Event = field(default_factory=asyncio.Event)
    text: list[str] = field(default_factory=list)
    drawn: int = 0
    done: bool = False
    finish: str | None = None  # "stop", "length", "cancelled" or "error"
    error: NnreError | None = None
    final: Arrays | None = None
    pending: list[int] = field(default_factory=list)  # drawn but not fed (a session's next)
    seen: list[int] = field(default_factory=list)  # fed since the zero state (models with a
    # context: what a context shift feeds again)
    cancelled: bool = False
    cost: int = 0  # bytes reserved for it by the engine
    submitted: float = 0.0
    first_at: float = 0.0
    last_at: float = 0.0

    def __post_init__(self) -> None:
        self._stop = StopFilter(self.stops) if self.stops else None


class TextEngine:
    """The continuous batcher of one text model."""

    def __init__(self, model: Stepper, metadata: Mapping[str, Any], *, max_batch: int = 64,
                 batching: bool = True, max_waiting: int = 4096,
                 observe: Callable[[str, float], None] | None = None, name: str = "model"
                 ) -> None:
        io = text_io(metadata, list(model.inputs), list(model.outputs))  # type: ignore[attr-defined]
        self.model = model
        self.input, self.output, self.vocab = io.input, io.output, io.chars.vocab
        self.chars = io.chars
        #: the most steps a stream takes from the zero state (a transformer's), else None
        self.context: int | None = getattr(model, "context", None)
        self.width = model.inputs[io.input].shape[0]  # type: ignore[attr-defined]
        self.dtype = model.dtype  # type: ignore[attr-defined]
        self.max_batch = max_batch
        self.batching = batching
        self.max_waiting = max_waiting
        self.observe = observe or (lambda what, value: None)
        self.streams: list[TextStream] = []
        self.waiting: deque[TextStream] = deque()
        self.state: Arrays = {}
        self.size = 0  # rows of the state: the streams, padded to a bucket size
        self.runner = Runner(f"{name}-text")
        self.steps = steps_for(model, io.input, io.output)
        self.reserved = 0  # bytes the streams taken may use (checked against the budget)
        memory = model.memory  # type: ignore[attr-defined]
        self._row_bytes = memory(2) - memory(1)
        self._task: asyncio.Task[None] | None = None
        self._slice = 0.0

    # -- the server's side --------------------------------------------------------------
    def submit(self, streams: Sequence[TextStream]) -> None:
        """Queue streams; they join at the next step. Busy (429) when the queue is full or
        the streams' buffers (state rows, sampler, text up to max_new) would pass the
        memory budget with those already taken."""
        if len(self.waiting) + len(streams) > self.max_waiting:
            raise Busy(f"{len(self.waiting):,} streams are waiting for this model already")
        if not all(s.feed for s in streams):
            raise ValueError("a stream needs at least one code to feed")
        costs = [self._cost(s) for s in streams]
        budget.check(self.model.memory(0) + self.reserved + sum(costs),  # type: ignore[attr-defined]
                     f"{len(streams)} more stream(s) of this model beside "
                     f"{len(self.streams) + len(self.waiting):,}", Busy)
        now = time.perf_counter()
        for s, cost in zip(streams, costs, strict=True):
            s.submitted, s.cost = now, cost
            self.reserved += cost
            self.waiting.append(s)
        self.observe("queue", len(self.waiting))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    @staticmethod
    def cancel(stream: TextStream) -> None:
        """The reader is gone: the stream leaves before the next step."""
        if not stream.done:
            stream.cancelled = True

    @property
    def active(self) -> int:
        return len(self.streams)

    def _cost(self, s: TextStream) -> int:
        """What a stream may hold: state and step rows (twice: the batch is padded), its
        sampler, the codes it feeds and the text it keeps (a reference per character)."""
        return 2 * self._row_bytes + SAMPLER_BYTES + 16 * len(self.vocab) \
            + 16 * (len(s.feed) + s.max_new)

    # -- the loop -----------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            while self._admit():
                if self.runner.last > self.runner.inline_limit:
                    changed: set[TextStream] = set()
                    await self.runner(functools.partial(self._step, changed))  # a step a turn
                else:
                    changed = self._slice_of_steps()
                self._wake(changed)
                turn = time.thread_time()
                await asyncio.sleep(0)  # the server sends, reads, accepts
                self._slice = min(MAX_SLICE, IO_RATIO * (time.thread_time() - turn))
        except Exception as err:  # a bug: fail every stream rather than leave readers hanging
            for s in [*self.streams, *self.waiting]:
                self._end(s, "error", NnreError(f"internal error in the batcher: {err!r}"))
                s.waker.set()
            self.streams, self.state, self.size = [], {}, 0
            self.waiting.clear()
            self.reserved = 0
            raise
        finally:
            self._task = None

    def _slice_of_steps(self) -> set[TextStream]:
        """Steps on the event loop until the slice is used; a step that took longer than the
        runner's limit sends the next ones to its thread."""
        changed: set[TextStream] = set()
        # CPU time: a pause by the scheduler is nobody's work; one clock read a step (a
        # system call), the admission between two steps counted in the next
        start = before = time.thread_time()
        while True:
            self._step(changed)
            now = time.thread_time()
            self.runner.last = now - before
            if now - start >= self._slice or not self._admit() or \
                    self.runner.last > self.runner.inline_limit:
                return changed
            before = now

    def _wake(self, streams: set[TextStream]) -> None:
        for s in streams:
            if s.notify_text or s.done:
                s.waker.set()

    def _admit(self) -> bool:
        """Finished and cancelled streams leave, waiting ones join (up to max_batch); whether
        any stream is left to step."""
        if any(s.done or s.cancelled for s in self.streams):
            keep = [i for i, s in enumerate(self.streams) if not (s.done or s.cancelled)]
            for s in self.streams:
                if s.cancelled and not s.done:
                    self._end(s, "cancelled")
                    s.waker.set()
                if s.done:
                    self.reserved -= s.cost
            self.streams = [self.streams[i] for i in keep]
            self.size = staterows.bucket(len(keep)) if keep else 0
            self.state = staterows.take(self.state, keep, self.size)
        joined = False
        while self.waiting and len(self.streams) < self.max_batch:
            s = self.waiting.popleft()
            if s.cancelled:
                self._end(s, "cancelled")
                s.waker.set()
                self.reserved -= s.cost
                continue
            n = len(self.streams)
            if n >= self.size:
                self.size = staterows.bucket(n + 1)
                self.state = staterows.take(self.state, slice(0, n), self.size) if n \
                    else self.model.zero_state(self.size)
            staterows.put(self.state, n, s.init)
            self.streams.append(s)
            joined = True
        if joined:
            self.observe("queue", len(self.waiting))
        return bool(self.streams)

    def _step(self, changed: set[TextStream]) -> None:
        """One step of every active stream: feed each its next code, draw where a stream has
        nothing left to feed. Adds the streams that have news to ``changed``."""
        streams = self.streams
        codes = [s.feed.popleft() for s in streams]
        full = self._full(codes) if self.context else []
        if len(codes) < self.size:
            codes += [0] * (self.size - len(codes))
        failed: dict[int, NnreError] = {}
        if self.batching:
            try:
                probs, self.state = self.steps.step(codes, self.state)
            except NnreError:  # one stream's input or state is bad: find it, keep the rest
                probs, failed = self._alone(codes)
        else:  # the baseline: each stream alone, batch 1
            probs, failed = self._alone(codes)
        for i in full:
            probs[i] = self._restart(i)
        self.observe("batch", len(streams))
        for i, err in failed.items():
            self._end(streams[i], "error", err)
            changed.add(streams[i])
        drawing: list[int] = []
        fed: list[int] = []  # fed: the prompt is read and nothing to draw (max_new 0)
        for i, s in enumerate(streams):
            if not s.feed and i not in failed:
                (drawing if s.max_new > s.drawn else fed).append(i)
        if drawing:
            block = probs if len(drawing) == len(probs) else probs[drawing]
            results = draw_rows([streams[i].sampler for i in drawing], block)
            self._accept(drawing, results, time.perf_counter())
            changed.update([streams[i] for i in drawing])
        for i in fed:
            if not streams[i].done:
                self._finish(i, streams[i], "length")
                changed.add(streams[i])

    def _full(self, codes: list[int]) -> list[int]:
        """Record this step's codes; the streams whose context is full before it. Their rows
        are zeroed: the batch steps them harmlessly, :meth:`_restart` replaces the result
        (``nnre.generate``'s context shift, llama.cpp's)."""
        assert self.context
        full = []
        for i, (s, code) in enumerate(zip(self.streams, codes, strict=True)):
            if len(s.seen) >= self.context:
                full.append(i)
                staterows.put(self.state, i, None)
            s.seen.append(code)
        return full

    def _restart(self, i: int) -> np.ndarray:
        """Stream i from the zero state, fed its last ``context // 2`` codes (this step's
        included) alone, as ``nnre.generate`` does; its state row is replaced, its output row
        returned."""
        assert self.context
        s = self.streams[i]
        s.seen = s.seen[-max(1, self.context // 2):]
        state = self.model.zero_state(1)
        for code in s.seen:
            out, state = self.model.step({self.input: rows([code], self.width, self.dtype)},
                                         state)
        staterows.put(self.state, i, state)
        return out[self.output][0]  # type: ignore[no-any-return]

    def _alone(self, codes: list[int]) -> tuple[np.ndarray, dict[int, NnreError]]:
        """Each stream stepped alone at batch 1: its output row, or its error."""
        probs = np.zeros((len(self.streams), len(self.vocab)), self.dtype)
        failed: dict[int, NnreError] = {}
        for i in range(len(self.streams)):
            one = {k: v[i:i + 1] for k, v in self.state.items()}
            try:
                y, new = self.steps.step(codes[i:i + 1], one)
            except NnreError as err:
                failed[i] = err
                continue
            probs[i] = y[0]
            staterows.put(self.state, i, new)
        return probs, failed

    def _accept(self, drawing: list[int], codes: list[int | OutputError], now: float
                ) -> None:
        """Each drawing stream's character: its text, fed back next step, or its end."""
        streams, vocab = self.streams, self.vocab
        for i, code in zip(drawing, codes, strict=True):
            s = streams[i]
            if isinstance(code, OutputError):  # this stream's output is broken
                self._end(s, "error", code)
                continue
            drawn = s.drawn = s.drawn + 1
            if drawn == 1:
                s.first_at = now
            s.last_at = now
            if s._stop is None:
                s.text.append(vocab[code])
                hit = False
            else:
                shown, hit = s._stop.push(vocab[code])
                if shown:
                    s.text.append(shown)
            if hit or drawn >= s.max_new:
                s.pending = [code]
                self._finish(i, s, "stop" if hit else "length")
            else:
                s.feed.append(code)

    def _finish(self, i: int, s: TextStream, reason: str) -> None:
        if s._stop is not None and reason == "length":
            rest = s._stop.flush()
            if rest:
                s.text.append(rest)
        if s.keep_state:
            s.final = staterows.row(self.state, i)
        self._end(s, reason)

    @staticmethod
    def _end(s: TextStream, reason: str, error: NnreError | None = None) -> None:
        """Mark the stream finished (its reader is woken on the event loop: this may run on
        the runner's thread, and an asyncio.Event is the loop's alone)."""
        s.finish, s.error, s.done = reason, error, True
