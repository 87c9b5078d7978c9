"""The equation language: text → tokens → AST → roles → shapes → SymPy, all checked.

``check`` is the one entry point; each stage lives in its own module, in pipeline order:
``lexer``, ``parser``, ``roles``, ``shapes``, ``to_sympy``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from nnre.equations import ast
from nnre.equations.parser import parse
from nnre.equations.roles import Roles, analyse
from nnre.equations.shapes import Shapes, check_shapes
from nnre.equations.to_sympy import SympyModel, to_sympy
from nnre.errors import ShapeError


@dataclass
class Checked:
    """An equation set that parsed, has consistent roles and shapes, and is in SymPy form."""

    module: ast.Module
    roles: Roles
    shapes: Shapes
    sympy: SympyModel


def check(text: str, dims: Mapping[str, int] | None = None,
          weights: Mapping[str, tuple[int, ...]] | None = None,
          filename: str | None = None) -> Checked:
    """Parse and check equation text; ``weights`` maps parameter names to array shapes."""
    module = parse(text, filename)
    static = not any(n.time is not None for eq in module.equations
                     for n in [eq.target, *ast.walk(eq.expr)] if isinstance(n, ast.Name))
    roles = analyse(module, set(weights) if weights is not None and static else None)
    given = {k: v for k, v in (weights or {}).items() if k in roles.params}
    shapes = check_shapes(module, roles, dims, given)
    if static and weights is not None:
        _no_missing_weights(roles, shapes, module)
    return Checked(module, roles, shapes, to_sympy(module, roles, shapes))


def _no_missing_weights(roles: Roles, shapes: Shapes, module: ast.Module) -> None:
    """In a model without time, a free matrix with no weight is a missing weight, not an input."""
    declared = {n.name for r in module.roles if r.role == "input" for n in r.names}
    for name in roles.inputs:
        r, c = shapes.of[name]
        if name not in declared and r != 1 and c != 1:
            raise ShapeError(f"missing weight '{name}' of shape ({r}, {c})",
                             filename=module.filename)
