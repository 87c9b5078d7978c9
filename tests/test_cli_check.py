"""``nndk check`` end to end: what it prints, and one error line with exit 1 on bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from nndk.cli import cli


def test_check_template_prints_roles_shapes_and_program() -> None:
    result = CliRunner().invoke(cli, ["check", "lstm", "--set", "H=16", "--set", "V=7"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "dims: H=16, V=7" in out
    assert "inputs: x (7,)" in out
    assert "state: h (16,), c (16,)" in out
    assert "  W_f (16, 7)" in out and "  b_y (7,)" in out
    # 4 gates × (W: 16×7, U: 16×16, b: 16) + W_y 7×16 + b_y 7
    assert f"parameters: 14 arrays, {4 * (16 * 7 + 16 * 16 + 16) + 7 * 16 + 7:,} values" in out
    assert "= softmax(" in out and "loop (each step)" in out


def test_check_error_is_one_located_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.eqn"
    bad.write_text("xₜ ∈ ℝ^3\nyₜ = tanh(W xₜ + U hₜ₋₁)\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "nndk", "check", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: {bad}:2:20: 'hₜ₋₁' reads an earlier step of 'h'")
    assert "Traceback" not in proc.stderr


def test_check_unbound_dimension_and_bad_binding() -> None:
    result = CliRunner().invoke(cli, ["check", "gru"])
    assert result.exit_code == 1
    result = CliRunner().invoke(cli, ["check", "gru", "--set", "H=abc"])
    assert result.exit_code == 1


def test_check_missing_file_and_non_utf8(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "nndk", "check", str(tmp_path / "nope.eqn")],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.startswith("error: no equation file")
    binary = tmp_path / "bin.eqn"
    binary.write_bytes(b"h = \xff\xfe")
    proc = subprocess.run([sys.executable, "-m", "nndk", "check", str(binary)],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: {binary}: not UTF-8 text (byte 4: 0xff) [equation-error]"


def test_usage_errors_are_one_line_with_a_pointer_to_help() -> None:
    for argv, start in ((["nndk", "train"], "error: Missing argument 'DATA'."),
                        (["nndk", "bogus"], "error: No such command 'bogus'."),
                        (["nnre", "--threads", "0", "verify", "x"], "error: Invalid value")):
        proc = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(start), proc.stderr
        assert lines[0].endswith("--help')")


def test_threads_option_sets_the_blas_thread_count() -> None:
    code = ("import sys; from nnre.cli import cli; from nnre.threads import get_blas_threads;"
            "cli.main(['--threads', '1', 'verify', sys.argv[1]], standalone_mode=False);"
            "print(get_blas_threads())")
    bundle = Path(__file__).resolve().parent.parent / "samples" / "lighthouse.bundle"
    proc = subprocess.run([sys.executable, "-c", code, str(bundle)], capture_output=True,
                          text=True, check=True)
    assert proc.stdout.strip().splitlines()[-1] == "1"  # NumPy wheels bundle OpenBLAS


def _threads_after(argv: list[str], env: dict[str, str] | None = None) -> str:
    """The BLAS thread count after running a CLI in a fresh process."""
    import os

    code = ("import sys; from nnre.cli import run_cli, cli; from nnre.threads import "
            "get_blas_threads;\ntry:\n    sys.argv = ['nnre', *sys.argv[1:]]; run_cli(cli, 'nnre')"
            "\nexcept SystemExit: pass\nprint(get_blas_threads())")
    environ = {k: v for k, v in os.environ.items() if k != "NNRE_THREADS"} | (env or {})
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          check=True, env=environ)
    return proc.stdout.strip().splitlines()[-1]


def test_the_cli_runs_one_blas_thread_unless_told() -> None:
    bundle = str(Path(__file__).resolve().parent.parent / "samples" / "lighthouse.bundle")
    assert _threads_after(["verify", bundle]) == "1"
    assert _threads_after(["verify", "--threads", "2", bundle]) == "2"  # after the command
    assert _threads_after(["--threads", "2", "verify", bundle]) == "2"
    assert _threads_after(["verify", bundle], {"NNRE_THREADS": "2"}) == "2"


def test_a_model_used_as_a_library_leaves_the_hosts_thread_count_alone() -> None:
    """Products run on one thread between two setter calls; the host's count is restored."""
    code = """
import numpy as np, nnre
from nnre.threads import get_blas_threads
from nnre.vm import bind_stage
before = get_blas_threads()
m = nnre.Model.from_equations("hₜ = tanh(W xₜ + U hₜ₋₁)", {"W": np.eye(4), "U": np.eye(4)})
m.run({"x": np.ones((3, 2, 4))})
stage = m.step_stage(1)
names = [getattr(getattr(c, "func", c), "__name__", "") for c in stage.tapes[0]]
print(before, get_blas_threads(), sum("set_num_threads" in n for n in names))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    before, after, setters = proc.stdout.split()
    assert before == after  # restored after every product
    assert int(setters) >= 2 or before == "1"  # the one-thread switch around the product


def test_check_takes_the_default_dimensions_and_names_the_one_to_set() -> None:
    """nndk check binds the dimensions training defaults (F, G for the cnn) and says which
    one is still missing, by name, in one error line."""
    missing = subprocess.run([sys.executable, "-m", "nndk", "check", "cnn"],
                             capture_output=True, text=True)
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: cnn.eqn:12:11: conv needs the size of 'W_1', "
                                     "which is (F=16, C, 3, 3) here (expected --set C=…")
    ok = CliRunner().invoke(cli, ["check", "cnn", "--set", "C=1", "--set", "S=8",
                                  "--set", "K=10"])
    assert ok.exit_code == 0, ok.output
    assert "dims: C=1, F=16, G=32, K=10, S=8" in ok.output
    assert "parameters: 6 arrays, 6,090 values" in ok.output
