"""``nndk export``: a bundle as ONNX (one step, or a Scan over time), checked by the ONNX
checker and run by onnxruntime and onnx's ReferenceEvaluator against nnre; and the round trip
bundle → ONNX → bundle."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nnre

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx_helpers import ort_runner, ref_runner, run_step_graph, template_model  # noqa: E402

from nndk.onnx.common import OnnxError  # noqa: E402
from nndk.onnx.export import export_bundle, export_model  # noqa: E402
from nndk.onnx.importer import ImportResult, import_model  # noqa: E402
from nndk.pack import build_content  # noqa: E402
from nnre.bundle.write import write  # noqa: E402
from nnre.equations import check, param_shapes  # noqa: E402
from nnre.loader import load  # noqa: E402
from nnre.model import Model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

TEMPLATES = {"lstm": {"H": 5, "V": 4}, "gru": {"H": 5, "V": 4}, "rnn": {"H": 5, "V": 4},
             "mlp": {"D": 4, "H": 6, "K": 3}}
RUNNERS = {"onnxruntime": ort_runner, "reference": ref_runner}


def _inputs(model: Model, steps: int = 4, batch: int = 3, seed: int = 1
            ) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal((steps, batch, *s.shape)).astype(model.dtype)
            for k, s in model.inputs.items()}


@pytest.mark.parametrize("runner", sorted(RUNNERS))
@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_step_graph_matches_nnre(template: str, runner: str) -> None:
    model = template_model(template, TEMPLATES[template])
    proto = export_model(model)
    onnx.checker.check_model(proto, full_check=True)
    xs = _inputs(model)
    want, want_state = model.run(xs)
    got, got_state = run_step_graph(RUNNERS[runner](proto), model, xs)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-5)
    for k in want_state:
        np.testing.assert_allclose(got_state[k], want_state[k], rtol=0, atol=1e-5)


@pytest.mark.parametrize("runner", sorted(RUNNERS))
@pytest.mark.parametrize("template", ["lstm", "gru"])
def test_sequence_graph_matches_nnre(template: str, runner: str) -> None:
    model = template_model(template, TEMPLATES[template], dtype="float64")
    proto = export_model(model, sequence=True, opset=19)
    onnx.checker.check_model(proto, full_check=True)
    assert [n.op_type for n in proto.graph.node][-1] == "Scan"
    xs = _inputs(model, steps=6)
    init = {f"{k}_prev": np.random.default_rng(2).standard_normal((3, *s.shape))
            for k, s in model.state.items()}
    want, want_state = model.run(xs, {k[:-5]: v for k, v in init.items()})
    got = RUNNERS[runner](proto)(xs | init)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-10)
    for k in want_state:
        np.testing.assert_allclose(got[f"{k}_next"], want_state[k], rtol=0, atol=1e-10)


def test_bundle_metadata_goes_into_the_onnx_model(tmp_path) -> None:
    model = template_model("gru", TEMPLATES["gru"])
    meta = {"name": "tiny-gru", "version": "1.2.3", "created": "2024-01-01T00:00:00Z"}
    path = tmp_path / "m.bundle"
    bundle_id = write(path, build_content(model.equations, model.weights(), meta))
    proto = export_bundle(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["name"] == "tiny-gru" and props["version"] == "1.2.3"
    assert props["bundle_id"] == bundle_id
    assert props["producer"].startswith("nndk ")
    assert proto.producer_name == "nndk" and proto.opset_import[0].version == 17
    assert "ĥₜ" in proto.graph.doc_string  # the equations travel along, for people


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_round_trip_bundle_onnx_bundle(template: str, tmp_path) -> None:
    model = template_model(template, TEMPLATES[template])
    path = tmp_path / "a.bundle"
    meta = {"name": template, "version": "1.0.0"}
    write(path, build_content(model.equations, model.weights(), meta))
    again = _assert_imports_back(load(path), import_model(export_bundle(str(path))), 1e-5)
    assert set(again.inputs) == set(model.inputs) and set(again.state) == set(model.state)


def _assert_imports_back(model: Model, result: ImportResult, atol: float, steps: int = 4
                         ) -> Model:
    """The imported equations run as ``model`` does: outputs and final state."""
    again = Model.from_equations(result.equations, result.weights, dtype=result.dtype)
    xs = _inputs(model, steps=steps)
    want, want_state = model.run(xs)
    got, got_state = again.run(xs)
    for onnx_name, (name, kind) in result.outputs.items():
        if kind == "output":
            np.testing.assert_allclose(got[name], want[onnx_name], rtol=0, atol=atol)
    for k in want_state:
        np.testing.assert_allclose(got_state[k], want_state[k], rtol=0, atol=atol)
    return again


def test_round_trip_keeps_names_and_reads_like_equations() -> None:
    model = template_model("lstm", TEMPLATES["lstm"])
    text = import_model(export_model(model)).equations
    assert "fₜ = σ(" in text and "cₜ = fₜ ⊙ cₜ₋₁ + iₜ ⊙ c̃ₜ" in text
    assert "yₜ = softmax(" in text and "%" not in text


@pytest.mark.parametrize("opset", [13, 17, 20])
def test_activations_without_an_onnx_op_export_as_their_definition(opset: int) -> None:
    """Gelu exists from opset 20, Mish from 18, HardSwish from 14; before, they are written
    out in nodes."""
    text = "input x\nx ∈ ℝ^4\ny = gelu(x) + gelu_tanh(2 ⊙ x) + mish(x) ⊙ hardswish(x)"
    model = Model.from_equations(text, {}, {})
    proto = export_model(model, opset=opset)
    types = {node.op_type for node in proto.graph.node}
    assert ("Gelu" in types) == (opset >= 20) and ("Erf" in types) == (opset < 20)
    assert ("Mish" in types) == (opset >= 18) and ("HardSwish" in types) == (opset >= 14)
    xs = {"x": np.linspace(-8, 8, 4 * 6 * 4, dtype=np.float32).reshape(4, 6, 4)}
    want, _ = model.run(xs)
    got, _ = run_step_graph(ort_runner(proto), model, xs)
    np.testing.assert_allclose(got["y"], want["y"], rtol=1e-5, atol=1e-5)


def test_opset_out_of_range_is_refused() -> None:
    model = template_model("rnn", TEMPLATES["rnn"])
    with pytest.raises(OnnxError, match="--opset 9 is not supported"):
        export_model(model, opset=9)


@pytest.mark.parametrize("case", ["elementwise", "activations", "recurrent_vectors",
                                  "constants"])
def test_every_op_exports_and_matches_onnxruntime(case: str) -> None:
    """The autodiff cases use every op of the table (tests/test_autodiff.py checks that);
    each op's ONNX mapping (``Op.onnx``) must compute what nnre computes."""
    from test_autodiff import CASES, DIMS

    checked = check(CASES[case], DIMS)
    rng = np.random.default_rng(4)
    weights = {k: rng.normal(scale=0.5, size=s).astype(np.float32)
               for k, s in param_shapes(checked).items()}
    model = Model.from_equations(CASES[case], weights, DIMS)  # onnxruntime: Softplus in float32
    xs = {k: np.abs(v) for k, v in _inputs(model).items()}  # log and sqrt of positive values
    want, want_state = model.run(xs)
    got, got_state = run_step_graph(ort_runner(export_model(model)), model, xs)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-5)
    for k in want_state:
        np.testing.assert_allclose(got_state[k], want_state[k], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_sequence_export_imports_back(template: str) -> None:
    """bundle → ONNX Scan (``--sequence``) → bundle: the Scan's body is the step again, and
    the imported equations give the same outputs and final state as the original model."""
    model = template_model(template, TEMPLATES[template])
    _assert_imports_back(model, import_model(export_model(model, sequence=True, opset=19)),
                         1e-6, steps=5)


def test_cli_export_and_import_into_a_missing_folder_name_it(tmp_path) -> None:
    """One ``error:`` line naming the folder the user gave, from the real CLI."""
    model = template_model("rnn", TEMPLATES["rnn"])
    write(tmp_path / "m.bundle", build_content(model.equations, model.weights(),
                                               {"name": "m", "version": "1.0.0"}))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}

    def nndk(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "nndk", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)

    proc = nndk("export", "m.bundle", "-o", "gone/m.onnx")
    assert (proc.returncode, proc.stderr) == (
        1, "error: gone: no such directory, cannot write m.onnx in it\n")
    assert nndk("export", "m.bundle", "-o", "m.onnx").returncode == 0
    proc = nndk("import", "m.onnx", "-o", "gone/again.bundle")
    assert (proc.returncode, proc.stderr) == (
        1, "error: gone: no such directory, cannot write again.bundle in it\n")


