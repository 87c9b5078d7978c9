"""Blocks expanded: ``for l = 1…L:`` and its body become L copies with the layer written out.

This runs after parsing and before roles and shapes, so both readings (vectors and tensors)
see plain numbered names (``W^{(3)}_q``): the canonical names weights and bundles already
use. The size of the expansion is known before any copy is made (``Block.cost`` per copy)
and counts against the parser's node limit, so a hostile ``for l = 1…2147483647:`` fails at
once and the work stays linear in the size of the result.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import replace

from nnre.equations import ast
from nnre.equations.lexer import MAX_LAYER, MAX_NODES, SUPERSCRIPT_LETTERS
from nnre.errors import EquationError

MAX_DIM = 2**31 - 1
_TEX_LAYER = re.compile(r"\^\{\([^)]*\)\}")
_NUMBERED = re.compile(r"([^^]*)\^\{\(([0-9]{1,9})\)\}(.*)")  # W^{(3)}_q: W, 3, _q
_SUPERSCRIPT_LAYER = re.compile("[" + "".join(SUPERSCRIPT_LETTERS) + "][⁻⁺]?[⁰¹²³⁴⁵⁶⁷⁸⁹]*")


def expand_blocks(module: ast.Module, dims: Mapping[str, int]) -> ast.Module:
    """The module with every block replaced by its copies and every layer index that names
    a dimension (``h^{(L)}``) by that dimension's value; the text as written is kept in
    ``blocks`` for rendering. ``dims`` must give each dimension a block or a layer index
    names."""
    if not module.blocks and not module.layer_dims:
        return module
    values = {name: _value(module, name, pos, dims) for name, pos in module.layer_dims.items()}
    ranges = [_layers(module, block, values) for block in module.blocks]
    _check_size(module, ranges)
    out = ast.Module(lines=module.lines, filename=module.filename, blocks=module.blocks,
                     layer_dims=module.layer_dims, written=module)
    _Copy(module, values, None, 0).statements(module, out)
    for block, (first, last) in zip(module.blocks, ranges, strict=True):
        for layer in range(first, last + 1):
            _Copy(module, values, block, layer).statements(block.body, out)
    _source_order(out)
    return out


def _source_order(module: ast.Module) -> None:
    """Statements around and in blocks in the order the text has them (a stable sort: the
    copies of one body line stay in layer order after the lines before the block)."""
    def key(item: ast.Equation | ast.Declaration | ast.RoleDeclaration) -> int:
        pos = item.target.pos if isinstance(item, ast.Equation) else item.names[0].pos
        return pos.copy[0] if pos.copy is not None else item.line

    module.equations.sort(key=key)
    module.declarations.sort(key=key)
    module.roles.sort(key=key)


def _value(module: ast.Module, name: str, pos: ast.Pos, dims: Mapping[str, int]) -> int:
    value = dims.get(name)
    if value is None:
        raise _error(module, f"dimension {name} has no value; --set {name}=…", pos,
                     f"a value for {name} (--set, dims=, or weights named for each layer): "
                     "layers are written out before shapes are inferred")
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_DIM:
        raise _error(module, f"dimension {name}={value!r} is not a positive integer", pos,
                     f"a whole number from 1 to {MAX_DIM}")
    return value


def _layers(module: ast.Module, block: ast.Block, values: Mapping[str, int]
            ) -> tuple[int, int]:
    first, last = (b if isinstance(b, int) else values[b] for b in block.bounds)
    if last < first:
        raise _error(module, f"the block on line {block.line} has no layers: it runs from "
                     f"{first} to {last}", block.bound_pos[1],
                     f"a last layer of at least {first}")
    return first, last


def _check_size(module: ast.Module, ranges: list[tuple[int, int]]) -> None:
    """The copies' nodes, counted before any is made (Python ints: no overflow)."""
    total = sum(len(ast.walk(eq.expr)) + 1 for eq in module.equations)
    total += sum(len(d.names) for d in module.declarations)
    total += sum(len(r.names) for r in module.roles)
    for block, (first, last) in zip(module.blocks, ranges, strict=True):
        total += (last - first + 1) * block.cost
        if total > MAX_NODES:
            raise _error(module, f"equations are too large: the block on line {block.line} "
                         f"makes {last - first + 1:,} copies of {block.cost} nodes",
                         block.bound_pos[1], f"at most {MAX_NODES} nodes in all")


