"""Models from URLs (nnre/remote.py) against a real HTTP server on 127.0.0.1 with range
requests: fetched once, verified in full, changes detected, misbehaving servers refused and
the cache never poisoned. The oracle is the same bundle loaded from the local file."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fsspec")
pytest.importorskip("aiohttp")

from bundle_helpers import lstm_content, lstm_weights  # noqa: E402
from range_server import Site, serving  # noqa: E402

import nnre  # noqa: E402
from nnre.bundle.write import encode  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LIGHTHOUSE = ROOT / "samples" / "lighthouse.bundle"


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, private cache for each test (the remote store lives under it)."""
    home = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    monkeypatch.delenv("NNRE_NO_CACHE", raising=False)
    return home


@pytest.fixture
def site() -> Iterator[Site]:
    with serving(Site()) as s:
        yield s


def tiny(seed: int) -> bytes:
    """A small LSTM bundle; every seed gives a file of the same size, other weights."""
    return encode(dataclasses.replace(lstm_content(), tensors=lstm_weights(seed=seed)))


def outputs(model: nnre.Model) -> np.ndarray:
    x = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 1]]
    return model.run({"x": x})[0]["y"]


def stored(home: Path) -> list[str]:
    """Files in the remote store (temporary downloads included), refs aside."""
    root = home / "nnre" / "remote"
    return sorted(p.name for p in root.iterdir() if p.is_file()) if root.exists() else []


def test_fetched_once_then_served_from_the_cache(cache_home: Path, site: Site) -> None:
    site.files["/m.bundle"] = LIGHTHOUSE.read_bytes()
    url = site.url + "/m.bundle"
    local = nnre.load(LIGHTHOUSE)
    model = nnre.load(url)
    assert model.bundle_id == local.bundle_id
    want = "".join(local.generate("The ", 80, seed=3))
    assert "".join(model.generate("The ", 80, seed=3)) == want
    assert site.gets("/m.bundle").count(None) == 1  # one whole-file download
    assert stored(cache_home) == [f"{local.bundle_id}.bundle"]
    assert (cache_home / "nnre" / "remote" / stored(cache_home)[0]).read_bytes() \
        == LIGHTHOUSE.read_bytes()

    site.log.clear()
    again = nnre.load(url)
    assert "".join(again.generate("The ", 80, seed=3)) == want
    assert site.gets("/m.bundle") == ["bytes=0-65535"]  # one range read, no download


def test_a_changed_file_of_the_same_size_and_date_is_detected(cache_home: Path,
                                                             site: Site) -> None:
    old, new = tiny(1), tiny(2)
    assert len(old) == len(new) and old != new
    url = site.url + "/m.bundle"
    site.files["/m.bundle"] = old
    first = outputs(nnre.load(url))
    np.testing.assert_allclose(first, outputs(nnre.load(old)), rtol=1e-6)
    site.files["/m.bundle"] = new  # same size, same Last-Modified, no ETag
    second = outputs(nnre.load(url))
    np.testing.assert_allclose(second, outputs(nnre.load(new)), rtol=1e-6)
    assert not np.allclose(first, second)
    assert site.gets("/m.bundle").count(None) == 2
    new_id = nnre.load(new).bundle_id
    assert nnre.loader.resolve(url) == str(cache_home / "nnre" / "remote" / f"{new_id}.bundle")
    assert len(stored(cache_home)) == 2  # both contents, each under its own id


def test_a_server_without_ranges_is_read_as_far_as_the_header(cache_home: Path) -> None:
    with serving(Site(ranges=False)) as s:  # no ETag either: the bundle id decides
        url = s.url + "/m.bundle"
        s.files["/m.bundle"] = tiny(1)
        nnre.load(url)
        nnre.load(url)
        assert len(s.gets("/m.bundle")) == 3  # probe and download, then the probe alone
        s.files["/m.bundle"] = tiny(2)
        np.testing.assert_allclose(outputs(nnre.load(url)), outputs(nnre.load(tiny(2))),
                                   rtol=1e-6)
        assert len(s.gets("/m.bundle")) == 5


