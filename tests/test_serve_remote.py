"""``nnre serve URL`` watching the remote model (nnre/serve/registry.py ``poll_remote``):
the real server in a subprocess, the model on the range-request HTTP server of
tests/range_server.py (no ETag, a fixed Last-Modified, the same size for every version: only
the bundle id can tell them apart). The oracle is each version loaded from its bytes here."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fsspec")
pytest.importorskip("aiohttp")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from bundle_helpers import lstm_content, lstm_weights  # noqa: E402
from range_server import Site, serving  # noqa: E402
from serve_helpers import metric, running  # noqa: E402

import nnre  # noqa: E402
from nnre.bundle.write import encode  # noqa: E402

X = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 1]][:, None, :]  # (T=5, B=1, V=4)


def bundle(seed: int, version: str) -> bytes:
    """A small LSTM; each seed other weights, every one of them the same size."""
    return encode(dataclasses.replace(lstm_content(version=version),
                                      tensors=lstm_weights(seed=seed)))


def damaged(data: bytes) -> bytes:
    bad = bytearray(data)
    bad[-5] ^= 0x40  # a weight byte: only that tensor's sha256 can tell
    return bytes(bad)


def want(data: bytes) -> np.ndarray:
    return nnre.load(data).run({"x": X})[0]["y"]


def infer(c: httpx.Client) -> np.ndarray:
    r = c.post("/v2/models/m/infer", json={"inputs": [
        {"name": "x", "shape": list(X.shape), "datatype": "FP32", "data": X.ravel().tolist()}]})
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    return np.reshape(out["data"], out["shape"])


def version(c: httpx.Client) -> str:
    return str(c.get("/v2/models/m").json()["versions"][0])


def until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.1)


def test_a_new_version_at_the_url_takes_over_and_a_damaged_one_is_refused(
        tmp_path: Path) -> None:
    v1, v2, v3 = bundle(1, "1.0.0"), bundle(2, "2.0.0"), bundle(3, "3.0.0")
    bad = damaged(bundle(4, "4.0.0"))
    assert len({len(v1), len(v2), len(v3), len(bad)}) == 1
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    with serving(Site(files={"/m.bundle": v1})) as site, \
            running([site.url + "/m.bundle", "--watch-interval", "0.2"], tmp_path,
                    env) as server, server.client() as c:
        assert version(c) == "1.0.0"
        np.testing.assert_allclose(infer(c), want(v1), rtol=1e-5, atol=1e-7)

        site.files["/m.bundle"] = v2  # same size, same Last-Modified, no ETag
        until(lambda: version(c) == "2.0.0", "version 2 served")
        np.testing.assert_allclose(infer(c), want(v2), rtol=1e-5, atol=1e-7)
        assert not np.allclose(want(v1), want(v2))

        site.files["/m.bundle"] = bad
        until(lambda: any("refused" in line for line in server.log_lines()),
              "the damaged version refused")
        refused = [line for line in server.log_lines() if "refused" in line]
        assert "tensor-digest" in refused[0] or "sha256" in refused[0], refused
        assert version(c) == "2.0.0"  # the old model keeps serving
        np.testing.assert_allclose(infer(c), want(v2), rtol=1e-5, atol=1e-7)
        text = c.get("/metrics").text
        assert metric(text, "nnre_model_reloads_total", model="m", result="refused") == 1
        assert metric(text, "nnre_model_reloads_total", model="m", result="loaded") == 1
        downloads = site.gets("/m.bundle").count(None)
        time.sleep(1.0)  # five more polls: the refused version is not fetched again
        assert site.gets("/m.bundle").count(None) == downloads

        site.files["/m.bundle"] = v3  # the watch goes on after a refusal
        until(lambda: version(c) == "3.0.0", "version 3 served")
        np.testing.assert_allclose(infer(c), want(v3), rtol=1e-5, atol=1e-7)


def test_an_unreachable_url_keeps_the_model_and_zero_turns_the_watch_off(
        tmp_path: Path) -> None:
    v1 = bundle(1, "1.0.0")
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    with serving(Site(files={"/m.bundle": v1})) as site:
        with running([site.url + "/m.bundle", "--watch-interval", "0"], tmp_path,
                     env) as server, server.client() as c:
            asked = len(site.log)
            site.files["/m.bundle"] = bundle(2, "2.0.0")
            time.sleep(1.0)
            assert len(site.log) == asked and version(c) == "1.0.0"
        site.files["/m.bundle"] = v1
        with running([site.url + "/m.bundle", "--watch-interval", "0.2"], tmp_path,
                     env) as server, server.client() as c:
            del site.files["/m.bundle"]  # 404 from now on
            until(lambda: any("could not check" in line for line in server.log_lines()),
                  "the failed check logged")
            np.testing.assert_allclose(infer(c), want(v1), rtol=1e-5, atol=1e-7)
            site.files["/m.bundle"] = bundle(2, "2.0.0")
            until(lambda: version(c) == "2.0.0", "version 2 served once reachable again")
