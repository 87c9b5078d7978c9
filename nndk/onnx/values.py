"""What an ONNX value is while a graph is imported: a constant, or a per-example expression.

Per-example values (:class:`Dyn`) have ONNX shape ``lead + shape``: ``lead`` is the batch axis
(``[N]``), or time and batch (``[T, N]``) in a graph that runs recurrent ops over a whole
sequence. Equations see a per-example value with its own axes (``X ∈ ℝ^(4×5)`` for an input
``[N, 4, 5]``; a vector is a column); a reshape is a declared ``R = reshape(X)``, except in a
graph indexed by time, where the value stays the vector of its entries in row-major order
(``flat``): data laid out alike, so it may still be an output, a flattened operand, or be
combined entry by entry with values of the same shape.
A recurrent op's ``Y`` is kept as :class:`SeqY` until its direction axis is squeezed away
(or, with two directions, moved beside H: ``[hₜ; h'ₜ]``); ``Y_h``/``Y_c`` are :class:`Final`
(the state after the last step, which nnre returns as the final state), or with two
directions :class:`Finals` (the reverse direction's is its backward state at the first step,
which nnre returns as its final state too).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nndk.onnx.expr import Expr
from nndk.onnx.expr import Name as ex_Name


class Unsupported(Exception):
    """A node the importer cannot express; collected, then reported together."""


@dataclass(frozen=True)
class Const:
    value: np.ndarray
    ref: str | None = None  # canonical weight name, when this constant is a whole weight
    transposed: bool = False  # value == weights[ref].T
    source: str | None = None  # ONNX initializer it came from (for naming and reuse)
    # an elementwise expression over weights that computes ``value`` (``σ(a)``), written
    # instead of the folded numbers, and the weights it reads (name, array as stored)
    expr: Expr | None = None
    uses: tuple[tuple[str, np.ndarray], ...] = ()


@dataclass(frozen=True)
class Dyn:
    expr: Expr
    shape: tuple[int, ...]  # per example, without the lead axes
    #: The expression is the vector of all ``size`` entries in row-major order (what a
    #: reshape the language cannot write leaves), not a value of ``shape``. Only values of
    #: two or more axes can be flat: a vector is the same either way.
    flat: bool

    def __post_init__(self) -> None:
        if len(self.shape) < 2:
            object.__setattr__(self, "flat", False)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def tensor(self) -> bool:
        """The expression has the value's own axes, two or more of them."""
        return len(self.shape) >= 2 and not self.flat

    def like(self, expr: Expr) -> Dyn:
        """A value of the same shape and form (an entry-by-entry function of this one)."""
        return Dyn(expr, self.shape, self.flat)


def lang_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape the equations give a per-example value of this ONNX shape: a number and a
    vector are columns, (1, 1) and (n, 1); two or more axes are kept."""
    if len(shape) >= 2:
        return shape
    return (shape[0] if shape else 1, 1)


@dataclass(frozen=True)
class SeqY:
    exprs: tuple[Expr, ...]  # the hidden state of each direction (forward, reverse), timed
    hidden: int


@dataclass(frozen=True)
class Final:
    state: str  # canonical state name
    hidden: int


@dataclass(frozen=True)
class InitState:
    """A graph input that a recurrent op reads as its initial state ``[1, N, H]``."""

    onnx_name: str


@dataclass(frozen=True)
class Finals:
    """Final states along ONNX's first axis: both directions of a bidirectional op, or
    stacked layers' concatenated along it."""

    states: tuple[str, ...]
    hidden: int


@dataclass(frozen=True)
class Dims:
    """A shape (a 1-D int64 tensor) in which the batch or time size is not known until run
    time: ``None`` marks those entries. It can only become the shape of a zero fill."""

    dims: tuple[int | None, ...]


@dataclass(frozen=True)
class Zeros:
    """A tensor of zeros whose shape depends on the batch size (a zero initial state)."""


@dataclass(frozen=True)
class Label:
    """A class index (ArgMax) and what is computed from it: not a vector of numbers, so it
    is left out of the model's outputs; the ``argmax-label`` codec gives it from the scores."""

    source: str  # the Dyn's ONNX name the index was taken from


@dataclass(frozen=True)
class BatchFirst:
    """A sequence laid out ``[N, T, …]`` (``batch_first``): the per-example value ``dyn`` with
    its batch and time axes swapped. The Transpose that swaps them back reads it, and so do
    ops on each step alone (:func:`nndk.onnx.shapes._per_step`); the imported model itself
    is time-major (``Model.run`` takes ``[T, N, …]``)."""

    dyn: Dyn


@dataclass(frozen=True, eq=False)
class Lazy:
    """A per-example value whose entries an exporter has moved around (``Transpose``,
    ``Reshape``, ``Gather``… over every axis, the batch's too), not yet written as an
    equation: ``probe`` has the ONNX tensor's shape, for a batch of ``probe.shape`` examples
    where the batch axis was, and holds ``n·P + i`` at the entry that is entry ``i`` (row-major)
    of example ``n``'s ``base`` (``P`` entries). The batch axis may stand anywhere, or be merged
    with another axis (``[T, N·H, d]``); :mod:`nndk.onnx.rearrange` reads where it is."""

    base: Dyn
    probe: np.ndarray
    batch: int  # examples in the probe: the graph's batch size, or 2 when it is not fixed
    exact: bool  # the probe has the graph's own batch size (a Reshape may name it)
    reason: str = ""  # the node that first moved the batch axis, for messages


@dataclass(frozen=True)
class Last:
    """A sequence's value at its last step, laid out ``[N, …]`` in ONNX: ``y[:, -1]`` of a
    batch-first sequence, ``y[-1]`` of a time-major one (the usual read-out of a recurrent
    classifier). The model computes ``dyn`` at every step; what ONNX gives is its value at
    the last (the ImportResult's output kind ``last``). Ops on it alone, and constants,
    convert as over one step (:func:`nndk.onnx.shapes._at_last`)."""

    dyn: Dyn


@dataclass(frozen=True)
class Ids:
    """An integer input of token ids (declared ``x ∈ ℕ`` or ``X ∈ ℕ^T``): only Gather reads it,
    as the rows of a constant table it picks (``E[x]``)."""

    name: ex_Name
    shape: tuple[int, ...]  # per example (per step in a recurrent graph): () one id, (T,) T
    batch_first: bool = False  # a recurrent graph's ids laid out [N, T] (its Gather's rows too)
    layout: tuple[int, ...] | None = None  # per example in ONNX, when not ``shape``: (T, 1)


Value = (Const | Dyn | SeqY | Final | Finals | InitState | Dims | Zeros | Label | BatchFirst
         | Lazy | Ids | Last)

#: What each kind of value is, in the words of an error message.
WHAT = {"Const": "a constant", "Dyn": "a per-example value",
        "SeqY": "a recurrent op's output Y (with its direction axis)",
        "Final": "a recurrent op's final state", "Finals": "stacked final states",
        "InitState": "an initial-state input", "Dims": "a shape that depends on the batch size",
        "Zeros": "zeros shaped by the batch size", "Label": "a class index (ArgMax)",
        "BatchFirst": "a batch-first sequence [N, T, …] (read only by the Transpose back "
                      "to [T, N, …] and by ops on each step alone, beside constants and "
                      "other batch-first values)",
        "Lazy": "a per-example value whose batch axis an earlier node moved",
        "Last": "a sequence's value at its last step",
        "Ids": "token ids (an integer input, which only Gather reads, as rows of a table)",
        "NoneType": "missing"}
