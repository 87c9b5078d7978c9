"""Shapes of tensor equations: every name and sub-expression gets a tuple of dimensions.

The reading of version 2 for texts whose values are tensors (formats/equations.md, "Tensors"):
a vector is a column (n, 1), as in version 1; a declaration ``ℝ^(C×H×W)`` gives three axes;
elementwise operators broadcast as NumPy does (axes aligned from the right, a 1 stretches);
the matrix product works on the last two axes with leading axes broadcast; ``xᵀ`` swaps the
last two axes; ``x[a:b]`` and ``[a; b]`` work on the first axis. Dimensions are unified with
the same union-find as version 1 (``shapes._Dims``), one variable per axis, so a declaration
fixes a weight's size several equations away. Convolution, pooling and flattening need the
sizes of their argument when they are met (declared, set or given), and take their output
size from the op's own shape rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from nnre.equations import ast
from nnre.equations.parser import MAX_AXES as MAX_RANK
from nnre.equations.render import unparse
from nnre.equations.roles import STEP, Roles, append_parts
from nnre.equations.shapes import _OP_WORDS, MAX_DIM, _Dims, dimension_values, past_end, shape_error
from nnre.errors import ShapeError
from nnre.ops import OPS, tensor_attrs

Vars = tuple[int, ...]


@dataclass
class TensorShapes:
    of: dict[str, tuple[int, ...]]  # every name → its shape (a vector is (n, 1))
    scalar: set[str]  # names declared as scalars (shape ())
    dims: dict[str, int]  # dimension name → value
    nodes: dict[int, tuple[int, ...]]  # id(ast node) → shape
    attrs: dict[int, dict[str, object]]  # id(call node) → its op's attributes
    ids: dict[str, int]  # input declared ∈ ℕ → how many ids it may take (rows of its table)
    grown: dict[str, int] = field(default_factory=dict)  # appended state → its growing axis
    #: The most steps the text can take: the size of each growing axis, the rows of each
    #: table read at ``t`` (None: no limit).
    context: int | None = None


def api_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """How a value of this shape is given or returned: a vector (n, 1) as (n,)."""
    return (shape[0],) if len(shape) == 2 and shape[1] == 1 else shape


def needs_tensors(module: ast.Module, roles: Roles) -> bool:
    """Whether a text needs this reading: a declaration of more than two axes, a value that
    varies per example declared as a matrix, or a function only tensors have."""
    if roles.appends or roles.step_index:
        return True
    for decl in module.declarations:
        per_example = any(n.name in roles.inputs or n.name in roles.equations
                          for n in decl.names)
        if len(decl.shape) > 2 or (len(decl.shape) == 2 and per_example) or decl.ids:
            return True
    return any((isinstance(node, ast.Call) and (OPS[node.func].tensor
                                                 or _axis_of(node) is not None))
               or (isinstance(node, ast.Concat) and node.across) or isinstance(node, ast.Gather)
               for eq in module.equations for node in ast.walk(eq.expr))


def _axis_of(node: ast.Call) -> int | None:
    """The ``axis=k`` a call names, if any (only ops that take one accept it)."""
    given = dict(node.params).get("axis")
    return None if given is None else int(given)


class _Checker:
    def __init__(self, module: ast.Module, roles: Roles) -> None:
        self.module = module
        self.roles = roles
        self.d = _Dims()
        self.one = self.d.new(1)
        self.names: dict[str, Vars] = {}
        self.scalar: set[str] = set()
        self.nodes: dict[int, Vars] = {}
        self.attrs: dict[int, dict[str, object]] = {}
        self.slices: list[tuple[ast.Slice, int]] = []
        self.ids: dict[str, int] = {}  # ids input → the variable of its table's rows
        self.id_names: set[str] = set()
        self.where: dict[str, ast.Pos] = {}
        self.positions: list[int] = []  # the rows of each table read at t
        self.grown: dict[str, int] = {}

    def error(self, message: str, pos: ast.Pos | None, expected: str | None = None
              ) -> ShapeError:
        return shape_error(self.module, message, pos, expected)

    def show(self, shape: Vars) -> str:
        return "(" + ", ".join(self.d.show(v) for v in shape) + ("," if len(shape) == 1
                                                                   else "") + ")"

    def known(self, shape: Vars) -> tuple[int, ...] | None:
        if any(self.d.get(v) is None for v in shape):  # sizes of stacked parts added up yet?
            problem = self.d.solve_sums()
            if problem:
                raise self.error(*problem)
        values = tuple(self.d.get(v) for v in shape)
        return None if any(v is None for v in values) else values  # type: ignore[return-value]

    def name(self, name: str, pos: ast.Pos | None = None, rank: int = 2) -> Vars:
        """A name's axes; a name nothing declares is a matrix (a vector is one with 1 column)."""
        if pos is not None:
            self.where.setdefault(name, pos)
        if name not in self.names:
            self.names[name] = tuple(self.d.new() for _ in range(rank))
        return self.names[name]

    def unify(self, a: Vars, b: Vars, pos: ast.Pos | None, what: str) -> None:
        before = (self.show(a), self.show(b))
        if len(a) != len(b) or not all(self.d.union(x, y) for x, y in zip(a, b, strict=True)):
            raise self.error(f"shape mismatch in {what}: {before[0]} and {before[1]}", pos)

    # -- declarations and weights --------------------------------------------------------
    def dim_var(self, dim: ast.Dim, pos: ast.Pos) -> int:
        return self.d.of_dim(dim, pos, self.where)

    def declare(self, decl: ast.Declaration) -> None:
        for ref in decl.names:
            if decl.ids:
                if ref.name not in self.roles.inputs:
                    raise self.error(f"'{ref.raw}' is declared ∈ ℕ (ids) but is not an input",
                                     ref.pos, expected="ids that come in (token ids, classes)")
                if len(decl.shape) > 1:
                    raise self.error(f"ids '{ref.raw}' must be one id or a vector of ids",
                                     ref.pos, expected=f"'{ref.raw} ∈ ℕ' or '{ref.raw} ∈ ℕ^T'")
                self.id_names.add(ref.name)
            axes = tuple(self.dim_var(dim, ref.pos) for dim in decl.shape)
            if not axes:  # a number is 1×1, as in version 1
                self.scalar.add(ref.name)
                axes = (self.one, self.one)
            elif len(axes) == 1:
                axes = (axes[0], self.one)
            self.unify(self.name(ref.name, ref.pos, len(axes)), axes, ref.pos,
                       f"the declaration of '{ref.name}'")

    def give(self, name: str, shape: tuple[int, ...]) -> None:
        want = (*shape, 1) if len(shape) == 1 else shape or (1, 1)
        if not shape:
            self.scalar.add(name)
        mine = self.name(name, rank=len(want))
        before = self.show(mine)
        if len(mine) != len(want) or not all(self.d.union(v, self.d.new(n))
                                             for v, n in zip(mine, want, strict=True)):
            raise self.error(f"weight '{name}' has shape {shape} but the equations need "
                             f"{before}", None)

    # -- expressions ---------------------------------------------------------------------
    def equation(self, eq: ast.Equation) -> None:
        if eq.target.name in self.roles.appends:
            self.append(eq)
            return
        for node in ast.walk(eq.expr):
            self.nodes[id(node)] = self.node(node, eq)
        got = self.nodes[id(eq.expr)]
        target = self.name(eq.target.name, eq.target.pos, len(got) or 2)
        if not got and eq.target.name not in self.scalar:
            return  # a number broadcasts to the target's shape
        self.broadcast(target, got, eq.target.pos, f"the equation for '{eq.target.raw}'",
                       into=True)

    def append(self, eq: ast.Equation) -> None:
        """``Kₜ = [Kₜ₋₁; r]``: r is one entry along the growing axis and agrees with K on the
        others; K keeps its declared shape, whose growing axis is the most entries it holds."""
        found = append_parts(eq)
        assert found is not None
        part, axis = found
        for node in ast.walk(eq.expr):
            if node is not eq.expr:
                self.nodes[id(node)] = self.node(node, eq)
        row = self.nodes[id(part)] or (self.one, self.one)
        history = self.name(eq.target.name, eq.target.pos, len(row))
        what = f"the equation for '{eq.target.raw}'"
        if not -len(row) <= axis < len(row) or len(history) != len(row):
            raise self.error(f"{what} appends {self.show(row)} to {self.show(history)}: they "
                             "need the same number of axes and an axis of theirs", eq.target.pos,
                             expected=f"'{eq.target.raw} = [{eq.target.name}ₜ₋₁; r]', r one row")
        axis %= len(row)
        self.unify(tuple(v for i, v in enumerate(history) if i != axis),
                   tuple(v for i, v in enumerate(row) if i != axis), eq.target.pos, what)
        if not self.d.union(row[axis], self.one):
            raise self.error(f"{what} appends {self.show(row)}, more than one entry along axis "
                             f"{axis}", eq.target.pos, expected="one entry a step, e.g. kₜᵀ")
        self.nodes[id(eq.expr)] = history
        self.grown[eq.target.name] = axis

    def node(self, node: ast.Expr, eq: ast.Equation) -> Vars:
        at = self.nodes
        if isinstance(node, ast.Name) and node.name == STEP and self.roles.step_index:
            return (self.one, self.one)  # the step's index: a number per example
        if isinstance(node, ast.Number) or (isinstance(node, ast.Name)
                                            and node.name in self.roles.dims):
            return ()  # a number, or a dimension read as its value
        if isinstance(node, ast.Name):
            return self.name(node.name, node.pos)
        if isinstance(node, ast.Unary | ast.Power):
            return at[id(node.operand if isinstance(node, ast.Unary) else node.base)]
        if isinstance(node, ast.Transpose):
            shape = at[id(node.operand)]
            return shape if len(shape) < 2 else (*shape[:-2], shape[-1], shape[-2])
        if isinstance(node, ast.Binary):
            left, right = at[id(node.left)], at[id(node.right)]
            if node.op == "@":
                return self.matmul(node, left, right, eq)
            return self.broadcast(left, right, node.pos, _what(node, eq))
        if isinstance(node, ast.Gather):
            return self.gather(node, at[id(node.operand)], at[id(node.index)], eq)
        if isinstance(node, ast.Slice):
            shape = at[id(node.operand)] or (self.one, self.one)
            self.slices.append((node, shape[0]))
            return (self.d.new(node.stop - node.start), *shape[1:])
        if isinstance(node, ast.Concat):
            return self.concat(node, eq)
        assert isinstance(node, ast.Call)
        return self.call(node, eq)

    def broadcast(self, a: Vars, b: Vars, pos: ast.Pos, what: str, into: bool = False
                  ) -> Vars:
        """NumPy's rule: axes aligned from the right; an axis known to be 1 stretches; axes
        not yet known are the same axis. ``into``: b must fit a's shape (an assignment)."""
        rank = max(len(a), len(b))
        pa = (self.one,) * (rank - len(a)) + a
        pb = (self.one,) * (rank - len(b)) + b
        out = []
        for x, y in zip(pa, pb, strict=True):
            vx, vy = self.d.get(x), self.d.get(y)
            if vx is not None and vy is not None and vx != vy and 1 in (vx, vy) and \
                    not (into and vx == 1):
                out.append(x if vy == 1 else y)
            elif self.d.union(x, y):
                out.append(x)
            else:
                raise self.error(f"{what} needs shapes that broadcast: {self.show(a)} and "
                                 f"{self.show(b)}", pos)
        if into and rank > len(a):
            raise self.error(f"{what}: the right-hand side is {self.show(b)}, more axes than "
                             f"{self.show(a)}", pos)
        return tuple(out)

    def gather(self, node: ast.Gather, table: Vars, ids: Vars, eq: ast.Equation) -> Vars:
        """``E[x]``: for each of x's ids (one, or a vector of them) that row of E."""
        name = node.index.name
        if name == STEP and self.roles.step_index and len(table) >= 2:
            self.positions.append(table[0])  # row t of a table: at most its rows of steps
            return (self.one, *table[1:])
        if name not in self.id_names or len(table) < 2:
            raise self.error(f"'{unparse(node)}' in the equation for '{eq.target.raw}' needs a "
                             f"table with rows and ids declared '{node.index.raw} ∈ ℕ'",
                             node.pos)
        rows = self.ids.setdefault(name, table[0])
        if self.d.find(rows) != self.d.find(table[0]) and not self.d.union(rows, table[0]):
            raise self.error(f"'{node.index.raw}' indexes tables with different numbers of "
                             "rows", node.pos)
        return (ids[0], *table[1:])

    def matmul(self, node: ast.Binary, a: Vars, b: Vars, eq: ast.Equation) -> Vars:
        """The product on the last two axes; a number (or a known 1×1 value beside something
        it cannot multiply as a matrix) scales instead, as in version 1."""
        if not a or not b or self._scales(a, b) or self._scales(b, a, left=False):
            return self.broadcast(a, b, node.pos, _what(node, eq))
        if not self.d.union(a[-1], b[-2]):
            raise self.error(f"matrix product in the equation for '{eq.target.raw}' does not "
                             f"fit: '{unparse(node.left)}' is {self.show(a)} and "
                             f"'{unparse(node.right)}' is {self.show(b)} (columns of the left "
                             "must equal rows of the right)", node.pos)
        lead = self.broadcast(a[:-2], b[:-2], node.pos, _what(node, eq)) \
            if len(a) > 2 or len(b) > 2 else ()
        return (*lead, a[-2], b[-1])

    def _scales(self, one: Vars, other: Vars, left: bool = True) -> bool:
        if len(one) != 2 or self.known(one) != (1, 1):
            return False
        inner = self.d.get(other[-2] if left else other[-1])
        return inner is not None and inner != 1

    def concat(self, node: ast.Concat, eq: ast.Equation) -> Vars:
        """``[a; b]`` adds up the first axis, ``[a, b]`` the last; the others must agree."""
        parts = [self.nodes[id(p)] or (self.one, self.one) for p in node.parts]
        axis = len(parts[0]) - 1 if node.across else 0
        rest = parts[0][:axis] + parts[0][axis + 1:]
        for part, p in zip(parts[1:], node.parts[1:], strict=True):
            before = (self.show(parts[0]), self.show(part))
            if len(part) != len(parts[0]) or not all(
                    self.d.union(x, y) for x, y in zip(rest, part[:axis] + part[axis + 1:],
                                                       strict=True)):
                which = "last" if node.across else "first"
                raise self.error(f"parts in the equation for '{eq.target.raw}' must agree on "
                                 f"every axis but the {which}: {before[0]} and "
                                 f"'{unparse(p)}' {before[1]}", node.pos)
        total = self.d.new()
        self.d.sums.append((total, [p[axis] for p in parts], node.pos))
        problem = self.d.solve_sums()  # the total now, so broadcasting can see a size of 1
        if problem:
            raise self.error(*problem)
        return (*rest[:axis], total, *rest[axis:])

    def call(self, node: ast.Call, eq: ast.Equation) -> Vars:
        op = OPS[node.func]
        args = [self.nodes[id(a)] for a in node.args]
        if op.name == "reshape":
            return self.reshape(node, args[0], eq)
        if op.name == "permute":
            return self.permute(node, args[0], eq)
        if op.name == "concat":
            return self.concat_along(node, args, eq)
        if op.tensor:
            return self.tensor_call(node, args, eq)
        if _axis_of(node) is not None:
            return self.along_axis(node, args[0], eq)
        if op.reduces:  # one number, kept with as many axes as its argument
            return (self.one,) * max(len(args[0]), 2)
        shape = args[0]
        for arg in args[1:]:
            shape = self.broadcast(shape, arg, node.pos, f"the arguments of {op.spellings[0]} "
                                   f"in the equation for '{eq.target.raw}'")
        return shape

    def along_axis(self, node: ast.Call, x: Vars, eq: ast.Equation) -> Vars:
        """``Σ(x; axis=k)`` keeps every axis, axis k as 1; ``softmax(x; axis=k)`` keeps the
        shape. Axes are the value's own, counted from 0 (a vector is a column (n, 1))."""
        axis = _axis_of(node)
        assert axis is not None
        if not -len(x) <= axis < len(x):
            raise self.error(f"{OPS[node.func].spellings[0]}(…; axis={axis}) in the equation for "
                             f"'{eq.target.raw}': '{unparse(node.args[0])}' has {len(x)} axes",
                             node.pos, expected=f"an axis from {-len(x)} to {len(x) - 1}"
                             if x else "a value with axes")
        if not OPS[node.func].reduces:
            return x
        return tuple(self.one if i == axis % len(x) else v for i, v in enumerate(x))

    def concat_along(self, node: ast.Call, parts: list[Vars], eq: ast.Equation) -> Vars:
        """``concat(a, b; axis=k)``: the sizes along axis k add up; the other axes agree."""
        axis = _axis_of(node)
        rank = len(parts[0])
        if axis is None or not -rank <= axis < rank or len(parts[1]) != rank:
            raise self.error(f"concat in the equation for '{eq.target.raw}' needs two values "
                             f"with the same number of axes and an axis of theirs: "
                             f"{self.show(parts[0])} and {self.show(parts[1])}", node.pos,
                             expected="concat(a, b; axis=k), or [a; b] (first) and [a, b] (last)")
        axis %= rank
        for i, (x, y) in enumerate(zip(parts[0], parts[1], strict=True)):
            if i != axis and not self.d.union(x, y):
                raise self.error(f"concat(…; axis={axis}) in the equation for "
                                 f"'{eq.target.raw}': {self.show(parts[0])} and "
                                 f"{self.show(parts[1])} differ on another axis", node.pos)
        self.attrs[id(node)] = {"axis": axis}
        total = self.d.new()
        self.d.sums.append((total, [p[axis] for p in parts], node.pos))
        problem = self.d.solve_sums()
        if problem:
            raise self.error(*problem)
        return (*parts[0][:axis], total, *parts[0][axis + 1:])

    def declared_target(self, node: ast.Call, eq: ast.Equation, what: str) -> Vars:
        """The axes of the target that ``reshape``/``permute`` takes its shape from: it must
        be the whole right-hand side, and the target declared."""
        target = self.names.get(eq.target.name)
        if eq.expr is not node or target is None:
            raise self.error(f"{node.func} in the equation for '{eq.target.raw}' takes its "
                             f"{what} from the target, so it must be the whole right-hand side "
                             "of an equation whose target is declared", node.pos,
                             expected=f"'{eq.target.raw} ∈ ℝ^(…)' and "
                                      f"'{eq.target.raw} = {node.func}(…)'")
        return target

    def reshape(self, node: ast.Call, arg: Vars, eq: ast.Equation) -> Vars:
        """``Y = reshape(X)``: the target's declared shape, with as many entries as X."""
        target = self.declared_target(node, eq, "shape")
        self.infer_size(arg, target)
        self.infer_size(target, arg)
        have = self.known(arg)
        want = self.known(target)
        if have is None or want is None or math.prod(have) != math.prod(want):
            raise self.error(f"reshape in the equation for '{eq.target.raw}' needs known sizes "
                             f"with the same number of entries: {self.show(arg)} to "
                             f"{self.show(target)}", node.pos)
        return target

    def infer_size(self, whole: Vars, part: Vars) -> None:
        """The one unknown size of ``part`` (perhaps on several axes) that gives it as many
        entries as ``whole`` has, as NumPy's −1 does: ``reshape`` to ``(heads, 1, d_h)``."""
        have = self.known(whole)
        unknown = {self.d.find(v) for v in part if self.d.get(v) is None}
        if have is None or len(unknown) != 1:
            return
        rest = math.prod(self.d.get(v) or 1 for v in part)
        count = sum(1 for v in part if self.d.get(v) is None)
        size = round((math.prod(have) / rest) ** (1 / count))
        if size >= 1 and size ** count * rest == math.prod(have):
            self.d.union(unknown.pop(), self.d.new(size))

    def permute(self, node: ast.Call, arg: Vars, eq: ast.Equation) -> Vars:
        """``Y = permute(X)``: X's axes in the order of Y's declaration, each axis found by
        its dimension (``X ∈ ℝ^(C×H×W)``, ``Y ∈ ℝ^(H×W×C)``), or else by a size only one axis
        has; anything else would be ambiguous."""
        target = self.declared_target(node, eq, "order")
        roots = [self.d.find(v) for v in arg]
        sizes = [self.d.get(v) for v in arg]
        axes = []
        for var in target:
            root, size = self.d.find(var), self.d.get(var)
            if roots.count(root) == 1:  # the same dimension
                axes.append(roots.index(root))
            elif size is not None and sizes.count(size) == 1:  # the only axis of that size
                axes.append(sizes.index(size))
            else:
                axes.append(-1)
        if sorted(axes) != list(range(len(arg))) or len(target) != len(arg):
            raise self.error(f"permute in the equation for '{eq.target.raw}': cannot tell "
                             f"where each axis of {self.show(target)} comes from in "
                             f"{self.show(arg)}", node.pos,
                             expected="each axis's dimension name, or size, once on each side")
        self.attrs[id(node)] = {"axes": tuple(axes)}
        return target

    def tensor_call(self, node: ast.Call, args: list[Vars], eq: ast.Equation) -> Vars:
        """Convolution, pooling, flattening: sizes must be known here; the op's own shape
        rule gives the result (one definition), its ValueError becomes a located error."""
        op = OPS[node.func]
        known = [self.known(a) for a in args]
        x = node.args[op.tensor_input]
        if any(k is None for k in known):
            missing = next(a for a, k in zip(node.args, known, strict=True) if k is None)
            axes = args[node.args.index(missing)]
            names = [sorted(self.d.names[self.d.find(v)]) for v in axes if self.d.get(v) is None]
            unbound = next((n[0] for n in names if n), None)  # a dimension the user can set
            raise self.error(f"{op.spellings[0]} needs the size of '{unparse(missing)}', which "
                             f"is {self.show(axes)} here", node.pos,
                             expected=f"--set {unbound}=…, a declaration or weights"
                             if unbound else "a declaration with sizes, --set, or weights")
        shapes = [k if i == op.tensor_input else api_shape(k)  # a (C, 1) signal keeps its axes
                  for i, k in enumerate(known) if k is not None]
        try:
            attrs = tensor_attrs(op, len(shapes[op.tensor_input]) - 1, dict(node.params))
            out = op.shape(*shapes, **attrs)
        except ValueError as err:
            raise self.error(f"{op.spellings[0]}({unparse(x)}) in the equation for "
                             f"'{eq.target.raw}': {err}", node.pos) from err
        self.attrs[id(node)] = attrs
        out = (*out, 1) if len(out) == 1 else tuple(out)
        return tuple(self.d.new(n) for n in out)

    # -- result --------------------------------------------------------------------------
    def finish(self) -> TensorShapes:
        past_end(self.slices, self.d, self.error, "along its first axis")
        dims = dimension_values(self.d, self.where, self.error)
        of = {}
        for name, axes in self.names.items():
            shape = self.known(axes)
            if shape is None:
                raise self.error(f"the shape of '{name}' cannot be determined: it is "
                                 f"{self.show(axes)}", self.where.get(name),
                                 expected=f"a declaration '{name} ∈ ℝ^…' or a weight for it")
            if any(n <= 0 or n > MAX_DIM for n in shape) or len(shape) > MAX_RANK:
                raise self.error(f"'{name}' has an impossible shape {shape}",
                                 self.where.get(name))
            of[name] = shape
        nodes = {}
        for key, axes in self.nodes.items():
            shape = self.known(axes)
            assert shape is not None, "every node's axes are unified with a name's or fixed"
            nodes[key] = shape
        ids = {}
        for name in self.id_names:
            if name not in self.ids:
                raise self.error(f"ids '{name}' index no table", self.where.get(name),
                                 expected=f"a gather E[{name}]")
            count = self.d.get(self.ids[name])
            assert count is not None
            ids[name] = count
        limits = [of[name][axis] for name, axis in self.grown.items()]
        limits += [self.d.get(v) for v in self.positions]  # type: ignore[misc]
        return TensorShapes(of, self.scalar, dims, nodes, self.attrs, ids, dict(self.grown),
                            min(limits) if limits else None)


def _what(node: ast.Binary, eq: ast.Equation) -> str:
    return f"{_OP_WORDS[node.op]} in the equation for '{eq.target.raw}'"


def check_tensor_shapes(module: ast.Module, roles: Roles, dims: Mapping[str, int] | None = None,
                        given: Mapping[str, tuple[int, ...]] | None = None) -> TensorShapes:
    """Bind dimensions, infer every shape and check every equation (tensor reading)."""
    ck = _Checker(module, roles)
    ck.d.bind(dims or {}, module.filename)
    for decl in module.declarations:
        if len(decl.shape) > MAX_RANK:
            raise ck.error(f"{len(decl.shape)} axes declared", None,
                           expected=f"at most {MAX_RANK}")
        ck.declare(decl)
    for name, shape in (given or {}).items():
        ck.give(name, shape)
    for name in roles.inputs:  # an input nothing declares is a (column) vector
        axes = ck.name(name)
        if len(axes) == 2 and name not in {n.name for d in module.declarations for n in d.names}:
            ck.d.union(axes[1], ck.one)
    for name in roles.order:
        ck.equation(roles.equations[name])
    problem = ck.d.solve_sums()
    if problem:
        raise ck.error(*problem)
    return ck.finish()

