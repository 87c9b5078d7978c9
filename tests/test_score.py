"""``nnre score`` and ``Model.score``: bits per character against two hand-written oracles
(the reference NumPy LSTM, and Model.step driven one character at a time), chunks, unknown
characters, and one error line from the command."""

from __future__ import annotations

import math

import numpy as np
import pytest
import reference
from bundle_helpers import lstm_weights
from test_run_flags import nnre as command
from text_helpers import VOCAB, text_bundle

import nnre
import nnre.scoring
from nnre.errors import FeedError

TEXT = "ab c\nfed hh\ncab\n\nd"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> str:
    return str(text_bundle(tmp_path_factory.mktemp("score") / "t.bundle", seed=5))


@pytest.fixture(scope="module")
def model(bundle) -> nnre.Model:
    return nnre.load(bundle)


def reference_bits(text: str, prime: str = "\n") -> list[float]:
    """−log₂ p of each character after ``prime``, by the reference LSTM, from zeros."""
    p = {k: np.asarray(v, np.float64) for k, v in lstm_weights(6, len(VOCAB), 5,
                                                               "float64").items()}
    h, c = np.zeros(6), np.zeros(6)
    eye = np.eye(len(VOCAB))
    seq = prime + text
    bits = []
    for t in range(len(seq) - 1):
        ys, h, c = reference.lstm(p, eye[[VOCAB.index(seq[t])]], h, c)
        bits.append(-math.log2(ys[-1][VOCAB.index(seq[t + 1])] / ys[-1].sum()))
    return bits[max(len(prime) - 1, 0):]


def step_bits(model: nnre.Model, text: str, prime: str = "\n") -> list[float]:
    """The same through Model.step, one character at a time."""
    eye = np.eye(len(VOCAB))
    state, bits = None, []
    seq = prime + text
    for t in range(len(seq) - 1):
        out, state = model.step({"x": eye[VOCAB.index(seq[t])]}, state)
        bits.append(-math.log2(out["y"][VOCAB.index(seq[t + 1])] / out["y"].sum()))
    return bits[max(len(prime) - 1, 0):]


def test_bits_are_the_reference_and_the_step_by_step_sum(model) -> None:
    got = model.score(TEXT)
    np.testing.assert_allclose(got.bits, reference_bits(TEXT), rtol=1e-10)
    np.testing.assert_allclose(got.bits, step_bits(model, TEXT), rtol=1e-10)
    assert got.positions.tolist() == list(range(len(TEXT))) and got.skipped == 0
    assert got.chars == len(TEXT)
    assert got.bits_per_char == pytest.approx(sum(reference_bits(TEXT)) / len(TEXT))
    assert got.perplexity == pytest.approx(2 ** got.bits_per_char)


def test_an_empty_prime_leaves_the_first_character_unscored(model) -> None:
    got = model.score(TEXT, prime="")
    assert got.positions.tolist() == list(range(1, len(TEXT)))
    np.testing.assert_allclose(got.bits, reference_bits(TEXT, prime=""), rtol=1e-10)
    other = model.score(TEXT, prime="ab")
    np.testing.assert_allclose(other.bits, reference_bits(TEXT, prime="ab"), rtol=1e-10)


def test_long_texts_run_in_pieces_with_the_state_carried(model, monkeypatch) -> None:
    import nnre.scoring

    whole = model.score(TEXT * 5)
    monkeypatch.setattr(nnre.scoring, "PIECE", 7)
    np.testing.assert_allclose(model.score(TEXT * 5).bits, whole.bits, rtol=1e-12)


def test_context_scores_chunks_each_from_the_zero_state(model) -> None:
    got = model.score(TEXT, context=5)
    want = [b for i in range(0, len(TEXT), 5) for b in reference_bits(TEXT[i:i + 5])]
    np.testing.assert_allclose(got.bits, want, rtol=1e-10)
    assert got.positions.tolist() == list(range(len(TEXT)))
    first_of_line = [i for i in range(len(TEXT)) if i == 0 or TEXT[i - 1] == "\n"]
    assert first_of_line  # what an engineer measures: positions pick characters out
    assert got.bits[first_of_line].shape == (len(first_of_line),)


