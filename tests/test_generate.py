"""Text generation, the sampler and the codecs, against the longhand oracle of text_helpers."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from bundle_helpers import lstm_content, lstm_weights
from text_helpers import VOCAB, oracle_draw, oracle_text, text_bundle

import nnre
from nnre.bundle.write import write
from nnre.codecs import CODEC_TYPES, CharCodec, LabelCodec, Sampler, make_codec
from nnre.errors import BundleError, FeedError, OutputError

SETTINGS = {
    "plain": {},
    "temperature": {"temperature": 0.6},
    "hot": {"temperature": 1.7},
    "top_k": {"top_k": 3},
    "top_p": {"top_p": 0.7},
    "all": {"temperature": 0.8, "top_k": 5, "top_p": 0.9},
    "greedy": {"greedy": True},
    "temperature 0": {"temperature": 0},
    "min_p": {"min_p": 0.3},
    "min_p hot": {"min_p": 0.1, "temperature": 1.5, "top_k": 6},
    "repeat_penalty": {"repeat_penalty": 1.3},
    "repeat_penalty < 1": {"repeat_penalty": 0.7, "temperature": 0.9},
    "greedy repeat_penalty": {"greedy": True, "repeat_penalty": 1.5},
}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> nnre.Model:
    return nnre.load(text_bundle(tmp_path_factory.mktemp("gen") / "t.bundle", seed=3))


@pytest.mark.parametrize("name", SETTINGS)
def test_generate_matches_the_oracle(model, name) -> None:
    settings = SETTINGS[name]
    weights = lstm_weights(6, len(VOCAB), 3, "float64")
    want = oracle_text(weights, VOCAB, "ab c", 80, 11, **settings)
    got = "".join(model.generate("ab c", 80, seed=11, **settings))
    assert got == want
    if "greedy" not in name and name != "temperature 0":
        assert len(set(got)) > 2  # a real draw, not a constant


def test_same_seed_same_text_other_seed_other_text(model) -> None:
    a = "".join(model.generate("a", 200, seed=5))
    assert a == "".join(model.generate("a", 200, seed=5))
    assert a != "".join(model.generate("a", 200, seed=6))


def test_generators_are_independent(model) -> None:
    solo = "".join(model.generate("h", 50, seed=2))
    g1, g2 = model.generate("h", 50, seed=2), model.generate("h", 50, seed=2)
    both = [(next(g1), next(g2)) for _ in range(50)]
    assert "".join(a for a, _ in both) == solo == "".join(b for _, b in both)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(
        "".join(model.generate("h", 300, seed=2)))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and results[0].startswith(solo)


def test_stop_ends_after_the_stop_string(model) -> None:
    full = "".join(model.generate("a", 300, seed=1))
    stop = full[40:42]
    got = "".join(model.generate("a", 300, seed=1, stop=stop))
    assert got == full[:full.index(stop) + len(stop)]


def test_bad_prime_lists_the_unknown_characters(model) -> None:
    with pytest.raises(FeedError) as err:
        model.generate("aXbZ€a", 10)  # raised at the call, not at the first next()
    assert "'X' 'Z' '€'" in str(err.value) and "not in the model's vocabulary" in str(err.value)
    with pytest.raises(FeedError, match="prime of at least one"):
        model.generate("", 10)


@pytest.mark.parametrize("bad", [{"temperature": -0.5}, {"temperature": float("nan")},
                                 {"top_k": -1}, {"top_p": 0}, {"top_p": 1.5}, {"seed": -1},
                                 {"min_p": 1.5}, {"min_p": -0.1}, {"repeat_penalty": 0},
                                 {"repeat_penalty": float("inf")}, {"repeat_last_n": -1},
                                 {"repeat_last_n": 2.5}])
def test_bad_settings_are_feed_errors(model, bad) -> None:
    with pytest.raises(FeedError, match=next(iter(bad))):
        model.generate("a", 5, **bad)


def test_a_model_without_text_codecs_cannot_generate(tmp_path) -> None:
    from bundle_helpers import lstm_content

    from nnre.bundle.write import write
    write(tmp_path / "m.bundle", lstm_content())
    with pytest.raises(FeedError, match="does not generate text"):
        nnre.load(tmp_path / "m.bundle").generate("a", 5)


def test_sampler_matches_the_oracle_on_random_distributions() -> None:
    rng = np.random.default_rng(0)
    for name, settings in SETTINGS.items():
        sampler, oracle_rng = Sampler(12, seed=9, **settings), np.random.default_rng(9)
        sampler.remember([3, 5])
        history = [3, 5]
        for _ in range(300):
            p = rng.dirichlet(np.full(12, 0.3))
            p[rng.integers(12)] = 0.0  # zeros must never be drawn
            want = oracle_draw([float(q) for q in p], oracle_rng, recent=history[-64:],
                               **settings)
            got = sampler(p)
            assert got == want, name
            assert p[got] > 0
            history.append(got)


def test_min_p_keeps_what_is_at_least_min_p_times_the_top() -> None:
    p = np.array([0.05, 0.4, 0.3, 0.25])  # 0.3 × 0.4 = 0.12: index 0 goes
    sampler = Sampler(4, seed=0, min_p=0.3)
    assert {sampler(p) for _ in range(400)} == {1, 2, 3}
    sampler = Sampler(4, seed=0, min_p=0.7)  # 0.28: only 0.4 and 0.3 are kept
    assert {sampler(p) for _ in range(400)} == {1, 2}
    sampler = Sampler(4, seed=0, min_p=1.0, temperature=5.0)  # the top alone, however hot
    assert {sampler(p) for _ in range(100)} == {1}


def test_repeat_penalty_by_hand() -> None:
    """The rule on numbers checked on paper: log2 p = [-1, -2, -3, -3] has mean -2.25, so the
    centred logits are [1.25, 0.25, -0.75, -0.75] (× ln 2); indices 0 and 2 were seen, θ = 6:
    the positive 1.25 is divided (0.2083…), the negative -0.75 multiplied (-4.5)."""
    p = np.array([0.5, 0.25, 0.125, 0.125])
    sampler = Sampler(4, seed=0, repeat_penalty=6.0, greedy=True)
    sampler.remember([0, 2, 0])
    z = np.array([1.25 / 6, 0.25, -4.5, -0.75])
    want = 2.0 ** (z - z.max())
    np.testing.assert_allclose(sampler._penalized(p), want, rtol=1e-12)
    assert sampler(p) == 1  # 0 lost its lead
    assert Sampler(4, seed=0, greedy=True)(p) == 0
    window = Sampler(4, seed=0, repeat_penalty=6.0, repeat_last_n=2, greedy=True)
    window.remember([0, 2, 3])  # 0 fell out of the last 2
    assert window(p) == 0


def test_top_k_and_top_p_keep_only_the_head() -> None:
    p = np.array([0.05, 0.4, 0.3, 0.25])
    for settings, allowed in (({"top_k": 2}, {1, 2}), ({"top_p": 0.65}, {1, 2}),
                              ({"top_p": 0.3}, {1}), ({"greedy": True}, {1})):
        sampler = Sampler(4, seed=0, **settings)
        assert {sampler(p) for _ in range(400)} == allowed


def test_codec_table_and_unknown_ids() -> None:
    assert set(CODEC_TYPES) == {"tensor", "char", "sample", "argmax-label"}
    with pytest.raises(BundleError) as err:
        make_codec({"id": "pickle"})
    assert "'pickle'" in str(err.value) and "char, sample, argmax-label" in str(err.value)
    assert make_codec({"id": "argmax-label", "labels": ["no", "yes"]}).decode(
        np.array([[0.2, 0.8], [0.9, 0.1]])) == ["yes", "no"]
    assert isinstance(make_codec({"id": "char", "vocab": ["a"]}), CharCodec)
    assert LabelCodec(["a", "b", "c"]).decode(np.array([1.0, 3.0, 3.0])) == "b"
    np.testing.assert_array_equal(CharCodec("ab").one_hot("ba"), [[0, 1], [1, 0]])


def test_step_is_run_one_step_at_a_time(model) -> None:
    xs = np.eye(len(VOCAB))[[1, 4, 2, 7]]
    ys, final = model.run({"x": xs})
    state = None
    for t, x in enumerate(xs):
        out, state = model.step({"x": x}, state)
        np.testing.assert_allclose(out["y"], ys["y"][t], rtol=1e-12)
    for k in final:
        np.testing.assert_allclose(state[k], final[k], rtol=1e-12)
    batch = np.stack([xs[:2], xs[2:]], axis=1)  # (T=2, B=2, V)
    ys2, _ = model.run({"x": batch})
    out, _ = model.step({"x": batch[0]})
    np.testing.assert_allclose(out["y"], ys2["y"][0], rtol=1e-12)


def test_step_returns_copies(model) -> None:
    x = np.eye(len(VOCAB))[0]
    out, state = model.step({"x": x})
    keep = {k: v.copy() for k, v in state.items()}
    out2, state2 = model.step({"x": x}, state)
    out["y"][:] = 7
    for k in state:
        np.testing.assert_array_equal(state[k], keep[k])
        assert not np.shares_memory(state[k], state2[k])
    again, _ = model.step({"x": x}, state)
    np.testing.assert_array_equal(again["y"], out2["y"])


@pytest.mark.parametrize("bad, why", [
    ([0.5, np.nan, 0.5], "index 1 is nan"),
    ([0.5, np.inf, 0.5], "index 1 is inf"),
    ([0.5, 0.5, -np.inf], "index 2 is -inf"),
    ([0.9, -0.1, 0.2], "index 1 is -0.1"),
    ([0.0, 0.0, 0.0], "every value is 0"),
    ([1e308, 1e308, 1e308], "overflows to infinity"),
])
@pytest.mark.parametrize("settings", [{}, {"temperature": 0.5, "top_k": 2, "top_p": 0.9},
                                      {"greedy": True}])
def test_sampling_from_a_non_distribution_is_an_output_error(bad, why, settings) -> None:
    sampler = Sampler(3, seed=0, **settings)
    sampler(np.array([0.2, 0.3, 0.5]))
    with pytest.raises(OutputError) as err:
        sampler(np.array(bad))
    assert err.value.code == "bad-output"
    assert str(err.value).startswith("sampling step 2: the output is not a probability")
    assert why in str(err.value)


def test_generating_from_a_model_that_outputs_nan_is_one_error_line(tmp_path) -> None:
    content = lstm_content(3, len(VOCAB), "float64", codecs={
        "x": {"id": "char", "vocab": VOCAB}, "y": {"id": "sample", "vocab": VOCAB}})
    content.tensors["b_y"][0] = np.nan  # the output's first entry: NaN after softmax
    write(tmp_path / "nan.bundle", content)
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-m", "nnre", "run", str(tmp_path / "nan.bundle"),
                           "-n", "5", "--no-cache", "--seed", "0"], capture_output=True, text=True,
                          timeout=120, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: sampling step 1: the output is not a probability")
    assert proc.stderr.rstrip().endswith("[bad-output]") and proc.stderr.count("\n") == 1


PRIMES = ["ab c", "h", "fed\nab", "a"]  # different lengths: aligned at their ends


def test_a_batch_of_primes_is_each_prime_alone_with_seed_plus_i(model) -> None:
    """One batched step per character, yet prime i gives what it gives alone with seed + i
    (its own sampler), which is also the hand-written oracle's text."""
    weights = lstm_weights(6, len(VOCAB), 3, "float64")
    settings = {"temperature": 0.9, "top_k": 6, "min_p": 0.05, "repeat_penalty": 1.2}
    steps = list(model.generate(PRIMES, 60, seed=5, **settings))
    assert len(steps) == 60 and all(len(s) == len(PRIMES) for s in steps)
    texts = ["".join(column) for column in zip(*steps, strict=True)]
    for i, prime in enumerate(PRIMES):
        alone = "".join(model.generate(prime, 60, seed=5 + i, **settings))
        assert texts[i] == alone == oracle_text(weights, VOCAB, prime, 60, 5 + i, **settings)
    assert len(set(texts)) == len(PRIMES)


