"""Run every conformance vector in formats/vectors, and check the files are up to date."""

from __future__ import annotations

import filecmp
import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import nnre
from nnre import bundle
from nnre.codecs import codecs_of
from nnre.errors import BundleError, EquationError

VECTORS = Path(__file__).resolve().parent.parent / "formats" / "vectors"
MANIFEST = json.loads((VECTORS / "manifest.json").read_text(encoding="utf-8"))


def _generator():
    spec = importlib.util.spec_from_file_location("make_vectors", VECTORS / "make_vectors.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_vectors"] = module
    spec.loader.exec_module(module)
    return module


def test_committed_vectors_equal_a_fresh_generation(tmp_path) -> None:
    _generator().generate(tmp_path)
    for folder in ("", "valid", "invalid"):
        cmp = filecmp.dircmp(tmp_path / folder, VECTORS / folder)
        assert not cmp.left_only and not cmp.diff_files, (folder, cmp.left_only,
                                                          cmp.diff_files)
        extra = [f for f in cmp.right_only if f.endswith((".bundle", ".json"))]
        assert not extra, extra


@pytest.mark.parametrize("case", MANIFEST["valid"], ids=lambda c: c["file"])
def test_valid_vector_opens_verifies_and_runs(case) -> None:
    path = VECTORS / case["file"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == case["file_sha256"]
    got = nnre.verify(path)
    assert got.bundle_id == case["bundle_id"]
    assert got.size == case["size"]
    io_case = json.loads((VECTORS / case["io"]).read_text(encoding="utf-8"))
    model = nnre.load(path)
    assert model.bundle_id == case["bundle_id"]
    feeds = {k: np.asarray(v) for k, v in io_case["inputs"].items()}
    for name, text in io_case.get("text", {}).items():  # the char codec gives those inputs
        codec = codecs_of(model.metadata, [name])[name]
        np.testing.assert_array_equal(codec.one_hot(text, "float64"), feeds[name])
    outputs, final = model.run(feeds)
    for name, want in io_case["expected"].items():
        np.testing.assert_allclose(outputs[name], np.asarray(want), rtol=io_case["rtol"],
                                   atol=io_case["atol"])
    for name, want in io_case.get("final_state", {}).items():
        np.testing.assert_allclose(final[name], np.asarray(want), rtol=io_case["rtol"],
                                   atol=io_case["atol"])


@pytest.mark.parametrize("case", MANIFEST["invalid"], ids=lambda c: c["file"])
def test_invalid_vector_is_refused_at_its_stage(case) -> None:
    path = VECTORS / case["file"]
    if case["stage"] == "structure":
        with pytest.raises(BundleError) as info:
            bundle.decode(path)
    elif case["stage"] == "data":
        bundle.decode(path)
        with pytest.raises(BundleError) as info:
            bundle.decode(path, check_data=True)
    else:
        bundle.decode(path, check_data=True)
        error = EquationError if case["code"] in ("equation-error", "shape-error") \
            else BundleError
        with pytest.raises(error) as info:
            nnre.load(path)
        assert not os.path.exists("/tmp/pwned")
    assert info.value.code == case["code"]
    assert case["message"] in str(info.value)
