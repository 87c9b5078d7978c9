"""Text generation: prime a text model, then draw characters one at a time, feeding each back.

The hot loop per character is: draw an index from the output row *in place* (no copy), move
the one-hot 1 in the input buffer (two element writes), replay the lean one-step tape of the
next ring phase. State never leaves the ring, so nothing is allocated or copied per character.
Each call owns its own step stage (``Model.step_stage``), so generators are independent of each
other and of ``Model.step`` (several may be interleaved, or run in different threads).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from nnre.codecs import Sampler, text_io
from nnre.errors import FeedError


def generate(model: Any, prime: str, length: int, *, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
             greedy: bool = False, stop: str | None = None) -> Iterator[str]:
    """Check everything now (bad prime, settings), then return the lazy character stream."""
    io = text_io(model.metadata, list(model.inputs), list(model.outputs))
    if not isinstance(prime, str) or not prime:
        raise FeedError("generation needs a prime of at least one character")
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise FeedError(f"length must be an integer ≥ 0, got {length!r}")
    codes = io.chars.encode(prime)
    sampler = Sampler(len(io.chars.vocab), temperature=temperature, top_k=top_k,
                      top_p=top_p, greedy=greedy, seed=seed)
    return _stream(model, io.input, model.program.outputs[io.output], io.chars.vocab, codes,
                   length, sampler, stop or "")


def _stream(model: Any, input_name: str, out_index: int, vocab: list[str], codes: list[int],
            length: int, sampler: Sampler, stop: str) -> Iterator[str]:
    stage = model.step_stage(1)
    x = stage.given[model.program.inputs[input_name]][0]  # the one-hot row the tape reads
    rows = [model._out_rows(arrays, out_index, 1)[0] for arrays in stage.arrays]
    tapes, phases = stage.tapes, stage.phases
    fed = [0, 0]  # [the hot index of the one-hot row, steps taken]

    def feed(code: int) -> None:
        """One step with ``code`` as the input character (the one-hot row is edited in place)."""
        x[fed[0]] = 0
        x[code] = 1
        fed[0] = code
        for f in tapes[fed[1] % phases]:
            f()
        fed[1] += 1

    for code in codes:  # the prime: one step per character
        feed(code)
    tail = ""
    for n in range(length):
        if n:  # feed back the character just drawn (the prime gave the first distribution)
            feed(code)
        code = sampler(rows[(fed[1] - 1) % phases])
        yield vocab[code]
        if stop:
            tail = (tail + vocab[code])[-len(stop):]
            if tail == stop:
                return


def default_prime(model: Any) -> str:
    """A newline if the vocabulary has one (text starts after a line break), else its first."""
    vocab = text_io(model.metadata, list(model.inputs), list(model.outputs)).chars.vocab
    return "\n" if "\n" in vocab else vocab[0]
