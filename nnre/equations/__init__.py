"""The equation language: text → tokens → AST → roles → shapes → SymPy, all checked.

``check`` is the one entry point; each stage lives in its own module, in pipeline order:
``lexer``, ``parser``, ``roles``, then ``shapes`` and ``to_sympy`` for texts of vectors (the
reading of version 1) or ``tensors`` for texts that need tensors (``tensors.needs_tensors``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from nnre.equations import ast
from nnre.equations.blocks import expand_blocks, layers_from_weights
from nnre.equations.lexer import LAYER_MARK
from nnre.equations.parser import parse
from nnre.equations.roles import Roles, analyse
from nnre.equations.shapes import Shapes, check_shapes
from nnre.equations.tensors import TensorShapes, api_shape, check_tensor_shapes, needs_tensors
from nnre.equations.to_sympy import SympyModel, to_sympy
from nnre.errors import EquationError, ShapeError
from nnre.names import code_points, lookalike
from nnre.ops import OPS
from nnre.ops.arithmetic import COMPARISONS


@dataclass
class Checked:
    """An equation set that parsed, has consistent roles and shapes, and is in SymPy form."""

    module: ast.Module
    roles: Roles
    shapes: Shapes | TensorShapes
    sympy: SympyModel | None  # None for tensor equations (compiled by nnre.lowering)

    @property
    def tensors(self) -> bool:
        return isinstance(self.shapes, TensorShapes)


def check(text: str, dims: Mapping[str, int] | None = None,
          weights: Mapping[str, tuple[int, ...]] | None = None,
          filename: str | None = None,
          known: Mapping[str, tuple[int, ...]] | None = None) -> Checked:
    """Parse and check equation text.

    ``weights`` maps parameter names to the shapes of supplied arrays (names that are not
    parameters are ignored); ``known`` fixes the shape of any name, e.g. an input's size
    taken from a training vocabulary.
    """
    written = parse(text, filename, expand=False)
    dims = dict(dims or {})
    if weights is not None:  # W^{(1)} … W^{(4)} fix L of 'for l = 1…L:' when nothing else does
        dims.update(layers_from_weights(written, set(weights), dims))
    module = expand_blocks(written, dims)
    _distinct_names(module)
    static = not any(n.time is not None for eq in module.equations
                     for n in [eq.target, *ast.walk(eq.expr)] if isinstance(n, ast.Name))
    roles = analyse(module, set(weights) if weights is not None and static else None)
    _constants_have_values(module, roles, weights or {})
    _dimensions_have_no_weights(module, roles, weights or {})
    given = {k: v for k, v in (weights or {}).items() if k in roles.params}
    given.update(known or {})
    if needs_tensors(module, roles):
        _no_backward_state(module, roles)
        tshapes = check_tensor_shapes(module, roles, dims, given)
        return Checked(module, roles, tshapes, None)
    shapes = check_shapes(module, roles, dims, given)
    if static and weights is not None:
        _no_missing_weights(roles, shapes, module)
    return Checked(module, roles, shapes, to_sympy(module, roles, shapes))


def language_version(checked: Checked) -> int:
    """The version of the language the equations need: 1 unless they use something version 2
    added (a function or operator whose op has ``since`` 2, a per-example number broadcast
    over a vector, ``frozen``, a dimension read as its value, a later step (backward state,
    ``gₜ₊₁``), a layer index in a name, ``h¹ₜ``, or a block, ``for l = 1…L:``: a reader of
    version 1 could neither read nor store it). A bundle states it in
    ``requires`` (``equations/N``)."""
    if isinstance(checked.shapes, TensorShapes):
        return 2
    roles = checked.roles
    version = 2 if checked.shapes.numbers_broadcast or roles.frozen or roles.dims \
        or roles.back else 1
    if checked.module.blocks or checked.module.layer_dims:  # for l = 1…L:, h^{(L)}
        version = 2
    for eq in checked.module.equations:
        if LAYER_MARK in eq.target.name:
            version = 2
        for node in ast.walk(eq.expr):
            if isinstance(node, ast.Name) and LAYER_MARK in node.name:
                version = 2
            elif isinstance(node, ast.Call):
                version = max(version, OPS[node.func].since)
            elif isinstance(node, ast.Binary) and node.op in COMPARISONS:
                version = max(version, OPS[COMPARISONS[node.op]].since)
            elif isinstance(node, ast.Slice):
                version = 2
    return version


def _no_backward_state(module: ast.Module, roles: Roles) -> None:
    """Backward state runs in the tensor reading as in the vector one, but not beside a
    history or the step index ``t`` (they count the steps of one forward loop): refused by
    name rather than compiled wrongly."""
    if not roles.back or not (roles.appends or roles.step_index):
        return
    ref = next(n for eq in module.equations for n in ast.walk(eq.expr)
               if isinstance(n, ast.Name) and n.time is not None and n.time > 0)
    beside = f"the history '{next(iter(roles.appends))}'" if roles.appends else \
        "the step index 't'"
    raise EquationError(
        f"'{ref.raw}' makes '{ref.name}' backward state, which a text with {beside} "
        "(formats/equations.md §4.1) cannot have yet", line=ref.pos.line,
        column=ref.pos.column, source_line=module.lines[ref.pos.line - 1],
        filename=module.filename, expected="backward state without histories or the step "
        "index, or histories without backward state")


def _distinct_names(module: ast.Module) -> None:
    """No two names of the model may look alike (UTS #39 skeletons): the text a person reads
    must be the model that runs."""
    located: dict[str, ast.Name] = {}
    for eq in module.equations:
        for node in [eq.target, *ast.walk(eq.expr)]:
            if isinstance(node, ast.Name):
                located.setdefault(node.name, node)
    declared = [n for d in module.declarations for n in d.names]
    for node in [*declared, *(n for r in module.roles for n in r.names)]:
        located.setdefault(node.name, node)
    pair = lookalike(located)
    if pair is not None:
        first, second = located[pair[0]], located[pair[1]]
        raise EquationError(
            ast.in_copy(f"names '{first.raw}' and '{second.raw}' look alike "
                        f"({code_points(pair[0])} vs {code_points(pair[1])})", second.pos),
            line=second.pos.line, column=second.pos.column,
            source_line=module.lines[second.pos.line - 1], filename=module.filename,
            expected="names that differ in how they look")


#: Names a reader takes for a small constant (as in ``√(v + ε)``), never for a learned vector.
SMALL_CONSTANTS = ("ε", "ϵ")


def _constants_have_values(module: ast.Module, roles: Roles,
                           weights: Mapping[str, tuple[int, ...]]) -> None:
    """``ε`` left free would be learned as a parameter (or, in a model without time and
    with weights, read as an input), which nobody writing ``√(v + ε)`` means: it must be
    defined (``ε = 1e-5``), declared (``ε ∈ ℝ``: then it is learned; or ``input ε``) or given
    a weight. A timed ``εₜ`` (noise fed at each step) is an input as usual."""
    declared = {n.name for d in module.declarations for n in d.names}
    declared |= {n.name for r in module.roles for n in r.names}
    free = set(roles.params) | set(roles.inputs)
    for name in SMALL_CONSTANTS:
        if name in free and name not in roles.timed | declared | set(weights):
            ref = next(n for eq in module.equations for n in ast.walk(eq.expr)
                       if isinstance(n, ast.Name) and n.name == name)
            raise EquationError(ast.in_copy(
                f"'{ref.raw}' is read as a small constant but has no value: define it, e.g. "
                f"'{name} = 1e-5', or declare '{name} ∈ ℝ' to learn it", ref.pos),
                line=ref.pos.line,
                column=ref.pos.column, source_line=module.lines[ref.pos.line - 1],
                filename=module.filename, expected=f"'{name} = 1e-5' or '{name} ∈ ℝ'")


def _dimensions_have_no_weights(module: ast.Module, roles: Roles,
                                weights: Mapping[str, tuple[int, ...]]) -> None:
    """A dimension read as a value (``xₜ / H``) is the number H, never an array: a weight
    given for it would be silently ignored, so it is refused."""
    for name in roles.dims:
        if name in weights:
            ref = next(n for eq in module.equations for n in ast.walk(eq.expr)
                       if isinstance(n, ast.Name) and n.name == name)
            raise EquationError(ast.in_copy(
                f"a weight is given for '{name}', which is a dimension: the equations read it "
                f"as the number {name}", ref.pos), line=ref.pos.line, column=ref.pos.column,
                source_line=module.lines[ref.pos.line - 1], filename=module.filename,
                expected=f"no weight named '{name}', or another name for the dimension")


def _no_missing_weights(roles: Roles, shapes: Shapes, module: ast.Module) -> None:
    """In a model without time, a free matrix with no weight is a missing weight, not an input."""
    declared = {n.name for r in module.roles if r.role == "input" for n in r.names}
    missing = [f"'{name}' of shape {shapes.of[name]}" for name in roles.inputs
               if name not in declared and 1 not in shapes.of[name]]
    if missing:  # all of them, as Model.from_equations lists them
        raise ShapeError(f"missing weight{'s' if len(missing) > 1 else ''} "
                         + ", ".join(missing), filename=module.filename)


def param_shapes(checked: Checked) -> dict[str, tuple[int, ...]]:
    """The shape each parameter's array has in the API and in weight files.

    A matrix is (rows, cols); a vector (a column in the equations) is (n,); a scalar is ().
    """
    out: dict[str, tuple[int, ...]] = {}
    if isinstance(checked.shapes, TensorShapes):
        return {name: () if name in checked.shapes.scalar else api_shape(checked.shapes.of[name])
                for name in checked.roles.params}
    for name in checked.roles.params:
        r, c = checked.shapes.of[name]
        if name in checked.shapes.scalar:
            out[name] = ()
        elif name in checked.shapes.matrices or c != 1:
            out[name] = (r, c)
        else:
            out[name] = (r,)
    return out
