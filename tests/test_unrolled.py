"""The trainer's forward pass against the runtime and the hand-written cells.

Training differentiates ``Unrolled``, not ``Model.run``: its own binding of the program,
with the trainer's weight layout (parameters inside stacked weights), per-step products in
transposed form, transient slots and inputs given as codes (a row gather). Each of these,
alone and all together as ``Learner.forward`` runs them, must give the outputs and final
state that ``Model.run`` and ``reference.py`` give for the same weights, inputs and state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import reference as ref

from nndk import unrolled
from nndk.data import one_hot
from nndk.gradcheck import Problem, make_problem
from nndk.learner import Learner
from nnre.equations import check, param_shapes
from nnre.model import Model

TEMPLATES = Path(__file__).resolve().parent.parent / "nndk" / "templates"
DIMS = {"H": 5, "V": 4, "D": 3, "K": 2}
STEPS, BATCH = 4, 3  # 2 ≤ batch ≤ 32: where transposed products apply
TOL = 1e-5  # float32

# mode: (compile and store as the trainer does, force transposed products, transient, codes)
MODES = {
    "plain": (False, False, False, False),
    "layout": (True, False, False, False),
    "transposed": (False, True, False, False),
    "transient": (True, True, True, False),
    "codes": (False, False, False, True),
}


def reference_run(template: str, problem: Problem, feeds: np.ndarray
                  ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Outputs (T, B, n) and final state of the NumPy cell, in float64."""
    shapes = param_shapes(check(problem.text, problem.dims))
    p = {k: np.asarray(v, np.float64).reshape(shapes[k]) for k, v in problem.params.items()}
    xs = feeds.astype(np.float64).reshape(STEPS, BATCH, -1)
    h = {k[0]: np.asarray(v, np.float64) for k, v in problem.init.items()}  # (name, lag) keys
    if template == "lstm":
        ys, hT, cT = ref.lstm(p, xs, h["h"], h["c"])
        return ys, {"h": hT, "c": cT}
    if template in ("gru", "rnn"):
        ys, hT = getattr(ref, template)(p, xs, h["h"])
        return ys, {"h": hT}
    if template in ("lstm2", "gru2"):
        names = ("h1", "c1", "h2", "c2") if template == "lstm2" else ("h1", "h2")
        ys, final = getattr(ref, template)(p, xs, *(h[n] for n in names))
        return ys, dict(zip(names, final, strict=True))
    return getattr(ref, template)(p, xs), {}


def runtime_run(problem: Problem, feeds: np.ndarray
                ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    shapes = param_shapes(check(problem.text, problem.dims))
    weights = {k: v.reshape(shapes[k]) for k, v in problem.params.items()}
    model = Model.from_equations(problem.text, weights, problem.dims, "float32")
    state = {name: v for (name, _), v in problem.init.items()}
    ys, final = model.run({"x": feeds.reshape(STEPS, BATCH, -1)}, state)
    return ys["y"], final


def unrolled_run(problem: Problem, transient: bool, codes: dict[str, np.ndarray] | None
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    run = problem.forward(transient=transient, codes=codes)
    prog = problem.prog
    ys = np.array(run.full[prog.outputs["y"]]).reshape(STEPS, BATCH, -1)
    return ys, {name: np.array(run.full[i][-BATCH:]) for name, i in prog.state_out.items()}


def learner_run(problem: Problem, codes: np.ndarray
                ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """What a trainer runs: ``Learner.forward`` with every mode on at once."""
    learner = Learner(check(problem.text, problem.dims), problem.text, "adam", 0, "auto")
    learner.load_weights({k: v.reshape(learner.shapes[k]) for k, v in problem.params.items()},
                         "test")
    run = learner.forward(problem.feeds, STEPS, BATCH, problem.init, {"x": codes})
    assert run.coded == {"x"}
    ys = np.array(run.full[learner.prog.outputs["y"]]).reshape(STEPS, BATCH, -1)
    return ys, {name: v for (name, _), v in learner.final_state(run).items()}


def assert_same(got: tuple[np.ndarray, dict[str, np.ndarray]],
                want: tuple[np.ndarray, dict[str, np.ndarray]], what: str) -> None:
    np.testing.assert_allclose(got[0], want[0], atol=TOL, rtol=0, err_msg=f"y vs {what}")
    assert got[1].keys() == want[1].keys()
    for name, value in want[1].items():
        np.testing.assert_allclose(got[1][name], value, atol=TOL, rtol=0,
                                   err_msg=f"{name} vs {what}")


def problem_for(template: str, layout: bool, codes: bool) -> tuple[Problem, Any]:
    text = (TEMPLATES / f"{template}.eqn").read_text(encoding="utf-8")
    problem = make_problem(text, DIMS, steps=STEPS, batch=BATCH, dtype="float32",
                           contiguous=layout, stacked=layout)
    if not codes:
        return problem, None
    size = problem.feeds["x"].shape[1]
    chosen = np.random.default_rng(3).integers(0, size, STEPS * BATCH)
    problem.feeds["x"] = one_hot(chosen, size, "float32")
    return problem, chosen


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("template", ["lstm", "gru", "rnn", "mlp", "lstm2", "gru2", "mlp_ln"])
def test_unrolled_matches_model_run_and_reference(template: str, mode: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    layout, transposed, transient, codes = MODES[mode]
    if transposed:
        monkeypatch.setattr(unrolled, "TRANSPOSED_MIN_WEIGHT", 0)
    problem, chosen = problem_for(template, layout, codes)
    got = unrolled_run(problem, transient, {"x": chosen} if codes else None)
    assert_same(got, runtime_run(problem, problem.feeds["x"]), "Model.run")
    assert_same(got, reference_run(template, problem, problem.feeds["x"]), "reference")


@pytest.mark.parametrize("template", ["lstm", "gru", "rnn", "mlp", "lstm2", "gru2", "mlp_ln"])
def test_learner_forward_matches_model_run_and_reference(template: str,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    monkeypatch.setattr(unrolled, "TRANSPOSED_MIN_WEIGHT", 0)
    problem, chosen = problem_for(template, layout=True, codes=True)
    got = learner_run(problem, chosen)
    assert_same(got, runtime_run(problem, problem.feeds["x"]), "Model.run")
    assert_same(got, reference_run(template, problem, problem.feeds["x"]), "reference")