def test_unknown_characters_are_named_with_line_and_column_or_skipped(model) -> None:
    text = "ab\ncQd\nZ"
    with pytest.raises(FeedError) as err:
        model.score(text, source="notes.txt")
    assert str(err.value).startswith("notes.txt:2:2: 'Q' (U+0051) is not in the model's "
                                     "vocabulary (2 character(s) of the text are not;")
    got = model.score(text, skip_unknown=True)
    assert got.skipped == 2 and got.positions.tolist() == [0, 1, 2, 3, 5, 6]
    np.testing.assert_allclose(got.bits, reference_bits("ab\ncd\n"), rtol=1e-10)


@pytest.mark.parametrize("bad, message", [({"context": 0}, "context must be an integer ≥ 1"),
                                          ({"prime": "Q"}, "not in the model's vocabulary")])
def test_bad_arguments(model, bad, message) -> None:
    with pytest.raises(FeedError, match=message):
        model.score(TEXT, **bad)


def test_the_command_prints_bits_perplexity_and_count(bundle, model, tmp_path) -> None:
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    code, out, err = command("score", bundle, str(tmp_path / "t.txt"))
    assert code == 0, err
    s = model.score(TEXT)
    assert out == (f"bits per character  {s.bits_per_char:.4f}\n"
                   f"perplexity          {s.perplexity:.4f}\n"
                   f"characters scored   {len(TEXT)}\n")
    code, out, _ = command("score", bundle, str(tmp_path / "t.txt"), "--context", "5")
    assert f"{model.score(TEXT, context=5).bits_per_char:.4f}" in out


def test_the_command_skips_unknown_characters_when_asked(bundle, tmp_path) -> None:
    (tmp_path / "u.txt").write_text("ab\ncQd\n", encoding="utf-8")
    code, out, err = command("score", bundle, str(tmp_path / "u.txt"))
    assert code == 1 and out == "" and err.count("\n") == 1
    assert err.startswith(f"error: {tmp_path / 'u.txt'}:2:2: 'Q' (U+0051) is not in")
    assert err.rstrip().endswith("[bad-feed]")
    code, out, err = command("score", bundle, str(tmp_path / "u.txt"), "--skip-unknown")
    assert code == 0, err
    assert out.endswith("characters scored   6 (1 not in the vocabulary, skipped)\n")


@pytest.mark.parametrize("args, content, message", [
    (["--context", "0"], "ab", "Invalid value for '--context': 0 is not in the range x>=1."),
    ([], b"ab\xff", "not UTF-8 text (byte 2)"),
    ([], "", "no character to score (the text has 0)"),
])
def test_the_command_errors_are_one_line(bundle, tmp_path, args, content, message) -> None:
    path = tmp_path / "t.txt"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    code, out, err = command("score", bundle, str(path), *args)
    assert code != 0 and out == "" and err.startswith("error: ") and err.count("\n") == 1
    assert message in err, err


def test_a_model_that_is_not_a_text_model(tmp_path) -> None:
    from bundle_helpers import lstm_content

    from nnre.bundle.write import write
    write(tmp_path / "m.bundle", lstm_content())
    (tmp_path / "t.txt").write_text("ab")
    code, _, err = command("score", str(tmp_path / "m.bundle"), str(tmp_path / "t.txt"))
    assert code == 1 and "does not generate text" in err


def test_a_batch_of_texts_scores_each_as_alone(model) -> None:
    texts = [TEXT, "", "a", "cab\nd", TEXT * 3]
    got = nnre.scoring.score_batch(model, texts)
    for text, one in zip(texts, got, strict=True):
        np.testing.assert_allclose(one.bits, reference_bits(text), rtol=1e-10)
        assert one.positions.tolist() == model.score(text).positions.tolist()
    bare = nnre.scoring.score_batch(model, texts, prime="")
    for text, one in zip(texts, bare, strict=True):
        np.testing.assert_allclose(one.bits, reference_bits(text, prime=""), rtol=1e-10)
    with pytest.raises(FeedError, match=r"<texts>\[1\]:1:2"):
        nnre.scoring.score_batch(model, ["ab", "aQ"])
    skipped = nnre.scoring.score_batch(model, ["aQb"], skip_unknown=True)[0]
    assert skipped.skipped == 1 and skipped.positions.tolist() == [0, 2]
