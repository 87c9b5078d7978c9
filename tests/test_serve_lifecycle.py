"""`nnre serve` over time: a bundle replaced by rename is reloaded without dropping the
requests in flight, a bad replacement is refused, SIGTERM drains and exits 0."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from serve_helpers import SAMPLES, metric, running, sse  # noqa: E402

import nnre  # noqa: E402

TEXT = SAMPLES / "lighthouse.bundle"
TABLE = SAMPLES / "weather.bundle"


def replace(path: Path, data: bytes) -> None:
    """Write beside, then rename over: how a bundle is replaced under a running server."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def stream_in_background(url: str, body: dict[str, Any]) -> tuple[threading.Thread, dict]:
    out: dict[str, Any] = {"started": threading.Event()}

    def read() -> None:
        with httpx.Client(base_url=url, timeout=120) as c, \
                c.stream("POST", "/v1/completions", json=body | {"stream": True}) as r:
            events = []
            for line in r.iter_lines():
                if line.startswith("data: "):
                    out["started"].set()
                    events.append(line[len("data: "):])
            out["events"] = events

    thread = threading.Thread(target=read)
    thread.start()
    return thread, out


def text_of(events: list[str]) -> str:
    import json

    return "".join(json.loads(e)["choices"][0]["text"] for e in events
                   if e != "[DONE]" and json.loads(e)["choices"])


def test_a_replaced_bundle_is_reloaded_and_a_bad_one_refused(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    target = models / "m.bundle"
    shutil.copy(TEXT, target)
    lighthouse = nnre.load(TEXT)
    long = 30_000  # 1-3 s of generation: the reload (~0.2 s) comes well inside it
    with running([str(models), "--reload-interval", "0.1"], tmp_path) as server, \
            server.client() as c:
        assert c.get("/v2/models/m").json()["inputs"][0]["shape"] == [-1, -1, 51]
        thread, out = stream_in_background(server.url, {
            "model": "m", "prompt": "The ", "max_tokens": long, "seed": 2})
        assert out["started"].wait(30)
        replace(target, TABLE.read_bytes())  # another model under the same name
        deadline = time.monotonic() + 30
        while c.get("/v2/models/m").json()["inputs"][0]["shape"] != [-1, 3]:
            assert time.monotonic() < deadline, "not reloaded"
            time.sleep(0.05)
        in_flight = thread.is_alive()
        r = c.post("/v2/models/m/infer", json={"inputs": [
            {"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [0.1, 0.9, 0.2]}]})
        assert r.status_code == 200 and r.json()["outputs"][1]["name"] == "y.label"
        thread.join(120)
        # the stream that was running kept its model to the end
        assert out["events"][-1] == "[DONE]"
        want = "".join(lighthouse.generate("The ", long, seed=2, **lighthouse.sampling))
        assert text_of(out["events"]) == want
        assert in_flight, "the stream ended before the reload: nothing was in flight"

        broken = bytearray(TEXT.read_bytes())
        broken[-100] ^= 0xFF  # a weight byte: its sha256 no longer matches
        replace(target, bytes(broken))
        deadline = time.monotonic() + 30
        while not metric(c.get("/metrics").text, "nnre_model_reloads_total", model="m",
                         result="refused"):
            assert time.monotonic() < deadline, "the bad file was not looked at"
            time.sleep(0.05)
        assert c.get("/v2/models/m").json()["inputs"][0]["shape"] == [-1, 3]  # still serving
        assert any("refused" in line and "m.bundle" in line for line in server.log_lines())

        shutil.copy(TEXT, models / "added.bundle")  # a new file in the folder is served too
        deadline = time.monotonic() + 30
        while c.get("/v2/models/added/ready").status_code != 200:
            assert time.monotonic() < deadline, "a new bundle in the folder was not served"
            time.sleep(0.05)


def test_sigterm_drains_the_requests_in_flight_and_exits_0(tmp_path: Path) -> None:
    with running([str(TEXT)], tmp_path, stop=False) as server:
        thread, out = stream_in_background(server.url, {
            "model": "lighthouse", "prompt": "The ", "max_tokens": 8_000, "seed": 4})
        assert out["started"].wait(30)
        server.proc.send_signal(signal.SIGTERM)
        thread.join(120)
        code = server.proc.wait(60)
        assert code == 0
        assert out["events"][-1] == "[DONE]"
        assert len(text_of(out["events"])) == 8_000  # the stream was not cut
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.url + "/v2/health/live")
    assert any("Shutting down" in line for line in server.log_lines())


def test_sse_helper_reads_events() -> None:
    """The test helper itself: events as JSON, the end as "[DONE]"."""
    class Fake:
        def iter_lines(self) -> Any:
            return iter(['data: {"a": 1}', "", "data: [DONE]", ""])

    assert sse(Fake()) == [{"a": 1}, "[DONE]"]  # type: ignore[arg-type]


def test_a_model_at_an_http_url_is_fetched_verified_and_served(tmp_path: Path) -> None:
    """``nnre serve http://…/lighthouse.bundle`` (the remote extra): named after the URL's
    file, fetched into the cache and checked by nnre.load, answering as the local file."""
    pytest.importorskip("fsspec")
    pytest.importorskip("aiohttp")
    from range_server import Site, serving

    model = nnre.load(TEXT)
    with serving(Site(files={"/models/lighthouse.bundle": TEXT.read_bytes()})) as site, \
            running([site.url + "/models/lighthouse.bundle"], tmp_path,
                    env={"XDG_CACHE_HOME": str(tmp_path / "cache")}) as server, \
            server.client() as c:
        assert c.get("/v2/models/lighthouse/ready").json()["ready"] is True
        r = c.post("/v1/completions", json={"model": "lighthouse", "prompt": "The ",
                                            "max_tokens": 60, "seed": 9})
        assert r.json()["choices"][0]["text"] == "".join(
            model.generate("The ", 60, seed=9, **model.sampling))
    assert site.gets("/models/lighthouse.bundle")  # it was fetched
