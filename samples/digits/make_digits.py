"""Writes the handwritten digits (scikit-learn's copy of the UCI set) as nndk training arrays.

1,797 grey images of 8×8 pixels, values 0–16, classes 0–9. They are shuffled once with a fixed
seed and split: the first four fifths go to ``train.npz`` (``nndk train`` keeps its own
validation part of those), the last fifth to ``test.npz``, which training never sees. Each
file holds ``x`` of shape (N, 1, 8, 8), float32 in [0, 1], and integer ``target`` (N,).

    python samples/digits/make_digits.py [OUT_DIR]      # default: this script's folder
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # shipped inside scikit-learn: no download

    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data.target))
    x = (data.images[order] / 16.0).astype(np.float32)[:, None]
    return x, data.target[order].astype(np.int64)


def main(out: Path) -> None:
    x, target = digits()
    cut = len(target) - len(target) // 5
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "train.npz", x=x[:cut], target=target[:cut])
    np.savez(out / "test.npz", x=x[cut:], target=target[cut:])
    print(f"{out / 'train.npz'}: {cut} images; {out / 'test.npz'}: {len(target) - cut} images")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