SAMPLE = ROOT / "samples" / "lighthouse.bundle"


def _nnre_run(bundle: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "nnre", "run", str(bundle), *args],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("sequence", [False, True])
def test_a_char_model_exported_and_imported_generates_the_same_text(sequence: bool,
                                                                    tmp_path: Path) -> None:
    """The shipped character LSTM → ONNX → bundle: the vocabulary, sampling settings and
    provenance travel in metadata_props['nnre.bundle'], so `nnre run` on the imported bundle
    writes the same text as on the original with the same seed; onnxruntime runs the export
    as nnre runs the model."""
    from nndk.onnx.common import META_BUNDLE
    from nndk.onnx.importer import import_file

    original = load(SAMPLE)
    proto = export_bundle(str(SAMPLE), sequence=sequence, opset=19)
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props[META_BUNDLE]) == original.metadata
    onnx_path, again_path = tmp_path / "m.onnx", tmp_path / "m.bundle"
    onnx_path.write_bytes(proto.SerializeToString())
    import_file(onnx_path, again_path)
    again = load(again_path)
    for key in ("codecs", "sampling", "provenance", "name", "version", "license"):
        assert again.metadata.get(key) == original.metadata.get(key), key
    assert again.metadata["lineage"] == {"parent": original.bundle_id}
    assert again.metadata["extra"]["onnx.source"] == "m.onnx"
    args = ("--prime", "3 May.", "-n", "120", "--seed", "3")
    text = _nnre_run(SAMPLE, *args)
    assert len(text) >= 120 and _nnre_run(again_path, *args) == text
    if not sequence:
        rng = np.random.default_rng(0)
        xs = {"x": np.eye(51, dtype=np.float32)[rng.integers(0, 51, (6, 2))]}
        want, want_state = original.run(xs)
        got, got_state = run_step_graph(ort_runner(proto), original, xs)
        np.testing.assert_allclose(got["y"], want["y"], rtol=0, atol=1e-5)


