"""`nnre serve` under load and fuzz (slow, opt in with -m slow).

2,000 requests at 64 at a time, 5 % malformed, streamed and whole completions mixed with
tensor calls on two models: no 5xx, every malformed request a 4xx JSON error, every
well-formed answer what ``nnre.load`` computes here for it alone. Then 1,500 requests with a
random change each: never a 5xx."""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")

from serve_helpers import SAMPLES, metric, running  # noqa: E402

import nnre  # noqa: E402

REQUESTS = 2_000
CONCURRENCY = 64
SETTINGS: list[dict[str, Any]] = [{}, {"temperature": 0.5}, {"top_k": 4}, {"top_p": 0.85},
                                  {"temperature": 0}, {"temperature": 1.1, "min_p": 0.05}]
PROMPTS = ["The ", "3 May.", "\n", "Wind ", "The lamp "]
MALFORMED: list[tuple[str, bytes]] = [
    ("/v1/completions", b'{"model": "lighthouse", "prompt": '),
    ("/v1/completions", b'{"model": "lighthouse", "prompt": "a", "n": "two"}'),
    ("/v1/completions", b'{"model": "ghost", "prompt": "a"}'),
    ("/v1/completions", b'[1, 2, 3]'),
    ("/v1/completions", b'{"model": "lighthouse", "prompt": "a", "max_tokens": 1e99}'),
    ("/v2/models/weather/infer", b'{"inputs": [{"name": "x", "shape": [2, 3], '
                                 b'"datatype": "FP32", "data": [1, 2]}]}'),
    ("/v2/models/weather/infer", b'{"inputs": [{"name": "x", "shape": [1, 3], '
                                 b'"datatype": "FP16", "data": [1, 2, 3]}]}'),
    ("/v2/models/lighthouse/infer", b'{"inputs": [{"name": "x", "shape": [1], '
                                    b'"datatype": "BYTES", "data": ["\\u2603"]}]}'),
    ("/v2/models/ghost/infer", b'{"inputs": []}'),
    ("/v2/models/weather/infer", b"\x00\xff" * 10),
    ("/v2/models/weather/infer", b'{"inputs": [' * 40 + b']' * 40 + b'}'),
]


def plan(rng: random.Random) -> list[dict[str, Any]]:
    out = []
    for k in range(REQUESTS):
        roll = rng.random()
        if roll < 0.05:
            path, body = MALFORMED[k % len(MALFORMED)]
            out.append({"kind": "bad", "path": path, "raw": body})
        elif roll < 0.40 or roll < 0.60:
            ask = {"model": "lighthouse", "prompt": rng.choice(PROMPTS),
                   "max_tokens": rng.randint(1, 120), "seed": rng.randrange(10**6)}
            ask |= rng.choice(SETTINGS)
            out.append({"kind": "stream" if roll < 0.40 else "whole", "body": ask})
        elif roll < 0.85:
            x = np.asarray([[rng.random() for _ in range(3)] for _ in range(rng.randint(1, 8))])
            out.append({"kind": "table", "x": x})
        else:
            n = rng.randint(1, 20)
            texts = ["".join(rng.choice("The lamp was lit. 3 May") for _ in range(n))
                     for _ in range(rng.randint(1, 3))]
            out.append({"kind": "text", "texts": texts})
    return out


async def send(c: Any, item: dict[str, Any]) -> tuple[int, Any]:
    kind = item["kind"]
    if kind == "bad":
        r = await c.post(item["path"], content=item["raw"])
        return r.status_code, r.json()
    if kind == "stream":
        async with c.stream("POST", "/v1/completions", json=item["body"] | {"stream": True}
                            ) as r:
            events = [line[6:] async for line in r.aiter_lines() if line.startswith("data: ")]
        text = "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1])
        return r.status_code, (text, events[-1])
    if kind == "whole":
        r = await c.post("/v1/completions", json=item["body"])
        return r.status_code, r.json()
    if kind == "table":
        x = item["x"]
        r = await c.post("/v2/models/weather/infer", json={"inputs": [
            {"name": "x", "shape": list(x.shape), "datatype": "FP64", "data": x.tolist()}]})
        return r.status_code, r.json()
    r = await c.post("/v2/models/lighthouse/infer", json={"inputs": [
        {"name": "x", "shape": [len(item["texts"])], "datatype": "BYTES",
         "data": item["texts"]}]})
    return r.status_code, r.json()


