"""``nndk check``: parse, check and compile an equation file and describe what it defines."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from nnre.compiler import compile_checked
from nnre.equations import Checked, check
from nnre.equations.render import render, render_block, time_name
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


def _equations(checked: Checked) -> list[str]:
    """The equations in evaluation order; a block (``for l = 1…L:``) as written, where its
    first copy comes, with its dimensions' values (the listing below has every copy)."""
    out: list[str] = []
    blocks = {b.line: b for b in checked.module.blocks}
    written = checked.module.written
    as_written = {e.line: e for e in written.equations} if written is not None else {}
    for name in checked.roles.order:
        eq = checked.roles.equations[name]
        copy = eq.target.pos.copy
        if copy is None:
            eq = as_written.get(eq.line, eq)  # h^{(L)}, as the text has it
            out.append(f"{time_name(eq.target.name, eq.target.time)} = {render(eq.expr)}")
        elif copy[0] in blocks:
            block = blocks.pop(copy[0])
            head, *body = render_block(block, equations_only=True)
            given = [b for b in block.bounds if isinstance(b, str)]
            values = ", ".join(f"{b}={checked.shapes.dims[b]}" for b in given)
            out += [head + (f"  # {values}" if values else ""), *body]
    return out


def _report(checked: Checked, program: Program, filename: str) -> list[str]:
    roles = checked.roles
    lines = [f"{filename}: {len(roles.order)} equations, shapes check"]
    lines.append("equations:")
    lines.extend("  " + line for line in _equations(checked))
    dims = ", ".join(f"{k}={v}" for k, v in sorted(checked.shapes.dims.items()))
    lines.append(f"dims: {dims or '(none named)'}")
    for title, names in (("inputs", roles.inputs), ("outputs", roles.outputs)):
        lines.append(f"{title}: " + ", ".join(f"{n} {_shape(checked, n)}" for n in names))
    state = [f"{n} {_shape(checked, n)}" + (f" (lags 1..{lag})" if lag > 1 else "")
             for n, lag in roles.state.items()]
    lines.append("state: " + (", ".join(state) or "(none)"))
    count = sum(int(np.prod(checked.shapes.of[n])) for n in roles.params)
    lines.append(f"parameters: {len(roles.params)} arrays, {count:,} values")
    lines.extend(f"  {n} {_shape(checked, n)}" for n in roles.params)
    lines.append("program:")
    lines.extend("  " + line for line in program.listing().splitlines())
    return lines