def long_header(letter: str) -> bytes:
    """A bundle whose header is longer than the probe's first read (a 100 KB description)."""
    content = lstm_content(description=letter * 100_000)
    return encode(content)


@pytest.mark.parametrize("etags", [True, False])
def test_a_long_header_without_ranges_falls_back_to_validators(cache_home: Path,
                                                               etags: bool) -> None:
    assert len(long_header("a")) == len(long_header("b"))
    with serving(Site(etags=etags, ranges=False)) as s:
        url = s.url + "/m.bundle"
        s.files["/m.bundle"] = long_header("a")
        nnre.load(url)
        before = len(s.gets("/m.bundle"))
        assert nnre.load(url).metadata["description"][:1] == "a"
        downloaded = len(s.gets("/m.bundle")) - before - 2  # the probe's two reads
        assert downloaded == (0 if etags else 1)  # same ETag: kept; a date alone: fetched
        s.files["/m.bundle"] = long_header("b")  # same size and date, another ETag
        assert nnre.load(url).metadata["description"][:1] == "b"


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_file_is_refused_and_never_cached(cache_home: Path, site: Site,
                                                    damage: str) -> None:
    good = tiny(1)
    bad = bytearray(good)
    if damage == "flip":
        bad[-5] ^= 0x40  # a weight byte: only the tensor's sha256 can tell
    else:
        del bad[-100:]
    site.files["/m.bundle"] = bytes(bad)
    url = site.url + "/m.bundle"
    code = "tensor-digest" if damage == "flip" else "truncated"
    with pytest.raises(nnre.BundleError) as err:
        nnre.load(url)
    assert err.value.code == code and url in str(err.value)
    with pytest.raises(nnre.BundleError):  # refused again: nothing of it was kept
        nnre.load(url, check_data=False)
    assert stored(cache_home) == []
    site.files["/m.bundle"] = good
    np.testing.assert_allclose(outputs(nnre.load(url)), outputs(nnre.load(good)), rtol=1e-6)


@pytest.mark.parametrize(("how", "said"), [("short", "ended after"),
                                           ("more", "more than the")])
def test_a_server_that_breaks_its_word_is_cut_off(cache_home: Path, site: Site,
                                                  how: str, said: str) -> None:
    site.files["/m.bundle"] = tiny(1)
    site.behaviour["/m.bundle"] = how
    start = time.monotonic()
    with pytest.raises(nnre.FetchError, match=said):
        nnre.load(site.url + "/m.bundle")
    assert time.monotonic() - start < 30  # stopped, not read to the end of 4 MiB of junk
    assert stored(cache_home) == []


def test_a_hundred_gigabytes_announced_are_refused_before_downloading(cache_home: Path,
                                                                      site: Site) -> None:
    site.behaviour["/big.bundle"] = "huge"
    with pytest.raises(nnre.FetchError, match="announces 100.0 GiB, past the memory budget"):
        nnre.load(site.url + "/big.bundle")
    assert site.gets("/big.bundle") == []  # a HEAD only
    nnre.budget.set_limit(1000)
    try:
        site.files["/m.bundle"] = tiny(1)
        with pytest.raises(nnre.FetchError, match="memory budget"):
            nnre.load(site.url + "/m.bundle")
    finally:
        nnre.budget.set_limit(None)


def test_a_missing_file_is_one_clear_error(cache_home: Path, site: Site) -> None:
    url = site.url + "/nope.bundle"
    with pytest.raises(nnre.FetchError, match=r"nope\.bundle: not found \(HTTP 404\)"):
        nnre.load(url)
    got = subprocess.run([sys.executable, "-m", "nnre", "run", url, "-n", "5"],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "XDG_CACHE_HOME": str(cache_home)})
    assert got.returncode == 1 and got.stdout == ""
    assert got.stderr == f"error: {url}: not found (HTTP 404) [fetch-error]\n"


