"""How well a character model starts from the zero state, as generation does.

Generation (``nnre run --prime "The "``) starts from the zero state, but a model trained
only on carried state rarely sees that state and starts badly ("The lamp bufted oo the
rocks."). This measures it on the held-out part of a text: for every non-empty line with at
least ``--context`` characters of held-out text before it, the model reads the line's first
``--span`` characters and predicts the character after each (as generation reads a prime),

* from the zero state: the line's first character is the first thing the model reads;
* in context: the model has read the ``--context`` characters before the line first.

Both score the same characters, so the ratio says what starting from nothing costs. Only
the runtime's API is used: ``nnre.load``, ``Model.run`` and the bundle's ``char`` codec.
The held-out part is the end of the text, cut as ``nndk train`` cuts it (``--val-frac``,
default: the bundle's training provenance, else 0.1).

Run: python benchmarks/bench_zero_state.py [samples/lighthouse.bundle] [--text samples/corpus.txt]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import nnre
from nnre.codecs import text_io

ROOT = Path(__file__).resolve().parent.parent
BATCH = 256  # lines per Model.run call: bounds memory at (context + span) x BATCH x V


@dataclass(frozen=True)
class ZeroStateBits:
    zero: float  # bits per character read from the zero state
    context: float  # the same characters read after the preceding context
    lines: int  # lines measured

    @property
    def ratio(self) -> float:
        return self.zero / self.context


def held_out(text: str, val_frac: float) -> str:
    """The end of ``text`` that ``nndk train`` holds out (``nndk.data.load_text``'s cut)."""
    return text[len(text) - int(len(text) * val_frac):]


def line_starts(text: str, context: int, span: int) -> list[int]:
    """Starts of non-empty lines with ``context`` characters before them and ``span`` + 1
    from them (the ``span`` read, and the one predicted after the last)."""
    return [p for p in range(max(context, 1), len(text) - span)
            if text[p - 1] == "\n" and text[p] != "\n"]


def mean_bits(model: nnre.Model, text: str, starts: list[int], lead: int, span: int) -> float:
    """Mean −log₂ p of ``text[p:p+span]`` for each start p, the model having read the ``lead``
    characters before p from the zero state (batched: one line per row)."""
    io = text_io(model.metadata, list(model.inputs), list(model.outputs))
    index = {ch: i for i, ch in enumerate(io.chars.vocab)}
    total, count = 0.0, 0
    for b in range(0, len(starts), BATCH):
        chunk = starts[b:b + BATCH]
        windows = [text[p - lead:p + span] for p in chunk]  # read: all but the last character
        feeds = np.stack([io.chars.one_hot(w[:-1], model.dtype) for w in windows], axis=1)
        probs = model.run({io.input: feeds})[0][io.output]  # (lead + span − 1, lines, V)
        for row, window in enumerate(windows):
            targets = [index[ch] for ch in window[lead:]]
            picked = probs[lead - 1:, row][np.arange(span), targets].astype(np.float64)
            total += float(-np.log2(np.maximum(picked, 1e-30)).sum())
            count += span
    return total / count


def measure(model: nnre.Model, text: str, context: int = 200, span: int = 20) -> ZeroStateBits:
    """Zero-state vs in-context bits per character over ``text`` (already the held-out part)."""
    starts = line_starts(text, context, span)
    if not starts:
        raise ValueError(f"no line with {context} characters before it and {span + 1} from it")
    targets = [p + 1 for p in starts]  # what reading the line's first `span` characters predicts
    return ZeroStateBits(mean_bits(model, text, targets, 1, span),
                         mean_bits(model, text, targets, context + 1, span), len(starts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", nargs="?", default=str(ROOT / "samples" / "lighthouse.bundle"))
    parser.add_argument("--text", default=str(ROOT / "samples" / "corpus.txt"))
    parser.add_argument("--val-frac", type=float, default=None)
    parser.add_argument("--context", type=int, default=200)
    parser.add_argument("--span", type=int, default=20)
    args = parser.parse_args()
    model = nnre.load(args.bundle)
    hyper = model.metadata.get("provenance", {}).get("hyperparameters", {})
    val_frac = args.val_frac if args.val_frac is not None else hyper.get("val_frac", 0.1)
    text = held_out(Path(args.text).read_text(encoding="utf-8"), val_frac)
    result = measure(model, text, args.context, args.span)
    print(f"{args.bundle}: {result.lines} held-out lines, each read from its first character, "
          f"{args.span} characters predicted")
    print(f"  from the zero state:              {result.zero:.3f} bits/char")
    print(f"  after the {args.context} characters before: {result.context:.3f} bits/char")
    print(f"  ratio: {result.ratio:.2f}x")


if __name__ == "__main__":
    main()