@pytest.mark.slow
def test_two_thousand_mixed_requests_no_5xx_every_answer_right(tmp_path: Path) -> None:
    rng = random.Random(0)
    todo = plan(rng)
    lighthouse, weather = nnre.load(SAMPLES / "lighthouse.bundle"), nnre.load(
        SAMPLES / "weather.bundle")
    results: list[tuple[int, Any] | None] = [None] * len(todo)
    with running([str(SAMPLES / "lighthouse.bundle"), str(SAMPLES / "weather.bundle")],
                 tmp_path) as server:
        async def main() -> float:
            limits = httpx.Limits(max_connections=CONCURRENCY)
            queue = list(enumerate(todo))
            async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as c:
                async def worker() -> None:
                    while queue:
                        k, item = queue.pop()
                        results[k] = await send(c, item)
                start = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
                return time.perf_counter() - start

        seconds = asyncio.run(main())
        metrics = httpx.get(server.url + "/metrics").text
    infers = sum(1 for item in todo if item["kind"] in ("table", "text"))
    batches = sum(metric(metrics, "nnre_batch_size_count", model=m, kind="tensor")
                  for m in ("weather", "lighthouse"))
    steps = metric(metrics, "nnre_batch_size_count", model="lighthouse", kind="text")
    alone = metric(metrics, "nnre_batch_size_bucket", model="lighthouse", kind="text",
                   le="1.0")
    assert 0 < batches < infers  # infer requests were batched together
    assert alone < steps  # generation steps held several streams
    statuses = [r[0] for r in results if r is not None]
    assert len(statuses) == REQUESTS and max(statuses) < 500
    io_check = {"bad": 0, "stream": 0, "whole": 0, "table": 0, "text": 0}
    for item, result in zip(todo, results, strict=True):
        assert result is not None
        status, got = result
        kind = item["kind"]
        io_check[kind] += 1
        if kind == "bad":
            assert 400 <= status < 500 and "error" in got, (item, status, got)
            continue
        assert status == 200, (item, got)
        if kind in ("stream", "whole"):
            ask = item["body"]
            settings = {k: v for k, v in ask.items()
                        if k not in ("model", "prompt", "max_tokens", "seed")}
            want = "".join(lighthouse.generate(ask["prompt"], ask["max_tokens"],
                                               seed=ask["seed"],
                                               **(lighthouse.sampling | settings)))
            text = got[0] if kind == "stream" else got["choices"][0]["text"]
            assert text == want, ask
            if kind == "stream":
                assert got[1] == "[DONE]"
        elif kind == "table":
            want_y = weather.step({"x": item["x"].astype(np.float32)})[0]["y"]
            np.testing.assert_allclose(np.reshape(got["outputs"][0]["data"], want_y.shape),
                                       want_y, rtol=1e-5)
        else:
            from nnre.codecs import text_io

            io = text_io(lighthouse.metadata, ["x"], ["y"])
            xs = np.stack([io.chars.one_hot(t) for t in item["texts"]], axis=1)
            want_y = lighthouse.run({"x": xs})[0]["y"]
            np.testing.assert_allclose(np.reshape(got["outputs"][0]["data"], want_y.shape),
                                       want_y, rtol=1e-4, atol=1e-6)
    print(f"\n{REQUESTS} requests ({io_check}) at {CONCURRENCY} at a time in {seconds:.1f} s: "
          f"{REQUESTS / seconds:.0f} requests/s, 0 5xx")


BASES: list[tuple[str, dict[str, Any]]] = [
    ("/v1/completions", {"model": "lighthouse", "prompt": "The ", "max_tokens": 5, "seed": 1,
                         "stream": False, "stop": ["\n"], "n": 1, "temperature": 0.7}),
    ("/v1/completions", {"model": "lighthouse", "prompt": ["a", "b"], "max_tokens": 3,
                         "stream": True}),
    ("/v2/models/weather/infer", {"id": "x", "inputs": [
        {"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [0.1, 0.2, 0.3]}],
        "outputs": [{"name": "y"}]}),
    ("/v2/models/lighthouse/infer", {"parameters": {"session_id": "s1"}, "inputs": [
        {"name": "x", "shape": [1], "datatype": "BYTES", "data": ["The"]}]}),
]
WEIRD: list[Any] = [None, True, False, 0, -1, 1.5, 1e308, -1e308, "", "x" * 300, [], {},
                    [1, "a"], {"a": 1}, [[[]]], 2**70, "\u0000", "NaN"]


def mutate(obj: Any, rng: random.Random) -> Any:
    """One random change somewhere in a JSON value (a field replaced, added or removed)."""
    if isinstance(obj, dict | list):
        obj = dict(obj) if isinstance(obj, dict) else list(obj)
        keys = list(obj) if isinstance(obj, dict) else list(range(len(obj)))
        if keys and rng.random() < 0.6:
            k = rng.choice(keys)
            obj[k] = mutate(obj[k], rng) if rng.random() < 0.6 else rng.choice(WEIRD)
        elif isinstance(obj, dict) and rng.random() < 0.5:
            obj[rng.choice(["zz", "inputs", "model", "n"])] = rng.choice(WEIRD)
        elif keys:
            del obj[rng.choice(keys)]
        return obj
    return rng.choice(WEIRD) if rng.random() < 0.5 else obj


@pytest.mark.slow
def test_mutated_requests_never_get_a_5xx(tmp_path: Path) -> None:
    """1,500 valid requests with one random change each (and some cut short): a 2xx or a 4xx
    JSON error, never a 5xx or a traceback."""
    rng = random.Random(1)
    with running([str(SAMPLES / "lighthouse.bundle"), str(SAMPLES / "weather.bundle")],
                 tmp_path) as server, server.client() as c:
        seen: dict[int, int] = {}
        for _ in range(1500):
            path, base = rng.choice(BASES)
            raw = json.dumps(mutate(base, rng)).encode()
            if rng.random() < 0.05:
                raw = raw[:rng.randrange(len(raw))]
            r = c.post(path, content=raw)
            seen[r.status_code] = seen.get(r.status_code, 0) + 1
            assert r.status_code < 500 and "Traceback" not in r.text, (raw, r.text)
            if r.status_code >= 400:
                assert "error" in r.json()
    assert seen.get(200) and seen.get(400)
