"""Run every conformance vector in formats/vectors, and check the files are up to date."""

from __future__ import annotations

import filecmp
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from nnre import bundle
from nnre.bundle_format import InvalidBundle
from nnre.errors import EquationError

VECTORS = Path(__file__).resolve().parent.parent / "formats" / "vectors"
MANIFEST = json.loads((VECTORS / "manifest.json").read_text(encoding="utf-8"))
HAVE_MODEL = importlib.util.find_spec("nnre.model") is not None


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
def test_valid_vector_opens_and_verifies(case) -> None:
    got = bundle.decode(VECTORS / case["file"], check_data=True)
    assert got.bundle_id == case["bundle_id"]
    assert got.size == case["size"]


@pytest.mark.parametrize("case", MANIFEST["invalid"], ids=lambda c: c["file"])
def test_invalid_vector_is_refused_at_its_stage(case) -> None:
    path = VECTORS / case["file"]
    if case["stage"] == "structure":
        with pytest.raises(InvalidBundle) as info:
            bundle.decode(path)
    elif case["stage"] == "data":
        bundle.decode(path)
        with pytest.raises(InvalidBundle) as info:
            bundle.decode(path, check_data=True)
    else:
        bundle.decode(path, check_data=True)
        if not HAVE_MODEL:
            pytest.skip("the equation core (nnre.model) is not here yet")
        error = EquationError if case["code"] == "equation-error" else InvalidBundle
        with pytest.raises(error) as info:
            bundle.load(path)
        assert not os.path.exists("/tmp/pwned")
    if case["code"] != "equation-error":
        assert info.value.code == case["code"]
    assert case["message"] in str(info.value)
