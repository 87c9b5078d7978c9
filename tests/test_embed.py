"""samples/embed: the embedding example runs, and its hand-driven step() loop agrees with
greedy generation and with the oracle."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from bundle_helpers import lstm_weights
from text_helpers import VOCAB, oracle_text, text_bundle

import nnre

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "samples" / "embed" / "app.py"


def load_app():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("embed_app", APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hand_driven_step_loop_is_greedy_generation(tmp_path) -> None:
    model = nnre.load(text_bundle(tmp_path / "t.bundle", seed=5))
    got = load_app().greedy_continue(model, "ab ", 40)
    assert got == "".join(model.generate("ab ", 40, greedy=True))
    assert got == oracle_text(lstm_weights(6, len(VOCAB), 5, "float64"), VOCAB, "ab ", 40,
                              None, greedy=True)


def test_app_runs_on_the_sample_bundle(tmp_path) -> None:
    proc = subprocess.run([sys.executable, str(APP), "--seed", "3"], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("lighthouse-lstm") and lines[1].startswith("sampled: ")
    model = nnre.load(ROOT / "samples" / "lighthouse.bundle")
    want = "".join(model.generate("Wind from the ", 60, greedy=True))
    assert lines[-1] == "greedy:  " + repr(want)