def test_a_batch_stops_each_stream_at_its_own_stop(model) -> None:
    alone = ["".join(model.generate(p, 200, seed=7 + i)) for i, p in enumerate(PRIMES)]
    stop = "a"  # every stream draws one sooner or later
    steps = list(model.generate(PRIMES, 200, seed=7, stop=stop))
    texts = ["".join(column) for column in zip(*steps, strict=True)]
    for text, full in zip(texts, alone, strict=True):
        assert text == full[:full.index(stop) + 1]
    assert len(steps) == max(map(len, texts))  # ends when the last stream stopped
    for i, text in enumerate(texts):  # a stopped stream gives "" from then on
        assert all(len(s[i]) == 1 for s in steps[:len(text)])
        assert all(s[i] == "" for s in steps[len(text):])
    assert len(set(map(len, texts))) > 1


def test_greedy_is_the_argmax_of_the_models_probabilities_step_by_step(model) -> None:
    """Independent of the sampler: Model.step, argmax, feed it back."""
    eye = np.eye(len(VOCAB))
    for prime in PRIMES:
        state, want = None, []
        for ch in prime:
            out, state = model.step({"x": eye[VOCAB.index(ch)]}, state)
        for _ in range(40):
            code = int(np.argmax(out["y"]))
            want.append(VOCAB[code])
            out, state = model.step({"x": eye[code]}, state)
        assert "".join(model.generate(prime, 40, temperature=0)) == "".join(want)
        assert "".join(model.generate(prime, 40, greedy=True)) == "".join(want)
    batch = ["".join(c) for c in zip(*model.generate(PRIMES, 40, temperature=0), strict=True)]
    assert batch == ["".join(model.generate(p, 40, greedy=True)) for p in PRIMES]


