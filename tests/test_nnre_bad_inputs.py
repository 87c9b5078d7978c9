"""Every bad input to the nnre CLI ends in one ``error:`` line and a non-zero exit, never a
traceback: each invalid conformance vector through inspect, verify and run, bad equations,
bad feeds and bad flags. Runs in process (``run_cli``), so a corpus this size stays fast."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from nnre.cli import cli, run_cli

ROOT = Path(__file__).resolve().parent.parent
INVALID = sorted((ROOT / "formats" / "vectors" / "invalid").glob("*.bundle"))
SAMPLE = str(ROOT / "samples" / "lighthouse.bundle")


def nnre(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
         ) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["nnre", *args])
    code = 0
    try:
        run_cli(cli, "nnre")
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    return code, capsys.readouterr().err


def assert_one_error(code: int, err: str, *fragments: str) -> None:
    assert code != 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
@pytest.mark.parametrize("command", ["inspect", "verify", "run"])
def test_invalid_vectors(command: str, path: Path, monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture[str]) -> None:
    manifest = json.loads((ROOT / "formats" / "vectors" / "manifest.json").read_text())
    entry = next(v for v in manifest["invalid"] if Path(v["file"]).name == path.name)
    code, err = nnre(monkeypatch, capsys, command, str(path))
    if code == 0:  # inspect shows structure only; data and model rules are verify's
        assert command == "inspect" and entry.get("stage", "structure") != "structure"
        return
    assert_one_error(code, err)


def test_bad_inputs_to_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    mlp = tmp_path / "mlp.bundle"
    from nndk.pack import PackRequest, pack  # the SDK makes the fixture; nnre reads it

    eqn = tmp_path / "m.eqn"
    eqn.write_text("h = relu(W₁ x + b₁)\ny = W₂ h + b₂\n", encoding="utf-8")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "w.npz", W_1=rng.random((4, 3)), b_1=rng.random(4),
             W_2=rng.random((2, 4)), b_2=rng.random(2))
    pack(PackRequest(equations=eqn, weights=tmp_path / "w.npz", output=mlp, name="m",
                     version="1.0.0"))
    cases = {
        "not json {": "input",
        json.dumps({"x": [1, 2]}): "x",
        json.dumps({"x": [1, 2, 3], "z": [1]}): "z",
        json.dumps({"x": ["a", "b", "c"]}): "x",
        "[" * 10_000 + "]" * 10_000: "",
        '{"x": [1, 2, ' + "9" * 5000 + "]}": "",
    }
    for i, (text, fragment) in enumerate(cases.items()):
        feed = tmp_path / f"in{i}.json"
        feed.write_text(text, encoding="utf-8")
        code, err = nnre(monkeypatch, capsys, "run", str(mlp), "--input", str(feed))
        assert_one_error(code, err, fragment)


@pytest.mark.parametrize("args", [
    ["run", SAMPLE, "-n", "-3"],
    ["run", SAMPLE, "--temperature", "nan"],
    ["run", SAMPLE, "--top-p", "2"],
    ["run", SAMPLE, "--prime", "\u202e"],
    ["run", str(ROOT / "no such file.bundle")],
    ["run", str(ROOT / "samples")],
    ["--threads", "0", "verify", SAMPLE],
    ["--max-bytes", "-1", "verify", SAMPLE],
    ["inspect"],
    ["frobnicate"],
])
def test_bad_flags_and_paths(args: list[str], monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    code, err = nnre(monkeypatch, capsys, *args)
    assert_one_error(code, err)
