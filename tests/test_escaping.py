"""Every string from a file that nnre prints is escaped: labels, generated characters.

A bundle's labels and vocabulary are arbitrary strings; printed raw, a right-to-left override
(U+202E) reorders what the terminal shows and an 8-bit CSI (U+009B) or ESC starts a terminal
command. ``nnre inspect`` escaped them already; ``nnre run`` now does too, with the same rule.
"""

from __future__ import annotations

import json

import numpy as np
from test_run_cli import nnre_run
from text_helpers import text_bundle

from nnre.bundle.info import escaped, json_escaped
from nnre.bundle.write import write

HOSTILE = ["\u202eevil", "\x9b31m", "\x1b[2J", "\u2028", "ok café"]
RAW = ("\u202e", "\x9b", "\x1b", "\u2028")


def assert_no_raw(text: str) -> None:
    for ch in RAW:
        assert ch not in text, repr(text)


def test_the_escaping_rules() -> None:
    assert escaped("a\u202eb\x9bc\n") == "a\\u202eb\\x9bc\\n"
    assert escaped("a\n\tb\x1b", keep="\n\t") == "a\n\tb\\x1b"
    doc = json.dumps({"l": HOSTILE}, ensure_ascii=False)
    safe = json_escaped(doc)
    assert_no_raw(safe)
    assert "café" in safe and json.loads(safe) == {"l": HOSTILE}


def labelled(tmp_path):
    from nndk.pack import build_content
    rng = np.random.default_rng(0)
    n = len(HOSTILE)
    w = {"W_1": rng.normal(size=(n, 3)), "b_1": rng.normal(size=n)}
    content = build_content("y = softmax(W_1·x + b_1)\n", w, {
        "name": "labels", "version": "1.0.0",
        "codecs": {"y": {"id": "argmax-label", "labels": HOSTILE}}})
    write(tmp_path / "m.bundle", content)
    return tmp_path / "m.bundle"


def test_labels_printed_by_run_input_are_escaped(tmp_path) -> None:
    path = labelled(tmp_path)
    x = np.random.default_rng(1).normal(size=(64, 3))
    code, out, err = nnre_run(str(path), "--input", "-", stdin=json.dumps({"x": x.tolist()}))
    assert code == 0, err
    assert_no_raw(out)
    labels = json.loads(out)["y.label"]
    assert set(labels) - set(HOSTILE) == set() and len(set(labels)) > 2
    lines = "".join(json.dumps({"x": row}) + "\n" for row in x[:20].tolist())
    code, out, err = nnre_run(str(path), "--input-jsonl", "-", stdin=lines)
    assert code == 0, err
    assert_no_raw(out)
    assert all(json.loads(line)["y.label"] in HOSTILE for line in out.splitlines())


def test_generated_text_escapes_a_hostile_vocabulary(tmp_path) -> None:
    vocab = ["\n", "a", "b", "\u202e", "\x9b", "\x1b", "\u2028"]
    path = text_bundle(tmp_path / "t.bundle", vocab=vocab, seed=3)
    code, out, err = nnre_run(str(path), "-n", "400", "--seed", "1")
    assert code == 0, err
    assert_no_raw(out)
    assert "\\u202e" in out and "\\x9b" in out and "\\x1b" in out and "\n" in out.rstrip("\n")
