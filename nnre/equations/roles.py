"""Who is who in an equation set: inputs, state, parameters, outputs, and evaluation order.

Undeclared roles are inferred: a time-indexed name no equation defines is an input; a name
read at an earlier step is state; a name read at a later step is backward state (the pass
that runs from the last step to the first); a declared dimension read in an equation
(``xₜ / H``) is its value, a number; any other free name without a time index is a parameter
(or, when weights are supplied and it has none, an input); the outputs are the defined names
no other equation reads. Cycles within one step are errors, and so are a backward state and
a forward one that need each other: each time pass runs over the whole sequence after the
passes it reads from.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from nnre.equations import ast
from nnre.errors import EquationError


@dataclass
class Roles:
    order: list[str]  # defined names in evaluation order
    equations: dict[str, ast.Equation]
    inputs: list[str]
    state: dict[str, int]  # state name → deepest lag read (1 for ₜ₋₁)
    params: list[str]
    outputs: list[str]
    timed: set[str] = field(default_factory=set)  # names written with a time index
    frozen: list[str] = field(default_factory=list)  # parameters training leaves as they are
    dims: list[str] = field(default_factory=list)  # dimension names read as their value
    #: State that grows by one entry a step, ``Kₜ = [Kₜ₋₁; kₜᵀ]`` (attention's keys): name →
    #: its equation's axis of growth as written (0 for ``[·; ·]``, k for ``concat(…; axis=k)``).
    appends: dict[str, int] = field(default_factory=dict)
    step_index: bool = False  # a timed text reads ``t``, the step's index, as a value
    back: dict[str, int] = field(default_factory=dict)  # backward state → deepest lead (1: ₜ₊₁)
    passes: dict[str, int] = field(default_factory=dict)  # state → its time pass (§4)


class _Located:
    """Builds located errors for one module."""

    def __init__(self, module: ast.Module) -> None:
        self.module = module

    def at(self, message: str, pos: ast.Pos | None, expected: str | None = None,
           line: int | None = None) -> EquationError:
        if pos is None:
            return EquationError(message, line=line, expected=expected,
                                 filename=self.module.filename)
        return EquationError(ast.in_copy(message, pos), line=pos.line, column=pos.column,
                             source_line=self.module.lines[pos.line - 1], expected=expected,
                             filename=self.module.filename)


def _reads(eq: ast.Equation) -> list[ast.Name]:
    return [n for n in ast.walk(eq.expr) if isinstance(n, ast.Name)]


def analyse(module: ast.Module, weights: set[str] | None = None) -> Roles:
    """Assign roles and an evaluation order; raises EquationError on any inconsistency."""
    loc = _Located(module)
    if not module.equations:
        raise EquationError("no equations found", expected="at least one 'name = expression'",
                            filename=module.filename)
    equations: dict[str, ast.Equation] = {}
    for eq in module.equations:
        if eq.target.name in equations:
            first = equations[eq.target.name].line
            raise loc.at(f"'{eq.target.name}' is defined twice (first on line {first})",
                         eq.target.pos)
        equations[eq.target.name] = eq
    declared: dict[str, dict[str, ast.Name]] = {}
    for line in module.roles:  # several lines of one role add up
        declared.setdefault(line.role, {}).update((n.name, n) for n in line.names)
    timed = {eq.target.name for eq in module.equations if eq.target.time is not None}
    state: dict[str, int] = {}
    back: dict[str, int] = {}
    free_timed: dict[str, ast.Name] = {}
    free_plain: dict[str, ast.Name] = {}
    readers: dict[str, set[str]] = {name: set() for name in equations}
    deps: dict[str, set[str]] = {name: set() for name in equations}
    for eq in module.equations:
        for ref in _reads(eq):
            _classify(loc, eq, ref, equations, timed, (state, back), free_timed, free_plain)
            if ref.name in equations:
                if ref.name != eq.target.name:
                    readers[ref.name].add(eq.target.name)
                if ref.time is None or ref.time == 0:
                    deps[eq.target.name].add(ref.name)
    for name in declared.get("state", {}):
        if name not in equations:
            raise loc.at(f"state '{name}' is never defined", declared["state"][name].pos,
                         expected=f"an equation '{name}ₜ = …'")
        if name not in back:
            state.setdefault(name, 1)
    dims = _dimension_values(loc, module, equations, free_timed, free_plain, declared)
    step_index = bool(timed or free_timed) and STEP in free_plain and not any(
        STEP in names for names in declared.values())
    if step_index:
        del free_plain[STEP]
    appends = _appends(loc, module, state)
    inputs, params = _split_free(loc, free_timed, free_plain, declared, equations, weights)
    order = _toposort(loc, equations, deps)  # a cycle explains a missing output: check it first
    passes = _time_passes(loc, equations, state, back)
    outputs = _outputs(loc, declared, equations, readers)
    frozen = declared.get("frozen", {})
    for name, ref in frozen.items():
        if name not in params:
            raise loc.at(f"frozen '{name}' is not a parameter (a weight)", ref.pos,
                         expected="the name of a weight the equations read")
    return Roles(order, equations, inputs, state, params, outputs, timed | set(free_timed),
                 list(frozen), dims, appends, step_index, back=back, passes=passes)


#: In a text with time indices, ``t`` without one is the index of the step (0, 1, 2, …): a
#: position, as ``P[t]`` reads a learned table (formats/equations.md §4).
STEP = "t"


def append_parts(eq: ast.Equation) -> tuple[ast.Expr, int] | None:
    """``Kₜ = [Kₜ₋₁; r]`` or ``Kₜ = concat(Kₜ₋₁, r; axis=k)``: the appended part and the axis
    as written; None for any other equation."""
    expr = eq.expr
    first = _previous(eq)
    if first is None:
        return None
    expr = eq.expr
    if isinstance(expr, ast.Concat):
        return expr.parts[1], 0
    assert isinstance(expr, ast.Call)
    return expr.args[1], int(dict(expr.params).get("axis", 0))


def _previous(eq: ast.Equation) -> ast.Name | None:
    """The ``Kₜ₋₁`` an append equation starts with."""
    expr = eq.expr
    if isinstance(expr, ast.Concat) and not expr.across and len(expr.parts) == 2:
        first = expr.parts[0]
    elif isinstance(expr, ast.Call) and expr.func == "concat" and len(expr.args) == 2:
        first = expr.args[0]
    else:
        return None
    if isinstance(first, ast.Name) and first.name == eq.target.name and first.time == -1:
        return first
    return None


def _appends(loc: _Located, module: ast.Module, state: dict[str, int]) -> dict[str, int]:
    """State that grows a step at a time: its previous value is read only to be appended
    to, so a runtime can keep one buffer and write each step's entry in place."""
    found = {}
    for eq in module.equations:
        parts = append_parts(eq)
        if parts is None:
            continue
        name = eq.target.name
        if state.get(name) != 1:
            raise loc.at(f"'{eq.target.raw}' grows by a step but its value "
                         f"{state.get(name)} steps back is read", eq.target.pos,
                         expected=f"only '{name}ₜ₋₁' inside its own equation")
        found[name] = parts[1]
    for eq in module.equations:
        own = _previous(eq)
        for ref in _reads(eq):
            if ref.name in found and ref.time is not None and ref.time < 0 and ref is not own:
                raise loc.at(f"'{ref.raw}' reads the previous value of '{ref.name}', which "
                             "grows by one entry a step", ref.pos,
                             expected=f"'{ref.name}ₜ' (every entry so far)")
    return found


