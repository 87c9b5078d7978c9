"""The unknown symbol: ``--min-count`` folds rare characters into U+FFFD, the bundle's char
codec carries it, and the runtime reads any character outside the vocabulary as it
(formats/bundle.md §3.5)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bundle_helpers import lstm_weights
from text_helpers import oracle_text, text_bundle

import nnre
from nnre.codecs import CharCodec
from nnre.errors import FeedError

ROOT = Path(__file__).resolve().parent.parent
UNK = "\ufffd"
VOCAB = list("abc ") + [UNK]


def test_the_char_codec_reads_unknown_characters_as_the_unknown_symbol() -> None:
    codec = CharCodec(VOCAB)
    assert codec.encode("a zé\ufffdb") == [0, 3, 4, 4, 4, 1]
    np.testing.assert_array_equal(codec.one_hot("zc"), np.eye(5, dtype=np.float32)[[4, 2]])
    with pytest.raises(FeedError, match="1 character\\(s\\) not in the model's vocabulary"):
        CharCodec(VOCAB[:-1]).encode("az")  # no unknown symbol: still refused


def test_nnre_run_primes_with_unknown_characters(tmp_path: Path) -> None:
    """The prime "zé ab" reads as "\ufffd\ufffd ab": the text equals the oracle's from that."""
    path = text_bundle(tmp_path / "u.bundle", vocab=VOCAB, seed=3)
    proc = subprocess.run([sys.executable, "-m", "nnre", "run", str(path), "--prime", "zé ab",
                           "-n", "40", "--seed", "5"], capture_output=True, cwd=ROOT,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    want = oracle_text(lstm_weights(6, len(VOCAB), 3, "float64"), VOCAB, UNK * 2 + " ab", 40, 5)
    assert proc.stdout.decode("utf-8") == "zé ab" + want + "\n"
    model = nnre.load(path)
    assert "".join(model.generate("zé ab", 40, seed=5)) == want
