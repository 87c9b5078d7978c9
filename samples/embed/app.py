"""A tiny app that embeds the nnre runtime: load a bundle once, generate text, and drive
``step()`` with state it holds itself (here: two independent "conversations" over one model).

Run: python samples/embed/app.py [MODEL.bundle] [--seed N]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import nnre

DEFAULT = Path(__file__).resolve().parent.parent / "lighthouse.bundle"


def greedy_continue(model: nnre.Model, prime: str, length: int) -> str:
    """Drive step() by hand: the app owns the state dict and the feedback loop."""
    vocab = model.metadata["codecs"]["x"]["vocab"]
    eye = np.eye(len(vocab), dtype=model.dtype)
    state = None  # zero state; afterwards, the dict step() returned
    out = None
    for ch in prime:
        out, state = model.step({"x": eye[vocab.index(ch)]}, state)
    text = []
    for _ in range(length):
        assert out is not None
        code = int(out["y"].argmax())
        text.append(vocab[code])
        out, state = model.step({"x": eye[code]}, state)
    return "".join(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=str(DEFAULT))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model = nnre.load(args.model)  # compiled once (cached on disk), shared by everything below
    print(f"{model.metadata['name']} {model.metadata['version']}: inputs {model.inputs}")
    sampled = "".join(model.generate("The ", 120, seed=args.seed, **model.sampling))
    print("sampled:", repr(sampled))
    print("greedy: ", repr(greedy_continue(model, "Wind from the ", 60)))


if __name__ == "__main__":
    main()