def dimension_names(module: ast.Module) -> dict[str, int]:
    """Every dimension name of the declarations, of blocks' bounds (``for l = 1…L:``) and of
    layer indices (``h^{(L)}``), with the line of its first use."""
    found: dict[str, int] = {}
    for decl in [*module.declarations, *(d for b in module.blocks for d in b.body.declarations)]:
        for dim in decl.shape:
            for term in dim.terms:
                if isinstance(term, str):
                    found.setdefault(term, decl.line)
    for name, pos in module.layer_dims.items():
        found.setdefault(name, pos.line)
    return found


def _dimension_values(loc: _Located, module: ast.Module, equations: dict[str, ast.Equation],
                      free_timed: dict[str, ast.Name], free_plain: dict[str, ast.Name],
                      declared: dict[str, dict[str, ast.Name]]) -> list[str]:
    """The dimension names the equations read as values (taken out of ``free_plain``).

    A name is a dimension or a value of the model, never both: a dimension that an equation
    defines, a declaration gives a shape, a role line names or a time index follows is an
    error, whether or not an equation reads it."""
    dims = dimension_names(module)
    if not dims:
        return []
    clash = "another name for one of them (a dimension is a number: 'xₜ / {}')"
    for eq in module.equations:
        if eq.target.name in dims:
            name = eq.target.name
            raise loc.at(f"'{name}' is a dimension (declared on line {dims[name]}) and cannot "
                         "also be defined", eq.target.pos, expected=clash.format(name))
    for decl in module.declarations:
        for ref in decl.names:
            if ref.name in dims:
                raise loc.at(f"'{ref.raw}' is a dimension (declared on line "
                             f"{dims[ref.name]}) and cannot also be declared as a value", ref.pos,
                             expected=clash.format(ref.name))
    for role, names in declared.items():
        for name, ref in names.items():
            if name in dims:
                raise loc.at(f"'{ref.raw}' is a dimension (declared on line {dims[name]}) and "
                             f"cannot appear in '{role} …'",
                             ref.pos, expected=clash.format(name))
    for name, ref in free_timed.items():
        if name in dims:
            raise loc.at(f"'{ref.raw}': '{name}' is a dimension (declared on line "
                         f"{dims[name]}), a number without a time index", ref.pos,
                         expected=f"'{name}' without a time index")
    read = [name for name in free_plain if name in dims]
    for name in read:
        del free_plain[name]
    return read


