"""Gradient check: backpropagation through time against float64 central differences.

The loss is a random linear read of every output at every step and of the final state, so
every path (outputs, recurrence, initial state, inputs, parameters) is exercised. Each
parameter, input and initial state is checked along random directions, the way JAX's
``check_vjp`` does: (L(p + εd) − L(p − εd)) / 2ε ≈ ⟨∇L, d⟩.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from nndk.autodiff import Backward, differentiable_slots, transient_slots
from nndk.layout import place_params
from nndk.unrolled import Unrolled
from nnre.compiler import compile_program
from nnre.equations import check
from nnre.program import Program
from nnre.vm import bind_prologue, run_prologue


@dataclass
class Problem:
    """A program with random float64 parameters, feeds, initial state and loss weights."""

    prog: Program
    params: dict[str, np.ndarray]
    feeds: dict[str, np.ndarray]
    init: dict[tuple[str, int], np.ndarray]
    out_weights: dict[str, np.ndarray]
    state_weights: dict[str, np.ndarray]
    steps: int
    batch: int
    placed: dict[int, np.ndarray] | None = None  # trainer layout: params inside the stacks

    def loss(self, params: Mapping[str, np.ndarray] | None = None,
             feeds: Mapping[str, np.ndarray] | None = None,
             init: Mapping[tuple[str, int], np.ndarray] | None = None) -> tuple[float, Unrolled]:
        prog = self.prog
        consts = bind_prologue(prog, self.params, self.placed)[0] if params is None else \
            run_prologue(prog, dict(params))
        run = Unrolled(prog, consts, self.steps, self.batch,
                       transient_slots(prog) if params is None else None)
        run.forward(dict(feeds or self.feeds), dict(init or self.init))
        total = sum(float(np.sum(run.full[prog.outputs[k]] * w))
                    for k, w in self.out_weights.items())
        last = slice((self.steps - 1) * self.batch, None)
        total += sum(float(np.sum(run.full[prog.state_out[k]][last] * w))
                     for k, w in self.state_weights.items())
        return total, run

    def gradients(self) -> Backward:
        _, run = self.loss()
        back = Backward(run, differentiable_slots(self.prog))
        seeds = {self.prog.outputs[k]: w for k, w in self.out_weights.items()}
        for k, w in self.state_weights.items():
            seed = np.zeros_like(run.full[self.prog.state_out[k]])
            seed[(self.steps - 1) * self.batch:] = w
            index = self.prog.state_out[k]
            seeds[index] = seeds.get(index, 0) + seed
        back.backward(seeds)
        return back


def make_problem(text: str, dims: Mapping[str, int] | None = None, steps: int = 3,
                 batch: int = 2, seed: int = 0, optimize: bool = True,
                 contiguous: bool = False, stacked: bool = False) -> Problem:
    """``contiguous`` and ``stacked`` compile and store the weights the way a trainer does."""
    checked = check(text, dims)
    prog = compile_program(checked.sympy, checked.roles, "float64", optimize=optimize,
                           contiguous=contiguous)
    rng = np.random.default_rng(seed)
    params, placed = place_params(prog) if stacked else ({}, None)
    for name, i in prog.params.items():
        value = rng.normal(scale=0.5, size=prog.slots[i].shape)
        if stacked:
            params[name][...] = value  # into its place inside the stack
        else:
            params[name] = value
    rows = steps * batch
    feeds = {name: rng.normal(size=(rows, *prog.slots[i].shape))
             for name, i in prog.inputs.items()}
    init = {key: rng.normal(scale=0.5, size=(batch, *prog.slots[i].shape))
            for key, i in prog.state_in.items()}
    outs = {name: rng.normal(size=(rows, *prog.slots[i].shape))
            for name, i in prog.outputs.items()}
    states = {name: rng.normal(size=(batch, *prog.slots[i].shape))
              for name, i in prog.state_out.items()}
    return Problem(prog, params, feeds, init, outs, states, steps, batch, placed)


def gradcheck(problem: Problem, eps: float = 1e-6, directions: int = 3, seed: int = 1
              ) -> dict[str, float]:
    """Relative error of the analytic gradient of every parameter, input and initial state."""
    back = problem.gradients()
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
            grad = grads[key].reshape(value.shape)
            worst = 0.0
            for _ in range(directions):
                d = rng.normal(size=value.shape)
                plus = {**values, key: value + eps * d}
                minus = {**values, key: value - eps * d}
                numeric = (problem.loss(**{keyword: plus})[0]
                           - problem.loss(**{keyword: minus})[0]) / (2 * eps)
                analytic = float(np.sum(grad * d))
                scale = max(abs(numeric), abs(analytic), 1e-8)
                worst = max(worst, abs(numeric - analytic) / scale)
            name = key if isinstance(key, str) else f"{key[0]}@t-{key[1]}"
            errors[f"{kind} {name}"] = worst
    return errors
