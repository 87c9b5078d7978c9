"""``nndk export --sequence`` of a model with backward state (one Scan per time pass, a
backward one scanning in reverse) reads back with ``nndk import``: the imported equations give
what the original bundle gives (``Model.run``) and what onnxruntime gives on the exported
file, outputs and final states, from a given initial state; graphs laid out otherwise are
refused naming the Scan."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx_helpers import ort_runner  # noqa: E402

from nndk.onnx.export import export_model  # noqa: E402
from nndk.onnx.importer import import_model  # noqa: E402
from nnre.equations import check, param_shapes  # noqa: E402
from nnre.loader import load  # noqa: E402
from nnre.model import Model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "formats" / "vectors" / "valid"


def _cell(kind: str, p: str, lag: str) -> list[str]:
    """One direction of a layer over xₜ: its names carry ``p`` ('' or '′'), its state is
    read at ``lag`` (ₜ₋₁ forward, ₜ₊₁ backward)."""
    h = f"h{p}{lag}"
    if kind == "rnn":
        return [f"h{p}ₜ = tanh(W{p}_h xₜ + U{p}_h {h} + b{p}_h)"]
    if kind == "gru":
        return [f"z{p}ₜ = σ(W{p}_z xₜ + U{p}_z {h} + b{p}_z)",
                f"r{p}ₜ = σ(W{p}_r xₜ + U{p}_r {h} + b{p}_r)",
                f"n{p}ₜ = tanh(W{p}_n xₜ + U{p}_n (r{p}ₜ ⊙ {h}) + b{p}_n)",
                f"h{p}ₜ = (1 − z{p}ₜ) ⊙ {h} + z{p}ₜ ⊙ n{p}ₜ"]
    gates = [f"{g}{p}ₜ = σ(W{p}_{g} xₜ + U{p}_{g} {h} + b{p}_{g})" for g in "fio"]
    return [*gates, f"k{p}ₜ = tanh(W{p}_k xₜ + U{p}_k {h} + b{p}_k)",
            f"c{p}ₜ = f{p}ₜ ⊙ c{p}{lag} + i{p}ₜ ⊙ k{p}ₜ", f"h{p}ₜ = o{p}ₜ ⊙ tanh(c{p}ₜ)"]


def bidirectional(kind: str, dtype: str = "float64", seed: int = 0) -> Model:
    """A one-layer bidirectional RNN, GRU or LSTM with a softmax read-out of both ways."""
    states = "hₜ, h′ₜ, cₜ, c′ₜ" if kind == "lstm" else "hₜ, h′ₜ"
    text = "\n".join(["xₜ ∈ ℝ^3", f"{states} ∈ ℝ^4", "yₜ ∈ ℝ^5", *_cell(kind, "", "ₜ₋₁"),
                      *_cell(kind, "′", "ₜ₊₁"), "yₜ = softmax(W_y [hₜ; h′ₜ] + b_y)", ""])
    return _model(text, dtype, seed)


#: Two bidirectional layers: layer 2's backward state (read two steps later) reads layer 1's
#: forward output, so it runs in a third pass (back, loop, back2).
STACKED = """
xₜ ∈ ℝ^3
aₜ, bₜ, cₜ, dₜ ∈ ℝ^4
yₜ ∈ ℝ^5
aₜ = tanh(W₁ xₜ + U₁ aₜ₋₁ + β₁)
bₜ = tanh(V₁ xₜ + R₁ bₜ₊₁)
cₜ = tanh(W₂ [aₜ; bₜ] + U₂ cₜ₋₁)
dₜ = tanh(V₂ [aₜ; bₜ] + R₂ dₜ₊₂ + β₂)
yₜ = softmax(A [cₜ; dₜ])
"""


def _model(text: str, dtype: str, seed: int) -> Model:
    rng = np.random.default_rng(seed)
    shapes = param_shapes(check(text, {}))
    return Model.from_equations(text, {k: rng.normal(scale=0.6, size=s).astype(dtype)
                                       for k, s in shapes.items()}, dtype=dtype)


CASES = {
    "rnn": lambda: bidirectional("rnn"),
    "gru": lambda: bidirectional("gru"),
    "lstm": lambda: bidirectional("lstm"),
    "gru-float32": lambda: bidirectional("gru", "float32", seed=1),
    "birnn_f64": lambda: load(VECTORS / "birnn_f64.bundle"),
    "birnn_ids_f64": lambda: load(VECTORS / "birnn_ids_f64.bundle"),
    "stacked": lambda: _model(STACKED, "float64", seed=2),
    "reverse-lstm": lambda: _model("\n".join(["xₜ ∈ ℝ^3", "h′ₜ, c′ₜ ∈ ℝ^4", "yₜ ∈ ℝ^5",
                                               *_cell("lstm", "′", "ₜ₊₁"),
                                               "yₜ = softmax(W_y h′ₜ + b_y)", ""]),
                                    "float64", seed=3),
}


def _feeds(model: Model, seed: int, steps: int = 6, batch: int = 3
           ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Random inputs (ids within the table for an ids input) and a random initial state."""
    rng = np.random.default_rng(seed)
    xs = {}
    for name, spec in model.inputs.items():
        if name in model.program.ids:
            xs[name] = rng.integers(0, model.program.ids[name], size=(steps, batch, *spec.shape))
        else:
            xs[name] = rng.normal(size=(steps, batch, *spec.shape))
    init = {k: rng.normal(size=(batch, *s.shape)) for k, s in model.state.items()}
    cast = {k: v.astype(model.dtype) for k, v in xs.items()}
    return cast, {k: v.astype(model.dtype) for k, v in init.items()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_sequence_export_with_backward_state_imports_back(case: str) -> None:
    """bundle → ONNX (a Scan per pass) → equations: the same outputs and final states as
    the original and as onnxruntime on the export, float64 to 1e-10 (float32 to 1e-5)."""
    model = CASES[case]()
    proto = export_model(model, sequence=True)
    passes = model.program.time_passes()
    scans = [n for n in proto.graph.node if n.op_type == "Scan"]
    assert len(scans) == len(passes) and passes[0] == "back"
    assert [a.ints for a in scans[0].attribute if a.name == "scan_input_directions"][0][0] == 1
    if case == "stacked":
        assert passes == ["back", "loop", "back2"] and "d@t+2" in model.state
    result = import_model(proto)
    assert result.dtype == model.dtype
    again = Model.from_equations(result.equations, result.weights, dtype=result.dtype)
    assert set(again.state) == set(model.state)
    xs, init = _feeds(model, seed=len(case))
    want, want_final = model.run(xs, init)
    got, got_final = again.run({result.inputs[k][0]: v for k, v in xs.items()}, init)
    onnx_got = ort_runner(proto)(xs | {f"{k}_prev": v for k, v in init.items()})
    tol = 1e-10 if model.dtype == "float64" else 1e-5
    for name, value in want.items():
        mine, kind = result.outputs[name]
        assert kind == "output"
        np.testing.assert_allclose(got[mine], value, rtol=0, atol=tol, err_msg=name)
        np.testing.assert_allclose(onnx_got[name], got[mine], rtol=0, atol=tol, err_msg=name)
    for key, value in want_final.items():
        assert result.outputs[f"{key}_next"] == (key, "state")
        assert result.inputs[f"{key}_prev"] == (key, "state")
        np.testing.assert_allclose(got_final[key], value, rtol=0, atol=tol, err_msg=key)
        np.testing.assert_allclose(onnx_got[f"{key}_next"], got_final[key], rtol=0,
                                   atol=tol, err_msg=key)


def test_the_imported_equations_read_the_later_step() -> None:
    """The backward pass's state comes back as backward state (``gₜ₊₁``), its deeper lead
    as ``dₜ₊₂``, the forward one's as ``hₜ₋₁``; a per-step value each pass recomputes (the
    embedding) is one equation: the text a user reads is the original's."""
    result = import_model(export_model(load(VECTORS / "birnn_f64.bundle"), sequence=True))
    assert "U_g gₜ₊₁" in result.equations and "U_h hₜ₋₁" in result.equations
    stacked = import_model(export_model(_model(STACKED, "float64", 2), sequence=True))
    assert "R_2 dₜ₊₂" in stacked.equations and "R_1 bₜ₊₁" in stacked.equations
    ids = import_model(export_model(load(VECTORS / "birnn_ids_f64.bundle"), sequence=True))
    assert ids.equations.count("E[xₜ]ᵀ") == 1, ids.equations  # each pass reads it: one e


def _nndk(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "nndk", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _nnre_run(bundle: Path, inputs: dict[str, object]) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "nnre", "run", str(bundle), "--input", "-"],
                          input=json.dumps(inputs), capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


@pytest.mark.parametrize("vector", ["birnn_f64", "birnn_ids_f64"])
def test_cli_round_trip_export_import_pack_run(vector: str, tmp_path: Path) -> None:
    """``nndk export --sequence`` → ``nndk import`` → ``nndk pack`` → ``nnre run``: the
    vector's inputs give the original bundle's outputs (and the vector's expected ones)."""
    source = VECTORS / f"{vector}.bundle"
    case = json.loads((VECTORS / f"{vector}.json").read_text(encoding="utf-8"))
    assert _nndk(tmp_path, "export", str(source), "-o", "m.onnx", "--sequence").returncode == 0
    proc = _nndk(tmp_path, "import", "m.onnx", "-o", "x.bundle")
    assert proc.returncode == 0, proc.stderr
    proc = _nndk(tmp_path, "pack", "x.bundle", "--name", "again", "--version", "1.0.0",
                 "-o", "again.bundle")
    assert proc.returncode == 0, proc.stderr
    want = _nnre_run(source, case["inputs"])
    got = _nnre_run(tmp_path / "again.bundle", case["inputs"])
    assert set(got) == set(want)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=0, atol=1e-10, err_msg=name)
        np.testing.assert_allclose(got[name], case["expected"][name], rtol=1e-9, atol=1e-12)


