"""Shape inference and checking: every name and sub-expression gets a (rows, cols) of integers.

Dimensions are unified with a union-find over dimension variables, so information flows in
every direction: a declaration of ``hₜ`` fixes the rows of ``W_i`` several equations away.
Dimension names (H, V, …) come from declarations, explicit bindings and weight arrays.
Vectors are columns (n, 1); scalars (numbers, ``α ∈ ℝ``, a dimension read as its value,
``xₜ / H``) broadcast in elementwise ops.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from nnre.equations import ast
from nnre.equations.render import unparse
from nnre.equations.roles import Roles
from nnre.errors import ShapeError
from nnre.ops import OPS

MAX_DIM = 2**31 - 1


@dataclass
class Shapes:
    of: dict[str, tuple[int, int]]  # every name → (rows, cols)
    scalar: set[str]  # names declared as scalars
    dims: dict[str, int]  # dimension name → value
    nodes: dict[int, tuple[int, int]]  # id(ast node) → (rows, cols)
    matrices: set[str]  # params/inputs declared or given as 2-D
    numbers_broadcast: bool = False  # a per-example number broadcast over a vector (version 2)


class _Dims:
    """Union-find over dimension variables; a class may carry an int value and dim names."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.value: list[int | None] = []
        self.names: list[set[str]] = []
        self.by_name: dict[str, int] = {}
        self.sums: list[tuple[int, list[int], ast.Pos]] = []

    def new(self, value: int | None = None) -> int:
        self.parent.append(len(self.parent))
        self.value.append(value)
        self.names.append(set())
        return len(self.parent) - 1

    def named(self, name: str) -> int:
        if name not in self.by_name:
            var = self.new()
            self.names[var].add(name)
            self.by_name[name] = var
        return self.by_name[name]

    def find(self, var: int) -> int:
        root = var
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[var] != root:
            self.parent[var], var = root, self.parent[var]
        return root

    def get(self, var: int) -> int | None:
        return self.value[self.find(var)]

    def union(self, a: int, b: int) -> bool:
        """Merge two classes; False if both have different values."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return True
        va, vb = self.value[ra], self.value[rb]
        if va is not None and vb is not None and va != vb:
            return False
        self.parent[rb] = ra
        self.value[ra] = va if va is not None else vb
        self.names[ra] |= self.names[rb]
        return True

    def show(self, var: int) -> str:
        root = self.find(var)
        value = self.value[root]
        label = "=".join(sorted(self.names[root]))
        if value is None:
            return label or "?"
        return f"{label}={value}" if label else str(value)

    def bind(self, dims: Mapping[str, int], filename: str | None) -> None:
        """Dimension values given by the caller (``--set H=128``), each checked."""
        for name, value in dims.items():
            if not (isinstance(value, int) and 0 < value <= MAX_DIM):
                raise ShapeError(f"dimension {name}={value!r} is not a positive integer",
                                 filename=filename)
            self.union(self.named(name), self.new(value))

    def of_dim(self, dim: ast.Dim, pos: ast.Pos, where: dict[str, ast.Pos]) -> int:
        """The variable of one declared dimension: a number, a name, or a sum of those (a
        sum is solved with the others, ``solve_sums``); ``where`` keeps each name's first use."""
        vars_ = [self.new(t) if isinstance(t, int) else self.named(t) for t in dim.terms]
        for t in dim.terms:
            if isinstance(t, str):
                where.setdefault(f"dim {t}", pos)
        if len(vars_) == 1:
            return vars_[0]
        total = self.new()
        self.sums.append((total, vars_, pos))
        return total

    def solve_sums(self) -> tuple[str, ast.Pos] | None:
        """Propagate concat row sums to a fixpoint; returns a message and where on contradiction."""
        changed = True
        while changed:
            changed = False
            for total, parts, pos in self.sums:
                known = [self.get(p) for p in parts]
                t = self.get(total)
                if all(k is not None for k in known):
                    s = sum(k for k in known if k is not None)
                    if t is None:
                        self.value[self.find(total)] = s
                        changed = True
                    elif t != s:
                        return f"stacked rows add up to {s}, but {t} are required", pos
                elif t is not None and sum(k is None for k in known) == 1:
                    rest = t - sum(k for k in known if k is not None)
                    if rest <= 0:
                        return f"stacked rows must add up to {t}", pos
                    self.value[self.find(parts[known.index(None)])] = rest
                    changed = True
        return None


