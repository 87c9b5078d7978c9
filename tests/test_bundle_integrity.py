"""What a loaded model depends on: tensor digests checked before first use, the compile cache
private and signed, and a model file replaced while a process has it loaded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgpack
import numpy as np
import pytest
from bundle_helpers import lstm_content

import nnre
from nnre import cache as compile_cache
from nnre.bundle.write import write
from nnre.errors import BundleError

X = {"x": np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0]][:, None, :]}  # T=5, B=1, V=4


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("NNRE_NO_CACHE", raising=False)
    return tmp_path / "cache" / "nnre"


def _flip_last_byte(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1
    os.utime(path)  # a write: new mtime and ctime
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize("mapped", [False, True])
def test_a_flipped_tensor_byte_is_never_used(tmp_path: Path, private_cache: Path,
                                             mapped: bool) -> None:
    path = tmp_path / "m.bundle"
    write(path, lstm_content())
    nnre.load(path, mapped=mapped)  # good, and (mapped) recorded as verified
    _flip_last_byte(path)
    with pytest.raises(BundleError, match="tensor-digest|sha256 of tensor") as err:
        nnre.load(path, mapped=mapped)
    assert err.value.code == "tensor-digest" and str(path) in str(err.value)


def test_a_verified_large_file_is_not_hashed_again(tmp_path: Path, private_cache: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.bundle"
    write(path, lstm_content())
    calls: list[str] = []
    real = nnre.loader.check_tensor_digests
    monkeypatch.setattr(nnre.loader, "check_tensor_digests",
                        lambda *a, **k: (calls.append("hash"), real(*a, **k)))
    nnre.load(path, mapped=True)
    nnre.load(path, mapped=True)  # same device, inode, size, mtime, ctime: recorded
    assert calls == ["hash"]
    os.utime(path, ns=(0, os.stat(path).st_mtime_ns + 1))  # touched: hashed again
    nnre.load(path, mapped=True)
    assert calls == ["hash", "hash"]


def _entry(private_cache: Path) -> Path:
    entries = list((private_cache / "programs").glob("*.msgpack"))
    assert len(entries) == 1
    return entries[0]


def test_a_tampered_cache_entry_is_rebuilt_never_used(tmp_path: Path,
                                                       private_cache: Path) -> None:
    """Swap sigmoid for tanh in the cached program and re-seal it with a plain sha256, as the
    old format allowed: the entry is not signed with the user's key, so it is rebuilt."""
    import hashlib

    path = tmp_path / "m.bundle"
    write(path, lstm_content())
    want, _ = nnre.load(path, cache=False).run(X)
    nnre.load(path)  # stores the entry
    entry = _entry(private_cache)
    blob = entry.read_bytes()
    head = len(compile_cache.MAGIC) + 32
    data = msgpack.unpackb(blob[head:], raw=False)
    text = msgpack.packb(data, use_bin_type=True).replace(b"\xa7sigmoid", b"\xa4tanh")
    assert text != msgpack.packb(data, use_bin_type=True)
    entry.write_bytes(compile_cache.MAGIC + hashlib.sha256(text).digest() + text)
    got, _ = nnre.load(path).run(X)
    np.testing.assert_array_equal(got["y"], want["y"])
    assert b"\xa7sigmoid" in entry.read_bytes()  # rebuilt and signed again


def test_a_cache_others_can_write_is_not_used(tmp_path: Path, private_cache: Path) -> None:
    path = tmp_path / "m.bundle"
    write(path, lstm_content())
    nnre.load(path)
    assert compile_cache.secret() is not None and _entry(private_cache).exists()
    os.chmod(private_cache, 0o777)
    assert compile_cache.secret() is None and compile_cache.load("0" * 64) is None
    os.chmod(private_cache, 0o700)
    os.chmod(private_cache / "key", 0o644)  # a key others can read signs nothing
    assert compile_cache.secret() is None


REPLACE = """
import os, sys, numpy as np, nnre
path, new, mode = sys.argv[1], sys.argv[2], sys.argv[3]
m = nnre.load(path, mapped=(mode == "rename"))
x = {"x": np.eye(4, dtype=np.float32)[[0, 1, 2]][:, None, :]}
before = m.run(x)[0]["y"]
if mode == "rename":
    os.replace(new, path)          # the safe way: the old file lives on while mapped
else:
    with open(path, "r+b") as f:   # an in-place rewrite, like cp over the file
        f.truncate(100)
after = m.run(x)[0]["y"]
print("same" if np.array_equal(before, after) else "changed")
"""


@pytest.mark.parametrize("mode", ["copied", "rename"])
def test_replacing_a_loaded_model_file(tmp_path: Path, mode: str) -> None:
    """A file read into memory (the default below 64 MiB) is immune to anything done to the
    file; a mapped one survives the documented way to replace a model, an atomic rename."""
    path, new = tmp_path / "m.bundle", tmp_path / "new.bundle"
    write(path, lstm_content())
    write(new, lstm_content(h=3, v=4, dtype="float64"))
    proc = subprocess.run([sys.executable, "-c", REPLACE, str(path), str(new), mode],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "NNRE_NO_CACHE": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "same"