def _classify(loc: _Located, eq: ast.Equation, ref: ast.Name,
              equations: dict[str, ast.Equation], timed: set[str],
              states: tuple[dict[str, int], dict[str, int]],
              free_timed: dict[str, ast.Name], free_plain: dict[str, ast.Name]) -> None:
    """Record what one read of a name means, or raise if it is inconsistent."""
    name = ref.name
    state, back = states
    if name in equations:
        if (ref.time is None) != (name not in timed):
            how = "with" if name in timed else "without"
            raise loc.at(f"'{ref.raw}': '{name}' is defined {how} a time index on line "
                         f"{equations[name].line}", ref.pos,
                         expected=f"'{name}' written {how} a time index")
        if ref.time:
            mine, other = (state, back) if ref.time < 0 else (back, state)
            if name in other:
                runs = "backward (it is read at a later step)" if ref.time < 0 else \
                    "forward (it is read at an earlier step)"
                raise loc.at(f"'{ref.raw}': '{name}' is state that runs {runs}; a state runs "
                             "forward or backward in time, not both", ref.pos,
                             expected="another name for the state of the other direction")
            mine[name] = max(mine.get(name, 0), abs(ref.time))
        return
    if ref.time is not None and ref.time != 0:
        which = "an earlier" if ref.time < 0 else "a later"
        raise loc.at(f"'{ref.raw}' reads {which} step of '{name}', which no equation defines",
                     ref.pos, expected=f"an equation '{name}ₜ = …' or an input at ₜ")
    elsewhere = free_plain if ref.time is not None else free_timed
    if name in elsewhere:
        raise loc.at(f"'{name}' is written both with and without a time index", ref.pos)
    (free_timed if ref.time is not None else free_plain).setdefault(name, ref)


def _time_passes(loc: _Located, equations: dict[str, ast.Equation],
                 state: dict[str, int], back: dict[str, int]) -> dict[str, int]:
    """The time pass (formats/equations.md §4) of every state: backward passes are odd,
    forward ones even, and a recurrence runs in the first pass of its direction after every
    pass it reads from (a second bidirectional layer's backward state reads the first's
    forward values: pass 3). States that need each other across directions are an error."""
    if not back:
        return {name: 2 for name in state}
    edges: dict[str, dict[str, ast.Name]] = {name: {} for name in equations}
    for name, eq in equations.items():
        for ref in _reads(eq):
            if ref.name in equations and ref.name != name:
                edges[name].setdefault(ref.name, ref)
    group = _components(edges)
    way: dict[int, int] = {}  # component → 1 backward, 2 forward
    for name in [*back, *state]:
        k, mine = group[name], 1 if name in back else 2
        if way.setdefault(k, mine) != mine:
            _cross_cycle(loc, edges, group, [n for n in back if group[n] == k][0],
                         [n for n in state if group[n] == k][0])
    passes = {name: way.get(group[name], 0) for name in equations}
    for _ in range(len(equations) + 1):  # longest chain of components: a fixpoint
        changed = False
        for name, reads in edges.items():
            d = way.get(group[name], 0)
            need = max([passes[name], *(_first_pass(d, passes[m]) for m in reads)])
            if need != passes[name]:
                passes[name], changed = need, True
        if not changed:
            break
    return {name: passes[name] for name in [*state, *back]}


def _first_pass(way: int, after: int) -> int:
    """The first pass of direction ``way`` (1 backward, 2 forward, 0 either) from ``after``
    on: passes alternate, backward ones odd."""
    if not way:
        return after
    return after if after >= way and after % 2 == way % 2 else max(way, after + 1)