def _scans(proto: object) -> list:
    return [n for n in proto.graph.node if n.op_type == "Scan"]  # type: ignore[attr-defined]


def _mixed(proto: object) -> None:
    for a in _scans(proto)[0].attribute:
        if a.name == "scan_output_directions":
            a.ints[0] = 0


def _axes(proto: object) -> None:
    _scans(proto)[1].attribute.append(onnx.helper.make_attribute("scan_input_axes", [0, 0]))


def _relu(proto: object) -> None:
    proto.graph.node[-1].op_type = "Relu"  # type: ignore[attr-defined]


def _renamed(proto: object) -> None:
    body = next(a for a in _scans(proto)[1].attribute if a.name == "body").g
    old, body.input[0].name = body.input[0].name, "loop.other"
    for node in body.node:
        node.input[:] = ["loop.other" if x == old else x for x in node.input]


def _no_metadata(proto: object) -> None:
    del proto.metadata_props[:]  # type: ignore[attr-defined]


@pytest.mark.parametrize("edit, message", [
    (_mixed, r"Scan node '#11 → g_next' scans its sequences in different directions"),
    (_axes, r"Scan node '#12 → h_next' has the attribute 'scan_input_axes'"),
    (_relu, r"Relu node '#13 → y' reads the sequence 'seq\.%32' outside a Scan"),
    (_renamed, r"Scan node '#12 → h_next' carries the state 'h' into its body 'loop' as "
               r"'loop\.other', not as 'loop\.h_prev'"),
    (_no_metadata, r"Scan node '#11 → g_next' is one of 2 Scans: .* metadata 'nnre\.state'"),
])
def test_other_layouts_of_several_scans_are_refused_by_node(edit, message, tmp_path) -> None:
    """A graph with Scans that is not exactly the export's layout of time passes is refused
    naming the node and what it lacks: by the API, and by the CLI in one ``error:`` line."""
    from nndk.onnx.common import OnnxError

    proto = export_model(load(VECTORS / "birnn_f64.bundle"), sequence=True)
    edit(proto)
    onnx.checker.check_model(proto)
    with pytest.raises(OnnxError, match=message):
        import_model(proto)
    (tmp_path / "m.onnx").write_bytes(proto.SerializeToString())
    proc = _nndk(tmp_path, "import", "m.onnx", "-o", "x.bundle")
    assert proc.returncode == 1 and proc.stderr.startswith("error: ") and \
        proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "x.bundle").exists()
