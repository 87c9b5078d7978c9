"""Gradient check: backpropagation through time against an independent forward pass.

The gradients under test come from the trainer's machinery (``Unrolled`` forward, in the
layout asked for, then ``Backward``). The finite differences do not: they run the runtime's
``Model.run``, compiled afresh from the equations in float64, so a bug shared by the
unrolled forward pass and its reverse cannot cancel out. The loss is a random linear read
of every output at every step and of the final state, so every path (outputs, recurrence,
initial state, inputs, parameters) is exercised. Each parameter, input and initial state is
checked along random directions d, the way JAX's ``check_vjp`` does:
(L(p + εd) − L(p − εd)) / 2ε ≈ ⟨∇L, d⟩.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from nndk.autodiff import Backward, differentiable_slots, transient_slots
from nndk.layout import place_params
from nndk.sequence import compile_sequence
from nndk.unrolled import Unrolled, final_time, state_keys
from nnre.compiler import compile_checked
from nnre.equations import check, param_shapes
from nnre.equations.roles import STEP
from nnre.model import Model
from nnre.program import Program
from nnre.program import state_key as api_key
from nnre.vm import bind_prologue

StateKey = tuple[str, int]


@dataclass
class Problem:
    """A program with random parameters, feeds, initial state and loss weights.

    Feeds and per-step loss weights are (steps·batch, n) time-major row blocks; ``init`` and
    ``state_weights`` are keyed by (state, lag), the latter weighting the state's value at
    step ``steps − lag`` (what ``Model.run`` returns as the final state); a backward state
    read k steps later is keyed (state, −k), its final value at step k − 1.
    """

    text: str
    dims: dict[str, int]
    prog: Program
    params: dict[str, np.ndarray]
    feeds: dict[str, np.ndarray]
    init: dict[StateKey, np.ndarray]
    out_weights: dict[str, np.ndarray]
    state_weights: dict[StateKey, np.ndarray]
    steps: int
    batch: int
    placed: dict[int, np.ndarray] | None = None  # trainer layout: params inside the stacks
    sequence: bool = False  # the sequence form (attention, every step at once), steps = 1

    def forward(self, transient: bool = True, codes: Mapping[str, np.ndarray] | None = None
                ) -> Unrolled:
        """The unrolled forward pass under test (``transient`` and ``codes`` as a trainer
        uses them)."""
        consts = bind_prologue(self.prog, self.params, self.placed)[0]
        run = Unrolled(self.prog, consts, self.steps, self.batch,
                       transient_slots(self.prog) if transient else None)
        run.forward(dict(self.feeds), dict(self.init), dict(codes) if codes else None)
        return run

    def seeds(self) -> dict[int, np.ndarray]:
        """The loss's gradient with respect to the outputs and the state it reads."""
        seeds: dict[int, np.ndarray] = {}
        for k, w in self.out_weights.items():  # outputs that are one value share its slot
            index = self.prog.outputs[k]
            if self.prog.slots[index].stage == "prologue":  # a constant: read on every row
                w = w.sum(axis=0)
            seeds[index] = seeds.get(index, 0) + w
        for (name, lag), w in self.state_weights.items():
            index = {**self.prog.state_out, **self.prog.back_out}[name]
            seed = np.zeros((self.steps * self.batch, *w.shape[1:]), w.dtype)
            block = final_time(self.prog, name, lag, self.steps)
            seed[block * self.batch:(block + 1) * self.batch] = w
            seeds[index] = seeds.get(index, 0) + seed
        return seeds

    def gradients(self) -> Backward:
        back = Backward(self.forward(), differentiable_slots(self.prog))
        back.backward(self.seeds())
        return back