class _Copy:
    """One copy of a block's body (or the text outside blocks, ``block`` None): each layer
    index written out, each position marked with the copy it belongs to."""

    def __init__(self, module: ast.Module, values: Mapping[str, int], block: ast.Block | None,
                 layer: int) -> None:
        self.module = module
        self.values = dict(values)
        self.copy = None if block is None else (block.line, layer)
        if block is not None:
            self.values[block.var.name] = layer

    def pos(self, pos: ast.Pos) -> ast.Pos:
        return pos if self.copy is None else ast.Pos(pos.line, pos.column, self.copy)

    def statements(self, source: ast.Module, out: ast.Module) -> None:
        for eq in source.equations:
            out.equations.append(ast.Equation(self.name(eq.target), self.expr(eq.expr),
                                              eq.line, eq.source))
        for decl in source.declarations:
            out.declarations.append(replace(decl, names=tuple(map(self.name, decl.names))))
        for role in source.roles:
            out.roles.append(replace(role, names=tuple(map(self.name, role.names))))

    def name(self, node: ast.Name) -> ast.Name:
        pos = self.pos(node.pos)
        if node.layer is None:
            return node if self.copy is None else replace(node, pos=pos)
        symbol, offset = node.layer
        layer = self.values[symbol] + offset
        written = symbol + (f"{offset:+d}" if offset else "")
        if not 0 <= layer <= MAX_LAYER:
            raise _error(self.module, f"the layer index '{written}' of '{node.raw}' is "
                         f"{layer:,}", pos, f"a whole number from 0 to {MAX_LAYER:,}")
        number = f"^{{({layer})}}"
        name = node.name.replace(f"^{{({written})}}", number, 1)
        raw = _TEX_LAYER.sub(number, node.raw, 1) if "^{(" in node.raw else \
            _SUPERSCRIPT_LAYER.sub(number, node.raw, 1)
        return ast.Name(name, node.time, raw, pos)

    def expr(self, expr: ast.Expr) -> ast.Expr:
        """A fresh copy of every node (the checkers key their results by node identity),
        built without recursion."""
        new: dict[int, ast.Expr] = {}
        for node in ast.walk(expr):
            pos = self.pos(node.pos)
            made: ast.Expr
            if isinstance(node, ast.Name):
                made = self.name(node)
            elif isinstance(node, ast.Binary):
                made = replace(node, left=new[id(node.left)], right=new[id(node.right)],
                               pos=pos)
            elif isinstance(node, ast.Unary | ast.Transpose | ast.Slice):
                made = replace(node, operand=new[id(node.operand)], pos=pos)
            elif isinstance(node, ast.Power):
                made = replace(node, base=new[id(node.base)], pos=pos)
            elif isinstance(node, ast.Call):
                made = replace(node, args=tuple(new[id(a)] for a in node.args), pos=pos)
            elif isinstance(node, ast.Concat):
                made = replace(node, parts=tuple(new[id(p)] for p in node.parts), pos=pos)
            elif isinstance(node, ast.Gather):
                index = new[id(node.index)]
                assert isinstance(index, ast.Name)
                made = replace(node, operand=new[id(node.operand)], index=index, pos=pos)
            else:
                made = replace(node, pos=pos)
            new[id(node)] = made
        return new[id(expr)]


def layers_from_weights(module: ast.Module, weights: Collection[str],
                        dims: Mapping[str, int]) -> dict[str, int]:
    """The last layer of each block whose bound is a dimension with no value, read from the
    names of the weights: ``W^{(1)}_q`` … ``W^{(4)}_q`` for ``W^{(l)}_q`` in ``for l =
    1…L:`` give L = 4. A bound any declaration also uses is left to shapes."""
    shaped = {t for d in module.declarations for dim in d.shape for t in dim.terms}
    shaped |= {t for b in module.blocks for d in b.body.declarations for dim in d.shape
               for t in dim.terms}
    found: dict[str, int] = {}
    for block in module.blocks:
        first, last = block.bounds
        if not isinstance(last, str) or last in dims or last in shaped or \
                (isinstance(first, str) and first not in dims):
            continue
        layers = _weight_layers(block, weights)
        if layers:
            found[last] = max(found.get(last, 0), max(layers))
    return found


def _weight_layers(block: ast.Block, weights: Collection[str]) -> set[int]:
    """The layers of the block that the weights have a parameter of the body for (one
    look-up per weight: the name around its layer number is the key)."""
    defined = {eq.target.name for eq in block.body.equations}
    offsets: dict[tuple[str, str], int] = {}
    for eq in block.body.equations:
        for node in ast.walk(eq.expr):
            if isinstance(node, ast.Name) and node.layer is not None and \
                    node.layer[0] == block.var.name and node.name not in defined:
                written = node.layer[0] + (f"{node.layer[1]:+d}" if node.layer[1] else "")
                head, _, tail = node.name.partition(f"^{{({written})}}")
                offsets[head, tail] = node.layer[1]
    layers = set()
    for name in weights:
        m = _NUMBERED.fullmatch(name)
        if m is not None and (m.group(1), m.group(3)) in offsets:
            layers.add(int(m.group(2)) - offsets[m.group(1), m.group(3)])
    return layers


def _error(module: ast.Module, message: str, pos: ast.Pos, expected: str) -> EquationError:
    return EquationError(ast.in_copy(message, pos), line=pos.line, column=pos.column,
                         source_line=module.lines[pos.line - 1], expected=expected,
                         filename=module.filename)
