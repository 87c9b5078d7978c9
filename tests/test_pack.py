"""``nndk pack``: equations + .npz -> a bundle that loads; every bad weight named."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bundle_helpers import LSTM, lstm_weights
from click.testing import CliRunner

import nnre
from nndk.cli import cli
from nndk.pack import PackError, PackRequest, build_content, pack, parse_codecs
from nnre.errors import ShapeError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def files(tmp_path) -> tuple[Path, Path]:
    eqn = tmp_path / "lstm.eqn"
    eqn.write_text(LSTM, encoding="utf-8")
    npz = tmp_path / "w.npz"
    np.savez(npz, **lstm_weights(h=5, v=7))
    return eqn, npz


def request(eqn: Path, npz: Path, out: Path, **kw) -> PackRequest:
    return PackRequest(eqn, npz, out, kw.pop("name", "lstm"), kw.pop("version", "1.0.0"),
                       created="2024-05-01T00:00:00Z", **kw)


def test_pack_writes_a_bundle_that_loads_and_runs(files, tmp_path) -> None:
    eqn, npz = files
    out = tmp_path / "m.bundle"
    result = pack(request(eqn, npz, out, description="d", license="MIT",
                          authors=("A", "B"), meta=("k=v", "empty=")))
    model = nnre.load(out)
    assert model.bundle_id == result.bundle_id
    assert model.metadata["extra"] == {"k": "v", "empty": ""}
    assert model.metadata["authors"] == ["A", "B"]
    assert model.metadata["producer"].startswith("nndk ")
    assert model.inputs["x"].shape == (7,) and model.state["h"].shape == (5,)
    assert model.equations == LSTM
    np.testing.assert_array_equal(model.weights()["U_f"], lstm_weights(h=5, v=7)["U_f"])


def test_pack_is_deterministic(files, tmp_path) -> None:
    eqn, npz = files
    a, b = tmp_path / "a.bundle", tmp_path / "b.bundle"
    pack(request(eqn, npz, a))
    pack(request(eqn, npz, b))
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()


def test_source_date_epoch_sets_created(files, tmp_path, monkeypatch) -> None:
    eqn, npz = files
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "86400")
    out = tmp_path / "m.bundle"
    pack(PackRequest(eqn, npz, out, "n", "1.0.0"))
    assert nnre.load(out).metadata["created"] == "1970-01-02T00:00:00Z"


def test_float64_weights_pack_as_float32_unless_asked(tmp_path) -> None:
    """NumPy makes float64 arrays by default, so they are what most .npz files hold; a bundle
    is float32 unless --dtype float64 says otherwise (issue #15)."""
    eqn = tmp_path / "m.eqn"
    eqn.write_text(LSTM, encoding="utf-8")
    npz = tmp_path / "w.npz"
    np.savez(npz, **lstm_weights(dtype="float64"))
    pack(request(eqn, npz, tmp_path / "m.bundle"))
    assert nnre.load(tmp_path / "m.bundle").dtype == "float32"
    pack(request(eqn, npz, tmp_path / "m64.bundle", dtype="float64"))
    assert nnre.load(tmp_path / "m64.bundle").dtype == "float64"
    help_text = CliRunner().invoke(cli, ["pack", "--help"]).output
    assert "Default:" in help_text and "float32 (float64" in help_text


def _with(weights: dict, tmp_path: Path) -> Path:
    npz = tmp_path / "bad.npz"
    np.savez(npz, **weights)
    return npz


@pytest.mark.parametrize("change, message", [
    (lambda w: w.pop("b_y"), "missing weight 'b_y' of shape (4,)"),
    (lambda w: (w.pop("b_y"), w.pop("W_f")),
     "missing weights 'W_f' of shape (3, 4), 'b_y' of shape (4,)"),
    (lambda w: w.update(Q=np.zeros(3, np.float32)), "weight 'Q' is not a parameter"),
    (lambda w: w.update(Q=np.zeros(3, np.float32), R=np.zeros(1, np.float32)),
     "weights 'Q', 'R' are not parameters of the equations (expected one of "),
    (lambda w: w.update(W_c=w["W_c"].T), "'W_c' is (4, 3)"),
])
def test_bad_weights_are_named(files, tmp_path, change, message) -> None:
    eqn, _ = files
    weights = lstm_weights()
    change(weights)
    with pytest.raises(ShapeError) as info:
        pack(request(eqn, _with(weights, tmp_path), tmp_path / "m.bundle"))
    assert message in str(info.value)
    assert not (tmp_path / "m.bundle").exists()


def test_unreadable_weights(files, tmp_path) -> None:
    eqn, _ = files
    obj = tmp_path / "obj.npz"
    np.savez(obj, W=np.array([{"a": 1}], dtype=object))
    single = tmp_path / "one.npy"
    np.save(single, np.zeros(3))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    for path, fragment in ((obj, "never unpickled"), (single, "not a readable .npz"),
                           (junk, "not a readable .npz")):
        with pytest.raises(PackError, match=fragment):
            pack(request(eqn, path, tmp_path / "m.bundle"))


def test_bad_options(files, tmp_path) -> None:
    eqn, npz = files
    with pytest.raises(PackError, match="--meta expects key=value"):
        pack(request(eqn, npz, tmp_path / "m.bundle", meta=("novalue",)))
    with pytest.raises(nnre.BundleError, match="semantic version"):
        pack(request(eqn, npz, tmp_path / "m.bundle", version="v1"))


def test_cli_pack_then_nnre_verify(files, tmp_path) -> None:
    eqn, npz = files
    out = tmp_path / "m.bundle"
    result = CliRunner().invoke(cli, ["pack", str(eqn), "--weights", str(npz), "--name", "m",
                                      "--version", "1.0.0", "--author", "A", "--author", "B",
                                      "--meta", "k=v", "--created", "2024-05-01T00:00:00Z",
                                      "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"packed {out}: 14 tensors, ")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "nnre", "verify", str(out)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith(f"ok: {out}: m 1.0.0")


def test_cli_pack_error_is_one_line(files, tmp_path) -> None:
    eqn, _ = files
    weights = lstm_weights()
    weights.pop("W_y")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "nndk", "pack", str(eqn), "--weights",
                           str(_with(weights, tmp_path)), "--name", "m", "--version", "1.0.0",
                           "-o", str(tmp_path / "m.bundle")],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: ") and "missing weight 'W_y'" in proc.stderr


def test_a_bundle_requires_the_language_version_its_equations_use(tmp_path) -> None:
    """Version 1 models say equations/1 (older readers keep reading them); one that uses a
    version-2 function says equations/2; one that hides it behind equations/1 is refused."""
    from bundle_helpers import reseal

    from nnre.bundle.read import decode
    from nnre.bundle.write import write
    from nnre.errors import BundleError
    from nnre.loader import load

    w = {"W": np.eye(3)}
    for text, version in (("y = tanh(W x)", 1), ("y = W x − mean(W x)", 2),
                          ("y = (x > 0) ⊙ x", 2), ("s = xᵀ x\ny = s ⊙ x", 2)):
        content = build_content("x ∈ ℝ^3\n" + text, w if "W" in text else {},
                                {"name": "m", "version": "1.0.0"})
        assert content.requires == (f"equations/{version}",), text
        write(tmp_path / "m.bundle", content)
        assert decode(tmp_path / "m.bundle").header.requires == (f"equations/{version}",)
    blob = reseal((tmp_path / "m.bundle").read_bytes(),
                  lambda h: h.update(requires=["equations/1"]))
    with pytest.raises(BundleError, match="version 2 of the equation language") as err:
        load(blob, cache=False)
    assert err.value.code == "signature-mismatch" and err.value.field == "header.requires"


def _pack_cli(*args: str) -> str:
    result = CliRunner().invoke(cli, ["pack", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_relabel_a_bundle_names_its_parent(files, tmp_path) -> None:
    """nndk pack BUNDLE: a new name, version and labels; the same model (equations, weights,
    outputs), what the parent carried kept, and lineage.parent = the parent's id."""
    eqn, npz = files
    parent = tmp_path / "parent.bundle"
    vocab = list("abcdefg")
    pack(request(eqn, npz, parent, description="first", license="MIT", meta=("k=v",),
                 codecs={"x": {"id": "char", "vocab": vocab},
                         "y": {"id": "sample", "vocab": vocab}}))
    child = tmp_path / "child.bundle"
    out = _pack_cli(str(parent), "--name", "renamed", "--version", "2.0.0", "--meta", "stage=rc",
                    "--created", "2024-06-01T00:00:00Z", "-o", str(child))
    old, new = nnre.load(parent), nnre.load(child)
    assert out.startswith(f"packed {child}: 14 tensors, ") and new.bundle_id in out
    assert new.metadata["lineage"] == {"parent": old.bundle_id}
    assert (new.metadata["name"], new.metadata["version"]) == ("renamed", "2.0.0")
    assert new.metadata["created"] == "2024-06-01T00:00:00Z"
    assert new.metadata["extra"] == {"k": "v", "stage": "rc"}
    for key in ("description", "license", "codecs"):
        assert new.metadata[key] == old.metadata[key], key
    assert new.equations == old.equations and new.dtype == old.dtype == "float32"
    for name, value in old.weights().items():
        np.testing.assert_array_equal(new.weights()[name], value)
    xs = {"x": np.random.default_rng(0).standard_normal((5, 2, 7)).astype(np.float32)}
    np.testing.assert_array_equal(new.run(xs)[0]["y"], old.run(xs)[0]["y"])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "nnre", "inspect", str(child)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert f"parent       {old.bundle_id}" in proc.stdout.splitlines()


def test_relabel_refuses_weights_and_keeps_a_chain(files, tmp_path) -> None:
    eqn, npz = files
    a, b, c = (tmp_path / f"{n}.bundle" for n in "abc")
    pack(request(eqn, npz, a))
    with pytest.raises(PackError, match=r"--weights goes with an \.eqn file; .*a\.bundle has "
                                        "its weights"):
        pack(request(a, npz, b))
    pack(PackRequest(a, None, b, "b", "1.0.1"))
    pack(PackRequest(b, None, c, "c", "1.0.2", dtype="float64"))
    ids = [nnre.load(p).bundle_id for p in (a, b)]
    assert nnre.load(b).metadata["lineage"]["parent"] == ids[0]
    assert nnre.load(c).metadata["lineage"]["parent"] == ids[1]
    assert nnre.load(c).dtype == "float64"


def test_codecs_added_to_a_bundle_reach_nnre_run(tmp_path) -> None:
    """An imported (or any) bundle without codecs gets an argmax-label one by relabelling;
    nnre run --input then prints the label. The codec is checked by the bundle validator."""
    eqn = tmp_path / "m.eqn"
    eqn.write_text("input x\nx ∈ ℝ^2\ny = W x\n", encoding="utf-8")
    npz = tmp_path / "w.npz"
    np.savez(npz, W=np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
    plain, labelled = tmp_path / "plain.bundle", tmp_path / "labelled.bundle"
    pack(request(eqn, npz, plain))
    labels = tmp_path / "labels.json"
    labels.write_text('{"id": "argmax-label", "labels": ["first", "second", "neither"]}')
    _pack_cli(str(plain), "--name", "m", "--version", "1.0.0", "--codec", f"y=@{labels}",
              "-o", str(labelled))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "nnre", "run", str(labelled), "--input", "-"],
                          input='{"x": [[2, 1], [0, 3], [-1, -1]]}', capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["y.label"] == ["first", "second", "neither"]
    with pytest.raises(nnre.BundleError, match="codec 'char' applies to") as err:
        pack(request(plain, None, tmp_path / "bad.bundle",
                     codecs={"y": {"id": "char", "vocab": ["a", "b", "c"]}}))
    assert err.value.code == "bad-codec"


@pytest.mark.parametrize("value, message", [
    ("y", "--codec expects NAME=JSON or NAME=@FILE, got 'y'"),
    ("y={", "--codec y: not JSON (Expecting property name"),
    ("y=[1]", "--codec y: expected a JSON object like"),
])
def test_bad_codec_options(value: str, message: str) -> None:
    with pytest.raises(PackError) as err:
        parse_codecs([value])
    assert str(err.value).startswith(message)
