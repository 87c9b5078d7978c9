"""What a lowered expression is: the slot that holds it, its shape in the equations, and the
axis along which it has an entry per step so far (attention's histories)."""

from __future__ import annotations

from dataclasses import dataclass

from nnre.equations.tensors import api_shape


@dataclass(frozen=True)
class Value:
    slot: int
    shape: tuple[int, ...]  # its shape in the equations
    #: The axis (counted from the end of ``shape``) along which the value has an entry per
    #: step so far, when it comes from a history (``Kₜ``, ``Kₜ qₜ``): entries past the step's
    #: own are absent, and every op that reads along this axis sees only the present ones.
    ragged: int | None = None
    history: bool = False  # a history itself (its absent entries are finite: no mask)


def stored(shape: tuple[int, ...]) -> tuple[int, ...]:
    """How a per-example value of this shape is laid out after its rows: a vector flat."""
    return api_shape(shape) if len(shape) == 2 else shape
