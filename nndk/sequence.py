"""The sequence form of attention equations: what nndk trains a transformer through.

``nnre.lowering`` lowers a text whose only state grows a step at a time (``Kₜ = [Kₜ₋₁; kₜᵀ]``)
either as one step of the time loop (what nnre runs) or with every step of the context at
once, each read along the steps masked to the reader's own (formats/equations.md §4.1).
"""

from __future__ import annotations

from nnre import budget
from nnre.equations import Checked
from nnre.errors import EquationError
from nnre.lowering import lower
from nnre.optimize import optimize as optimize_program
from nnre.program import Program


def compile_sequence(checked: Checked, dtype: str = "float32", optimize: bool = True
                     ) -> Program:
    """The sequence form of equations whose only state grows a step at a time (attention):
    all ``context`` steps of an example at once, each step reading the entries of the steps
    up to its own (a causal mask), with no time loop: what training and scoring run. Its
    inputs and outputs are per example ``(context, …)``. Raises EquationError for texts
    with another recurrence or without a context."""
    shapes = checked.shapes
    if checked.sympy is not None or not shapes.context:  # type: ignore[union-attr]
        raise EquationError("the equations have no context (no history that grows a step "
                            "at a time, no table read at t), so no sequence form",
                            expected="Kₜ = [Kₜ₋₁; kₜᵀ] or P[t]")
    prog = lower(checked.module, checked.roles, shapes, dtype,  # type: ignore[arg-type]
                 steps=shapes.context)  # type: ignore[union-attr]
    if optimize:
        prog = optimize_program(prog)
    budget.check(budget.program_bytes(prog), "the compiled sequence form at batch 1",
                 lambda message: EquationError(message, expected="a shorter context"))
    return prog