class Oracle:
    """The problem's loss computed by ``Model.run`` in float64, from a fresh compile."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.shapes = param_shapes(check(problem.text, problem.dims))
        self.model = Model.from_equations(problem.text, self.weights(problem.params),
                                          problem.dims, "float64", optimize=False)
        if problem.sequence:  # the same text's sequence form, compiled afresh
            prog = compile_sequence(check(problem.text, problem.dims), "float64", False)
            self.model = Model(prog, self.weights(problem.params), equations=problem.text,
                               dims=problem.dims, param_specs={})

    def weights(self, params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {n: np.array(v, np.float64).reshape(self.shapes[n]) for n, v in params.items()}

    def run(self, params: Mapping[str, np.ndarray] | None = None,
            feeds: Mapping[str, np.ndarray] | None = None,
            init: Mapping[StateKey, np.ndarray] | None = None
            ) -> tuple[dict[str, np.ndarray], dict[StateKey, np.ndarray]]:
        """Outputs as (steps·batch, n) rows and the final state keyed by (state, lag)."""
        p, model = self.problem, self.model
        if params is not None:  # the same compiled program, other weights
            model = Model(model.program, self.weights(params), equations=model.equations,
                          dims=model.dims, param_specs=model.params)
        xs = {k: v.reshape(p.steps, p.batch, *v.shape[1:]) for k, v in (feeds or p.feeds).items()}
        given = init or p.init
        keys = {api_key(*key): key for key in state_keys(p.prog)}
        state = {key: given[keys[key]] for key in model.state}
        ys, final = model.run(xs, state)
        rows = p.steps * p.batch
        return ({k: v.reshape(rows, -1) for k, v in ys.items()},
                {keys[k]: v for k, v in final.items()})

    def loss(self, **changed: Any) -> float:
        p = self.problem
        ys, final = self.run(**changed)
        total = sum(float(np.sum(ys[k] * w.reshape(len(w), -1)))
                    for k, w in p.out_weights.items())
        return total + sum(float(np.sum(final[k] * w)) for k, w in p.state_weights.items())


def make_problem(text: str, dims: Mapping[str, int] | None = None, steps: int = 3,
                 batch: int = 2, seed: int = 0, optimize: bool = True,
                 contiguous: bool = False, stacked: bool = False, dtype: str = "float64",
                 filename: str | None = None, sequence: bool = False) -> Problem:
    """``contiguous`` and ``stacked`` compile and store the weights the way a trainer does;
    ``filename`` is where errors in ``text`` say they are; ``sequence``: the sequence form
    (one "step" of every step at once, as attention trains)."""
    checked = check(text, dims, filename=filename)
    if sequence:
        prog, steps = compile_sequence(checked, dtype, optimize=optimize), 1
    else:
        prog = compile_checked(checked, dtype, optimize=optimize, contiguous=contiguous)
    if steps < max(prog.max_lag(), prog.max_lead()):
        raise ValueError(f"steps={steps} is fewer than the deepest lag or lead "
                         f"{max(prog.max_lag(), prog.max_lead())}")
    rng = np.random.default_rng(seed)
    params, placed = place_params(prog) if stacked else ({}, None)
    for name, i in prog.params.items():
        value = rng.normal(scale=0.5, size=prog.slots[i].shape)
        if stacked:
            params[name][...] = value  # into its place inside the stack
        else:
            params[name] = value.astype(dtype)
    rows = steps * batch

    def draw(index: int, lead: int, scale: float = 1.0) -> np.ndarray:
        return rng.normal(scale=scale, size=(lead, *prog.slots[index].shape)).astype(dtype)

    feeds = {name: draw(i, rows) for name, i in prog.inputs.items()}
    for name, count in prog.ids.items():  # whole numbers: a table's rows, never perturbed
        feeds[name] = rng.integers(0, count, feeds[name].shape).astype(dtype)
    init = {key: draw(i, batch, 0.5) for key, i in state_keys(prog).items()}
    if (STEP, 1) in init:  # the steps each stream has taken: whole numbers, room left
        init[(STEP, 1)] = rng.integers(0, max(prog.context - steps, 0) + 1,
                                       init[(STEP, 1)].shape).astype(dtype)
    outs = {name: draw(i, rows) for name, i in prog.outputs.items()}
    states = {key: draw(i, batch) for key, i in state_keys(prog).items()}
    return Problem(text, dict(checked.shapes.dims), prog, params, feeds, init, outs, states,
                   steps, batch, placed, sequence)


def gradcheck(problem: Problem, eps: float = 1e-6, directions: int = 3, seed: int = 1
              ) -> dict[str, float]:
    """Relative error of the analytic gradient of every parameter, input and initial state
    against central differences of the float64 oracle."""
    back = problem.gradients()
    oracle = Oracle(problem)
    rng = np.random.default_rng(seed)
    errors: dict[str, float] = {}
    groups: dict[str, tuple[dict[Any, np.ndarray], dict[Any, np.ndarray], str]] = {
        "param": (problem.params, back.param_grads(), "params"),
        "input": (problem.feeds, {k: back.full[i] for k, i in problem.prog.inputs.items()},
                  "feeds"),
        "state": (problem.init, {k: back.init_grad(*k) for k in problem.init}, "init"),
    }
    for kind, (values, grads, keyword) in groups.items():
        for key, value in values.items():
            if (kind == "input" and key in problem.prog.ids) or key == (STEP, 1):
                continue  # whole numbers: no derivative to check
            base = np.array(value, np.float64)
            grad = np.asarray(grads[key], np.float64).reshape(base.shape)
            worst = 0.0
            for _ in range(directions):
                d = rng.normal(size=base.shape)
                plus = {**values, key: base + eps * d}
                minus = {**values, key: base - eps * d}
                numeric = (oracle.loss(**{keyword: plus})
                           - oracle.loss(**{keyword: minus})) / (2 * eps)
                analytic = float(np.sum(grad * d))
                scale = max(abs(numeric), abs(analytic), 1e-8)
                worst = max(worst, abs(numeric - analytic) / scale)
            name = key if isinstance(key, str) else \
                f"{key[0]}@t{'-' if key[1] > 0 else '+'}{abs(key[1])}"
            errors[f"{kind} {name}"] = worst
    return errors
