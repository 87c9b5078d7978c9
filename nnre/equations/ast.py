"""The parsed form of an equation file: plain frozen dataclasses, positions kept for messages."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Pos:
    line: int
    column: int
    copy: tuple[int, int] | None = None  # in an expanded block: (the 'for' line, the layer)


def in_copy(message: str, pos: Pos | None) -> str:
    """A message about a place inside an expanded block says which copy it is about: the
    text has one line for all of them."""
    if pos is None or pos.copy is None:
        return message
    return f"in layer {pos.copy[1]} of the block on line {pos.copy[0]}: {message}"


@dataclass(frozen=True)
class Name:
    name: str  # canonical spelling
    time: int | None  # None: no time index; 0: current step; -k: k steps earlier; +k: later
    raw: str
    pos: Pos
    layer: tuple[str, int] | None = None  # h^{(l-1)}: ('l', -1), until blocks are expanded


@dataclass(frozen=True)
class Number:
    value: float
    text: str
    pos: Pos


@dataclass(frozen=True)
class Unary:
    op: str  # '-'
    operand: Expr
    pos: Pos


@dataclass(frozen=True)
class Binary:
    op: str  # '+', '-', '*' (elementwise), '/', '@' (matrix product)
    left: Expr
    right: Expr
    pos: Pos


@dataclass(frozen=True)
class Power:
    base: Expr
    exponent: float
    pos: Pos


@dataclass(frozen=True)
class Transpose:
    operand: Expr
    pos: Pos


@dataclass(frozen=True)
class Slice:
    """``x[a:b]`` (entries a … b−1 of a vector, rows of a matrix) or ``x[i]`` (= ``x[i:i+1]``)."""

    operand: Expr
    start: int
    stop: int
    pos: Pos


@dataclass(frozen=True)
class Gather:
    """``E[xₜ]`` with ``xₜ`` declared ``∈ ℕ``: the rows of E that the ids pick."""

    operand: Expr
    index: Name
    pos: Pos


@dataclass(frozen=True)
class Call:
    func: str  # the op's name (see nnre.ops.FUNCTIONS)
    args: tuple[Expr, ...]
    pos: Pos
    params: tuple[tuple[str, float], ...] = ()  # every parameter of the op, defaults filled in

    @property
    def arg(self) -> Expr:
        """The first (for most functions the only) argument."""
        return self.args[0]


@dataclass(frozen=True)
class Concat:
    """``[a; b]`` stacks along the first axis; ``[a, b]`` (``across``) along the last."""

    parts: tuple[Expr, ...]
    pos: Pos
    across: bool = False


Expr = Name | Number | Unary | Binary | Power | Transpose | Slice | Gather | Call | Concat


@dataclass(frozen=True)
class Equation:
    target: Name
    expr: Expr
    line: int
    source: str  # the line as written


@dataclass(frozen=True)
class Dim:
    """One dimension in a declaration: a name like ``H`` or an integer, or a sum of those."""

    terms: tuple[str | int, ...]


@dataclass(frozen=True)
class Declaration:
    names: tuple[Name, ...]
    shape: tuple[Dim, ...]  # () for a scalar, (n,) for a vector, (r, c) for a matrix
    line: int
    ids: bool = False  # ∈ ℕ: whole numbers that index a table (token ids), not reals


@dataclass(frozen=True)
class RoleDeclaration:
    role: str  # 'input', 'state' or 'output'
    names: tuple[Name, ...]
    line: int


@dataclass
class Module:
    """Everything one equation text says, in source order.

    As parsed, ``blocks`` hold their body statements and names may carry a symbolic layer
    index (``Name.layer``); once expanded (``nnre.equations.blocks``), the lists hold every
    copy with numbered names and ``blocks`` stay only to show the text as written."""

    equations: list[Equation] = field(default_factory=list)
    declarations: list[Declaration] = field(default_factory=list)
    roles: list[RoleDeclaration] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    filename: str | None = None
    blocks: list[Block] = field(default_factory=list)
    layer_dims: dict[str, Pos] = field(default_factory=dict)  # dims a layer index or bound names
    written: Module | None = None  # once expanded: the module as parsed (h^{(L)}, not h^{(4)})


@dataclass(frozen=True)
class Block:
    """``for l = 1…L:`` and the lines indented under it, repeated once per layer."""

    var: Name  # the block's variable, read only in layer indices (h^{(l-1)})
    bounds: tuple[int | str, int | str]  # first and last layer: whole numbers or dimensions
    bound_pos: tuple[Pos, Pos]
    line: int
    body: Module  # its statements, with names that carry the variable in Name.layer
    cost: int  # expression nodes and statements of one copy (the size limit counts copies)


def children(expr: Expr) -> tuple[Expr, ...]:
    """The direct sub-expressions of a node, left to right."""
    if isinstance(expr, Binary):
        return (expr.left, expr.right)
    if isinstance(expr, Unary | Transpose | Slice):
        return (expr.operand,)
    if isinstance(expr, Power):
        return (expr.base,)
    if isinstance(expr, Call):
        return expr.args
    if isinstance(expr, Concat):
        return expr.parts
    if isinstance(expr, Gather):
        return (expr.operand, expr.index)
    return ()


def walk(expr: Expr) -> list[Expr]:
    """All nodes of an expression in post-order (children before parents), without recursion."""
    out: list[Expr] = []
    stack: list[tuple[Expr, bool]] = [(expr, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            out.append(node)
            continue
        stack.append((node, True))
        for child in reversed(children(node)):
            stack.append((child, False))
    return out
