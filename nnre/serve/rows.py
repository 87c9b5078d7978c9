"""Per-stream state as rows: gather, scatter and pad a dict of arrays whose batch axis leads.

Whatever ``Model.step`` takes and returns as state (an LSTM's ``h`` and ``c``; a transformer's
key/value cache and position per stream) is a dict of arrays with the batch leading, so the
batchers move streams in and out of a batch with these few row operations and never look
inside a state. Batches are padded to a few sizes (:func:`bucket`): ``Model`` binds one tape
per batch size (~0.2–1 ms) and keeps 16, so a batch whose size changed at every join or leave
would rebind all the time; the padding rows cost a little compute instead (at most a third).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

Arrays = dict[str, np.ndarray]

_SIZES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)


def bucket(n: int) -> int:
    """The padded batch size for ``n`` streams: 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, …,
    256, then multiples of 128 (16 sizes up to 256: one ``Model`` tape cache)."""
    for size in _SIZES:
        if size >= n:
            return size
    return -(-n // 128) * 128


def take(state: Mapping[str, np.ndarray], rows: Sequence[int] | slice, size: int) -> Arrays:
    """The given rows of every array, in order, padded with zero rows to ``size`` rows."""
    out = {}
    for key, arr in state.items():
        picked = arr[rows]
        grown = np.zeros((size, *arr.shape[1:]), arr.dtype)
        grown[:len(picked)] = picked
        out[key] = grown
    return out


def put(state: Mapping[str, np.ndarray], row: int, value: Mapping[str, np.ndarray] | None
        ) -> None:
    """Write one stream's state (arrays of one row) into ``row``; None writes zeros."""
    for key, arr in state.items():
        arr[row] = 0 if value is None else value[key][0]


def row(state: Mapping[str, np.ndarray], index: int) -> Arrays:
    """One stream's state as arrays of one row (copies: the batch's arrays move on)."""
    return {key: arr[index:index + 1].copy() for key, arr in state.items()}


def split(state: Mapping[str, np.ndarray], sizes: Sequence[int]) -> list[Arrays]:
    """Consecutive row blocks of the given sizes."""
    out, start = [], 0
    for size in sizes:
        out.append({k: v[start:start + size] for k, v in state.items()})
        start += size
    return out


def join(states: Sequence[Mapping[str, np.ndarray]]) -> Arrays:
    """Row blocks stacked in order (the inverse of :func:`split`)."""
    return {k: np.concatenate([s[k] for s in states]) for k in states[0]}
