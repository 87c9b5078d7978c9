"""``nnre serve`` as a Ray Serve deployment (nnre/ray_serve.py): a local Ray instance, two
replicas of the application, a real HTTP client through Ray's proxy. The oracles are the
ones of tests/test_serve.py: ``nnre.load(...)`` computed here and what ``nnre run --seed``
prints. Ray, its Serve controller, proxy and two replicas start in about 20 s here (the
whole module, shut down included); the CLI's test starts a Ray of its own and is slow."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
ray = pytest.importorskip("ray")
pytest.importorskip("ray.serve")
pytest.importorskip("starlette")

from serve_helpers import ROOT, SAMPLES, free_port, sse  # noqa: E402

import nnre  # noqa: E402
import nnre.ray_serve  # noqa: E402
from nnre.serve.server import ServeConfig  # noqa: E402

TEXT = SAMPLES / "lighthouse.bundle"
TABLE = SAMPLES / "weather.bundle"
ENV = {"PYTHONPATH": str(ROOT)}


@pytest.mark.slow
def test_nnre_serve_replicas_serves_on_ray_until_sigterm(tmp_path: Path) -> None:
    """The CLI: its own local Ray, two replicas, one completion, SIGTERM → exit 0 (in
    ``running``). First in this file, before the module's Ray instance starts."""
    from serve_helpers import running

    printed = generate_printed(60, 3)
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    with running([str(TEXT), "--replicas", "2"], tmp_path, env) as server, \
            server.client() as c:
        r = c.post("/v1/completions", json={"model": "lighthouse", "prompt": "The ",
                                            "max_tokens": 60, "seed": 3})
        assert r.json()["choices"][0]["text"] == printed
        until = time.monotonic() + 60
        while not any("Ray Serve replica(s)" in line for line in server.log_lines()):
            assert time.monotonic() < until, server.log_lines()
            time.sleep(0.2)