def _components(edges: dict[str, dict[str, ast.Name]]) -> dict[str, int]:
    """Strongly connected components (Tarjan's, with an explicit stack): name → component."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    group: dict[str, int] = {}
    stack: list[str] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        while work:
            name, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    work.append((nxt, iter(edges[nxt])))
                elif nxt not in group:
                    low[name] = min(low[name], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[name])
            if low[name] == index[name]:
                while True:
                    member = stack.pop()
                    group[member] = index[name]
                    if member == name:
                        break
    return group


def _cross_cycle(loc: _Located, edges: dict[str, dict[str, ast.Name]], group: dict[str, int],
                 first: str, second: str) -> None:
    """Raise the error of a backward state and a forward one that need each other."""
    def path(src: str, dst: str) -> list[str]:
        parent = {src: src}
        queue = deque([src])
        while queue:
            name = queue.popleft()
            for nxt in edges[name]:
                if nxt not in parent and group[nxt] == group[src]:
                    parent[nxt] = name
                    queue.append(nxt)
        out = [dst]
        while out[-1] != src:
            out.append(parent[out[-1]])
        return out[::-1]

    chain = path(first, second) + path(second, first)[1:]
    raise loc.at(f"'{first}' runs backward in time (it is read at a later step) and '{second}' "
                 f"forward (it is read at an earlier step), but each needs the other: "
                 + " → ".join(chain), edges[chain[0]][chain[1]].pos,
                 expected="a backward state that does not depend on forward state that depends "
                 "on it (passes run one after the other, each over the whole sequence)")


def _split_free(loc: _Located, free_timed: dict[str, ast.Name],
                free_plain: dict[str, ast.Name], declared: dict[str, dict[str, ast.Name]],
                equations: dict[str, ast.Equation], weights: set[str] | None
                ) -> tuple[list[str], list[str]]:
    declared_inputs = declared.get("input", {})
    for name, ref in declared_inputs.items():
        if name in equations:
            raise loc.at(f"input '{name}' is also defined by an equation", ref.pos)
        if name not in free_timed and name not in free_plain:
            raise loc.at(f"input '{name}' is never used", ref.pos)
    inputs = list(free_timed)
    params: list[str] = []
    for name in free_plain:
        is_input = name in declared_inputs or (weights is not None and name not in weights)
        (inputs if is_input else params).append(name)
    return inputs, params


def _outputs(loc: _Located, declared: dict[str, dict[str, ast.Name]],
             equations: dict[str, ast.Equation], readers: dict[str, set[str]]) -> list[str]:
    if "output" in declared:
        for name, ref in declared["output"].items():
            if name not in equations:
                raise loc.at(f"output '{name}' is not defined by any equation", ref.pos)
        return list(declared["output"])
    outputs = [name for name in equations if not readers[name]]
    if not outputs:
        raise EquationError("every defined name is read by another equation, so there is no "
                            "output", expected="an 'output …' declaration",
                            filename=loc.module.filename)
    return outputs


def _toposort(loc: _Located, equations: dict[str, ast.Equation],
              deps: dict[str, set[str]]) -> list[str]:
    """Kahn's algorithm in source order; a leftover means a same-step cycle."""
    pending = {name: set(d) for name, d in deps.items()}
    dependents: dict[str, list[str]] = {name: [] for name in equations}
    for name, needed in deps.items():
        for dep in needed:
            dependents[dep].append(name)
    order: list[str] = []
    ready = deque(name for name in equations if not pending[name])
    while ready:
        name = ready.popleft()
        order.append(name)
        for other in dependents[name]:
            pending[other].discard(name)
            if not pending[other]:
                ready.append(other)
    if len(order) < len(equations):
        cycle = _find_cycle([name for name in equations if name not in order], pending)
        eq = equations[cycle[0]]
        raise loc.at("equations depend on each other within one step: "
                     + " → ".join(cycle + [cycle[0]]), eq.target.pos,
                     expected="a cycle broken by an earlier step (ₜ₋₁)")
    return order


def _find_cycle(stuck: list[str], pending: dict[str, set[str]]) -> list[str]:
    """One actual cycle among the names Kahn's algorithm could not order, first in source order.

    Every stuck name still waits for another stuck name, so following those waits from any of
    them must come back to a name already seen; names that merely read a cycle are left out.
    """
    rank = {name: i for i, name in enumerate(stuck)}
    path: list[str] = []
    seen: dict[str, int] = {}
    name = stuck[0]
    while name not in seen:
        seen[name] = len(path)
        path.append(name)
        name = min(pending[name], key=rank.__getitem__)
    cycle = path[seen[name]:]
    first = min(range(len(cycle)), key=lambda i: rank[cycle[i]])
    return cycle[first:] + cycle[:first]