def _with_bundle_meta(value: str) -> object:
    from nndk.onnx.common import META_BUNDLE

    proto = export_bundle(str(SAMPLE))
    for prop in proto.metadata_props:
        if prop.key == META_BUNDLE:
            prop.value = value
    return proto


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["sampling"].update(temperature=0.0),
     "m.onnx: metadata nnre.bundle: nnre.bundle.sampling.temperature: 0.0 outside (0.0, "),
    (lambda m: m["codecs"]["x"].update(id="pickle"), None),
    (lambda m: m.update(unknown=1), "nnre.bundle.unknown: unknown field"),
    (lambda m: m.pop("name"), "nnre.bundle.name: required field is missing"),
    (lambda m: m["codecs"]["x"].update(vocab=["a", "a"]), "duplicate item 'a'"),
])
def test_bundle_metadata_in_onnx_is_checked_like_a_bundle_header(edit, message,
                                                                 tmp_path: Path) -> None:
    """An edited or hostile nnre.bundle entry is refused by the bundle schema, by name."""
    from nndk.onnx.importer import import_file

    meta = load(SAMPLE).metadata
    edit(meta)
    path = tmp_path / "m.onnx"
    path.write_bytes(_with_bundle_meta(json.dumps(meta)).SerializeToString())
    if message is None:  # a codec id is judged with the signature, when the bundle is made
        with pytest.raises(nnre.BundleError, match="unknown codec id 'pickle'"):
            import_file(path, tmp_path / "m.bundle")
    else:
        with pytest.raises(OnnxError, match=re.escape(message)):
            import_file(path, tmp_path / "m.bundle")
    assert not (tmp_path / "m.bundle").exists()


@pytest.mark.parametrize("text, message", [
    ('{"name": "m", "version": "1.0.0", "sampling": {"temperature": NaN}}',
     "(NaN is not a finite number)"),
    ('{"name": "m", "version": "1.0.0", "sampling": {"temperature": 1e999}}',
     "(1e999 is not a finite number)"),
    ('{"name": "m", "name": "n", "version": "1.0.0"}', "key 'name' repeated"),
    ("[" * 100000, "maximum recursion depth"),
    ("{", "Expecting property name"),
])
def test_bundle_metadata_in_onnx_must_be_strict_json(text: str, message: str,
                                                     tmp_path: Path) -> None:
    from nndk.onnx.importer import import_file

    path = tmp_path / "m.onnx"
    path.write_bytes(_with_bundle_meta(text).SerializeToString())
    with pytest.raises(OnnxError, match=re.escape("m.onnx: metadata nnre.bundle is not the "
                                                  "JSON of a bundle's metadata")) as err:
        import_file(path, tmp_path / "m.bundle")
    assert message in str(err.value)