Pair = tuple[int, int]
Located = Callable[..., ShapeError]  # (message, pos, expected=…) → the error to raise


def shape_error(module: ast.Module, message: str, pos: ast.Pos | None,
                expected: str | None = None) -> ShapeError:
    """A ShapeError at a place in the text (its line shown under the message), or about the
    text as a whole."""
    if pos is None:
        return ShapeError(message, expected=expected, filename=module.filename)
    return ShapeError(ast.in_copy(message, pos), line=pos.line, column=pos.column,
                      source_line=module.lines[pos.line - 1], expected=expected,
                      filename=module.filename)


def past_end(slices: list[tuple[ast.Slice, int]], d: _Dims, error: Located, along: str
             ) -> None:
    """Every ``x[a:b]`` within its operand's first axis (checked once sizes are known)."""
    for node, first in slices:
        size = d.get(first)
        if size is not None and node.stop > size:
            raise error(f"'{unparse(node)}' reads past the end: '{unparse(node.operand)}' has "
                        f"{size} entries {along}", node.pos, expected=f"entries 0 … {size - 1}")


def dimension_values(d: _Dims, where: dict[str, ast.Pos], error: Located) -> dict[str, int]:
    """Each named dimension's value, or an error at its first use saying how to give one."""
    dims = {}
    for dim_name, var in d.by_name.items():
        value = d.get(var)
        if value is None:
            raise error(f"dimension {dim_name} has no value", where.get(f"dim {dim_name}"),
                        expected=f"--set {dim_name}=… or a weight that fixes it")
        dims[dim_name] = value
    return dims


