"""One gradient step on a compiled Program: forward, backward, clip, optimizer update.

The Learner knows nothing about data: trainers give it feeds, an initial state, loss seeds
and, in training, the generator of the dropout masks. It owns the weights (arrays of the
program's slot shapes, updated in place), the optimizer and the per-(steps, batch)
forward/backward buffers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from nndk import dropout as drop
from nndk.autodiff import Backward, differentiable_slots, transient_slots
from nndk.checkpoint import CheckpointError, take
from nndk.init import init_param, scheme_for
from nndk.layout import place_params
from nndk.optim import OPTIMIZERS, clip_global_norm
from nndk.sequence import compile_sequence
from nndk.unrolled import Unrolled, history_rows
from nnre.compiler import compile_checked
from nnre.equations import Checked, param_shapes
from nnre.errors import NnreError
from nnre.model import Model
from nnre.optimize import optimize as optimize_program
from nnre.vm import bind_prologue

State = dict[tuple[str, int], np.ndarray]


class Learner:
    """``hyper``: the optimizer's hyperparameters (``nndk.optim.HYPER``); ``dropout``: the
    probability a ``dropout(x)`` entry is zeroed in training (``nndk.dropout``)."""

    def __init__(self, checked: Checked, equations: str, optimizer: str, seed: int,
                 init: str, hyper: Mapping[str, float] | None = None, dropout: float = 0.0,
                 filename: str = "the model", sequence: bool = False) -> None:
        """``sequence``: train the equations' sequence form (every step at once, attention);
        the runtime model is then the step form of the same text."""
        self.equations = equations
        self.checked = checked
        self.dims = checked.shapes.dims
        self.shapes = param_shapes(checked)
        # dropout is rewritten before the optimizer runs: the training program with masks
        # (or none, at P = 0), and the program nnre runs, for samples
        unoptimized = compile_sequence(checked, "float32", optimize=False) if sequence else \
            compile_checked(checked, "float32", optimize=False, contiguous=True)
        if dropout > 0 and not drop.count(unoptimized):
            raise drop.DropoutError(f"--dropout {dropout}: {filename} has no dropout(…) to "
                                    "apply it to; write dropout(x) where entries of x "
                                    "should be dropped in training")
        plain = optimize_program(drop.without(unoptimized))
        self.dropout = dropout
        self.masks: dict[str, int] = {}
        self.prog = plain
        if dropout > 0:
            masked, self.masks = drop.with_masks(unoptimized, filename)
            self.prog = optimize_program(masked)
        self.step_prog = None if sequence else plain
        self.rng = np.random.default_rng(seed)
        self.params, placed = place_params(self.prog)
        init = scheme_for(init, bool(checked.roles.appends))
        for name, value in self.params.items():  # in program order: one seed, one result
            value[...] = init_param(name, value.shape, self.rng, init, "float32")
        # `frozen W` in the equations: kept as initialised (or as --init-from gave it)
        self.frozen = set(checked.roles.frozen)
        # weight decay on matrices and embeddings only, as nanoGPT: not biases or gains
        decayed = {n for n, shape in self.shapes.items() if len(shape) >= 2}
        self.opt = OPTIMIZERS[optimizer]({n: v for n, v in self.params.items()
                                          if n not in self.frozen}, decayed=decayed,
                                         **dict(hyper or {}))
        self.consts, self.refresh = bind_prologue(self.prog, self.params, placed)
        self._runs: dict[tuple[int, int], tuple[Unrolled, Backward]] = {}

    def buffers(self, steps: int, batch: int) -> tuple[Unrolled, Backward]:
        key = (steps, batch)
        if key not in self._runs:
            if len(self._runs) > 4:
                self._runs.clear()
            run = Unrolled(self.prog, self.consts, steps, batch, transient_slots(self.prog))
            back = Backward(run, differentiable_slots(self.prog, inputs=False))
            self._runs[key] = (run, back)
        return self._runs[key]

    def zero_state(self, batch: int) -> State:
        return {key: np.zeros((batch, *self.prog.slots[i].shape), np.float32)
                for key, i in self.prog.state_in.items()}

    def forward(self, feeds: Mapping[str, np.ndarray], steps: int, batch: int,
                init: State | None, codes: Mapping[str, np.ndarray] | None = None,
                dropout: np.random.Generator | None = None) -> Unrolled:
        """Run ``steps`` steps; feeds are (steps·batch, n), time-major row blocks (``codes``:
        see ``Unrolled.forward``). ``dropout``, in training, draws the dropout masks; without
        it (evaluation) they are ones."""
        for f in self.refresh:  # stacked / transposed weights follow the parameters
            f()
        run, _ = self.buffers(steps, batch)
        feeds = dict(feeds)
        if self.masks:  # drawn straight into the run's input buffers: no copy
            masks = {name: run.full[index] for name, index in self.masks.items()}
            drop.fill(list(masks.values()), self.dropout, dropout)
            feeds |= masks
        run.forward(feeds, init or self.zero_state(batch), dict(codes) if codes else None)
        return run

    def update(self, run: Unrolled, seeds: dict[int, np.ndarray], lr: float, clip: float
               ) -> float:
        """Backpropagate the seeds, clip, and apply one optimizer step; returns the norm."""
        _, back = self.buffers(run.steps, run.batch)
        back.backward(seeds)
        grads = {name: back.full[i] for name, i in self.prog.params.items()
                 if name not in self.frozen}
        norm = clip_global_norm(grads, clip)
        self.opt.step({n: v for n, v in self.params.items() if n not in self.frozen}, grads,
                      lr)
        return norm

    def final_state(self, run: Unrolled) -> State:
        out = {}
        for (name, lag) in self.prog.state_in:
            rows = history_rows(self.prog, name, run.steps - lag, run.batch)
            out[(name, lag)] = run.history[name][rows].copy()
        return out

    def runtime_model(self, metadata: dict[str, Any] | None = None) -> Model:
        """The current weights as a runtime Model, sharing the compiled program."""
        weights = {n: a.reshape(self.shapes[n]) for n, a in self.params.items()}
        if self.step_prog is None:
            self.step_prog = compile_checked(self.checked, "float32")
        return Model(self.step_prog, weights, equations=self.equations, dims=self.dims,
                     param_specs={}, metadata=metadata)

    def load_weights(self, weights: Mapping[str, np.ndarray], source: str) -> None:
        """Take every parameter from ``weights`` (``--init-from``): same names and shapes."""
        missing = sorted(set(self.params) - set(weights))
        if missing:
            raise NnreError(f"{source}: has no weight {missing[0]!r} (the model needs "
                            f"{', '.join(sorted(self.params))})")
        for name, value in self.params.items():
            given = np.asarray(weights[name])
            if given.shape != self.shapes[name]:
                raise NnreError(f"{source}: weight {name!r} has shape {given.shape}, the model "
                                f"needs {self.shapes[name]}")
            value[...] = given.reshape(value.shape)

    def state_arrays(self) -> dict[str, np.ndarray]:
        out = {f"param/{n}": a.reshape(self.shapes[n]) for n, a in self.params.items()}
        return out | {f"opt/{k}": v for k, v in self.opt.state.items()}

    def restore(self, arrays: Mapping[str, np.ndarray], record: dict[str, Any],
                where: str) -> None:
        """Weights, optimizer state and random state from a checkpoint (``where``), each
        array checked for presence and shape before anything is overwritten."""
        params = {name: take(dict(arrays), f"param/{name}", self.shapes[name], where)
                  for name in self.params}
        state = {}
        for key in arrays:
            if key.startswith("opt/"):
                slot = key[4:].rpartition("/")[2]
                if slot not in self.params:
                    raise CheckpointError(f"{where}: array {key!r} is state of no parameter")
                state[key[4:]] = take(dict(arrays), key, self.params[slot].shape, where)
        rng = np.random.default_rng()
        try:
            rng.bit_generator.state = record["rng"]
        except (TypeError, ValueError, KeyError, OverflowError) as err:
            raise CheckpointError(f"{where}: field rng is not a random state ({err})") from None
        for name, value in self.params.items():
            value[...] = params[name].reshape(value.shape)
        self.opt.state.update({k: v.astype(np.float32) for k, v in state.items()})
        self.opt.t = record["optimizer"]["t"]
        self.rng.bit_generator.state = rng.bit_generator.state

    def record(self) -> dict[str, Any]:
        return {"equations": self.equations, "dims": self.dims,
                "optimizer": {"name": self.opt.name, "t": self.opt.t},
                "rng": self.rng.bit_generator.state}