PROLOGUE = {  # equations whose parameters go through functions before meeting the input
    "vector": ("input x\nx ∈ ℝ^3\ny = exp(−c) + σ(a) ⊙ tanh(W x)", {"a": (3,), "c": (3,),
                                                                      "W": (3, 3)},
               ["exp(−c)", "σ(a) ⊙ tanh(W x)"]),
    "recurrent": ("xₜ ∈ ℝ^3\nhₜ ∈ ℝ^3\nhₜ = σ(a) ⊙ tanh(W xₜ + U hₜ₋₁ + b)",
                  {"a": (3,), "b": (3,), "W": (3, 3), "U": (3, 3)}, ["σ(a) ⊙ tanh("]),
    "scalar": ("input x\nx ∈ ℝ^3\ny = σ(s) ⊙ x + (1 − σ(s)) ⊙ relu(x)", {"s": ()},
               ["σ(s) ⊙ x", "(1 − σ(s)) ⊙ relu(x)"]),
    "matrix": ("input x\nx ∈ ℝ^3\ny = tanh(W) x + (M ⊙ V) x", {"W": (2, 3), "M": (2, 3),
                                                              "V": (2, 3)},
               ["tanh(W) x", "(M ⊙ V) x"]),
    "gru-like": ("xₜ ∈ ℝ^3\nhₜ ∈ ℝ^2\nhₜ = (1 − σ(z)) ⊙ hₜ₋₁ + σ(z) ⊙ tanh(exp(W) xₜ)",
                 {"z": (2,), "W": (2, 3)}, ["(1 − σ(z)) ⊙ hₜ₋₁", "tanh(exp(W) xₜ)"]),
}


@pytest.mark.parametrize("case", sorted(PROLOGUE))
def test_round_trip_keeps_parameters_that_go_through_functions(case: str) -> None:
    """σ(a) of a parameter is computed in the exported graph from the initializer 'a', and
    the import writes it back as σ(a) over the weight a (it used to fold it into a new
    constant k₁); the model computes the same as the original (onnxruntime on the export
    too)."""
    text, shapes, fragments = PROLOGUE[case]
    rng = np.random.default_rng(5)
    weights = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    model = Model.from_equations(text, weights)
    proto = export_model(model)
    assert {init.name for init in proto.graph.initializer} >= set(weights)
    result = import_model(proto)
    for fragment in fragments:
        assert fragment in result.equations, result.equations
    assert not any(f"{stem}₁" in result.equations for stem in "kbW"), result.equations
    assert sorted(result.weights) == sorted(weights)
    for name, value in weights.items():
        np.testing.assert_array_equal(result.weights[name], value)
    again = _assert_imports_back(model, result, 1e-6)
    xs = _inputs(model)
    got, _ = run_step_graph(ort_runner(proto), model, xs)
    for k, want in model.run(xs)[0].items():
        np.testing.assert_allclose(got[k], want, rtol=1e-5, atol=1e-6)
    assert again.params == model.params


BIRNN_VECTOR = ROOT / "formats" / "vectors" / "valid" / "birnn_f64.bundle"
STACKED_BI = """
xₜ ∈ ℝ^3
aₜ, bₜ, cₜ, dₜ ∈ ℝ^4
aₜ = tanh(W₁ xₜ + U₁ aₜ₋₁)
bₜ = tanh(V₁ xₜ + R₁ bₜ₊₁)
cₜ = tanh(W₂ [aₜ; bₜ] + U₂ cₜ₋₁)
dₜ = tanh(V₂ [aₜ; bₜ] + R₂ dₜ₊₂)
yₜ = softmax(A [cₜ; dₜ])
"""


def _stacked_bidirectional() -> Model:
    rng = np.random.default_rng(21)
    shapes = {"W_1": (4, 3), "U_1": (4, 4), "V_1": (4, 3), "R_1": (4, 4), "W_2": (4, 8),
              "U_2": (4, 4), "V_2": (4, 8), "R_2": (4, 4), "A": (5, 8)}
    return Model.from_equations(STACKED_BI, {k: rng.normal(scale=0.5, size=s)
                                             for k, s in shapes.items()})


