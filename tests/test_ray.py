"""Batch inference (nnre/ray.py): the Predictor on batches of rows against the hand-written
NumPy references, without Ray; then a real Ray job on a local instance (slow: Ray takes
longer than 30 s to start on this machine) scoring a JSON Lines file with 2 workers, each
loading the bundle once."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import reference
from bundle_helpers import lstm_content, lstm_weights
from test_score import reference_bits
from text_helpers import VOCAB, text_bundle

from nnre.bundle.read import decode
from nnre.bundle.write import write
from nnre.errors import FeedError
from nnre.ray import Predictor

ROOT = Path(__file__).resolve().parent.parent
WEATHER = ROOT / "samples" / "weather.bundle"
TEXTS = ["ab c\nfed", "", "hh\ncab\n\nd", "a", "abcde fgh\n" * 4]


@pytest.fixture(scope="module")
def text_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(text_bundle(tmp_path_factory.mktemp("ray") / "t.bundle", seed=5))


def reference_bpc(text: str) -> float:
    bits = reference_bits(text)
    return sum(bits) / len(bits) if bits else math.nan


def test_text_rows_get_bits_per_character_and_keep_their_other_columns(text_model: str
                                                                        ) -> None:
    predict = Predictor(text_model)
    ids = np.arange(len(TEXTS)) + 100
    out = predict({"text": np.array(TEXTS, dtype=object), "id": ids})
    np.testing.assert_allclose(out["bits_per_char"], [reference_bpc(t) for t in TEXTS],
                               rtol=1e-10)
    assert out["chars"].tolist() == [len(t) for t in TEXTS]
    assert out["id"].tolist() == ids.tolist() and list(out["text"]) == TEXTS


def test_tensor_rows_get_outputs_and_labels() -> None:
    p = {k: np.asarray(v, np.float64) for k, v in decode(WEATHER).tensors.items()}
    x = np.random.default_rng(0).uniform(0, 1, (7, 3)).astype(np.float32)
    out = Predictor(str(WEATHER))({"x": x})
    want = reference.mlp(p, x.astype(np.float64))
    np.testing.assert_allclose(out["y"], want, rtol=1e-5, atol=1e-6)
    assert list(out["y.label"]) == [["clear", "fog", "storm"][i] for i in want.argmax(1)]
    rows = np.empty(7, dtype=object)  # how Ray hands over a column of lists
    rows[:] = [list(map(float, r)) for r in x]
    np.testing.assert_allclose(Predictor(str(WEATHER))({"x": rows})["y"], want, rtol=1e-5,
                               atol=1e-6)


def test_recurrent_rows_are_sequences_time_first_within_each_row(tmp_path: Path) -> None:
    path = tmp_path / "lstm.bundle"
    write(path, lstm_content())
    xs = np.random.default_rng(1).standard_normal((5, 6, 4)).astype(np.float32)  # B, T, V
    out = Predictor(str(path))({"x": xs})
    p = {k: np.asarray(v, np.float64) for k, v in lstm_weights().items()}
    for b in range(5):
        want, _, _ = reference.lstm(p, xs[b][:, None, :].astype(np.float64), np.zeros((1, 3)),
                                    np.zeros((1, 3)))
        np.testing.assert_allclose(out["y"][b], want[:, 0], rtol=1e-5, atol=1e-6)


def test_a_bad_row_raises_or_is_named_in_the_error_column(text_model: str) -> None:
    batch = {"text": np.array(["ab", "aQb", "cab"], dtype=object)}
    with pytest.raises(FeedError, match=r"text\[1\]:1:2"):
        Predictor(text_model)(batch)
    out = Predictor(text_model, on_error="column")(batch)
    assert out["error"][0] == "" and out["error"][2] == ""
    assert "'Q' (U+0051) is not in the model's vocabulary" in out["error"][1]
    assert math.isnan(out["bits_per_char"][1])
    np.testing.assert_allclose(out["bits_per_char"][[0, 2]],
                               [reference_bpc("ab"), reference_bpc("cab")], rtol=1e-10)
    skip = Predictor(text_model, skip_unknown=True)(batch)
    assert skip["chars"].tolist() == [2, 2, 3]
    with pytest.raises(FeedError, match="no column 'text'"):
        Predictor(text_model)({"body": np.array(["ab"], dtype=object)})
    weather = Predictor(str(WEATHER), on_error="column")
    out = weather({"x": np.array([[0.1, 0.2, 0.3], [0.5, 0.5, 0.5]], np.float32)})
    assert out["error"].tolist() == ["", ""] and out["y.label"].shape == (2,)


def test_a_pandas_batch_works_too(text_model: str) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"text": TEXTS, "id": range(len(TEXTS))})
    out = Predictor(text_model)(frame)
    np.testing.assert_allclose(out["bits_per_char"], [reference_bpc(t) for t in TEXTS],
                               rtol=1e-10)


@pytest.mark.slow
def test_a_ray_job_scores_a_jsonl_file_with_two_workers_each_loading_once(
        text_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ray = pytest.importorskip("ray")
    pytest.importorskip("pyarrow")
    from range_server import Site, serving

    import nnre.ray

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    rng = np.random.default_rng(3)
    texts = ["".join(rng.choice(VOCAB, size=int(rng.integers(1, 60)))) for _ in range(400)]
    src = tmp_path / "texts.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": t}) + "\n"
                           for i, t in enumerate(texts)))
    with serving(Site(files={"/t.bundle": Path(text_model).read_bytes()})) as site:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            start = time.monotonic()
            ds = nnre.ray.map_dataset(nnre.ray.read(str(src)), site.url + "/t.bundle",
                                      workers=2, batch_size=50)
            nnre.ray.write(ds, str(tmp_path / "out"))
            took = time.monotonic() - start
        finally:
            ray.shutdown()
        heads = [m for m, _, _ in site.log if m == "HEAD"]
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "out").to_pydict()
    got = dict(zip(table["id"], table["bits_per_char"], strict=True))
    assert sorted(got) == list(range(len(texts)))
    want = Predictor(text_model)({"text": np.array(texts, dtype=object)})["bits_per_char"]
    np.testing.assert_allclose([got[i] for i in range(len(texts))], want, rtol=1e-10)
    assert len(heads) == 2  # one load per worker, not per batch (8 batches)
    assert took < 300