def generate_printed(n: int, seed: int) -> str:
    """What ``nnre run --seed`` prints after the prompt "The "."""
    run = subprocess.run([sys.executable, "-m", "nnre", "run", str(TEXT), "-p", "The ", "-n",
                          str(n), "--seed", str(seed)], capture_output=True, text=True,
                         check=True, cwd=ROOT, env={**os.environ, **ENV})
    return run.stdout[len("The "):][:n]


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Two replicas serving the sample models on a free port; Serve and Ray shut down at
    the end (the shutdown must not hang)."""
    xdg = str(tmp_path_factory.mktemp("xdg"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", xdg)  # the driver's check, and the replicas' loads
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {**ENV, "XDG_CACHE_HOME": xdg}})
        port = free_port()
        try:
            nnre.ray_serve.run([str(TEXT), str(TABLE)], ServeConfig(max_batch=16),
                               num_replicas=2, num_cpus=0.5, port=port)
            yield f"http://127.0.0.1:{port}"
        finally:
            start = time.monotonic()
            try:
                nnre.ray_serve.shutdown()
            finally:
                ray.shutdown()
            assert time.monotonic() - start < 120


def test_two_replicas_run_and_are_ready(deployed: str) -> None:
    from ray import serve

    app = serve.status().applications["nnre"]
    assert app.status == "RUNNING"
    assert app.deployments["nnre"].replica_states == {"RUNNING": 2}
    with httpx.Client(base_url=deployed, timeout=60) as c:
        assert c.get("/v2/health/ready").json() == {"ready": True}
        assert c.get("/v2/models/weather").json()["versions"] == [
            nnre.load(TABLE).metadata["version"]]
        assert c.get("/v2/models/nothing").status_code == 404


def test_infer_answers_what_the_model_computes(deployed: str) -> None:
    model = nnre.load(TABLE)
    x = np.random.default_rng(0).uniform(0, 1, (5, 3)).astype(np.float32)
    want = model.step({"x": x})[0]["y"]
    body = {"inputs": [{"name": "x", "shape": [5, 3], "datatype": "FP32",
                        "data": x.ravel().tolist()}]}
    with httpx.Client(base_url=deployed, timeout=60) as c:
        for _ in range(6):  # spread over both replicas
            r = c.post("/v2/models/weather/infer", json=body)
            assert r.status_code == 200, r.text
            out = {o["name"]: o for o in r.json()["outputs"]}
            np.testing.assert_allclose(np.reshape(out["y"]["data"], out["y"]["shape"]), want,
                                       rtol=1e-6)


def test_completions_are_what_nnre_run_prints_whole_and_streamed(deployed: str) -> None:
    printed = generate_printed(120, 7)
    body = {"model": "lighthouse", "prompt": "The ", "max_tokens": 120, "seed": 7}
    with httpx.Client(base_url=deployed, timeout=60) as c:
        for _ in range(3):
            r = c.post("/v1/completions", json=body)
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["text"] == printed
        with c.stream("POST", "/v1/completions", json=body | {"stream": True}) as r:
            assert r.status_code == 200, r.read()
            assert r.headers["content-type"].startswith("text/event-stream")
            events = sse(r)
    assert events[-1] == "[DONE]"
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == printed
    assert len(events) > 10  # streamed in pieces, not one chunk at the end


def test_a_session_stays_on_its_replica_when_it_names_itself_in_the_header(deployed: str
                                                                           ) -> None:
    """Four sessions, each a sequence sent in four parts: with the header, every part
    reaches the replica holding the state, so the parts give what one run of the whole
    sequence gives. Without the header, a session request is refused."""
    model = nnre.load(TEXT)
    rng = np.random.default_rng(3)

    def infer(c: Any, part: np.ndarray, sid: str, header: bool = True) -> httpx.Response:
        return c.post("/v2/models/lighthouse/infer", headers={"x-session-id": sid} if header
                      else {}, json={"parameters": {"session_id": sid}, "inputs": [
                          {"name": "x", "shape": list(part.shape), "datatype": "FP32",
                           "data": part.ravel().tolist()}]})

    with httpx.Client(base_url=deployed, timeout=60) as c:
        for k in range(4):
            xs = np.eye(51, dtype=np.float32)[rng.integers(0, 51, (12, 1))]  # (T, B=1, V)
            want = model.run({"x": xs})[0]["y"]
            parts = []
            for chunk in np.split(xs, 4):
                r = infer(c, chunk, f"s-{k}")
                assert r.status_code == 200, r.text
                o = r.json()["outputs"][0]
                parts.append(np.reshape(o["data"], o["shape"]))
            np.testing.assert_allclose(np.concatenate(parts), want, rtol=1e-5, atol=1e-7)
        r = infer(c, xs[:2], "s-9", header=False)
        assert r.status_code == 400 and "x-session-id: s-9" in r.json()["error"]


def test_a_deployment_needs_a_replica(tmp_path: Path) -> None:
    with pytest.raises(nnre.NnreError, match="at least 1 replica"):
        nnre.ray_serve.deployment([str(TABLE)], num_replicas=0)


def test_behind_replicas_a_session_request_must_name_its_session_in_the_header() -> None:
    """The application as each replica runs it (``session_header`` set), hosted here by
    httpx as ASGI: without the header, or with another id in it, a session request is
    refused; with it, the session carries the state as on one server."""
    import asyncio

    from nnre.serve.server import make_app

    app, _ = make_app([str(TEXT)], ServeConfig(session_header="x-session-id"))
    model = nnre.load(TEXT)
    xs = np.eye(51, dtype=np.float32)[np.random.default_rng(5).integers(0, 51, (6, 1))]
    want = model.run({"x": xs})[0]["y"]

    def body(part: np.ndarray) -> dict[str, Any]:
        return {"parameters": {"session_id": "a-1"}, "inputs": [
            {"name": "x", "shape": list(part.shape), "datatype": "FP32",
             "data": part.ravel().tolist()}]}

    async def ask() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://nnre") as c:
            url = "/v2/models/lighthouse/infer"
            return [await c.post(url, json=body(xs[:3])),
                    await c.post(url, json=body(xs[:3]), headers={"x-session-id": "a-2"}),
                    await c.post("/v1/completions", json={"model": "lighthouse",
                                                          "prompt": "a", "session_id": "b"}),
                    await c.post(url, json=body(xs[:3]), headers={"x-session-id": "a-1"}),
                    await c.post(url, json=body(xs[3:]), headers={"x-session-id": "a-1"})]

    no, other, text, first, second = asyncio.run(ask())
    for r in (no, other, text):
        assert r.status_code == 400
    assert "x-session-id: a-1" in no.json()["error"]
    assert "x-session-id: b" in text.json()["error"]["message"]
    got = np.concatenate([np.reshape(r.json()["outputs"][0]["data"],
                                     r.json()["outputs"][0]["shape"]) for r in (first, second)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
