"""`nnre serve` through a real HTTP client: OIP v2 and OpenAI completions checked against
``nnre.load(...)`` computed here, errors as JSON 4xx, sessions, metrics, access logs."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from serve_helpers import ROOT, SAMPLES, Server, metric, running, sse  # noqa: E402

import nnre  # noqa: E402
from nnre.codecs import Sampler, rows, text_io  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
TEXT = SAMPLES / "lighthouse.bundle"
TABLE = SAMPLES / "weather.bundle"


def write_transformer(path: Path) -> None:
    """The ``gpt`` template with random weights (context 6) over the characters "abcd "."""
    from nndk.learner import Learner
    from nndk.models import read_model
    from nndk.pack import build_content
    from nnre.bundle.write import write
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
    write(path, build_content(text, weights, {"name": "tiny-gpt", "version": "1.0.0",
                                              "codecs": codecs}, dims=dims))


@pytest.fixture(scope="module")
def gpt_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gpt") / "gpt.bundle"
    write_transformer(path)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, gpt_path: Path) -> Iterator[Server]:
    with running([str(TEXT), str(TABLE), str(gpt_path), "--max-body", "64K",
                  "--max-sessions", "3", "--max-batch", "16"],
                 tmp_path_factory.mktemp("serve")) as s:
        yield s


@pytest.fixture(scope="module")
def text_model() -> Any:
    return nnre.load(TEXT)


@pytest.fixture(scope="module")
def table_model() -> Any:
    return nnre.load(TABLE)


def generate(model: Any, prompt: str, n: int, seed: int, **settings: Any) -> str:
    """What nnre run prints after the prompt: the bundle's recommended settings under the
    given ones."""
    return "".join(model.generate(prompt, n, seed=seed, **(model.sampling | settings)))


# -- Open Inference Protocol ------------------------------------------------------------

def test_health_and_metadata_follow_the_bundles(server: Server, text_model: Any,
                                                table_model: Any) -> None:
    with server.client() as c:
        assert c.get("/v2/health/live").json() == {"live": True}
        assert c.get("/v2/health/ready").json() == {"ready": True}
        assert c.get("/v2").json()["name"] == "nnre"
        meta = c.get("/v2/models/weather").json()
        assert meta["name"] == "weather" and meta["platform"] == "nnre"
        assert meta["versions"] == [table_model.metadata["version"]]
        assert meta["inputs"] == [{"name": "x", "datatype": "FP32",
                                   "shape": [-1, *table_model.inputs["x"].shape]}]
        assert meta["outputs"] == [
            {"name": "y", "datatype": "FP32", "shape": [-1, *table_model.outputs["y"].shape]},
            {"name": "y.label", "datatype": "BYTES", "shape": [-1]}]
        meta = c.get("/v2/models/lighthouse").json()  # recurrent: time, then batch
        assert meta["inputs"][0]["shape"] == [-1, -1, text_model.inputs["x"].shape[0]]
        assert c.get("/v2/models/lighthouse/ready").json() == {"name": "lighthouse",
                                                               "ready": True}
        version = text_model.metadata["version"]
        assert c.get(f"/v2/models/lighthouse/versions/{version}").status_code == 200
        assert c.get("/v2/models/lighthouse/versions/9.9/ready").status_code == 404
        assert [m["id"] for m in c.get("/v1/models").json()["data"]] == ["gpt", "lighthouse"]


def test_infer_matches_model_step_for_every_datatype(server: Server, table_model: Any) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((5, 3))
    want, _ = table_model.step({"x": x.astype(np.float32)})
    labels = table_model.metadata["codecs"]["y"]["labels"]
    with server.client() as c:
        for datatype, data in [("FP32", x.ravel().tolist()), ("FP64", x.tolist()),
                               ("INT32", (x > 0.5).astype(int).ravel().tolist()),
                               ("INT64", (x > 0.5).astype(int).tolist())]:
            r = c.post("/v2/models/weather/infer", json={"id": "req-7", "inputs": [
                {"name": "x", "shape": [5, 3], "datatype": datatype, "data": data}]})
            assert r.status_code == 200, r.text
            body = r.json()
            assert (body["model_name"], body["id"]) == ("weather", "req-7")
            assert body["model_version"] == table_model.metadata["version"]
            y, label = body["outputs"]
            feed = np.asarray(data, np.float64).reshape(5, 3).astype(np.float32)
            expect = want["y"] if datatype.startswith("FP") else table_model.step({"x": feed}
                                                                                 )[0]["y"]
            assert (y["name"], y["datatype"], y["shape"]) == ("y", "FP32", [5, 3])
            np.testing.assert_allclose(np.reshape(y["data"], (5, 3)), expect, rtol=1e-6)
            assert label == {"name": "y.label", "datatype": "BYTES", "shape": [5],
                             "data": [labels[i] for i in expect.argmax(axis=1)]}
        # one example without the batch axis; the outputs asked for, in that order
        r = c.post("/v2/models/weather/infer", json={
            "inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": x[0].tolist()}],
            "outputs": [{"name": "y.label"}, {"name": "y"}]}).json()
        assert [o["name"] for o in r["outputs"]] == ["y.label", "y"]
        assert r["outputs"][1]["shape"] == [3]
        np.testing.assert_allclose(r["outputs"][1]["data"], want["y"][0], rtol=1e-6)


def test_recurrent_infer_runs_the_sequence_and_reads_text(server: Server,
                                                          text_model: Any) -> None:
    io = text_io(text_model.metadata, ["x"], ["y"])
    texts = ["The lamp", "3 May. W"]
    onehot = np.stack([io.chars.one_hot(t) for t in texts], axis=1)  # (T, B, V)
    want, _ = text_model.run({"x": onehot})
    with server.client() as c:
        r = c.post("/v2/models/lighthouse/infer", json={"inputs": [
            {"name": "x", "shape": list(onehot.shape), "datatype": "FP32",
             "data": onehot.ravel().tolist()}]})
        got = r.json()["outputs"][0]
        assert got["shape"] == list(want["y"].shape)
        np.testing.assert_allclose(np.reshape(got["data"], got["shape"]), want["y"],
                                   rtol=1e-5, atol=1e-7)
        r = c.post("/v2/models/lighthouse/infer", json={"inputs": [
            {"name": "x", "shape": [2], "datatype": "BYTES", "data": texts}]})
        got = r.json()["outputs"][0]
        np.testing.assert_allclose(np.reshape(got["data"], got["shape"]), want["y"],
                                   rtol=1e-5, atol=1e-7)


BAD_INFER: list[tuple[str, Any, int, str]] = [
    ("weather", b"{bad json", 400, "not valid JSON"),
    ("weather", b"\xff\xfe", 400, "not UTF-8"),
    ("weather", [1, 2], 400, "JSON object"),
    ("weather", {}, 400, "'inputs'"),
    ("weather", {"inputs": [], "extra": 1}, 400, "unknown field 'extra'"),
    ("weather", {"inputs": [{"name": "z", "shape": [1], "datatype": "FP32", "data": [1]}]},
     400, "unknown input"),
    ("weather", {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32",
                             "data": [1, 2, 3]}]}, 400, "needs 6"),
    ("weather", {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                             "data": [1, 2, 3, 4]}]}, 400, "has shape [1, 4]"),
    ("weather", {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32",
                             "data": [[1, 2, 3], [4, 5]]}]}, 400, "data"),
    ("weather", {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32",
                             "data": ["a", "b", "c"]}]}, 400, "needs numbers"),
    ("weather", {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "INT32",
                             "data": [1.5, 2, 3]}]}, 400, "whole numbers"),
    ("weather", {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "INT32",
                             "data": [1, 2, 3000000000]}]}, 400, "out of INT32"),
    ("weather", {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32",
                             "data": [True, False, True]}]}, 400, "needs numbers"),
    ("weather", {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64",
                             "data": [1e300, 0, 0]}]}, 400, "range"),
    ("weather", {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "UINT8",
                             "data": [1, 2, 3]}]}, 400, "not supported"),
    ("weather", {"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES",
                             "data": ["abc"]}]}, 400, "char codec"),
    ("weather", {"inputs": [{"name": "x", "shape": [-1, 3], "datatype": "FP32",
                             "data": [1, 2, 3]}]}, 400, "'shape'"),
    ("weather", {"inputs": [{"name": "x", "shape": [0, 3], "datatype": "FP32",
                             "data": []}]}, 400, "at least one example"),
    ("weather", {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32",
                             "data": [1, 2, 3]}], "outputs": [{"name": "q"}]}, 400,
     "unknown output"),
    ("weather", {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32",
                             "data": [1, 2, 3]}], "parameters": {"session_id": "s"}}, 400,
     "sessions are for recurrent models"),
    ("lighthouse", {"inputs": [{"name": "x", "shape": [2], "datatype": "BYTES",
                                "data": ["ab", "abc"]}]}, 400, "same length"),
    ("lighthouse", {"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES",
                                "data": ["\u2603"]}]}, 400, "vocabulary"),
    ("nope", {"inputs": []}, 404, "not served"),
    ("weather", "x" * 70_000, 413, "at most"),
]


@pytest.mark.parametrize(("model", "body", "status", "fragment"), BAD_INFER)
def test_bad_infer_requests_are_4xx_json(server: Server, model: str, body: Any, status: int,
                                         fragment: str) -> None:
    raw = body if isinstance(body, bytes) else body.encode() if isinstance(body, str) \
        else json.dumps(body).encode()
    with server.client() as c:
        r = c.post(f"/v2/models/{model}/infer", content=raw)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert isinstance(error, str) and fragment in error, error
    assert "Traceback" not in r.text


def test_unknown_routes_and_methods_are_json(server: Server) -> None:
    with server.client() as c:
        r = c.get("/v2/models/weather/infer")
        assert r.status_code == 405 and "GET" in r.json()["error"]
        r = c.get("/nothing/here")
        assert r.status_code == 404 and "no route" in r.json()["error"]
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:  # a huge length
        s.sendall(b"POST /v2/models/weather/infer HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: 99999999\r\n\r\n{")
        head = b""
        while b'"}' not in head and (data := s.recv(4096)):
            head += data
    assert head.startswith(b"HTTP/1.1 413 ") and b'{"error":' in head


# -- OpenAI completions ------------------------------------------------------------------

def test_completion_text_is_what_nnre_run_prints(server: Server) -> None:
    run = subprocess.run([sys.executable, "-m", "nnre", "run", str(TEXT), "-p", "The ", "-n",
                          "150", "--seed", "7"], capture_output=True, text=True, check=True,
                         cwd=ROOT, env=ENV)
    printed = run.stdout[len("The "):]
    body = {"model": "lighthouse", "prompt": "The ", "max_tokens": 150, "seed": 7}
    with server.client() as c:
        whole = c.post("/v1/completions", json=body).json()
        with c.stream("POST", "/v1/completions", json=body | {"stream": True, "stream_options":
                                                               {"include_usage": True}}) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            events = sse(r)
    assert whole["choices"][0]["text"] == printed[:150]
    assert whole["choices"][0]["finish_reason"] == "length"
    assert whole["usage"] == {"prompt_tokens": 4, "completion_tokens": 150,
                              "total_tokens": 154}
    assert whole["object"] == "text_completion" and whole["model"] == "lighthouse"
    assert events[-1] == "[DONE]"
    chunks = events[:-2]
    assert all(e["object"] == "text_completion" and e["id"] == chunks[0]["id"]
               for e in chunks)
    assert "".join(e["choices"][0]["text"] for e in chunks) == printed[:150]
    assert [e["choices"][0]["finish_reason"] for e in chunks][-1] == "length"
    assert all(e["choices"][0]["finish_reason"] is None for e in chunks[:-1])
    assert events[-2]["choices"] == [] and events[-2]["usage"]["completion_tokens"] == 150


#: (nnre run's flags, the same settings as request fields)
RUN_SETTINGS: list[tuple[list[str], dict[str, Any]]] = [
    (["--temp", "0.6"], {"temperature": 0.6}),
    (["--top-k", "4"], {"top_k": 4}),
    (["--top-p", "0.85"], {"top_p": 0.85}),
    (["--temp", "1.2", "--top-k", "8", "--top-p", "0.9", "--min-p", "0.02"],
     {"temperature": 1.2, "top_k": 8, "top_p": 0.9, "min_p": 0.02}),
]


def test_settings_and_n_streamed_together_are_what_nnre_run_prints(server: Server) -> None:
    """Requests with temperature, top-k, top-p (and all at once), n=2 each, streamed at the
    same time so their streams share steps (and draws): choice i of each is the text
    ``nnre run --seed (seed + i)`` prints alone with the same flags (one sampler drawing one
    row: the oracle of the batched draws), and ``--num-samples 2`` (a batch too) agrees."""
    length, n = 160, 2

    def run(seed: int, flags: list[str], samples: int = 1) -> list[str]:
        out = subprocess.run([sys.executable, "-m", "nnre", "run", str(TEXT), "-p", "The ",
                              "-n", str(length), "--seed", str(seed), "--num-samples",
                              str(samples), *flags], capture_output=True, text=True,
                             check=True, cwd=ROOT, env=ENV).stdout
        texts = re.split(r"^--- sample \d+ of \d+, --seed \d+ ---\n", out, flags=re.M)[1:] \
            if samples > 1 else [out]
        assert len(texts) == samples and all(t.startswith("The ") for t in texts)
        return [t[len("The "):len("The ") + length] for t in texts]

    printed = [[run(20 + k + i, flags)[0] for i in range(n)]
               for k, (flags, _) in enumerate(RUN_SETTINGS)]
    assert run(23, RUN_SETTINGS[3][0], n) == printed[3]
    got: dict[int, list[str]] = {}

    def client(k: int) -> None:
        body = {"model": "lighthouse", "prompt": "The ", "max_tokens": length, "n": n,
                "seed": 20 + k, "stream": True} | RUN_SETTINGS[k][1]
        texts = [""] * n
        with server.client() as c, c.stream("POST", "/v1/completions", json=body) as r:
            for e in sse(r):
                if e != "[DONE]":
                    texts[e["choices"][0]["index"]] += e["choices"][0]["text"]
        got[k] = texts

    threads = [threading.Thread(target=client, args=(k,)) for k in range(len(RUN_SETTINGS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for k in range(len(RUN_SETTINGS)):
        assert got[k] == printed[k], RUN_SETTINGS[k][0]


def test_stop_n_echo_and_prompt_lists(server: Server, text_model: Any) -> None:
    alone = generate(text_model, "3 May.", 300, 11)
    stop = alone[40:43]
    cut = alone[:alone.index(stop)]
    with server.client() as c:
        r = c.post("/v1/completions", json={"model": "lighthouse", "prompt": "3 May.",
                                            "max_tokens": 300, "seed": 11, "stop": [stop]})
        assert r.json()["choices"][0] == {"text": cut, "index": 0, "logprobs": None,
                                          "finish_reason": "stop"}
        r = c.post("/v1/completions", json={"model": "lighthouse", "prompt": ["The ", "3 May."],
                                            "n": 2, "max_tokens": 40, "seed": 5, "echo": True,
                                            "temperature": 0.5, "top_k": 5})
        choices = r.json()["choices"]
        for index, (prompt, i) in enumerate([("The ", 0), ("The ", 1), ("3 May.", 0),
                                             ("3 May.", 1)]):
            want = prompt + generate(text_model, prompt, 40, 5 + index, temperature=0.5,
                                     top_k=5)
            assert choices[index]["text"] == want, (index, i)


def test_concurrent_streams_are_batched_and_each_is_its_own(server: Server,
                                                             text_model: Any) -> None:
    """Twelve streams at once, with different seeds and settings, joining while others run:
    each text is the one its settings give alone, and steps did hold several streams."""
    asks = [({"seed": i, "max_tokens": 120 + 7 * i} | [
        {}, {"temperature": 0.5}, {"top_p": 0.8}, {"top_k": 3}, {"temperature": 0},
        {"temperature": 1.2, "min_p": 0.05}][i % 6]) for i in range(12)]
    got: dict[int, str] = {}

    def client(i: int) -> None:
        body = {"model": "lighthouse", "prompt": "The ", "stream": True} | asks[i]
        with server.client() as c, c.stream("POST", "/v1/completions", json=body) as r:
            got[i] = "".join(e["choices"][0]["text"] for e in sse(r) if e != "[DONE]")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i, ask in enumerate(asks):
        settings = {k: v for k, v in ask.items() if k not in ("seed", "max_tokens")}
        assert got[i] == generate(text_model, "The ", ask["max_tokens"], ask["seed"],
                                  **settings), i
    with server.client() as c:
        text = c.get("/metrics").text
    steps = metric(text, "nnre_batch_size_count", model="lighthouse", kind="text")
    alone = metric(text, "nnre_batch_size_bucket", model="lighthouse", kind="text", le="1.0")
    assert steps > alone  # some steps stepped more than one stream


def test_transformer_streams_run_past_their_context(server: Server, gpt_path: Path) -> None:
    """A transformer (a key/value cache per stream, context 6): completions far past the
    context, concurrent, each what ``nnre.load(...).generate`` gives; tensors as ``run``."""
    model = nnre.load(gpt_path)
    asks = [("abcd abcd ab", 80, 1), ("a", 50, 2), ("dc", 64, 3)]
    got: dict[int, str] = {}

    def client(i: int) -> None:
        prompt, n, seed = asks[i]
        with server.client() as c:
            r = c.post("/v1/completions", json={"model": "gpt", "prompt": prompt,
                                                "max_tokens": n, "seed": seed})
            got[i] = r.json()["choices"][0]["text"]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(asks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i, (prompt, n, seed) in enumerate(asks):
        assert got[i] == "".join(model.generate(prompt, n, seed=seed)), i
    io = text_io(model.metadata, ["x"], ["y"])
    ids = np.array([io.chars.encode("abca"), io.chars.encode("dd b")]).T[..., None]
    want, _ = model.run({"x": ids})  # (time, batch, 1): ids, x ∈ ℕ
    with server.client() as c:
        r = c.post("/v2/models/gpt/infer", json={"inputs": [
            {"name": "x", "shape": [2], "datatype": "BYTES", "data": ["abca", "dd b"]}]})
        out = r.json()["outputs"][0]
        np.testing.assert_allclose(np.reshape(out["data"], out["shape"]), want["y"],
                                   rtol=1e-5, atol=1e-7)
        r = c.post("/v2/models/gpt/infer", json={"inputs": [
            {"name": "x", "shape": [1], "datatype": "BYTES", "data": ["abcdabcd"]}]})
        assert r.status_code == 400 and "context" in r.json()["error"]


def test_a_client_that_goes_away_frees_its_slot(server: Server) -> None:
    body = {"model": "lighthouse", "prompt": "The ", "max_tokens": 60_000, "stream": True}
    with server.client() as c:
        with c.stream("POST", "/v1/completions", json=body) as r:
            next(r.iter_lines())
        # closed mid-stream: the stream must leave the batch
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            text = c.get("/metrics").text
            if metric(text, "nnre_active_streams", model="lighthouse") == 0:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the stream is still being stepped")
        assert metric(text, "nnre_generated_characters_total", model="lighthouse") < 60_000


BAD_COMPLETIONS: list[tuple[dict[str, Any], int, str | None]] = [
    ({"model": "lighthouse", "prompt": "a", "logprobs": 2}, 400, "logprobs"),
    ({"model": "lighthouse", "prompt": "a", "frobnicate": 1}, 400, "frobnicate"),
    ({"model": "lighthouse", "prompt": [1, 2]}, 400, "prompt"),
    ({"model": "lighthouse", "prompt": "a", "n": 0}, 400, "n"),
    ({"model": "lighthouse", "prompt": "a", "max_tokens": -1}, 400, "max_tokens"),
    ({"model": "lighthouse", "prompt": "a", "temperature": -1}, 400, None),
    ({"model": "lighthouse", "prompt": "a", "top_p": 2}, 400, None),
    ({"model": "lighthouse", "prompt": "a", "seed": "x"}, 400, "seed"),
    ({"model": "lighthouse", "prompt": "a", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ({"model": "lighthouse", "prompt": "\u2603"}, 400, "prompt"),
    ({"model": "lighthouse", "prompt": "a", "stream_options": {"x": 1}}, 400,
     "stream_options"),
    ({"model": "weather", "prompt": "a"}, 400, "model"),
    ({"model": "nope", "prompt": "a"}, 404, "model"),
    ({"prompt": "a"}, 400, "model"),
]


@pytest.mark.parametrize(("body", "status", "param"), BAD_COMPLETIONS)
def test_bad_completions_are_openai_errors(server: Server, body: dict[str, Any], status: int,
                                           param: str | None) -> None:
    with server.client() as c:
        r = c.post("/v1/completions", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    assert error["param"] == param


# -- sessions -----------------------------------------------------------------------------

def test_a_text_session_reads_on_from_where_it_stopped(server: Server, text_model: Any) -> None:
    """Two requests of one session give what one model reading the whole transcript gives:
    computed here with Model.step and a Sampler per request."""
    io = text_io(text_model.metadata, ["x"], ["y"])
    settings = text_model.sampling
    state, texts, feed = None, [], []
    for prompt, seed in [("The ", 3), (" lamp", 4)]:
        sampler = Sampler(len(io.chars.vocab), seed=seed, **settings)
        codes = feed + io.chars.encode(prompt)
        sampler.remember(codes)
        drawn = []
        for _ in range(50):
            for code in codes:
                out, state = text_model.step({"x": rows([code], 51, "float32")}, state)
            code = sampler(out["y"][0])
            drawn.append(code)
            codes = [code]
        feed = codes
        texts.append("".join(io.chars.vocab[c] for c in drawn))
    with server.client() as c:
        for (prompt, seed), want in zip([("The ", 3), (" lamp", 4)], texts, strict=True):
            r = c.post("/v1/completions", json={"model": "lighthouse", "prompt": prompt,
                                                "max_tokens": 50, "seed": seed,
                                                "session_id": "story-1"})
            assert r.json()["choices"][0]["text"] == want


def test_a_tensor_session_carries_the_state(server: Server, text_model: Any) -> None:
    rng = np.random.default_rng(3)
    xs = np.eye(51, dtype=np.float32)[rng.integers(0, 51, (9, 2))]  # (T=9, B=2, V)
    want, _ = text_model.run({"x": xs})

    def infer(part: np.ndarray, session: str) -> tuple[int, Any]:
        r = c.post("/v2/models/lighthouse/infer", json={
            "parameters": {"session_id": session},
            "inputs": [{"name": "x", "shape": list(part.shape), "datatype": "FP32",
                        "data": part.ravel().tolist()}]})
        return r.status_code, r.json()

    with server.client() as c:
        _, first = infer(xs[:4], "t-1")
        _, second = infer(xs[4:], "t-1")
        got = np.concatenate([np.reshape(o["outputs"][0]["data"], o["outputs"][0]["shape"])
                              for o in (first, second)])
        np.testing.assert_allclose(got, want["y"], rtol=1e-5, atol=1e-7)
        status, err = infer(xs[:3, :1], "t-1")  # another batch size than the session's
        assert status == 400 and "batch of 2" in err["error"]
        r = c.post("/v1/completions", json={"model": "lighthouse", "prompt": "a",
                                            "session_id": "t-1"})
        assert r.status_code == 409  # a tensor session is not a text one
        for k in range(2, 10):  # the cap: 3 sessions ("story-1" may be one of them)
            status, err = infer(xs[:2], f"t-{k}")
            if status == 429:
                assert "sessions are open" in err["error"]
                break
        else:
            raise AssertionError("no session cap")


# -- observability ----------------------------------------------------------------------

def test_metrics_and_access_log_with_request_ids(server: Server) -> None:
    with server.client() as c:
        r = c.get("/v2/models/weather", headers={"X-Request-Id": "abc-123"})
        assert r.headers["x-request-id"] == "abc-123"
        r = c.get("/v2/models/weather", headers={"X-Request-Id": "bad id\r"[:6] + "<>"})
        assert r.headers["x-request-id"] not in ("bad id<>", "")  # not a token: a new id
        c.post("/v2/models/weather/infer", content=b"{")
        text = c.get("/metrics").text
    for name in ("nnre_requests_total", "nnre_request_errors_total",
                 "nnre_request_duration_seconds_bucket", "nnre_generated_characters_total",
                 "nnre_time_per_character_seconds_bucket",
                 "nnre_time_to_first_character_seconds_bucket", "nnre_batch_size_bucket",
                 "nnre_queue_depth", "nnre_active_streams", "nnre_sessions"):
        assert f"\n{name}" in text, name
    assert metric(text, "nnre_request_errors_total", route="/v2/models/{name}/infer",
                  status="400") >= 1
    time.sleep(0.2)
    lines = [a for a in server.access() if a["request_id"] == "abc-123"]
    assert lines and lines[0]["path"] == "/v2/models/weather" and lines[0]["status"] == 200


def test_slow_clients_do_not_hold_up_others(server: Server) -> None:
    """One client sends half a body and stalls; another starts a stream and never reads it;
    a third is still answered at once."""
    host, port = server.url.removeprefix("http://").split(":")
    stalled = socket.create_connection((host, int(port)))
    stalled.sendall(b"POST /v2/models/weather/infer HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: 100\r\n\r\n{\"inputs\": [")
    reader = socket.create_connection((host, int(port)))
    body = json.dumps({"model": "lighthouse", "prompt": "The ", "max_tokens": 20_000,
                       "stream": True}).encode()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                   % len(body) + body)
    try:
        start = time.monotonic()
        with server.client(timeout=10) as c:
            r = c.post("/v1/completions", json={"model": "lighthouse", "prompt": "The ",
                                                "max_tokens": 50, "seed": 1})
        assert r.status_code == 200 and len(r.json()["choices"][0]["text"]) == 50
        assert time.monotonic() - start < 10
    finally:
        stalled.close()
        reader.close()


def test_serve_without_the_extra_says_how_to_install_it(tmp_path: Path) -> None:
    fake = tmp_path / "starlette"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('No module named starlette')\n")
    r = subprocess.run([sys.executable, "-m", "nnre", "serve", str(TABLE)], capture_output=True,
                       text=True, env=ENV | {"PYTHONPATH": f"{tmp_path}:{ROOT}"})
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ")
    assert 'pip install "nnre[serve]"' in r.stderr


def test_serve_refuses_a_bad_model_or_port_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "broken.bundle"
    bad.write_bytes(TABLE.read_bytes()[:-10])
    r = subprocess.run([sys.executable, "-m", "nnre", "serve", str(bad)], capture_output=True,
                       text=True, env=ENV)
    assert r.returncode == 1 and r.stderr.startswith("error: ") and "broken.bundle" in r.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "nnre", "serve", str(TABLE), "--port",
                            str(port)], capture_output=True, text=True,
                           env=ENV)
    assert r.returncode == 1 and r.stderr.startswith("error: ") and "listen" in r.stderr


def test_the_app_can_be_hosted_by_any_asgi_server(table_model: Any) -> None:
    """``make_app``: the same application without uvicorn (here httpx calling it as ASGI), as
    a Ray Serve or another ASGI host would run it."""
    import asyncio

    from nnre.serve.server import ServeConfig, make_app

    app, names = make_app([str(TABLE)], ServeConfig())
    assert names == ["weather"]
    x = [[0.9, 0.1, 0.0]]

    async def ask() -> Any:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://nnre") as c:
            return await c.post("/v2/models/weather/infer", json={"inputs": [
                {"name": "x", "shape": [1, 3], "datatype": "FP32", "data": x}]})

    r = asyncio.run(ask())
    np.testing.assert_allclose(r.json()["outputs"][0]["data"],
                               table_model.step({"x": np.float32(x)})[0]["y"][0], rtol=1e-6)
    assert r.headers["x-request-id"]
