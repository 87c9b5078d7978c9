"""``nnre inspect`` and ``nnre verify``: output, escaping, and one error line on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bundle_helpers import lstm_content, reseal
from click.testing import CliRunner

from nnre.bundle.write import encode, write
from nnre.cli import cli

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "formats" / "vectors"


def run(*args: str) -> tuple[int, str, str]:
    """Run through the same wrapper as the installed command (errors -> one line)."""
    proc = subprocess.run([sys.executable, "-m", "nnre", *args], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture()
def good(tmp_path) -> Path:
    path = tmp_path / "m.bundle"
    write(path, lstm_content(description="desc", extra={"k": "v"}))
    return path


def test_inspect_text_shows_the_facts(good) -> None:
    result = CliRunner().invoke(cli, ["inspect", str(good)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "format       1.0  (requires equations/1)" in out
    assert "model        tiny-lstm 1.0.0" in out
    assert "  state   h          float32 (3,)" in out
    assert "    7  yₜ = softmax(W_y·hₜ + b_y)" in out
    assert "  W_y          float32  (4, 3)" in out
    assert "  k = v" in out


def test_inspect_json_round_trips_and_no_tensors_drops_the_table(good) -> None:
    full = json.loads(CliRunner().invoke(cli, ["inspect", "--json", str(good)]).output)
    assert [t["name"] for t in full["tensors"]][:2] == ["U_c", "U_f"]
    assert full["metadata"]["description"] == "desc"
    assert full["tensors"][0]["offset"] % 64 == 0
    short = json.loads(CliRunner().invoke(cli, ["inspect", "--json", "--no-tensors",
                                                str(good)]).output)
    assert "tensors" not in short and short["tensor_count"] == 14


def test_strings_from_the_file_are_escaped(tmp_path) -> None:
    evil = "\x1b[2J\x1b]0;pwned\x07\u202eevil"
    blob = reseal(encode(lstm_content()), lambda h: h["metadata"].update(
        description=evil, extra={"\x1b[31m": "\x9b1m"}))
    path = tmp_path / "evil.bundle"
    path.write_bytes(blob)
    out = CliRunner().invoke(cli, ["inspect", str(path)]).output
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "\x9b" not in out
    assert "\\x1b[2J\\x1b]0;pwned\\x07\\u202eevil" in out
    as_json = CliRunner().invoke(cli, ["inspect", "--json", str(path)]).output
    assert "\x1b" not in as_json and json.loads(as_json)["metadata"]["description"] == evil


def test_inspect_json_keeps_unicode_and_escapes_bidi_and_controls(tmp_path) -> None:
    """Equations stay readable in --json (issue #15), yet nothing reaches the terminal raw."""
    hostile = "a\u202eb\u2066c\u200fd\u061ce\x1bf\x9bg"
    blob = reseal(encode(lstm_content()), lambda h: h["metadata"].update(
        description="Phare — σ " + hostile, extra={"note\u202e": "ℝ"}))
    path = tmp_path / "u.bundle"
    path.write_bytes(blob)
    result = CliRunner().invoke(cli, ["inspect", "--json", str(path)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "yₜ = softmax(W_y·hₜ + b_y)" in out and "Phare — σ" in out
    for ch in "\u202e\u2066\u200f\u061c\x1b\x9b":
        assert ch not in out
    for escape in ("\\u202e", "\\u2066", "\\u200f", "\\u061c", "\\u001b", "\\u009b"):
        assert escape in out
    facts = json.loads(out)
    assert facts["metadata"]["description"] == "Phare — σ " + hostile
    assert facts["metadata"]["extra"] == {"note\u202e": "ℝ"}
    assert json.loads(json.dumps(facts, ensure_ascii=False)) == facts


def test_verify_ok_line(good) -> None:
    result = CliRunner().invoke(cli, ["verify", str(good)])
    assert result.exit_code == 0
    assert result.output.startswith(f"ok: {good}: tiny-lstm 1.0.0, id ")
    assert result.output.count("\n") == 1


@pytest.mark.parametrize("name, fragment, kind", [
    ("npz", "looks like a NumPy .npz archive", "bad-magic"),
    ("tensor_digest", "sha256 of tensor", "tensor-digest"),
    ("injection", "[model.equations]:1:", "equation-error"),
    ("newer_major", "bundle format 2.0 is newer than the version this reader supports (1.0)",
     "unsupported-version"),
    ("truncated_data", "run past the end of the file", "truncated"),
    ("weights_do_not_fit", "W_c", "shape-error"),
    ("unused_tensor", "'W_z' is not a parameter", "shape-error"),
])
def test_verify_bad_input_is_one_error_line_via_python_m(name, fragment, kind) -> None:
    code, out, err = run("verify", str(VECTORS / "invalid" / f"{name}.bundle"))
    assert code == 1 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert fragment in err and "Traceback" not in err
    assert err.endswith(f" [{kind}]\n"), err


def test_missing_file_and_directory_are_one_line(tmp_path) -> None:
    for target in (tmp_path / "nope.bundle", tmp_path):
        code, _, err = run("inspect", str(target))
        assert code != 0 and err.count("\n") == 1 and "Traceback" not in err, err


def test_error_line_is_escaped(tmp_path) -> None:
    blob = reseal(encode(lstm_content()), lambda h: h["model"].update(
        equations="yₜ = \x1b[2J W_y·hₜ\n"))
    path = tmp_path / "evil.bundle"
    path.write_bytes(blob)
    code, _, err = run("verify", str(path))
    assert code == 1 and "\x1b" not in err and err.startswith("error: ")