class _Checker:
    def __init__(self, module: ast.Module, roles: Roles) -> None:
        self.module = module
        self.roles = roles
        self.d = _Dims()
        self.names: dict[str, Pair] = {}
        self.scalar: set[str] = set()
        self.matrices: set[str] = set()
        self.nodes: dict[int, Pair] = {}
        self.known_scalar: set[int] = set()
        self.numbers_broadcast = False
        self.slices: list[tuple[ast.Slice, int]] = []  # (node, rows variable): checked last
        self.one = self.d.new(1)
        self.where: dict[str, ast.Pos] = {}  # first place each name or dimension appears
        self.dim_values = set(roles.dims)

    def error(self, message: str, pos: ast.Pos | None, expected: str | None = None
              ) -> ShapeError:
        return shape_error(self.module, message, pos, expected)

    def show(self, pair: Pair) -> str:
        r, c = pair
        if self.d.get(c) == 1 and self.d.find(c) == self.d.find(self.one):
            return f"({self.d.show(r)},)"
        return f"({self.d.show(r)}, {self.d.show(c)})"

    def name_pair(self, name: str, pos: ast.Pos | None = None) -> Pair:
        if pos is not None:
            self.where.setdefault(name, pos)
        if name not in self.names:
            self.names[name] = (self.d.new(), self.d.new())
        return self.names[name]

    def dim_var(self, dim: ast.Dim, pos: ast.Pos) -> int:
        return self.d.of_dim(dim, pos, self.where)

    def declare(self, decl: ast.Declaration) -> None:
        for ref in decl.names:
            pair = self.name_pair(ref.name, ref.pos)
            if not decl.shape:
                self.scalar.add(ref.name)
                want = (self.one, self.one)
            elif len(decl.shape) == 1:
                want = (self.dim_var(decl.shape[0], ref.pos), self.one)
            else:
                self.matrices.add(ref.name)
                want = (self.dim_var(decl.shape[0], ref.pos), self.dim_var(decl.shape[1], ref.pos))
            self.unify_pair(pair, want, ref.pos, f"the declaration of '{ref.name}'",
                            f"'{ref.name}'", "declared")

    def unify_pair(self, a: Pair, b: Pair, pos: ast.Pos | None, where: str,
                   left: str, right: str) -> None:
        before_a, before_b = self.show(a), self.show(b)
        if not (self.d.union(a[0], b[0]) and self.d.union(a[1], b[1])):
            raise self.error(f"shape mismatch in {where}: {left} is {before_a} but {right} is "
                             f"{before_b}", pos)

    def give(self, name: str, shape: tuple[int, ...]) -> None:
        """Unify a parameter with the shape of the weight array supplied for it."""
        if len(shape) > 2:
            raise self.error(f"weight '{name}' has {len(shape)} dimensions {shape}", None,
                             expected="a scalar, vector or matrix")
        if len(shape) == 0:
            self.scalar.add(name)
        if len(shape) == 2:
            self.matrices.add(name)
        want = (self.d.new(shape[0]) if shape else self.one,
                self.d.new(shape[1]) if len(shape) == 2 else self.one)
        pair = self.name_pair(name)
        if not (self.d.union(pair[0], want[0]) and self.d.union(pair[1], want[1])):
            raise self.error(f"weight '{name}' has shape {shape} but its declaration says "
                             f"{self.show(pair)}", None)

    def finish(self) -> Shapes:
        """Resolve every variable to an integer or say which name's shape is undetermined."""
        past_end(self.slices, self.d, self.error, "(rows)")
        dims = dimension_values(self.d, self.where, self.error)
        of: dict[str, tuple[int, int]] = {}
        for name, (r, c) in self.names.items():
            rv, cv = self.d.get(r), self.d.get(c)
            if rv is None or cv is None:
                raise self.error(f"the shape of '{name}' cannot be determined: it is "
                                 f"{self.show((r, c))}", self.where.get(name),
                                 expected=f"a declaration '{name} ∈ ℝ^…' or a weight for it")
            if rv > MAX_DIM or cv > MAX_DIM or rv <= 0 or cv <= 0:
                raise self.error(f"'{name}' has an impossible shape ({rv}, {cv})",
                                 self.where.get(name))
            of[name] = (rv, cv)
        nodes = {}
        for key, (r, c) in self.nodes.items():
            rv, cv = self.d.get(r), self.d.get(c)
            assert rv is not None and cv is not None
            nodes[key] = (rv, cv)
        return Shapes(of, self.scalar, dims, nodes, self.matrices, self.numbers_broadcast)

    # -- expressions ---------------------------------------------------------------------
    def infer(self, expr: ast.Expr, eq: ast.Equation) -> Pair:
        """Shapes of every node of one expression, children first, without recursion."""
        for node in ast.walk(expr):
            self.nodes[id(node)] = self.node_shape(node, eq)
        return self.nodes[id(expr)]

    def is_scalar(self, node: ast.Expr) -> bool:
        return id(node) in self.known_scalar

    def node_shape(self, node: ast.Expr, eq: ast.Equation) -> Pair:
        if isinstance(node, ast.Number):
            self.known_scalar.add(id(node))
            return (self.one, self.one)
        if isinstance(node, ast.Name) and node.name in self.dim_values:
            self.known_scalar.add(id(node))  # a dimension read as its value: a number
            return (self.one, self.one)
        if isinstance(node, ast.Name):
            if node.name in self.scalar:
                self.known_scalar.add(id(node))
            return self.name_pair(node.name, node.pos)
        if isinstance(node, ast.Binary):
            return self.binary(node, eq)
        if isinstance(node, ast.Transpose):
            r, c = self.nodes[id(node.operand)]
            self._inherit_scalar(node, node.operand)
            return (c, r)
        if isinstance(node, ast.Concat):
            return self.concat(node, eq)
        if isinstance(node, ast.Slice):  # rows start … stop−1 (entries of a vector)
            r, c = self.nodes[id(node.operand)]
            self.slices.append((node, r))
            return (self.d.new(node.stop - node.start), c)
        if isinstance(node, ast.Call) and OPS[node.func].reduces:
            return (self.one, self.one)  # Σ x, mean(x), ‖x‖: one number
        if isinstance(node, ast.Call) and len(node.args) > 1:
            return self.arguments(node, eq)
        operand = node.arg if isinstance(node, ast.Call) else \
            node.base if isinstance(node, ast.Power) else node.operand
        self._inherit_scalar(node, operand)
        return self.nodes[id(operand)]

    def arguments(self, node: ast.Call, eq: ast.Equation) -> Pair:
        """Entry-by-entry arguments (``max(a, b)``, ``where(c, a, b)``): equal shapes, or
        numbers (per example too) broadcast, as for ``+``."""
        self._inherit_scalar(node, *node.args)
        wide = [a for a in node.args if not self.one_by_one(a)]
        self.numbers_broadcast |= len(wide) < len(node.args)
        if not wide:
            return self.nodes[id(node.args[0])]
        shape = self.nodes[id(wide[0])]
        for arg in wide[1:]:
            other = self.nodes[id(arg)]
            before = (self.show(shape), self.show(other))
            if not (self.d.union(shape[0], other[0]) and self.d.union(shape[1], other[1])):
                raise self.error(f"the arguments of {OPS[node.func].spellings[0]} in the "
                                 f"equation for '{eq.target.raw}' need equal shapes: "
                                 f"'{unparse(wide[0])}' is {before[0]} and '{unparse(arg)}' "
                                 f"is {before[1]}", node.pos)
        return shape

    def _inherit_scalar(self, node: ast.Expr, *operands: ast.Expr) -> None:
        if all(self.is_scalar(o) for o in operands):
            self.known_scalar.add(id(node))

    def one_by_one(self, node: ast.Expr) -> bool:
        """Known to be a single number: a declared scalar or literal, or a value whose shape
        is already 1×1 (``xᵀ x``, a reduction), which broadcasts like a scalar (NumPy)."""
        r, c = self.nodes[id(node)]
        return self.is_scalar(node) or (self.d.get(r) == 1 and self.d.get(c) == 1)

    def binary(self, node: ast.Binary, eq: ast.Equation) -> Pair:
        left, right = self.nodes[id(node.left)], self.nodes[id(node.right)]
        self._inherit_scalar(node, node.left, node.right)
        if self.is_scalar(node.left):
            return right
        if self.is_scalar(node.right):
            return left
        if self.one_by_one(node.left) != self.one_by_one(node.right):  # a number per example
            self.numbers_broadcast = True
            return right if self.one_by_one(node.left) else left
        shapes = (self.show(left), self.show(right))  # as they were before unifying

        def message() -> str:  # rendered only on failure: rendering every node is quadratic
            what = _OP_WORDS[node.op]
            operands = f"'{unparse(node.left)}' is {shapes[0]} and " \
                       f"'{unparse(node.right)}' is {shapes[1]}"
            if node.op == "@":
                return (f"{what} in the equation for '{eq.target.raw}' does not fit: "
                        f"{operands} (columns of the left must equal rows of the right)")
            return f"{what} in the equation for '{eq.target.raw}' needs equal shapes: {operands}"

        if node.op == "@":
            if not self.d.union(left[1], right[0]):
                raise self.error(message(), node.pos)
            return (left[0], right[1])
        if not (self.d.union(left[0], right[0]) and self.d.union(left[1], right[1])):
            raise self.error(message(), node.pos)
        return left

    def concat(self, node: ast.Concat, eq: ast.Equation) -> Pair:
        cols = self.d.new()
        rows = []
        for part in node.parts:
            r, c = self.nodes[id(part)]
            if not self.d.union(cols, c):
                raise self.error(f"stacked parts in the equation for '{eq.target.raw}' must "
                                 f"have the same number of columns: '{unparse(part)}' is "
                                 f"{self.show((r, c))}", node.pos)
            rows.append(r)
        total = self.d.new()
        self.d.sums.append((total, rows, node.pos))
        return (total, cols)

    def equation(self, eq: ast.Equation) -> None:
        got = self.infer(eq.expr, eq)
        target = self.name_pair(eq.target.name, eq.target.pos)
        if self.is_scalar(eq.expr) and eq.target.name not in self.scalar:
            return  # a scalar right-hand side broadcasts to the target's shape
        self.unify_pair(target, got, eq.target.pos, f"the equation for '{eq.target.raw}'",
                        f"'{eq.target.raw}'", "its right-hand side")


_OP_WORDS = {"<": "comparison", ">": "comparison", "≤": "comparison", "≥": "comparison",
             "@": "matrix product", "+": "sum", "-": "difference", "*": "elementwise product",
             "/": "elementwise division"}


def check_shapes(module: ast.Module, roles: Roles, dims: Mapping[str, int] | None = None,
                 given: Mapping[str, tuple[int, ...]] | None = None) -> Shapes:
    """Bind dimensions, infer every shape and check every equation.

    ``given`` maps parameter names to the shapes of supplied weight arrays.
    """
    ck = _Checker(module, roles)
    ck.d.bind(dims or {}, module.filename)
    for decl in module.declarations:
        ck.declare(decl)
    for name, shape in (given or {}).items():
        ck.give(name, shape)
    for name in roles.inputs:  # an input is a (column) vector unless declared a matrix
        if name not in ck.matrices:
            ck.d.union(ck.name_pair(name)[1], ck.one)
    for name in roles.order:
        ck.equation(roles.equations[name])
    problem = ck.d.solve_sums()
    if problem:
        raise ck.error(*problem)
    return ck.finish()
