"""The embedding API: a Model is equations + weights compiled once, run many times.

A Model is immutable and safe to share between threads: all mutable state lives in the state
dict the caller holds, and each thread gets its own preallocated buffers. SymPy (through the
equation checker and the compiler) is imported only by :meth:`Model.from_equations`, so a
Model built from a cached Program starts without it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnre import budget, threads
from nnre.errors import ContextError, EquationError, FeedError, ShapeError
from nnre.program import Program, state_key
from nnre.vm import (
    Stage,
    bind_stage,
    kept_for_later,
    loop_windows,
    pass_program,
    pass_windows,
    post_captures,
    run_prologue,
    run_steps,
    sweep,
)

DTYPES = ("float32", "float64")
STEP = "t"  # the state that counts a stream's steps (nnre.equations.roles.STEP)
Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class TensorSpec:
    """Shape (without the batch axis) and dtype of one input, output, state or parameter."""

    shape: tuple[int, ...]
    dtype: str


class Model:
    """A compiled equation model. Build with :meth:`from_equations` or ``nnre.load``."""

    def __init__(self, program: Program, params: Arrays, *, equations: str,
                 dims: dict[str, int], param_specs: dict[str, TensorSpec],
                 metadata: dict[str, Any] | None = None, bundle_id: str | None = None,
                 language: int = 1) -> None:
        self.program = program
        self.language = language  # the equation-language version the text needs
        self.equations = equations
        self.dims = dict(dims)
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.bundle_id = bundle_id
        self.dtype = program.dtype
        self._params = params
        self._fixed_bytes, self._row_bytes = budget.program_split(program)
        self._check_budget(1, "this model at batch 1", EquationError)
        self._consts = run_prologue(program, params)
        slot_spec = {i: TensorSpec(s.shape, program.dtype) for i, s in enumerate(program.slots)}
        self._inputs = {n: slot_spec[i] for n, i in program.inputs.items()}
        self._outputs = {n: _row_spec(program, i) for n, i in program.outputs.items()}
        self._state = {state_key(n, lag): slot_spec[i]
                       for (n, lag), i in program.state_in.items()}
        self._state.update({state_key(n, -lead): slot_spec[i]  # backward: Model.run only
                            for (n, lead), i in program.back_in.items()})
        self._param_specs = param_specs
        self._state_keys = [(state_key(n, lag), n, lag) for (n, lag) in program.state_in]
        self._np_dtype = np.dtype(program.dtype)
        self._local = threading.local()

    @classmethod
    def from_equations(cls, text: str, params: Mapping[str, Any], dims: Mapping[str, int]
                       | None = None, dtype: str = "float32", *,
                       metadata: dict[str, Any] | None = None, bundle_id: str | None = None,
                       filename: str | None = None, optimize: bool = True) -> Model:
        """Parse, check and compile equations against weights keyed by canonical name.

        ``optimize=False`` skips the stacking/fusion/sinking rewrites (for debugging and for
        checking them: results are the same up to rounding).
        """
        from nnre.compiler import compile_checked  # SymPy: only when compiling
        from nnre.equations import check, language_version, param_shapes

        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        weights = _canonical_weights(params, dtype)
        checked = check(text, dims, {k: v.shape for k, v in weights.items()}, filename)
        roles = checked.roles
        extra = sorted(set(weights) - set(roles.params))
        if extra:
            names = ", ".join(f"'{k}'" for k in extra)
            what = "is not a parameter" if len(extra) == 1 else "are not parameters"
            raise ShapeError(f"weight{'s' if len(extra) > 1 else ''} {names} {what} of the "
                             "equations", filename=filename,
                             expected="one of " + ", ".join(roles.params or ["(none)"]))
        wanted = param_shapes(checked)
        missing = [f"'{k}' of shape {v}" for k, v in wanted.items() if k not in weights]
        if missing:  # every one at once: fixing a weight file one name per run is tedious
            raise ShapeError(f"missing weight{'s' if len(missing) > 1 else ''} "
                             + ", ".join(missing), filename=filename)
        specs = {}
        for name, want in wanted.items():
            if weights[name].shape not in (want, checked.shapes.of[name]):
                raise ShapeError(f"weight '{name}' has shape {weights[name].shape}",
                                 expected=f"shape {want}", filename=filename)
            specs[name] = TensorSpec(want, dtype)
        program = compile_checked(checked, dtype, optimize=optimize)
        return cls(program, weights, equations=text, dims=checked.shapes.dims, param_specs=specs,
                   metadata=metadata, bundle_id=bundle_id, language=language_version(checked))

    # -- introspection -------------------------------------------------------------------
    @property
    def inputs(self) -> dict[str, TensorSpec]:
        return dict(self._inputs)

    @property
    def outputs(self) -> dict[str, TensorSpec]:
        return dict(self._outputs)

    @property
    def state(self) -> dict[str, TensorSpec]:
        return dict(self._state)

    @property
    def params(self) -> dict[str, TensorSpec]:
        return dict(self._param_specs)

    def weights(self) -> dict[str, np.ndarray]:
        """The parameter arrays (read-only views), keyed by canonical name."""
        out = {}
        for name, arr in self._params.items():
            view = arr.view()
            view.flags.writeable = False
            out[name] = view
        return out

    def listing(self) -> str:
        return self.program.listing()

    def zero_state(self, batch: int | None = None) -> Arrays:
        lead = () if batch is None else (batch,)
        return {k: np.zeros(lead + s.shape, self.dtype) for k, s in self._state.items()}

    # -- running -------------------------------------------------------------------------
    def step(self, feeds: Mapping[str, Any], state: Mapping[str, Any] | None = None
             ) -> tuple[Arrays, Arrays]:
        """One time step: feeds ``(B, n)`` or ``(n,)`` → (outputs, next state), as copies.

        Runs the lean one-step tape (:meth:`step_stage`): pre, loop and post back to back at
        batch rows, no windows or captures.
        """
        if feeds.keys() != self._inputs.keys():
            self._check_names(feeds)
        xs, batch, batched = {}, 1, False
        for name, spec in self._inputs.items():
            arr = _as_float(feeds[name], self.dtype, f"input '{name}'")
            if arr.shape == spec.shape:
                arr = arr[None]
            elif arr.ndim == len(spec.shape) + 1 and arr.shape[1:] == spec.shape:
                batched, batch = True, arr.shape[0]
            else:
                raise FeedError(f"input '{name}' has shape {arr.shape}; expected {spec.shape} "
                                f"or (batch, {', '.join(map(str, spec.shape))})")
            self._check_ids(name, arr)
            xs[name] = arr
        if len({a.shape[0] for a in xs.values()}) > 1 or batch < 1:
            raise FeedError(f"inputs disagree on the batch size or it is 0: "
                            f"{ {k: v.shape for k, v in xs.items()} }")
        init = self._step_state(state, batch, batched)
        self._check_context(init, 1)
        st: Stage = self._stage("step", batch)
        for name, arr in xs.items():
            np.copyto(st.given[self.program.inputs[name]], arr)
        for key, name, lag in self._state_keys:
            np.copyto(st.ring[name][(-lag) % st.phases], init[key])
        for f in st.tapes[0]:
            f()
        row = slice(None) if batched else 0  # copies: later calls reuse these buffers
        outputs = {n: self._out_rows(st.arrays[0], i, batch)[row].copy()
                   for n, i in self.program.outputs.items()}
        final = {key: st.ring[name][(1 - lag) % st.phases][row].copy()
                 for key, name, lag in self._state_keys}
        return outputs, final

    def _step_state(self, state: Mapping[str, Any] | None, batch: int, batched: bool
                    ) -> Mapping[str, Any]:
        """State arrays as given when they already fit exactly (the common case of feeding
        back what the last step returned), else checked and converted."""
        if state is None or len(state) != len(self._state):
            return self._check_state(state, batch, batched)
        for key, spec in self._state.items():
            arr = state.get(key)
            if type(arr) is not np.ndarray or arr.dtype != self._np_dtype or \
                    arr.shape != ((batch, *spec.shape) if batched else spec.shape):
                return self._check_state(state, batch, batched)
        return state

    def _out_rows(self, arrays: list[Any], index: int, batch: int) -> np.ndarray:
        """An output of the step tape as (batch, n) (a constant output is broadcast)."""
        if self.program.slots[index].stage == "prologue":
            return np.broadcast_to(arrays[index].reshape(-1), (batch, arrays[index].size))
        return arrays[index].reshape(batch, *self.program.slots[index].shape)  # type: ignore

    def step_stage(self, batch: int = 1) -> Stage:
        """A fresh lean one-step tape with its own buffers (what a generator owns).

        At T=1 the hoisting of the sequence path buys nothing, so pre, loop and post run back
        to back at ``batch`` rows with no windows or captures: the tape reads the input
        buffers directly and outputs are read in place; state lives in the ring, so stepping
        is running ``tapes[t % phases]`` with nothing copied at all.
        """
        prog = self.program
        if prog.back_out:
            name = next(iter(prog.back_out))
            raise FeedError(f"'{name}' is backward state (the equations read it at a later "
                            "step): each output needs the whole sequence, so this model runs "
                            "over whole sequences (Model.run, nnre run --input), not one step "
                            "at a time")
        self._check_budget(batch, f"one step at batch {batch:,}")
        return bind_stage(prog, self._consts, [*prog.pre, *prog.loop, *prog.post], batch,
                          list(prog.inputs.values()), ring=True)

    @property
    def sampling(self) -> dict[str, Any]:
        """The bundle's recommended sampling settings (keyword arguments of generate)."""
        return dict(self.metadata.get("sampling") or {})

    def generate(self, prime: str | Sequence[str], length: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
                 *, greedy: bool = False, stop: str | None = None, min_p: float | None = None,
                 repeat_penalty: float = 1.0, repeat_last_n: int = 64) -> Iterator[Any]:
        """Text: feed ``prime``, then draw ``length`` characters, each fed back; an iterator
        of one-character strings, produced as they are drawn (see nnre.generate).

        A list of primes runs as one batch: the iterator gives a tuple per step, one
        character per prime ("" once its ``stop`` came); prime i samples with seed
        ``seed + i``, so it gives what it gives alone with that seed. Sampling settings
        (``nnre.codecs.Sampler``): temperature (0: greedy), top_k, top_p, min_p,
        repeat_penalty over the last repeat_last_n characters (the prime's included).
        """
        from nnre.generate import generate

        return generate(self, prime, length, temperature=temperature, top_k=top_k,
                        top_p=top_p, seed=seed, greedy=greedy, stop=stop, min_p=min_p,
                        repeat_penalty=repeat_penalty, repeat_last_n=repeat_last_n)

    def score(self, text: str, *, prime: str | None = None, context: int | None = None,
              skip_unknown: bool = False, source: str = "<text>") -> Any:
        """Bits of each character of ``text`` read from the zero state after ``prime`` (a
        newline by default, when the vocabulary has one); a ``nnre.scoring.Score`` with
        ``bits``, ``positions``, ``bits_per_char``, ``perplexity`` (see nnre.scoring)."""
        from nnre.scoring import score

        return score(self, text, prime=prime, context=context, skip_unknown=skip_unknown,
                     source=source)

    def run(self, feeds: Mapping[str, Any], state: Mapping[str, Any] | None = None
            ) -> tuple[Arrays, Arrays]:
        """A whole sequence: feeds ``(T, B, n)`` or ``(T, n)`` → (outputs over time, state)."""
        xs, steps, batch, batched = self._check_feeds(feeds)
        init = self._check_state(state, batch, batched)
        self._check_context(init, steps)
        pre = self._stage("pre", steps * batch)
        for name, arr in xs.items():
            np.copyto(pre.given[self.program.inputs[name]],
                      arr.reshape(steps * batch, *arr.shape[2:]))
        for f in pre.tapes[0]:
            f()
        if self.program.back_out:  # time passes one after the other (formats/equations.md §4)
            outputs, final = self._passes(pre, steps, batch, init)
        else:
            outputs, final = self._loop(pre, steps, batch, init)
        if not batched:
            outputs = {k: v[:, 0] for k, v in outputs.items()}
            final = {k: v[0] for k, v in final.items()}
        return outputs, final

    def _loop(self, pre: Stage, steps: int, batch: int, init: Arrays
              ) -> tuple[Arrays, Arrays]:
        prog = self.program
        loop = self._stage("loop", batch)
        post = self._post(pre, steps * batch)
        sources = [(win, pre.arrays[0][i].reshape(steps, batch, *win.shape[1:]))
                   for i, win in loop.given.items()]
        results: Arrays = {}
        per_step = [(post.given[i].reshape(steps, batch, *prog.slots[i].shape),
                     [a[i] for a in loop.arrays]) for i in post_captures(prog)]
        for name, index in prog.outputs.items():
            stage = prog.slots[index].stage
            if stage == "loop":
                results[name] = np.empty((steps, batch, *prog.slots[index].shape), self.dtype)
                per_step.append((results[name], [arrs[index] for arrs in loop.arrays]))
            elif stage == "prologue":
                const = self._consts[index]
                assert const is not None
                row = const.reshape(-1)
                results[name] = np.broadcast_to(row, (steps, batch, row.size)).copy()
        final = run_steps(loop, prog.state_in, init, sources, per_step, steps)
        for f in post.tapes[0]:
            f()
        for name, index in prog.outputs.items():
            if prog.slots[index].stage in ("pre", "post"):
                shape = self._outputs[name].shape
                results[name] = post.arrays[0][index].reshape(steps, batch, *shape).copy()
        return results, final

    def _passes(self, pre: Stage, steps: int, batch: int, init: Arrays
                ) -> tuple[Arrays, Arrays]:
        """A program with backward state: each time pass over the whole sequence in turn
        (``nnre.vm.sweep``), keeping what later stages read in ``pre``'s buffers, then post."""
        prog = self.program
        final: Arrays = {}
        for stage in prog.time_passes():
            final.update(sweep(prog, stage, self._stage(stage, batch), pre, steps, batch, init))
        post = self._post(pre, steps * batch)
        for f in post.tapes[0]:
            f()
        results: Arrays = {}
        for name, index in prog.outputs.items():
            shape = self._outputs[name].shape
            if prog.slots[index].stage == "prologue":
                row = self._consts[index].reshape(-1)  # type: ignore[union-attr]
                results[name] = np.broadcast_to(row, (steps, batch, row.size)).copy()
            else:
                results[name] = post.arrays[0][index].reshape(steps, batch, *shape).copy()
        return results, final

    def _post(self, pre: Stage, rows: int) -> Stage:
        """The post stage reads what pre computed (bound to that pre stage's buffers)."""
        cache, prog = self._local.stages, self.program
        key = ("post", rows, threads.epoch())
        if key not in cache or cache[key][0] is not pre:
            shared = {i: pre.arrays[0][i] for i, slot in enumerate(prog.slots)
                      if slot.stage not in ("prologue", "post")}  # kept for every step
            cache[key] = (pre, bind_stage(prog, self._consts, prog.post, rows,
                                          post_captures(prog), shared))
        return cache[key][1]  # type: ignore[no-any-return]

    def memory(self, rows: int = 1) -> int:
        """Bytes a run at ``rows`` rows (steps × batch) allocates besides the weights."""
        return self._fixed_bytes + self._row_bytes * rows

    def _check_budget(self, rows: int, what: str, error: type[Exception] = FeedError) -> None:
        """Refuse a run whose buffers would pass the memory budget, before binding them."""
        budget.check(self.memory(rows), what, error)

    def _stage(self, kind: str, rows: int) -> Any:
        cache = getattr(self._local, "stages", None)
        if cache is None:
            cache = self._local.stages = {}
        key = (kind, rows, threads.epoch())  # a new thread policy binds again
        if key not in cache:  # checked once per binding, not per call
            self._check_budget(rows, f"running {rows:,} rows (steps × batch)")
            if len(cache) > 16:
                cache.clear()
            prog = self.program
            if kind == "pre":  # the whole sequence at once, before the loop
                stage = bind_stage(prog, self._consts, prog.pre, rows,
                                   [*prog.inputs.values(), *kept_for_later(prog)])
            elif prog.back_out and kind in prog.time_passes():  # a pass with its own state
                stage = bind_stage(pass_program(prog, kind), self._consts,
                                   prog.stage_list(kind), rows, pass_windows(prog, kind),
                                   ring=True)
            elif kind == "loop":  # one step at batch rows; pre's values come in by windows
                stage = bind_stage(prog, self._consts, prog.loop, rows, loop_windows(prog),
                                   ring=True)
            else:
                stage = self.step_stage(rows)
            cache[key] = stage
        return cache[key]

    @property
    def context(self) -> int | None:
        """The most steps a stream can take from the zero state (a transformer's longest
        context: its histories and position table hold that many); None: no limit."""
        return self.program.context or None

    def _check_context(self, init: Mapping[str, Any], steps: int) -> None:
        """Each stream's step count ``t`` (its state) plus the steps to take must fit the
        context, or a history would be written past its end."""
        limit = self.program.context
        if not limit:
            return
        t = np.asarray(init[STEP])
        if t.size and (t.max() + steps > limit or t.min() < 0 or (t != np.floor(t)).any()):
            raise ContextError(f"the context is full: this model holds {limit} steps, and a "
                               f"stream at step {int(t.max())} was given {steps} more",
                               expected="the zero state again, fed the last steps (nnre "
                                        "generate does this itself)")

    def _check_names(self, feeds: Mapping[str, Any]) -> None:
        unknown = sorted(set(feeds) - set(self._inputs))
        if unknown:
            raise FeedError(f"unknown input '{unknown[0]}'; the model's inputs are "
                            + ", ".join(self._inputs or ["(none)"]))
        missing = [n for n in self._inputs if n not in feeds]
        if missing:
            spec = self._inputs[missing[0]]
            raise FeedError(f"missing input '{missing[0]}' of shape {spec.shape}")

    def _check_ids(self, name: str, arr: np.ndarray) -> None:
        """Ids (an input declared ∈ ℕ) are whole numbers 0 … n−1: checked before a kernel
        indexes a table with them."""
        count = self.program.ids.get(name)
        if count is None:
            return
        bad = ~((arr >= 0) & (arr < count) & (arr == np.floor(arr)))
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise FeedError(f"input '{name}' holds {arr[where]} at index {list(where)}; its ids "
                            f"are whole numbers 0 … {count - 1}")

    def _check_feeds(self, feeds: Mapping[str, Any]) -> tuple[Arrays, int, int, bool]:
        self._check_names(feeds)
        xs: Arrays = {}
        dims: set[tuple[int, ...]] = set()
        batched = True
        for name, spec in self._inputs.items():
            arr = _as_float(feeds[name], self.dtype, f"input '{name}'")
            rank = len(spec.shape)
            if arr.ndim == rank + 1 and arr.shape[1:] == spec.shape:
                arr, batched = arr[:, None], False
            elif not (arr.ndim == rank + 2 and arr.shape[2:] == spec.shape):
                raise FeedError(f"input '{name}' has shape {arr.shape[1:]} per step; expected "
                                f"{spec.shape} or (batch, {', '.join(map(str, spec.shape))})")
            self._check_ids(name, arr)
            xs[name] = arr
            dims.add(arr.shape[:2])
        if len(dims) > 1:
            raise FeedError(f"inputs disagree on (time, batch): {sorted(dims)}")
        steps, batch = dims.pop() if dims else (1, 1)
        if steps < 1 or batch < 1:
            raise FeedError("inputs must have at least one step and one example")
        return xs, steps, batch, batched

    def _check_state(self, state: Mapping[str, Any] | None, batch: int, batched: bool
                     ) -> Arrays:
        if state is None:
            return {k: np.zeros((batch, *s.shape), self.dtype) for k, s in self._state.items()}
        unknown = sorted(set(state) - set(self._state))
        if unknown:
            raise FeedError(f"unknown state '{unknown[0]}'; the model's state is "
                            + ", ".join(self._state or ["(none)"]))
        out = {}
        for key, spec in self._state.items():
            if key not in state:
                raise FeedError(f"missing state '{key}' of shape {spec.shape}")
            arr = _as_float(state[key], self.dtype, f"state '{key}'")
            arr = arr if batched or arr.ndim != len(spec.shape) else arr[None]
            if arr.shape[1:] != spec.shape or arr.shape[0] not in (1, batch):
                raise FeedError(f"state '{key}' has shape {arr.shape}; expected "
                                f"({batch}, {', '.join(map(str, spec.shape))})")
            out[key] = arr
        return out


def _row_spec(prog: Program, index: int) -> TensorSpec:
    """An output's shape per example: a tensor keeps its axes, a constant is a row."""
    slot = prog.slots[index]
    if slot.stage != "prologue":
        return TensorSpec(slot.shape, prog.dtype)
    size = int(np.prod(slot.shape))
    return TensorSpec((size,), prog.dtype)


def _as_float(value: Any, dtype: str, what: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiub":
        raise FeedError(f"{what} has dtype {arr.dtype}; expected numbers")
    return arr.astype(dtype, copy=False)


def _canonical_weights(params: Mapping[str, Any], dtype: str) -> Arrays:
    from nnre.equations.lexer import canonical_name

    out: Arrays = {}
    for key, value in params.items():
        try:
            name = canonical_name(key)
        except EquationError as err:
            raise ShapeError(f"weight key {key!r} is not a name") from err
        if name in out:
            raise ShapeError(f"weights '{key}' and another key both name '{name}'")
        arr = np.asarray(value)
        if arr.dtype.kind not in "fiub":
            raise ShapeError(f"weight '{name}' has dtype {arr.dtype}; expected numbers")
        out[name] = arr.astype(dtype, copy=False)
    return out
