"""``nndk check``: parse, check and compile an equation file and describe what it defines."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from nnre.compiler import compile_checked
from nnre.equations import Checked, check
from nnre.equations.render import render, time_name
from nnre.equations.tensors import TensorShapes, api_shape
from nnre.program import Program


def describe(text: str, dims: Mapping[str, int] | None = None, filename: str | None = None,
             dtype: str = "float32") -> str:
    """A report of the canonical equations, roles, shapes, parameter count and Program."""
    checked = check(text, dims, filename=filename)
    program = compile_checked(checked, dtype)
    return "\n".join(_report(checked, program, filename or "<equations>"))


def _shape(checked: Checked, name: str) -> str:
    if name in checked.shapes.scalar:
        return "()"
    if isinstance(checked.shapes, TensorShapes):
        return str(api_shape(checked.shapes.of[name]))
    r, c = checked.shapes.of[name]
    if name in checked.shapes.matrices:
        return f"({r}, {c})"
    return f"({r},)" if c == 1 else f"({r}, {c})"


def _report(checked: Checked, program: Program, filename: str) -> list[str]:
    roles = checked.roles
    lines = [f"{filename}: {len(roles.order)} equations, shapes check"]
    lines.append("equations:")
    for name in roles.order:
        eq = roles.equations[name]
        lines.append(f"  {time_name(name, eq.target.time)} = {render(eq.expr)}")
    dims = ", ".join(f"{k}={v}" for k, v in sorted(checked.shapes.dims.items()))
    lines.append(f"dims: {dims or '(none named)'}")
    for title, names in (("inputs", roles.inputs), ("outputs", roles.outputs)):
        lines.append(f"{title}: " + ", ".join(f"{n} {_shape(checked, n)}" for n in names))
    state = [f"{n} {_shape(checked, n)}" + (f" (lags 1..{lag})" if lag > 1 else "")
             for n, lag in roles.state.items()]
    lines.append("state: " + (", ".join(state) or "(none)"))
    if roles.back:  # run from the last step to the first, before the forward loop
        back = [f"{n} {_shape(checked, n)}" + (f" (leads 1..{lead})" if lead > 1 else "")
                for n, lead in roles.back.items()]
        lines.append("backward state: " + ", ".join(back))
    count = sum(int(np.prod(checked.shapes.of[n])) for n in roles.params)
    lines.append(f"parameters: {len(roles.params)} arrays, {count:,} values")
    lines.extend(f"  {n} {_shape(checked, n)}" for n in roles.params)
    lines.append("program:")
    lines.extend("  " + line for line in program.listing().splitlines())
    return lines
