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


# -- training: --min-count -------------------------------------------------------------------

RARE = "ΩЖ€"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Common words, and three rare characters: Ω twice, Ж and € once each."""
    import random

    rng = random.Random(1)
    words = "the quick brown fox jumps over a lazy dog".split()
    parts = [rng.choice(words) for _ in range(2500)]
    for i, ch in zip((100, 900, 1700, 2300), "ΩΩЖ€", strict=True):
        parts[i] += ch
    path = tmp_path_factory.mktemp("data") / "rare.txt"
    path.write_text(" ".join(parts), encoding="utf-8")
    return path


def small(**over: object):  # type: ignore[no-untyped-def]
    from nndk.train import TrainConfig

    base = dict(dims={"H": 8}, seq_length=8, batch_size=4, steps=4, eval_every=4,
                sample_length=0, lr=1e-2)
    return TrainConfig(**(base | over))  # type: ignore[arg-type]


@pytest.mark.parametrize("min_count, folded", [(1, ""), (2, "Ж€"), (3, "ΩЖ€")])
def test_min_count_folds_rare_characters_into_the_unknown_symbol(corpus: Path,
                                                                 min_count: int,
                                                                 folded: str) -> None:
    from nndk.data import load_text

    text = corpus.read_text(encoding="utf-8")
    data = load_text(corpus, 0.1, min_count=min_count)
    kept = sorted({ch for ch in text if text.count(ch) >= min_count})
    want_vocab = "".join(sorted(kept + ([UNK] if folded else [])))
    assert data.vocab == want_vocab
    codes = [want_vocab.index(ch if ch in kept else UNK) for ch in text]  # longhand
    np.testing.assert_array_equal(np.concatenate([data.train, data.val]), codes)
    assert data.folded == (len(folded), sum(text.count(ch) for ch in folded))


def test_a_min_count_model_packs_the_symbol_and_generates_from_unseen_primes(
        corpus: Path, tmp_path: Path) -> None:
    from nndk.pack import PackRequest, pack
    from nndk.train import start

    trainer = start(small(min_count=3), corpus)
    assert trainer.notes == ["3 rare character(s) (4 occurrences) read as the unknown symbol "
                             "U+FFFD (--min-count 3)"]
    trainer.fit(tmp_path / "ck", lambda _: None)
    out = tmp_path / "m.bundle"
    pack(PackRequest(tmp_path / "ck", None, out, "m", "1.0.0", created="2026-01-01T00:00:00Z"))
    model = nnre.load(out)
    assert model.metadata["codecs"]["x"]["vocab"][-1] == UNK
    assert model.metadata["provenance"]["hyperparameters"]["min_count"] == 3
    # a prime with a rare character and an unseen one reads both as U+FFFD
    assert "".join(model.generate("Ω 日", 30, seed=2)) == \
        "".join(model.generate(UNK + " " + UNK, 30, seed=2))


def test_resume_keeps_the_folded_vocabulary_and_refuses_another_min_count(
        corpus: Path, tmp_path: Path) -> None:
    from nndk.config import ConfigError
    from nndk.train import resume, start

    straight = start(small(min_count=2, steps=6, eval_every=3), corpus)
    straight.fit(tmp_path / "a", lambda _: None)
    start(small(min_count=2, steps=3, eval_every=3), corpus).fit(tmp_path / "b", lambda _: None)
    again = resume(tmp_path / "b", steps=6)
    assert again.data.vocab == straight.data.vocab
    again.fit(tmp_path / "b", lambda _: None)
    for name, value in straight.params.items():
        np.testing.assert_array_equal(again.params[name], value, err_msg=name)
    with pytest.raises(ConfigError, match="--min-count 3 differs from the checkpoint's 2"):
        resume(tmp_path / "b", steps=9, changes={"min_count": 3})
