"""``nndk check``: parse, check and compile an equation file and describe what it defines;
the canonical text of whole statements and blocks (``render_text``, spec §9)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from nnre.compiler import compile_checked
from nnre.equations import Checked, ast, check
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


def render_statement(stmt: ast.Equation | ast.Declaration | ast.RoleDeclaration) -> str:
    """One statement, canonically: an equation, a declaration (``hₜ ∈ ℝ^H``, ``W ∈
    ℝ^(H×V)``) or a role line (``state h``)."""
    if isinstance(stmt, ast.Equation):
        return f"{time_name(stmt.target.name, stmt.target.time)} = {render(stmt.expr)}"
    names = ", ".join(time_name(n.name, n.time) for n in stmt.names)
    if isinstance(stmt, ast.RoleDeclaration):
        return f"{stmt.role} {names}"
    dims = ["+".join(map(str, dim.terms)) for dim in stmt.shape]
    shape = "" if not dims else f"^{dims[0]}" if len(dims) == 1 and "+" not in dims[0] \
        else "^(" + "×".join(dims) + ")"
    return f"{names} ∈ {'ℕ' if stmt.ids else 'ℝ'}{shape}"


def render_block(block: ast.Block, equations_only: bool = False) -> list[str]:
    """A block as written, canonically: its ``for`` line, then its body indented by four
    spaces (names keep their layer index: ``h^{(l-1)}ₜ``)."""
    first, last = block.bounds
    body = block.body.equations if equations_only else statements(block.body)
    return [f"for {block.var.name} = {first}…{last}:",
            *("    " + render_statement(s) for s in body)]


def render_text(module: ast.Module) -> str:
    """A text as written (``parse(…, expand=False)``), canonically, statements and blocks in
    source order; it parses back to the same statements."""
    items: list[tuple[int, list[str]]] = [(s.line, [render_statement(s)])
                                          for s in statements(module)]
    items += [(b.line, render_block(b)) for b in module.blocks]
    return "".join(line + "\n" for _, lines in sorted(items, key=lambda i: i[0])
                   for line in lines)


def statements(module: ast.Module) -> list[ast.Equation | ast.Declaration | ast.RoleDeclaration]:
    """A module's statements (not its blocks) in source order."""
    found: list[ast.Equation | ast.Declaration | ast.RoleDeclaration] = [
        *module.roles, *module.declarations, *module.equations]
    return sorted(found, key=lambda s: s.line)