@pytest.mark.parametrize("primes", [[], ["a", ""], ["a", 3], "", b"ab"])
def test_a_bad_list_of_primes_is_a_feed_error(model, primes) -> None:
    with pytest.raises(FeedError, match="prime of at least one character"):
        model.generate(primes, 5)


def test_a_batch_zeroes_a_late_primes_state_at_every_lag() -> None:
    """State read two steps back lives in a ring of three phases: a shorter prime starts
    later, so all of its ring rows must be zero at its first step, as when it runs alone."""
    eq = ("xₜ ∈ ℝ^V\nhₜ ∈ ℝ^H\nhₜ = tanh(W xₜ + U hₜ₋₁ + Q hₜ₋₂ + b)\n"
          "yₜ = softmax(W_y hₜ + b_y)\n")
    rng = np.random.default_rng(0)
    w = {"W": rng.normal(size=(4, 5)), "U": rng.normal(size=(4, 4)),
         "Q": rng.normal(size=(4, 4)), "b": rng.normal(size=4),
         "W_y": 2 * rng.normal(size=(5, 4)), "b_y": rng.normal(size=5)}
    vocab = list("abcde")
    m = nnre.Model.from_equations(eq, w, dtype="float64", metadata={"codecs": {
        "x": {"id": "char", "vocab": vocab}, "y": {"id": "sample", "vocab": vocab}}})
    assert m.step_stage(1).phases == 3
    primes = ["abcde", "a", "cc", "edcba"]
    batch = ["".join(c) for c in zip(*m.generate(primes, 50, seed=3), strict=True)]
    assert batch == ["".join(m.generate(p, 50, seed=3 + i)) for i, p in enumerate(primes)]


def test_a_batch_past_the_budget_is_refused_at_the_call(model) -> None:
    from nnre import budget

    try:
        budget.set_limit(model.memory(1) + 100_000)
        model.generate("a", 5)  # one text fits
        with pytest.raises(FeedError, match="generating 100 texts as one batch: .* past the "
                                            "memory budget"):
            model.generate(["a"] * 100, 5)  # raised here, not at the first character
    finally:
        budget.set_limit(None)
