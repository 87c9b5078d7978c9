"""The memory budget: sizes a text, a file, an input or a flag asks for are refused before any
allocation, with the project's own error naming the value, its shape and the total."""

from __future__ import annotations

import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from nnre import budget
from nnre.compiler import compile_program
from nnre.equations import check
from nnre.errors import EquationError, FeedError
from nnre.model import Model

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "lighthouse.bundle"


@pytest.fixture
def small_budget() -> Iterator[int]:
    budget.set_limit(64 << 20)
    yield 64 << 20
    budget.set_limit(None)


def _compile(text: str, dims: dict[str, int]) -> None:
    checked = check(text, dims)
    compile_program(checked.sympy, checked.roles)


def test_a_literal_of_declared_size_is_refused_before_it_is_filled(small_budget: int) -> None:
    tracemalloc.start()
    with pytest.raises(EquationError, match=r"'y' makes a 100000×100000 value .*memory budget"):
        _compile("x ∈ ℝ^H\nW ∈ ℝ^(H×H)\ny = (W + 1) x", {"H": 100_000})  # 1: 40 GB
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < small_budget


def test_a_product_of_parameters_folded_once_is_refused(small_budget: int) -> None:
    """200 KB of weights whose product in the prologue would be 10 GB."""
    n = 50_000
    weights = {"A": np.ones((n, 1), np.float32), "B": np.ones((1, n), np.float32)}
    with pytest.raises(EquationError, match="50000×50000 value"):
        Model.from_equations("x ∈ ℝ^50000\ny = A B x", weights)


def test_doubling_chains_are_refused_by_the_default_budget() -> None:
    """[a; a] per line doubles a size (up to the 2³¹−1 cap on one dimension), and each line
    more adds 4 GiB: 100 lines ask for ~400 GiB, past the default budget of any machine with
    less than 800 GiB of memory."""
    lines = ["x ∈ ℝ^(2^28)".replace("2^28", str(1 << 28)), "a0 = x"]
    lines += [f"a{i} = [a{i - 1}; a{i - 1}]" for i in range(1, 3)]  # 2³⁰ entries
    lines += [f"b{i} = {i + 2} ⊙ a2" for i in range(100)]
    start = time.perf_counter()
    with pytest.raises(EquationError, match="memory budget"):
        _compile("\n".join(lines), {})
    assert time.perf_counter() - start < 5


def test_a_run_past_the_budget_is_refused_before_binding(small_budget: int) -> None:
    model = Model.from_equations("hₜ = tanh(W xₜ + U hₜ₋₁)",
                                 {"W": np.eye(64, dtype=np.float32),
                                  "U": np.eye(64, dtype=np.float32)})
    per_row = model.memory(1) - model.memory(0)
    steps = small_budget // per_row + 1  # one row more than fits
    feeds = {"x": np.broadcast_to(np.float32(0), (steps, 1, 64))}  # a view: nothing allocated
    with pytest.raises(FeedError, match=f"running {steps:,} rows.*memory budget"):
        model.run(feeds)
    out, _ = model.run({"x": np.zeros((3, 1, 64), np.float32)})  # a small run still works
    assert out["h"].shape == (3, 1, 64)


def test_the_budget_is_a_setting() -> None:
    assert budget.parse_bytes("512M") == 512 << 20 and budget.parse_bytes("1.5G") == 3 << 29
    for bad in ("", "-1", "0", "lots", "1" * 40):
        with pytest.raises(ValueError):
            budget.parse_bytes(bad)


def _nnre(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "nnre", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})}, cwd=ROOT)


def test_cli_reports_and_applies_the_budget() -> None:
    ok = _nnre("verify", str(SAMPLE))
    assert ok.returncode == 0 and "to run at batch 1" in ok.stdout
    for args, env in ((["--max-bytes", "100K"], None), ([], {"NNRE_MAX_BYTES": "100K"})):
        refused = _nnre(*args, "run", str(SAMPLE), "--prime", "a", "-n", "5", env=env)
        assert refused.returncode != 0 and "Traceback" not in refused.stderr
        assert refused.stderr.startswith("error:") and "memory budget of 100.0 KiB" in \
            refused.stderr, refused.stderr
    bad = _nnre("--max-bytes", "lots", "verify", str(SAMPLE))
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "lots" in bad.stderr


def test_a_conv_whose_columns_pass_the_budget_is_refused(small_budget: int) -> None:
    """im2col makes kernel · C entries per output position while conv runs: a 41×41 kernel
    over a 128×128 image allocated ~220 MB under a 64 MB budget without a word."""

    text = "input x\nx ∈ ℝ^(1×128×128)\nK ∈ ℝ^(1×1×41×41)\ny = conv(K, x; pad=20)"
    with pytest.raises(EquationError, match="past the memory budget"):
        Model.from_equations(text, {"K": np.ones((1, 1, 41, 41))}, dtype="float64")
    small = "input x\nx ∈ ℝ^(2×16×16)\nK ∈ ℝ^(3×2×5×5)\ny = conv(K, x; pad=2)"
    m = Model.from_equations(small, {"K": np.ones((3, 2, 5, 5))}, dtype="float64")
    tracemalloc.start()
    m.step({"x": np.ones((4, 2, 16, 16))})
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak <= m.memory(4) * 1.5, (peak, m.memory(4))
