"""Text generation: prime a text model, then draw characters one at a time, feeding each back.

The hot loop per character is: draw an index from the output row *in place* (no copy), move
the one-hot 1 in the input buffer (two element writes), replay the lean one-step tape of the
next ring phase. State never leaves the ring, so nothing is allocated or copied per character.
Each call owns its own step stage (``Model.step_stage``), so generators are independent of each
other and of ``Model.step`` (several may be interleaved, or run in different threads).

A model with a context (a transformer: its histories hold that many steps) shifts it as
llama.cpp does: a stream about to step past the context restarts from the zero state fed its
last ``context // 2`` characters (on a tape of its own, then copied into its row), so it never
stops and costs one re-read per ``context // 2`` characters. A prime longer than the context
keeps its last ``context`` characters.

Several primes run as one batch, one row each: one tape replay per character for all of them,
and one draw for all of them (:func:`nnre.draws.draw_rows`). Stream i draws with its own
sampler seeded ``seed + i``, so it gives the text that prime alone gives with ``seed + i``
(up to the rounding of a batched matrix product, which could move a draw that lands within
~1e-7 of a boundary between two characters).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from operator import itemgetter
from typing import Any

from nnre import budget
from nnre.codecs import Sampler, text_io
from nnre.draws import draw_rows
from nnre.errors import FeedError, OutputError

SAMPLER_BYTES = 4096  # one Sampler besides its two arrays: objects, deque, PCG64 (~2.9 KiB)


def generate(model: Any, prime: str | Sequence[str], length: int, *,
             seed: int | None = None, stop: str | None = None, **settings: Any
             ) -> Iterator[Any]:
    """Check everything now (bad prime, settings), then return the lazy character stream:
    one-character strings for a ``str`` prime; for a list of primes, one tuple per step with
    a character per prime ("" for a prime whose stream has stopped)."""
    io = text_io(model.metadata, list(model.inputs), list(model.outputs))
    primes = [prime] if isinstance(prime, str) else list(prime) \
        if isinstance(prime, Sequence) else None
    if not primes or not all(isinstance(p, str) and p for p in primes):
        raise FeedError("generation needs a prime of at least one character (or a non-empty "
                        "list of them)")
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise FeedError(f"length must be an integer ≥ 0, got {length!r}")
    context = getattr(model, "context", None)
    codes = [io.chars.encode(p)[-context:] if context else io.chars.encode(p) for p in primes]
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise FeedError(f"seed must be an integer ≥ 0, got {seed!r}")
    check_batch(model, len(primes))  # now, not at the first character
    samplers = [Sampler(len(io.chars.vocab), seed=None if seed is None else seed + i,
                        **settings) for i in range(len(primes))]
    for sampler, prime_codes in zip(samplers, codes, strict=True):
        sampler.remember(prime_codes)
    steps = _streams(model, io.input, model.program.outputs[io.output], io.chars.vocab, codes,
                     length, samplers, stop or "")
    return map(itemgetter(0), steps) if isinstance(prime, str) else steps


def check_batch(model: Any, count: int, kept: int = 0) -> None:
    """Refuse a batch of ``count`` texts whose step buffers and samplers (and ``kept``
    characters per text that the caller holds) would pass the memory budget, before any of
    it is allocated."""
    vocab = len(text_io(model.metadata, list(model.inputs), list(model.outputs)).chars.vocab)
    per_text = SAMPLER_BYTES + 16 * vocab + 8 * (kept + 1)
    budget.check(model.memory(count) + per_text * count,
                 f"generating {count:,} texts as one batch", FeedError)


def _streams(model: Any, input_name: str, out_index: int, vocab: list[str],
             codes: list[list[int]], length: int, samplers: list[Sampler], stop: str
             ) -> Iterator[tuple[str, ...]]:
    batch = len(codes)
    stage = model.step_stage(batch)
    x = stage.given[model.program.inputs[input_name]]  # the rows the tape reads
    rows = [model._out_rows(arrays, out_index, batch) for arrays in stage.arrays]
    tapes, phases = stage.tapes, stage.phases
    hot = [0] * batch  # the hot index of each one-hot row
    ids = input_name in model.program.ids  # x ∈ ℕ: fed the code itself

    def feed(t: int, streams: Sequence[int], now: Sequence[int]) -> None:
        """Step t with character ``now[i]`` for each stream i in ``streams``; the other rows
        keep their input (one-hot rows are edited in place: two element writes)."""
        for i in streams:
            code = now[i]
            if ids:
                x[i, 0] = code
                continue
            x[i, hot[i]] = 0
            x[i, code] = 1
            hot[i] = code
        for f in tapes[t % phases]:
            f()

    t = _prime(stage, codes, feed)
    shift = _Shift(model, input_name, out_index, stage, rows, codes)
    live = list(range(batch))
    drawn = [0] * batch  # each stream's last character, fed back at the next step
    chars = [""] * batch  # "" stays for a stream that has stopped
    tails = [""] * batch
    for n in range(length):
        if n:  # feed back the characters just drawn (the primes gave the first distributions)
            full = shift.full(live, drawn)
            feed(t, live, drawn)
            for i in full:
                shift.restart(i, t % phases)
            t += 1
        out = rows[(t - 1) % phases]
        if len(live) == 1:
            i = live[0]
            drawn[i] = code = samplers[i](out[i])
            chars[i] = vocab[code]
        else:  # the rows drawn together, each as its sampler alone draws it
            got = draw_rows([samplers[i] for i in live],
                            out if len(live) == batch else out[live])
            for i, one in zip(live, got, strict=True):
                if isinstance(one, OutputError):
                    raise one
                drawn[i] = one
                chars[i] = vocab[one]
        yield tuple(chars)
        if stop:
            for i in live:
                tails[i] = (tails[i] + chars[i])[-len(stop):]
                if tails[i] == stop:
                    chars[i] = ""
            live = [i for i in live if tails[i] != stop]
            if not live:
                return


class _Shift:
    """The context shift of a model with a context: each stream's characters since its zero
    state, and a restart on a batch-1 tape of its own when they would pass the context."""

    def __init__(self, model: Any, input_name: str, out_index: int, stage: Any,
                 rows: list[Any], codes: list[list[int]]) -> None:
        self.context = getattr(model, "context", None)
        self.model, self.stage, self.rows = model, stage, rows
        self.input_name, self.out_index = input_name, out_index
        self.seen = [list(c) for c in codes]  # what each stream's state has read
        self.side: Any = None

    def full(self, live: Sequence[int], drawn: Sequence[int]) -> list[int]:
        """Record this step's characters; the streams whose state is full before it."""
        if not self.context:
            return []
        full = [i for i in live if len(self.seen[i]) >= self.context]
        for i in live:
            self.seen[i].append(drawn[i])
        for i in full:  # the shared tape steps this row harmlessly; restart() replaces it
            for buffers in self.stage.ring.values():
                for buf in buffers:
                    buf[i] = 0
        return full

    def restart(self, i: int, phase: int) -> None:
        """Stream i again from the zero state, fed its last ``context // 2`` characters
        (this step's included), into its row of the ring at ``phase`` (just written)."""
        assert self.context
        keep = self.seen[i][-max(1, self.context // 2):]
        self.seen[i] = list(keep)
        if self.side is None:
            self.side = self.model.step_stage(1)
        side, prog = self.side, self.model.program
        for buffers in side.ring.values():
            for buf in buffers:
                buf[...] = 0
        x = side.given[prog.inputs[self.input_name]]
        ids = self.input_name in prog.ids
        for n, code in enumerate(keep):
            x[...] = 0
            if ids:
                x[0, 0] = code
            else:
                x[0, code] = 1
            for f in side.tapes[n % side.phases]:
                f()
        last, phases = len(keep) - 1, side.phases
        for name, buffers in self.stage.ring.items():
            for k in range(phases):
                buffers[(phase - k) % phases][i] = side.ring[name][(last - k) % phases][0]
        out = self.model._out_rows(side.arrays[last % phases], self.out_index, 1)
        self.rows[phase][i] = out[0]


def _prime(stage: Any, codes: list[list[int]], feed: Any) -> int:
    """Feed the primes, aligned at their ends: a shorter one starts later, from the zero state
    (its rows of the state ring are zeroed just before its first step). Returns the steps."""
    longest = max(map(len, codes))
    starts = [longest - len(c) for c in codes]
    for t in range(longest):
        for i, start in enumerate(starts):
            if start == t and t:
                for buffers in stage.ring.values():
                    for buf in buffers:
                        buf[i] = 0
        streams = [i for i, start in enumerate(starts) if t >= start]
        feed(t, streams, [c[t - s] if t >= s else 0 for c, s in zip(codes, starts, strict=True)])
    return longest


def default_prime(model: Any) -> str:
    """A newline if the vocabulary has one (text starts after a line break), else its first."""
    vocab = text_io(model.metadata, list(model.inputs), list(model.outputs)).chars.vocab
    return "\n" if "\n" in vocab else vocab[0]
