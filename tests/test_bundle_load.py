"""nnre.load / nnre.verify: bundles become Models whose equations and weights were checked."""

from __future__ import annotations

import io

import numpy as np
import pytest
from bundle_helpers import LSTM, lstm_content, lstm_weights, reseal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nnre
from nnre.bundle.write import encode, write
from nnre.errors import BundleError, EquationError, ShapeError
from nnre.model import Model

BASE = encode(lstm_content(description="tiny"))


def test_load_gives_a_model_with_metadata_id_and_equations(tmp_path) -> None:
    path = tmp_path / "m.bundle"
    bundle_id = write(path, lstm_content(description="tiny"))
    model = nnre.load(path)
    assert model.equations == LSTM
    assert model.bundle_id == bundle_id
    assert model.metadata["description"] == "tiny"
    assert set(model.inputs) == {"x"} and set(model.state) == {"h", "c"}


def test_loaded_model_computes_like_one_built_from_the_arrays() -> None:
    direct = Model.from_equations(LSTM, lstm_weights())
    xs = np.eye(4, dtype=np.float32)[[0, 3, 1, 2]]
    want, _ = direct.run({"x": xs})
    for src in (BASE, io.BytesIO(BASE)):
        got, _ = nnre.load(src).run({"x": xs})
        np.testing.assert_array_equal(got["y"], want["y"])


def test_a_corrupted_tensor_is_used_only_when_the_user_opts_out() -> None:
    blob = bytearray(BASE)
    blob[-1] ^= 1
    for check in (lambda b: nnre.load(b), nnre.verify, lambda b: nnre.load(b, check_data=True)):
        with pytest.raises(BundleError, match="sha256 of tensor 'b_y'"):
            check(bytes(blob))
    nnre.load(bytes(blob), check_data=False)  # the user's explicit choice


def test_equation_errors_name_the_bundle_field(tmp_path) -> None:
    path = tmp_path / "bad.bundle"
    path.write_bytes(reseal(BASE, lambda h: h["model"].update(equations="yₜ = W_y·hₜ +\n")))
    with pytest.raises(EquationError) as info:
        nnre.load(path)
    assert info.value.filename == f"{path}[model.equations]"


def test_signature_in_header_must_match_the_equations() -> None:
    blob = reseal(BASE, lambda h: h["model"]["signature"]["inputs"].update(
        x={"dtype": "float32", "shape": [5]}))
    with pytest.raises(BundleError, match=r"signature\.inputs: header says") as info:
        nnre.load(blob)
    assert info.value.code == "signature-mismatch"


def test_misshaped_weight_is_a_shape_error() -> None:
    def transpose_w_c(h):
        entry = next(t for t in h["tensors"] if t["name"] == "W_c")
        entry["shape"] = entry["shape"][::-1]
    with pytest.raises(ShapeError, match="W_c"):
        nnre.load(reseal(BASE, transpose_w_c))


def test_nnre_does_not_import_sdk_or_onnx() -> None:
    import subprocess
    import sys
    code = ("import sys, nnre, nnre.cli, nnre.bundle; bad = [m for m in sys.modules "
            "if m.split('.')[0] in ('nndk', 'onnx', 'onnxruntime')]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_bundle_code_has_no_pickle_eval_exec_or_sympify() -> None:
    from pathlib import Path
    root = Path(nnre.__file__).parent.parent
    files = [*root.glob("nnre/bundle/*.py"), root / "nnre" / "loader.py",
             root / "nndk" / "pack.py", root / "nnre" / "cli.py"]
    assert len(files) >= 10
    for path in files:
        if path.exists():
            text = path.read_text(encoding="utf-8")
            for word in ("import pickle", "eval(", "exec(", "sympify", "allow_pickle=True"):
                assert word not in text, (path, word)


EQUATION_CHARS = st.sampled_from(list("xyhWUbₜ₋₁()·⊙+-*/σ=_0123456789.\n ") +
                                 ["tanh", "softmax", "__import__", "'", "exp", "e9999"])


@settings(max_examples=60, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(EQUATION_CHARS, min_size=1, max_size=60).map("".join))
def test_fuzz_equations_inside_a_bundle(text: str) -> None:
    blob = reseal(BASE, lambda h: h["model"].update(equations=text))
    try:
        nnre.load(blob)
    except (BundleError, EquationError):
        pass


HOSTILE_EQUATIONS = [
    "yₜ = __import__('os').system('touch /tmp/nnre_pwned')\n",
    "yₜ = eval(\"1\")\n",
    "yₜ = W_y·hₜ; import os\n",
    "yₜ = " + "(" * 20000 + "b_y" + ")" * 20000 + "\n",
    "yₜ = " + "σ(" * 3000 + "b_y" + ")" * 3000 + "\n",
    "yₜ = softmax(W_y·hₜ + 1" + "0" * 200000 + ")\n",
    "yₜ = softmax(W_y·hₜ + 1e999999999)\n",
    "\n".join(f"a{i}ₜ = a{i + 1}ₜ" for i in range(3000)) + "\n",
]


@pytest.mark.parametrize("text", HOSTILE_EQUATIONS, ids=range(len(HOSTILE_EQUATIONS)))
def test_hostile_equations_fail_fast_and_run_nothing(text: str) -> None:
    import os
    import time
    blob = reseal(BASE, lambda h: h["model"].update(equations=text))
    t0 = time.perf_counter()
    with pytest.raises((EquationError, BundleError)):
        nnre.load(blob)
    assert time.perf_counter() - t0 < 5.0  # generous: a busy 2-core CI machine
    assert not os.path.exists("/tmp/nnre_pwned")


def test_bundle_package_imports_nothing_of_the_runtime() -> None:
    """nnre.bundle stands alone: reading and writing files needs no compiler, model or SymPy."""
    import subprocess
    import sys
    runtime = ("nnre.model", "nnre.compiler", "nnre.vm", "nnre.cache", "nnre.equations",
               "nnre.loader", "nnre.program", "sympy")
    code = ("import sys, nnre.bundle, nnre.bundle.info, nnre.bundle.sniff; "
            f"print(sorted(m for m in sys.modules if m.startswith({runtime!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]", out.stdout
