"""One step of the engine's batch from character codes: ``Model.step`` without its copies.

``Model.step`` checks its feeds, copies the state into its tape's ring and the outputs and
next state out of it, since a caller may keep them. The engine feeds every step's state
straight back, so for a model without a context :class:`RingSteps` lets the state *be* the
ring, as ``nnre.generate`` does: the state returned is a dict of views of the buffers the
next step reads, a step runs ``tapes[t % phases]`` and writes the one-hot input in place (two
element writes a row), and nothing is copied; a product of that input by a weight matrix is
the weight's rows of the codes where that is exactly the product (:func:`_picked`). A state
that is not the one last returned (rows taken out, a new batch size, a stream's own state put
in rows) is copied in first;
writing rows into the returned views (``rows.put``) is what the next step reads. Outputs and
state stay valid until the next step: the engine reads them before it steps again.

A model with a context (a transformer) keeps ``Model.step`` (:class:`CopySteps`), whose
check that no history is written past its end the engine relies on.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nnre import threads
from nnre.codecs import rows
from nnre.model import Model

Arrays = dict[str, np.ndarray]


class CopySteps:
    """``Model.step`` on one-hot rows (or ids) of the codes."""

    def __init__(self, model: Any, input_name: str, output: str) -> None:
        self.model, self.input, self.output = model, input_name, output
        self.width = model.inputs[input_name].shape[0]

    def step(self, codes: Sequence[int], state: Mapping[str, np.ndarray]
             ) -> tuple[np.ndarray, Arrays]:
        """The output rows and the next state of one step of ``len(codes)`` rows."""
        out, new = self.model.step({self.input: rows(codes, self.width, self.model.dtype)},
                                   state)
        return out[self.output], new


class RingSteps:
    """Steps on the model's lean tapes (``Model.step_stage``), one per batch size."""

    def __init__(self, model: Any, input_name: str, output: str) -> None:
        self.model, self.input = model, input_name
        self.out_index = model.program.outputs[output]
        self.ids = input_name in model.program.ids  # x ∈ ℕ: fed the code itself
        self._rings: dict[tuple[int, int], _Ring] = {}

    def step(self, codes: Sequence[int], state: Mapping[str, np.ndarray]
             ) -> tuple[np.ndarray, Arrays]:
        """The output rows and the next state (views: valid until the next step)."""
        ring = self._ring(len(codes))
        phase = ring.t % ring.phases
        views = ring.views[phase]
        if state is not views:
            for key, view in views.items():
                np.copyto(view, state[key])
        x = ring.x
        if self.ids:
            x[:, 0] = codes
        else:
            hot, rows_of = ring.hot, ring.codes
            for i, code in enumerate(codes):
                if hot[i] != code:
                    x[i, hot[i]] = 0
                    x[i, code] = 1
                    hot[i] = rows_of[i] = code
        for f in ring.tapes[phase]:
            f()
        ring.t += 1
        return ring.outs[phase], ring.views[ring.t % ring.phases]

    def _ring(self, batch: int) -> _Ring:
        key = (batch, threads.epoch())  # a new BLAS thread policy binds again, as Model does
        ring = self._rings.get(key)
        if ring is None:
            if len(self._rings) >= 16:  # as Model's stage cache: batch sizes are bucketed
                self._rings.clear()
            ring = self._rings[key] = _Ring(self.model, self.input, self.out_index, batch,
                                            self.ids)
        return ring


class _Ring:
    """A step stage at one batch size, its phase and the views of its state per phase."""

    def __init__(self, model: Any, input_name: str, out_index: int, batch: int,
                 ids: bool) -> None:
        stage = model.step_stage(batch)
        self.tapes, self.phases, self.t = stage.tapes, stage.phases, 0
        self.x = stage.given[model.program.inputs[input_name]]
        self.x[...] = 0
        if not ids:
            self.x[:, 0] = 1  # every row one-hot at code 0 until fed
        self.hot = [0] * batch
        self.codes = np.zeros(batch, np.intp)  # = hot, for the products picked as rows
        consts = {id(c) for c in model._consts if isinstance(c, np.ndarray)}
        self.tapes = [[_picked(f, self.x, self.codes, consts) for f in tape]
                      for tape in self.tapes]
        #: views[p]: the state tape p reads (Model.step's keys), which tape p - 1 wrote
        self.views = [{key: stage.ring[name][(p - lag) % self.phases]
                       for key, name, lag in model._state_keys} for p in range(self.phases)]
        self.outs = [model._out_rows(arrays, out_index, batch) for arrays in stage.arrays]


def _picked(f: Any, x: np.ndarray, codes: np.ndarray, consts: set[int]) -> Any:
    """A product of the one-hot input by a weight matrix as the weight's rows of the codes
    (``np.take``: ~1 µs instead of ~18 at batch 32, 51×512), when that is the product's
    exact result: every weight finite and none zero, so the one 1 picks its weight and the
    zeros add nothing but zeros (a zero weight could come out as -0 one way and +0 the
    other). Any other call is kept."""
    if not (isinstance(f, functools.partial) and f.func is np.matmul and len(f.args) == 2
            and f.args[0] is x and set(f.keywords) == {"out"}):
        return f
    w, out = f.args[1], f.keywords["out"]
    if id(w) not in consts or w.ndim != 2 or w.shape[0] != x.shape[1] or \
            out.shape != (x.shape[0], w.shape[1]) or out.dtype != w.dtype or \
            not (np.isfinite(w).all() and w.all()):
        return f
    return functools.partial(np.take, w, codes, axis=0, out=out)


def steps_for(model: Any, input_name: str, output: str) -> CopySteps | RingSteps:
    """Ring steps for an ``nnre.Model`` without a context, the model's own ``step`` for the
    rest (any other :class:`~nnre.serve.engine.Stepper` too)."""
    if isinstance(model, Model) and not model.context and not model.program.back_out:
        return RingSteps(model, input_name, output)
    return CopySteps(model, input_name, output)
