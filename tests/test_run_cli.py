"""``nnre run``: streamed text, sampling defaults from the bundle, tensors in and out, and one
``error:`` line (never a traceback) for every bad input."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bundle_helpers import lstm_content, lstm_weights
from text_helpers import VOCAB, oracle_text, text_bundle

import nnre
from nnre.bundle.write import write

ROOT = Path(__file__).resolve().parent.parent


def nnre_run(*args: str, stdin: str | bytes | None = None) -> tuple[int, str, str]:
    data = stdin.encode() if isinstance(stdin, str) else stdin
    proc = subprocess.run([sys.executable, "-m", "nnre", "run", *args], capture_output=True,
                          input=data, cwd=ROOT, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    return proc.returncode, proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8")


@pytest.fixture(scope="module")
def text_model(tmp_path_factory) -> Path:
    return text_bundle(tmp_path_factory.mktemp("cli") / "t.bundle", seed=4,
                       sampling={"temperature": 0.7, "top_k": 4})


def test_text_is_the_oracle_text_with_bundle_defaults(text_model) -> None:
    weights = lstm_weights(6, len(VOCAB), 4, "float64")
    code, out, err = nnre_run(str(text_model), "--prime", "ab", "-n", "60", "--seed", "8")
    assert code == 0, err
    want = oracle_text(weights, VOCAB, "ab", 60, 8, temperature=0.7, top_k=4)
    assert out == "ab" + want + "\n"
    code, out2, _ = nnre_run(str(text_model), "--prime", "ab", "-n", "60", "--seed", "8",
                             "--temperature", "1.3", "--top-k", "0", "--top-p", "0.9")
    assert out2 == "ab" + oracle_text(weights, VOCAB, "ab", 60, 8, temperature=1.3,
                                      top_p=0.9) + "\n"
    code, out3, _ = nnre_run(str(text_model), "--prime", "ab", "-n", "30", "--greedy")
    assert out3 == "ab" + oracle_text(weights, VOCAB, "ab", 30, None, greedy=True) + "\n"


def test_stop_string(text_model) -> None:
    _, full, _ = nnre_run(str(text_model), "--prime", "a", "-n", "200", "--seed", "1")
    stop = full[50:52]
    _, out, _ = nnre_run(str(text_model), "--prime", "a", "-n", "200", "--seed", "1",
                         "--stop", stop)
    gen = full[1:]
    assert out == "a" + gen[:gen.index(stop) + len(stop)] + "\n"


def test_characters_stream_before_the_process_ends(text_model) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "nnre", "run", str(text_model), "--prime",
                             "a", "-n", "100000000", "--seed", "0"], stdout=subprocess.PIPE,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        first = proc.stdout.read(5)
        assert len(first) == 5 and proc.poll() is None  # still generating: output streamed
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("args, message", [
    (["--prime", "aQz€"], "3 character(s) not in the model's vocabulary: 'Q' 'z' '€'"),
    (["--temperature", "nan"], "temperature must be a finite number ≥ 0 (0: greedy)"),
    (["--top-p", "1.5"], "Invalid value for '--top-p': 1.5 is not in the range 0<x<=1."),
    (["--top-k", "-2"], "Invalid value for '--top-k'"),
    (["--output", "o.npz"], "--output goes with --input"),
])
def test_bad_text_options_are_one_error_line(text_model, args, message) -> None:
    code, out, err = nnre_run(str(text_model), *args)
    assert code != 0 and out == ""
    assert message in err and "Traceback" not in err


def test_missing_or_wrong_files(tmp_path) -> None:
    for path in (tmp_path / "nope.bundle", Path(__file__)):
        code, _, err = nnre_run(str(path), "-n", "3")
        assert code == 1 and err.startswith("error:") and err.count("\n") == 1
    # issue #15: this Python file was 'an equations text file' (it has '=' near the top)
    assert f"{Path(__file__)}: not a .bundle file: it looks like Python source code (expected " \
           "the magic 89 4e 4e 52 45 0d 0a 1a)" in err


@pytest.fixture(scope="module")
def lstm(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "l.bundle"
    write(path, lstm_content(h=3, v=4, dtype="float64"))
    return path


def test_json_input_runs_the_sequence(lstm) -> None:
    xs = np.random.default_rng(0).normal(size=(5, 4))
    code, out, err = nnre_run(str(lstm), "--input", "-", stdin=json.dumps({"x": xs.tolist()}))
    assert code == 0, err
    want = nnre.load(lstm, cache=False).run({"x": xs})[0]["y"]
    np.testing.assert_allclose(json.loads(out)["y"], want, rtol=1e-12)


def test_jsonl_one_result_per_line_in_order(lstm, tmp_path) -> None:
    rng = np.random.default_rng(1)
    feeds = [rng.normal(size=(t, 4)) for t in (1, 3, 2)]
    lines = "\n".join(json.dumps({"x": f.tolist()}) for f in feeds) + "\n"
    (tmp_path / "in.jsonl").write_text(lines)
    code, out, err = nnre_run(str(lstm), "--input-jsonl", str(tmp_path / "in.jsonl"))
    assert code == 0, err
    model = nnre.load(lstm, cache=False)
    results = out.splitlines()
    assert len(results) == 3
    for line, f in zip(results, feeds, strict=True):
        np.testing.assert_allclose(json.loads(line)["y"], model.run({"x": f})[0]["y"])


def test_npz_in_and_out(lstm, tmp_path) -> None:
    xs = np.random.default_rng(2).normal(size=(4, 2, 4))  # time, batch, features
    buf = io.BytesIO()
    np.savez(buf, x=xs)
    code, _, err = nnre_run(str(lstm), "--input", "-", "--output", str(tmp_path / "o.npz"),
                            stdin=buf.getvalue())
    assert code == 0, err
    with np.load(tmp_path / "o.npz") as got:
        np.testing.assert_allclose(got["y"], nnre.load(lstm).run({"x": xs})[0]["y"])


@pytest.mark.parametrize("feed, message", [
    ('{"x": [[1, 0, 0]]}', "input 'x' has shape [1, 3]; expected (time, 4) or "
                           "(time, batch, 4)"),
    ('{"x": [1, 0, 0, 0]}', "input 'x' has shape [4]; expected (time, 4)"),
    ('{"q": [[1, 0, 0, 0]]}', "unknown name 'q'; the model's inputs are x and its state"),
    ("{}", "missing input 'x': expected (time, 4) or (time, batch, 4) float64"),
    ('{"x": [[1, 0], [1]]}', "not a rectangular array of numbers"),
    ('{"x": [["a", "b", "c", "d"]]}', "expected numbers"),
    ('{"x": [[1, 0, 0, 0]], "h": [0, 0, 0]}', "initial state given without 'c'"),
    ("[1, 2]", "expected a JSON object"),
    ('{"x": ', "not valid JSON"),
    (b"\xff\xfe", "neither an .npz nor UTF-8 JSON"),
    (b"PK\x03\x04broken", "not a readable .npz"),
])
def test_bad_feeds_say_what_was_expected(lstm, feed, message) -> None:
    code, out, err = nnre_run(str(lstm), "--input", "-", stdin=feed)
    assert code == 1 and out == "" and "Traceback" not in err
    assert err.startswith("error: <stdin>") and message in err, err


def test_jsonl_error_names_the_line_after_earlier_results(lstm) -> None:
    code, out, err = nnre_run(str(lstm), "--input-jsonl", "-",
                              stdin='{"x": [[1,0,0,0]]}\n{"x": [[1]]}\n')
    assert code == 1 and len(out.splitlines()) == 1 and "<stdin>:2:" in err


def test_a_model_without_state_takes_one_row(tmp_path) -> None:
    from nndk.pack import build_content
    rng = np.random.default_rng(0)
    w = {"W_1": rng.normal(size=(5, 3)), "b_1": rng.normal(size=5),
         "W_2": rng.normal(size=(2, 5)), "b_2": rng.normal(size=2)}
    content = build_content("h = relu(W_1·x + b_1)\ny = softmax(W_2·h + b_2)\n", w,
                            {"name": "mlp", "version": "1.0.0", "codecs": {
                                "y": {"id": "argmax-label", "labels": ["cat", "dog"]}}})
    write(tmp_path / "m.bundle", content)
    x = rng.normal(size=(2, 3))
    code, out, err = nnre_run(str(tmp_path / "m.bundle"), "--input", "-",
                              stdin=json.dumps({"x": x.tolist()}))
    assert code == 0, err
    got = json.loads(out)
    h = np.maximum(x @ w["W_1"].T + w["b_1"], 0)
    z = h @ w["W_2"].T + w["b_2"]
    assert got["y.label"] == [["cat", "dog"][int(i)] for i in z.argmax(axis=1)]
    code, _, err = nnre_run(str(tmp_path / "m.bundle"), "-n", "5")
    assert code == 1 and "does not generate text" in err

