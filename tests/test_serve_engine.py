"""The batchers without HTTP: rows drawn together are drawn as one by one, streams stepped
together give what each gives alone, stop strings are cut as OpenAI cuts them."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import numpy as np
import pytest
from serve_helpers import SAMPLES

import nnre
from nnre.codecs import Sampler, text_io
from nnre.draws import draw_rows
from nnre.errors import OutputError
from nnre.serve import rows as staterows
from nnre.serve.engine import StopFilter, TextEngine, TextStream

SETTINGS: list[dict[str, Any]] = [
    {}, {"temperature": 0.8}, {"temperature": 0.5}, {"greedy": True}, {"temperature": 0},
    {"top_k": 5}, {"top_p": 0.9}, {"repeat_penalty": 1.2}, {"min_p": 0.1},
    {"temperature": 1.3}, {"temperature": 0.7, "top_k": 3, "top_p": 0.8},
    {"top_k": 1}, {"top_p": 0.3, "min_p": 0.05}, {"temperature": 0.8, "top_k": 60},
    {"temperature": 0.9, "top_p": 1.0, "min_p": 0.2}, {"top_k": 12, "temperature": 2.0},
    {"top_p": 0.999, "temperature": 0.5}]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mixed", [True, False])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("common", [{"temperature": 0.8, "top_p": 0.9},
                                    {"temperature": 0.7, "top_k": 6, "top_p": 0.8,
                                     "min_p": 0.05}])
def test_draw_rows_is_each_sampler_called_on_its_row(dtype: Any, mixed: bool, ties: bool,
                                                     common: dict[str, Any]) -> None:
    """Every setting and mix of settings, rows with ties (top-k and top-p keep the lower
    index) and zeros, bad rows among good ones: the index or error each sampler gives
    alone, and the same random numbers used (draw counts, then the next draws agree)."""
    rng = np.random.default_rng(1)
    rows, width = 40, 51

    def samplers() -> list[Sampler]:
        return [Sampler(width, seed=i, **(SETTINGS[i % len(SETTINGS)] if mixed
                                          else common))
                for i in range(rows)]

    together, alone = samplers(), samplers()
    for step in range(200):
        probs = (rng.random((rows, width)) ** 4).astype(dtype)
        if ties:  # a few distinct values per row: many ties, and whole rows of one value
            probs = np.round(probs * 4) / 4
            probs[step % rows] = 0.5
        if step % 50 == 7:
            probs[3, 5] = np.nan  # a bad row: its own error, the others drawn as ever
        if step % 60 == 9:
            probs[12] = 0
        if step % 70 == 11 and dtype == np.float64:
            probs[20, :2] = 1e308  # finite values whose running sum overflows
        got = draw_rows(together, probs)
        for i in range(rows):
            try:
                want: Any = alone[i](probs[i])
            except OutputError as err:
                want = str(err)
            assert (got[i] if isinstance(got[i], int) else str(got[i])) == want, (step, i)
            assert together[i].draws == alone[i].draws


@pytest.mark.parametrize("zero_weight", [False, True])
def test_ring_steps_are_model_step_bit_for_bit(zero_weight: bool) -> None:
    """The engine's stepper (state left in the tape's ring, the one-hot input's product
    taken as weight rows) against ``Model.step`` on one-hot rows: the same outputs and state,
    bit for bit, over steps at batch 1, 3 and 32 with rows reordered and states put in
    between. With a zero weight the product is kept (a zero could change sign)."""
    from nnre.codecs import rows
    from nnre.serve.steps import RingSteps

    model = nnre.load(SAMPLES / "lighthouse.bundle")
    if zero_weight:
        params = {k: np.array(v) for k, v in model._params.items()}
        params["W_f"][3, 7] = 0.0
        model = nnre.Model.from_equations(model.equations, params, model.dims,
                                          metadata=model.metadata)
    io = text_io(model.metadata, ["x"], ["y"])
    stepper = RingSteps(model, "x", "y")
    picked = sum(getattr(f, "func", None) is np.take for f in stepper._ring(3).tapes[0])
    assert picked == (0 if zero_weight else 1)
    rng = np.random.default_rng(5)
    for batch in (1, 3, 32):
        state = model.zero_state(batch)
        mine: Any = dict(state)
        for t in range(40):
            codes = rng.integers(0, len(io.chars.vocab), batch).tolist()
            want, state = model.step({"x": rows(codes, 51, model.dtype)}, state)
            got, mine = stepper.step(codes, mine)
            assert np.array_equal(got, want["y"]), (batch, t)
            assert all(np.array_equal(mine[k], state[k]) for k in state), (batch, t)
            if t % 10 == 9:  # streams leave and join: rows reordered, a row's state put
                order = rng.permutation(batch)
                state = staterows.take(state, list(order), batch)
                mine = staterows.take(mine, list(order), batch)
                staterows.put(mine, 0, staterows.row(state, batch - 1))
                staterows.put(state, 0, staterows.row(state, batch - 1))


def test_stop_filter_holds_back_what_may_start_a_stop() -> None:
    f = StopFilter(["\n\n", "END"])
    shown = [f.push(c) for c in "ab\nc\n\nx"]
    assert shown == [("a", False), ("b", False), ("", False), ("\nc", False), ("", False),
                     ("", True), ("x", False)]
    f = StopFilter(["xyz", "yq"])  # the earliest stop wins
    assert [f.push(c) for c in "axyq"] == [("a", False), ("", False), ("", False),
                                           ("x", True)]
    f = StopFilter(["ab"])
    assert (f.push("a"), f.flush()) == (("", False), "a")


def test_rows_move_whole_streams() -> None:
    state = {"h": np.arange(12.0).reshape(4, 3), "k": np.arange(8.0).reshape(4, 2)}
    kept = staterows.take(state, [3, 1], 3)
    assert kept["h"].tolist() == [[9, 10, 11], [3, 4, 5], [0, 0, 0]]
    staterows.put(kept, 2, {"h": np.ones((1, 3)), "k": np.ones((1, 2))})
    assert kept["k"].tolist() == [[6, 7], [2, 3], [1, 1]]
    assert [staterows.bucket(n) for n in (1, 5, 33, 200, 300)] == [1, 6, 48, 256, 384]
    parts = staterows.split(state, [1, 3])
    assert staterows.join(parts)["h"].tolist() == state["h"].tolist()


@pytest.mark.parametrize("batching", [True, False])
def test_streams_joining_and_leaving_each_give_their_own_text(batching: bool) -> None:
    """Streams submitted at different times, of different lengths, with their own settings
    and seeds, some cancelled: each finished text is what ``Model.generate`` gives alone."""
    model = nnre.load(SAMPLES / "lighthouse.bundle")
    io = text_io(model.metadata, ["x"], ["y"])
    asks = [("The ", 30 + 11 * i, i, SETTINGS[i % len(SETTINGS)]) for i in range(14)]

    def stream(prime: str, n: int, seed: int, settings: dict[str, Any]) -> TextStream:
        codes = io.chars.encode(prime)
        sampler = Sampler(len(io.chars.vocab), seed=seed, **settings)
        sampler.remember(codes)
        return TextStream(deque(codes), sampler, n)

    async def run() -> list[TextStream]:
        engine = TextEngine(model, model.metadata, max_batch=5, batching=batching)
        streams = []
        for k, ask in enumerate(asks):
            streams.append(stream(*ask))
            engine.submit([streams[-1]])
            if k == 6:
                TextEngine.cancel(streams[2])
            await asyncio.sleep(0.002 * (k % 3))
        while not all(s.done for s in streams):
            await asyncio.sleep(0.01)
        assert engine.active == 0
        return streams

    streams = asyncio.run(run())
    for (prime, n, seed, settings), s in zip(asks, streams, strict=True):
        if s.finish == "cancelled":
            continue
        assert s.finish == "length"
        assert "".join(s.text) == "".join(model.generate(prime, n, seed=seed, **settings))
    assert streams[2].finish in ("cancelled", "length")


def test_sessions_time_out_cap_and_belong_to_one_model() -> None:
    from nnre.serve.errors import Busy, RequestError
    from nnre.serve.sessions import Sessions

    now = [0.0]
    store = Sessions(timeout=10, cap=2, clock=lambda: now[0])
    a = store.open("a", "m", "id1", "text")
    with pytest.raises(RequestError, match="in use") as err:
        store.open("a", "m", "id1", "text")
    assert err.value.status == 409
    store.close(a, {"h": np.ones((1, 4))}, [3])
    with pytest.raises(RequestError, match="belongs to"):
        store.open("a", "other", "id1", "text")
    with pytest.raises(RequestError, match="earlier version"):
        store.open("a", "m", "id2", "text")
    store.close(store.open("b", "m", "id1", "text"), {"h": np.ones((1, 4))})
    with pytest.raises(Busy):  # the cap
        store.open("c", "m", "id1", "text")
    assert store.bytes == 64
    now[0] = 11.0  # both idle past the timeout: gone, and "c" fits
    c = store.open("c", "m", "id1", "text")
    assert len(store) == 1 and c.state is None
    store.close(c)  # a new session whose request failed keeps nothing
    assert len(store) == 0
    with pytest.raises(RequestError, match="session id"):
        store.open("bad id!", "m", "id1", "text")


def test_streams_past_the_memory_budget_are_refused() -> None:
    from nnre import budget
    from nnre.serve.errors import Busy

    model = nnre.load(SAMPLES / "lighthouse.bundle")
    engine = TextEngine(model, model.metadata)
    sampler = Sampler(51, seed=0)
    budget.set_limit(50 << 20)
    try:
        with pytest.raises(Busy, match="memory budget"):
            engine.submit([TextStream(deque([1]), sampler, 10_000_000)])
    finally:
        budget.set_limit(None)
    assert engine.reserved == 0 and not engine.waiting


def test_a_stream_the_model_refuses_fails_alone() -> None:
    """A model that refuses one row (as an ids input refuses an id out of range) fails the
    stream that fed it; the others in the batch go on and give their own text."""
    from nnre.errors import FeedError

    model = nnre.load(SAMPLES / "lighthouse.bundle")
    io = text_io(model.metadata, ["x"], ["y"])
    wanted = {prime: "".join(model.generate(prime, 60, seed=seed))
              for prime, seed in (("The ", 1), ("3 May", 3))}
    unused = [c for c in io.chars.vocab if c not in "".join(wanted) + "".join(wanted.values())]
    bad = io.chars.index[unused[0]]  # a character the good streams never feed

    class Picky:
        """The sample model, refusing any batch with the character ``bad`` in it."""

        def __getattr__(self, name: str) -> Any:
            return getattr(model, name)

        def step(self, feeds: Any, state: Any = None) -> Any:
            if (np.asarray(feeds["x"])[:, bad] == 1).any():
                raise FeedError("refused")
            return model.step(feeds, state)

    def stream(prime: str, seed: int) -> TextStream:
        codes = io.chars.encode(prime)
        return TextStream(deque(codes), Sampler(51, seed=seed), 60)

    async def run() -> list[TextStream]:
        engine = TextEngine(Picky(), model.metadata)  # type: ignore[arg-type]
        streams = [stream("The ", 1), stream(io.chars.vocab[bad] + "e", 2), stream("3 May", 3)]
        engine.submit(streams)
        while not all(s.done for s in streams):
            await asyncio.sleep(0.01)
        return streams

    good1, refused, good2 = asyncio.run(run())
    assert refused.finish == "error" and "refused" in str(refused.error)
    for s, prime in ((good1, "The "), (good2, "3 May")):
        assert s.finish == "length"
        assert "".join(s.text) == wanted[prime]


@pytest.fixture(scope="module")
def transformer() -> Any:
    """The ``gpt`` template with random weights (context 6) over a 5-character vocabulary."""
    from nndk.learner import Learner
    from nndk.models import read_model
    from nnre.equations import check

    dims = {"L": 2, "heads": 2, "d": 8, "context": 6}
    vocab = list("abcd ")
    text, _ = read_model("gpt")
    learner = Learner(check(text, dims, known={"y": (len(vocab),)}), text, "adam", 3, "auto",
                      sequence=True)
    rng = np.random.default_rng(1)
    weights = {n: (a + rng.normal(scale=0.5, size=a.shape)).reshape(learner.shapes[n])
               for n, a in learner.params.items()}
    codecs = {"x": {"id": "char", "vocab": vocab}, "y": {"id": "sample", "vocab": vocab}}
    return nnre.Model.from_equations(text, weights, dims, metadata={"codecs": codecs})


def test_transformer_streams_shift_their_context_as_generate_does(transformer: Any) -> None:
    """A key/value cache per stream is just more state rows; a stream about to pass the
    context starts again from its last context // 2 characters, in the batch as alone."""
    model = transformer
    io = text_io(model.metadata, ["x"], ["y"])
    asks = [("ab", 40, 1, {}), ("abcd abcd", 33, 2, {"temperature": 0.7}), ("d", 25, 3, {}),
            ("c", 50, 4, {"top_k": 2})]  # the second prompt is longer than the context

    async def run() -> list[TextStream]:
        engine = TextEngine(model, model.metadata)
        streams = []
        for prime, n, seed, settings in asks:
            codes = io.chars.encode(prime)[-model.context:]
            sampler = Sampler(5, seed=seed, **settings)
            sampler.remember(codes)
            streams.append(TextStream(deque(codes), sampler, n))
            engine.submit([streams[-1]])
            await asyncio.sleep(0.001)
        while not all(s.done for s in streams):
            await asyncio.sleep(0.01)
        return streams

    for (prime, n, seed, settings), s in zip(asks, asyncio.run(run()), strict=True):
        assert (s.finish, s.error) == ("length", None)
        assert "".join(s.text) == "".join(model.generate(prime, n, seed=seed, **settings))
