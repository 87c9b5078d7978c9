"""Models at s3:// locations (nnre/remote.py through s3fs) against a real S3 API on
127.0.0.1: moto's server, reached through the standard AWS_ENDPOINT_URL setting, with test
credentials in the usual AWS_* variables. Oracle: the same bundles loaded from bytes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")

from test_remote import LIGHTHOUSE, outputs, stored, tiny  # noqa: E402

import nnre  # noqa: E402


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@dataclass
class Bucket:
    client: Any
    name: str

    def put(self, key: str, data: bytes) -> str:
        self.client.put_object(Bucket=self.name, Key=key, Body=data)
        return f"s3://{self.name}/{key}"


@pytest.fixture
def s3(endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint,
                       "XDG_CACHE_HOME": str(tmp_path / "xdg")}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("NNRE_NO_CACHE", raising=False)
    client = boto3.client("s3", endpoint_url=endpoint)
    name = f"models-{len(list(tmp_path.parent.iterdir()))}-{os.getpid()}"
    client.create_bucket(Bucket=name)
    return Bucket(client, name)


def test_an_s3_model_is_fetched_once_and_a_change_is_seen(s3: Bucket, tmp_path: Path) -> None:
    url = s3.put("l.bundle", LIGHTHOUSE.read_bytes())
    local = nnre.load(LIGHTHOUSE)
    model = nnre.load(url)
    assert "".join(model.generate("The ", 60, seed=2)) == "".join(local.generate("The ", 60,
                                                                                  seed=2))
    blob = tmp_path / "xdg" / "nnre" / "remote" / f"{local.bundle_id}.bundle"
    before = os.stat(blob)
    nnre.load(url)
    after = os.stat(blob)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    first = outputs(nnre.load(s3.put("t.bundle", tiny(1))))
    second = outputs(nnre.load(s3.put("t.bundle", tiny(2))))  # same key, same size
    np.testing.assert_allclose(first, outputs(nnre.load(tiny(1))), rtol=1e-6)
    np.testing.assert_allclose(second, outputs(nnre.load(tiny(2))), rtol=1e-6)
    assert len(stored(tmp_path / "xdg")) == 3


def test_a_damaged_s3_object_is_refused_and_a_missing_one_named(s3: Bucket,
                                                                tmp_path: Path) -> None:
    bad = bytearray(tiny(3))
    bad[-5] ^= 1
    with pytest.raises(nnre.BundleError) as err:
        nnre.load(s3.put("bad.bundle", bytes(bad)))
    assert err.value.code == "tensor-digest"
    assert stored(tmp_path / "xdg") == []
    url = f"s3://{s3.name}/nope.bundle"
    with pytest.raises(nnre.FetchError, match="nope.bundle: not found"):
        nnre.load(url)
    got = subprocess.run([sys.executable, "-m", "nnre", "run", url], capture_output=True,
                         text=True, timeout=120, env=dict(os.environ))
    assert got.returncode == 1 and got.stderr == f"error: {url}: not found [fetch-error]\n"


def test_nnre_serve_takes_a_new_version_of_an_s3_object(s3: Bucket, tmp_path: Path) -> None:
    """The watch of ``nnre serve`` on S3 (a new object at the same key, the same size),
    and a damaged version refused while the last good one keeps serving."""
    pytest.importorskip("uvicorn")
    from serve_helpers import running
    from test_serve_remote import bundle, damaged, infer, until, version, want

    v1, v2 = bundle(1, "1.0.0"), bundle(2, "2.0.0")
    url = s3.put("m.bundle", v1)
    with running([url, "--watch-interval", "0.2"], tmp_path) as server, \
            server.client() as c:
        np.testing.assert_allclose(infer(c), want(v1), rtol=1e-5, atol=1e-7)
        s3.put("m.bundle", v2)
        until(lambda: version(c) == "2.0.0", "version 2 served")
        np.testing.assert_allclose(infer(c), want(v2), rtol=1e-5, atol=1e-7)
        s3.put("m.bundle", damaged(bundle(3, "3.0.0")))
        until(lambda: any("refused" in line for line in server.log_lines()),
              "the damaged version refused")
        assert version(c) == "2.0.0"
        np.testing.assert_allclose(infer(c), want(v2), rtol=1e-5, atol=1e-7)
