"""The compile cache: warm loads skip SymPy; stale, corrupt or tampered entries are rebuilt."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from text_helpers import VOCAB, text_bundle

import nnre
from nnre import cache
from nnre.program import Instr, ProgramDataError, check_program, from_data, to_data

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import json, sys
import nnre
m = nnre.load(sys.argv[1])
text = "".join(m.generate("ab", 20, seed=4))
mods = [n for n in ("sympy", "nndk", "onnx", "nnre.compiler", "nnre.equations")
        if n in sys.modules]
print(json.dumps({"text": text, "modules": mods}))
"""


def probe(path: Path, env: dict[str, str]) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                          timeout=120, check=True)
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_warm_load_imports_no_sympy_nndk_or_onnx(tmp_path) -> None:
    path = text_bundle(tmp_path / "t.bundle")
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    cold = probe(path, env)
    assert "sympy" in cold["modules"]  # type: ignore[operator]
    assert not {"nndk", "onnx"} & set(cold["modules"])  # type: ignore[call-overload]
    assert list((tmp_path / "cache" / "nnre" / "programs").iterdir())
    warm = probe(path, env)
    assert warm["modules"] == [] and warm["text"] == cold["text"]
    off = probe(path, {**env, "NNRE_NO_CACHE": "1"})
    assert "sympy" in off["modules"]  # type: ignore[operator]


@pytest.fixture()
def bundle(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return text_bundle(tmp_path / "t.bundle", seed=2)


def entry(path: Path) -> Path:
    return cache.entry_path(nnre.bundle.decode(path).bundle_id)[0]


def reference_text(path: Path) -> str:
    return "".join(nnre.load(path, cache=False).generate("abc", 40, seed=1))


def test_entry_written_once_and_used(bundle) -> None:
    want = reference_text(bundle)
    assert not entry(bundle).exists()
    nnre.load(bundle)
    blob = entry(bundle).read_bytes()
    assert "".join(nnre.load(bundle).generate("abc", 40, seed=1)) == want
    assert entry(bundle).read_bytes() == blob


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage", "empty"])
def test_corrupt_entry_is_rebuilt(bundle, damage) -> None:
    want = reference_text(bundle)
    nnre.load(bundle)
    path = entry(bundle)
    good = path.read_bytes()
    bad = {"flip": good[:-5] + bytes([good[-5] ^ 0xFF]) + good[-4:],
           "truncate": good[: len(good) // 2], "garbage": os.urandom(len(good)),
           "empty": b""}[damage]
    path.write_bytes(bad)
    assert "".join(nnre.load(bundle).generate("abc", 40, seed=1)) == want
    assert path.read_bytes() == good


def test_entry_of_another_bundle_is_not_used(bundle, tmp_path) -> None:
    other = text_bundle(tmp_path / "o.bundle", seed=9)
    nnre.load(other)
    entry(bundle).parent.mkdir(parents=True, exist_ok=True)
    entry(bundle).write_bytes(entry(other).read_bytes())  # valid digest, wrong key
    assert "".join(nnre.load(bundle).generate("abc", 40, seed=1)) == reference_text(bundle)


def test_tampered_program_with_a_valid_digest_is_rebuilt(bundle) -> None:
    model = nnre.load(bundle, cache=False)
    prog = dataclasses.replace(model.program, loop=list(model.program.loop))
    first = prog.loop[0]
    prog.loop[0] = Instr("eval", first.out, first.args, first.attrs)
    shapes = {n: s.shape for n, s in model.params.items()}
    bid = nnre.bundle.decode(bundle).bundle_id
    assert cache.store(bid, cache.Compiled(prog, model.dims, shapes))
    assert cache.load(bid) is None
    assert "".join(nnre.load(bundle).generate("abc", 40, seed=1)) == reference_text(bundle)
    assert cache.load(bid) is not None


def test_no_cache_switches(bundle, monkeypatch) -> None:
    nnre.load(bundle, cache=False)
    assert not entry(bundle).exists()
    monkeypatch.setenv("NNRE_NO_CACHE", "1")
    nnre.load(bundle)
    assert not entry(bundle).exists()


def test_unwritable_cache_still_loads(bundle, tmp_path, monkeypatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    out, _ = nnre.load(bundle).step({"x": np.eye(len(VOCAB))[0]})
    assert out["y"].shape == (len(VOCAB),)


def test_program_data_checks(bundle) -> None:
    prog = nnre.load(bundle, cache=False).program
    check_program(prog)
    data = to_data(prog)
    assert from_data(data).loop == prog.loop
    bad_shape = json.loads(json.dumps(data))
    bad_shape["slots"][prog.loop[0].out][2] = [999]
    out_of_range = json.loads(json.dumps(data))
    out_of_range["loop"][0][2] = [10**6]
    reorder = json.loads(json.dumps(data))
    reorder["loop"] = reorder["loop"][::-1]
    bad_attr = json.loads(json.dumps(data))
    bad_attr["loop"][0][3] = [["axis", "os.system"]]
    for bad in (bad_shape, out_of_range, reorder, bad_attr, {"dtype": "float32"}):
        with pytest.raises(ProgramDataError):
            from_data(bad)
