"""How many bytes a training run will need, estimated before anything is allocated.

``--set H=2147483647`` would otherwise ask NumPy for exabytes (a MemoryError traceback, or
worse, a machine swapping to death). The estimate uses Python ints, so it cannot overflow:
parameters, their gradients and the optimizer's state (two moments for Adam), plus every
value of the unrolled forward and backward passes for one batch.
"""

from __future__ import annotations

import math

from nnre import budget
from nnre.equations import Checked, ast, param_shapes
from nnre.errors import NnreError
from nnre.ops import OPS

FLOAT_BYTES = 4  # training runs in float32
STATE_COPIES = {"sgd": 1, "momentum": 1, "adam": 2, "adamw": 2, "adagrad": 1, "rmsprop": 1}


class BudgetError(NnreError):
    """A run that would need more memory than the budget allows."""

    code = "too-big"


def estimate(checked: Checked, optimizer: str, steps: int, batch: int) -> tuple[int, int]:
    """(bytes of parameters + gradients + optimizer state, bytes of per-batch buffers)."""
    params = param_shapes(checked)
    weights = sum(math.prod(shape) for shape in params.values())
    fixed = weights * (2 + STATE_COPIES.get(optimizer, 2)) * FLOAT_BYTES
    per_example = _per_example_entries(checked)
    per_batch = 2 * per_example * steps * batch * FLOAT_BYTES  # values and their gradients
    per_batch += _scratch_entries(checked) * steps * batch * FLOAT_BYTES  # one call at a time
    return fixed, per_batch


def _per_example_entries(checked: Checked) -> int:
    """Entries of one example's values at one step: every named value and every
    subexpression that depends on an input or a state (a product of parameters alone is
    made once, not per step, and counted in ``fixed``'s order of size)."""
    params = set(checked.roles.params) | set(checked.roles.dims)
    varying: dict[int, bool] = {}
    total = 0
    for name in checked.roles.order:
        for node in ast.walk(checked.roles.equations[name].expr):
            kids = ast.children(node)
            varying[id(node)] = (isinstance(node, ast.Name) and node.name not in params) or \
                any(varying[id(k)] for k in kids)
            if varying[id(node)] and kids and id(node) in checked.shapes.nodes:
                total += math.prod(checked.shapes.nodes[id(node)])
        total += math.prod(checked.shapes.of[name])
    return total


def _scratch_entries(checked: Checked) -> int:
    """The largest scratch one example's kernel or VJP call makes while it runs (conv's
    im2col columns, made again by its gradient; pooling's padded copies of x and of its
    gradient), from each op's own rules (``Op.scratch``, ``Op.vjp_scratch``)."""
    nodes, attrs = checked.shapes.nodes, getattr(checked.shapes, "attrs", {})
    most = 0
    for name in checked.roles.order:
        for node in ast.walk(checked.roles.equations[name].expr):
            op = OPS.get(node.func) if isinstance(node, ast.Call) else None
            if not isinstance(node, ast.Call) or op is None:
                continue
            args = [nodes[id(a)] for a in node.args]
            for rule in (op.scratch, op.vjp_scratch):
                if rule is not None:
                    most = max(most, rule(*args, **attrs.get(id(node), {})))
    return most


def check_budget(checked: Checked, optimizer: str, steps: int, batch: int) -> None:
    """Refuse a run whose estimate exceeds the budget, naming its largest parameter."""
    fixed, per_batch = estimate(checked, optimizer, steps, batch)
    limit = budget.limit()  # the runtime's one budget: NNRE_MAX_BYTES, else half the RAM
    if fixed + per_batch <= limit:
        return
    params = param_shapes(checked)
    name, shape = max(params.items(), key=lambda item: math.prod(item[1]), default=("?", ()))
    dims = ", ".join(f"{k}={v}" for k, v in sorted(checked.shapes.dims.items()))
    show = budget.show
    raise BudgetError(f"{dims}: training needs about {fixed + per_batch:,} bytes "
                      f"({show(fixed)} for weights, gradients and {optimizer} state, the "
                      f"largest {name} {shape}; {show(per_batch)} for {steps} steps × "
                      f"{batch} examples), over the memory budget of {limit:,} bytes (set "
                      "NNRE_MAX_BYTES to change it)")