def test_nothing_listening_is_one_clear_error(cache_home: Path) -> None:
    with serving(Site()) as s:
        url = s.url + "/m.bundle"  # the port is free again after the block
    with pytest.raises(nnre.FetchError, match=url):
        nnre.load(url)


def test_cli_run_inspect_and_verify_take_a_url(cache_home: Path, site: Site) -> None:
    site.files["/lighthouse.bundle"] = LIGHTHOUSE.read_bytes()
    url = site.url + "/lighthouse.bundle"
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home)}

    def nnre_cli(*args: str) -> str:
        got = subprocess.run([sys.executable, "-m", "nnre", *args], capture_output=True,
                             text=True, timeout=120, env=env, cwd=ROOT)
        assert got.returncode == 0, got.stderr
        return got.stdout

    run = ["run", "--prime", "3 May.", "-n", "120", "--seed", "1"]
    assert nnre_cli(*run[:1], url, *run[1:]) == nnre_cli(*run[:1], str(LIGHTHOUSE), *run[1:])
    assert "lighthouse" in nnre_cli("inspect", url, "--no-tensors")
    assert nnre_cli("verify", url).startswith(f"ok: {url}: ")


def test_with_the_cache_off_a_url_still_loads(site: Site, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    monkeypatch.setenv("NNRE_NO_CACHE", "1")
    site.files["/m.bundle"] = tiny(5)
    np.testing.assert_allclose(outputs(nnre.load(site.url + "/m.bundle")),
                               outputs(nnre.load(tiny(5))), rtol=1e-6)


def test_import_nnre_needs_no_extra_and_a_missing_one_says_what_to_install(
        tmp_path: Path) -> None:
    code = f"""
import sys
import nnre, nnre.loader, nnre.remote, nnre.ray
nnre.load({str(LIGHTHOUSE)!r})
heavy = sorted(m for m in ('fsspec', 'aiohttp', 's3fs', 'ray', 'pyarrow') if m in sys.modules)
assert not heavy, heavy
sys.modules['fsspec'] = None  # as if the remote extra were not installed
sys.argv = ['nnre', 'run', 'https://127.0.0.1:9/m.bundle']
from nnre.cli import main
main()
"""
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "XDG_CACHE_HOME": str(tmp_path)})
    assert got.returncode == 1, got.stderr
    assert got.stderr == ("error: https://127.0.0.1:9/m.bundle: reading models from https:// "
                          "needs the remote extra (fsspec is missing): "
                          "pip install 'nnre[remote]' [fetch-error]\n")


def test_a_file_larger_than_the_free_disk_is_refused_before_downloading(
        cache_home: Path, site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil
    from collections import namedtuple

    import nnre.remote

    usage, real = namedtuple("usage", "total used free"), shutil.disk_usage
    monkeypatch.setattr(nnre.remote.shutil, "disk_usage",  # the disk, not the code under test
                        lambda p: usage(1 << 40, 1 << 40, nnre.remote.DISK_RESERVE + 1000))
    site.files["/m.bundle"] = tiny(1)
    with pytest.raises(nnre.FetchError, match="free for the cache"):
        nnre.load(site.url + "/m.bundle")
    assert site.gets("/m.bundle").count(None) == 0 and stored(cache_home) == []
    monkeypatch.setattr(nnre.remote.shutil, "disk_usage", real)
    nnre.load(site.url + "/m.bundle")  # with room, and then from the cache even without
    monkeypatch.setattr(nnre.remote.shutil, "disk_usage",
                        lambda p: usage(1 << 40, 1 << 40, 0))
    nnre.load(site.url + "/m.bundle")
    assert site.gets("/m.bundle").count(None) == 1