@pytest.mark.parametrize("which", ["vector", "stacked"])
def test_backward_state_exports_as_one_scan_per_pass(which: str) -> None:
    """``--sequence``: a Scan per time pass (a backward one scans in reverse), run by
    onnxruntime against Model.run: every output over time and every final state (a backward
    state's at the first step), from a given initial state (a backward one's after the last
    step)."""
    model = load(BIRNN_VECTOR) if which == "vector" else _stacked_bidirectional()
    proto = export_model(model, sequence=True)
    scans = [n for n in proto.graph.node if n.op_type == "Scan"]
    assert len(scans) == len(model.program.time_passes())
    rng = np.random.default_rng(22)
    xs = {n: rng.normal(size=(5, 2, *s.shape)).astype(model.dtype)
          for n, s in model.inputs.items()}
    init = {n: rng.normal(size=(2, *s.shape)).astype(model.dtype)
            for n, s in model.state.items()}
    ys, final = model.run(xs, init)
    got = ort_runner(proto)(xs | {f"{n}_prev": v for n, v in init.items()})
    tol = 1e-12 if model.dtype == "float64" else 1e-5
    for name, value in ys.items():
        np.testing.assert_allclose(got[name], value, rtol=0, atol=tol, err_msg=name)
    for name, value in final.items():
        np.testing.assert_allclose(got[f"{name}_next"], value, rtol=0, atol=tol, err_msg=name)


def test_backward_state_has_no_step_to_export(tmp_path) -> None:
    """Without --sequence (one step) the export is refused with one ``error:`` line and no
    file; the --sequence export is read back by ``nndk import`` (tests/test_onnx_scan_back.py
    checks what the imported bundle computes)."""
    with pytest.raises(OnnxError, match="'g' is backward state .*--sequence"):
        export_bundle(str(BIRNN_VECTOR))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def nndk(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "nndk", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)

    proc = nndk("export", str(BIRNN_VECTOR), "-o", "b.onnx")
    assert proc.returncode == 1 and proc.stderr.startswith("error: ") and \
        proc.stderr.count("\n") == 1 and "backward state" in proc.stderr, proc.stderr
    assert not (tmp_path / "b.onnx").exists()
    assert nndk("export", str(BIRNN_VECTOR), "-o", "s.onnx", "--sequence").returncode == 0
    proc = nndk("import", "s.onnx", "-o", "again.bundle")
    assert proc.returncode == 0 and (tmp_path / "again.bundle").exists(), proc.stderr
    assert set(load(tmp_path / "again.bundle").state) == {"h", "g"}


def test_a_step_index_state_is_refused_by_name() -> None:
    """A text reading ``P[t]`` carries the steps taken as state ``t``; its export is not read
    back, and the refusal says which state it is and what reads it."""
    text = "xₜ ∈ ℝ^2\nP ∈ ℝ^(4×2)\nyₜ = tanh(xₜ + P[t]ᵀ)\n"
    model = Model.from_equations(text, {"P": np.ones((4, 2))})
    with pytest.raises(OnnxError, match=r"state 't' \(input 't_prev', read by Cast node .*\) "
                       r"is the step index t"):
        import_model(export_model(model))


@pytest.mark.parametrize("sequence", [False, True])
def test_an_ids_recurrent_model_imports_back(sequence: bool) -> None:
    """The export feeds ids as numbers, cast to integers for the Gather: read back as ids
    (``xₜ ∈ ℕ``, ``E[xₜ]``), the step and its Scan over time, outputs and final state as
    the original's."""
    text = "xₜ ∈ ℕ\nE ∈ ℝ^(5×3)\nhₜ ∈ ℝ^4\nhₜ = tanh(W E[xₜ]ᵀ + U hₜ₋₁)\nyₜ = softmax(A hₜ)\n"
    rng = np.random.default_rng(30)
    shapes = {"E": (5, 3), "W": (4, 3), "U": (4, 4), "A": (5, 4)}
    model = Model.from_equations(text, {k: rng.normal(size=s).astype(np.float32)
                                        for k, s in shapes.items()})
    result = import_model(export_model(model, sequence=sequence))
    assert "xₜ ∈ ℕ" in result.equations
    again = Model.from_equations(result.equations, result.weights)
    ids = rng.integers(0, 5, size=(6, 2, 1)).astype(np.float32)
    h0 = rng.normal(size=(2, 4)).astype(np.float32)
    (want, final), (got, got_final) = model.run({"x": ids}, {"h": h0}), \
        again.run({"x": ids}, {"h": h0})
    np.testing.assert_allclose(got[result.outputs["y"][0]], want["y"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(got_final["h"], final["h"], rtol=0, atol=1e-6)
    with pytest.raises(nnre.NnreError, match="whole numbers"):
        again.run({"x": ids + 0.5})
