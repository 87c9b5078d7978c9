"""Many samplers drawing at once: row i of a batch's output drawn by sampler i, as it alone draws.

A batch of text streams (``nnre serve``'s, ``nnre run --num-samples``') has one output row and
one :class:`~nnre.codecs.Sampler` per stream, each with its own settings and seed. Drawing
them one by one costs a dozen NumPy calls per row (~10–20 µs, ~0.4 ms for 32 rows with top-k);
here each step of the sampler's rule is one NumPy call over every row that takes it, with
per-row settings as columns (min-p, top-k, top-p), so 32 rows cost ~2–3× one. The float
operations per row are the sampler's own, in its order, so the indices are the same:

- a cumulative sum runs along its row whatever the array's shape (``add.accumulate`` is
  sequential), so row i's sums are the ones ``Sampler.__call__`` adds;
- the temperature's power is taken per temperature over a contiguous block with the same
  scalar exponent (the same kernel as on one row);
- top-k and top-p keep the same entries: the values sorted from the largest (top-p's
  running mass over them is the same sums), cut at the same count (``searchsorted`` on a
  non-decreasing row is a count of entries below (``left``) or at most (``right``) the
  value); of the values equal to the last one kept, the lowest indices, as the stable sort
  ranks them.

Rows with a repeat penalty (its history is its own) and rows that are not a distribution
(NaN, negative, zero total: ``Sampler.__call__`` names the problem) are drawn one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from nnre.errors import OutputError

if TYPE_CHECKING:
    from nnre.codecs import Sampler


def draw_rows(samplers: Sequence[Sampler], probs: np.ndarray) -> list[int | OutputError]:
    """Row i of ``probs`` (B, V) drawn by ``samplers[i]``: the index ``samplers[i](probs[i])``
    gives, or the OutputError it raises (the other rows unaffected)."""
    n = len(samplers)
    if n == 1 or not probs.shape[1]:
        return [_one(s, row) for s, row in zip(samplers, probs, strict=True)]
    p = np.array(probs, dtype=np.float64)  # a copy: filtered in place
    if probs.dtype == np.float64:  # only a float64 output can overflow a float64 sum
        with np.errstate(over="ignore"):
            ok = _drawable(p)
    else:
        ok = _drawable(p)
    if ok.all():
        first = samplers[0]
        if first.penalty is None and not first.greedy and \
                len({s.settings for s in samplers}) == 1:  # the common case: one setting
            return _draw(samplers, p, True)
    if ok.all() and all(s.penalty is None for s in samplers):
        alone: list[int] = []
        greedy = [i for i, s in enumerate(samplers) if s.greedy]
    else:
        alone = [i for i, s in enumerate(samplers) if s.penalty is not None or not ok[i]]
        greedy = [i for i, s in enumerate(samplers)
                  if s.greedy and s.penalty is None and ok[i]]
    out: list[int | OutputError] = [0] * n
    for i in alone:
        out[i] = _one(samplers[i], probs[i])
    if greedy:
        codes = (p if len(greedy) == n else p[greedy]).argmax(axis=1)
        for i, code in zip(greedy, codes.tolist(), strict=True):
            samplers[i].draws += 1
            out[i] = code
    if len(alone) + len(greedy) == n:
        return out
    if alone or greedy:
        skip = {*alone, *greedy}
        drawn = [i for i in range(n) if i not in skip]
        p = p[drawn]
        chosen = [samplers[i] for i in drawn]
    else:
        drawn, chosen = list(range(n)), list(samplers)
    for i, code in zip(drawn, _draw(chosen, p, False), strict=True):
        out[i] = code
    return out


def _draw(samplers: Sequence[Sampler], p: np.ndarray, same: bool
          ) -> list[int | OutputError]:
    """Each row of ``p`` (float64, drawable, no penalty, not greedy) drawn by its sampler,
    filtered in place; ``same``: every sampler has the same settings."""
    _filter(samplers, p, same)
    cdf = np.add.accumulate(p, axis=1, out=p)
    u = np.array([s.rng.random() for s in samplers])
    for s in samplers:
        s.draws += 1
    # searchsorted(x, side="right") on a non-decreasing row: the entries ≤ x
    return np.add.reduce(cdf <= (u * cdf[:, -1])[:, None], axis=1).tolist()


def _filter(samplers: Sequence[Sampler], p: np.ndarray, same: bool) -> None:
    """``Sampler._filtered`` (min-p, temperature, top-k, top-p) on every row, in place;
    ``same``: one sampler's settings for all (no per-row columns to build)."""
    rows = range(len(samplers))
    first = samplers[0]
    if first.min_p is not None if same else any(s.min_p is not None for s in samplers):
        low = first.min_p * np.maximum.reduce(p, axis=1) if same else \
            np.array([s.min_p or 0.0 for s in samplers]) * np.maximum.reduce(p, axis=1)
        np.copyto(p, 0.0, where=p < low[:, None])  # min_p 0 keeps every entry (all ≥ 0)
    temps: dict[float, Sequence[int]] = {}
    if same:
        if first.inv_t != 1.0:
            temps[first.inv_t] = rows
    else:
        groups: dict[float, list[int]] = {}
        for i, s in enumerate(samplers):
            if s.inv_t != 1.0:
                groups.setdefault(s.inv_t, []).append(i)
        temps.update(groups)
    for inv_t, which in temps.items():  # p^(1/T) after scaling the largest to 1
        if len(which) == len(samplers):
            np.divide(p, np.maximum.reduce(p, axis=1, keepdims=True), out=p)
            np.power(p, inv_t, out=p)
        else:
            part = p[which]
            np.divide(part, np.maximum.reduce(part, axis=1, keepdims=True), out=part)
            p[which] = np.power(part, inv_t, out=part)
    if same:
        cut: Sequence[int] = rows if first.top_k is not None or first.top_p is not None else ()
    else:
        cut = [i for i in rows
               if samplers[i].top_k is not None or samplers[i].top_p is not None]
    if not cut:
        return
    part = p if len(cut) == len(samplers) else p[cut]
    width = p.shape[1]
    # each row's values from the largest down: __call__'s stable ranking, without the
    # indices (equal values add up the same whichever index each came from)
    desc = np.sort(part, axis=1)[:, ::-1]
    keep = np.full(len(cut), first.top_k or width) if same else \
        np.array([samplers[i].top_k or width for i in cut])
    nucleus: Sequence[int] = (range(len(cut)) if first.top_p is not None else ()) if same \
        else [j for j, i in enumerate(cut) if samplers[i].top_p is not None]
    if nucleus:
        whole = len(nucleus) == len(cut)
        mass = np.add.accumulate(desc if whole else desc[list(nucleus)], axis=1)
        k = keep if whole else keep[list(nucleus)]
        tops = first.top_p if same else np.array([samplers[cut[j]].top_p for j in nucleus])
        below = tops * mass[np.arange(len(nucleus)), k - 1]
        # searchsorted(below, side="left") over the first k sums: the sums < below
        count = np.add.reduce((mass < below[:, None]) & (np.arange(width) < k[:, None]),
                              axis=1)
        keep[list(nucleus)] = np.minimum(k, count + 1)
    # the first `keep` of the ranking: the values above the last one kept, and of those
    # equal to it the lowest indices (the stable ranking puts them first)
    last = desc[np.arange(len(cut)), keep - 1][:, None]
    above = part > last
    tied = part == last
    room = keep - np.add.reduce(above, axis=1)
    kept = above | (tied & (np.add.accumulate(tied, axis=1) <= room[:, None]))
    np.copyto(part, 0.0, where=~kept)
    if part is not p:
        p[cut] = part


def _drawable(p: np.ndarray) -> np.ndarray:
    """Per row of a float64 block, whether it surely passes ``Sampler.__call__``'s rule:
    finite, ≥ 0, a positive total. The total here is NumPy's pairwise sum, not the running
    sum ``__call__`` checks; they differ by rounding only, so a total far below overflow
    (< 1e300) is finite both ways, and a row nearer is left to ``__call__`` alone."""
    total = np.add.reduce(p, axis=1)
    return (0 < total) & (total < 1e300) & (np.minimum.reduce(p, axis=1) >= 0)


def _one(sampler: Sampler, row: np.ndarray) -> int | OutputError:
    try:
        return sampler(row)
    except OutputError as err:
        return err
