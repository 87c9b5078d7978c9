"""The compile cache: a bundle's compiled Program kept on disk, so a warm load needs no SymPy.

A cache entry is derived data, never trusted: it is keyed by the bundle id (the sha256 of the
bundle's header, which holds the equations, dims, dtype and every tensor's shape) and by the
compiler's identity (nnre's version and a digest of the compiler's own source files), and it
carries a sha256 of its payload. A missing, stale, corrupt or inconsistent entry is ignored
and rebuilt; the payload is msgpack of plain data (never pickle), decoded with explicit
limits and no extension types, and the rebuilt Program passes ``check_program`` before use.

Location: ``$XDG_CACHE_HOME/nnre`` or ``~/.cache/nnre``. ``NNRE_NO_CACHE=1`` (or
``load(..., cache=False)``, ``nnre run --no-cache``) turns it off. Writing is best effort and
atomic (temp file + rename): a read-only cache directory only costs the warm start.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from nnre.files import open_regular
from nnre.program import Program, ProgramDataError, from_data, to_data

MAGIC = b"NNREPRG1"
FORMAT = 1
MAX_ENTRY_BYTES = 64 * 1024 * 1024
#: The files whose code decides what a compiled Program looks like.
_COMPILER_FILES = ("compiler.py", "optimize.py", "program.py", "ops", "equations")
_compiler_digest: str | None = None


@dataclass(frozen=True)
class Compiled:
    """What a warm load needs besides the bundle: the Program, dims and parameter shapes."""

    program: Program
    dims: dict[str, int]
    param_shapes: dict[str, tuple[int, ...]]


def enabled() -> bool:
    return os.environ.get("NNRE_NO_CACHE", "") in ("", "0")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nnre"


def compiler_id() -> str:
    """nnre's version plus a digest of the compiler's sources (computed once per process)."""
    global _compiler_digest
    if _compiler_digest is None:
        root = Path(__file__).resolve().parent
        h = hashlib.sha256()
        for name in _COMPILER_FILES:
            path = root / name
            files = sorted(path.glob("*.py")) if path.is_dir() else [path]
            for f in files:
                h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
        _compiler_digest = h.hexdigest()[:32]
    from nnre import __version__

    return f"{__version__}+{_compiler_digest}"


def entry_path(bundle_id: str) -> tuple[Path, str]:
    """Where the entry for this bundle and this compiler lives, and its key."""
    key = hashlib.sha256(f"{bundle_id}\0{compiler_id()}".encode()).hexdigest()
    return cache_dir() / "programs" / f"{key[:48]}.msgpack", key


def load(bundle_id: str) -> Compiled | None:
    """The cached compile of this bundle, or None when absent or not exactly right."""
    path, key = entry_path(bundle_id)
    try:  # a FIFO or device planted at the entry path is ignored (and replaced), never read
        with open_regular(path, ProgramDataError) as f:
            blob = f.read(MAX_ENTRY_BYTES + 1)
    except (OSError, ProgramDataError):
        return None
    try:
        return _decode(blob, key)
    except (ProgramDataError, ValueError, TypeError, KeyError, msgpack.UnpackException):
        return None  # corrupt or stale: the caller rebuilds and overwrites it


def _decode(blob: bytes, key: str) -> Compiled:
    head = len(MAGIC) + 32
    if len(blob) > MAX_ENTRY_BYTES or not blob.startswith(MAGIC):
        raise ValueError("not a cache entry")
    payload = blob[head:]
    if hashlib.sha256(payload).digest() != blob[len(MAGIC):head]:
        raise ValueError("digest mismatch")
    data = msgpack.unpackb(payload, raw=False, strict_map_key=True, use_list=True,
                           ext_hook=_no_ext, max_bin_len=len(payload),
                           max_str_len=len(payload), max_array_len=len(payload),
                           max_map_len=len(payload))
    if data.get("format") != FORMAT or data.get("key") != key:
        raise ValueError("stale entry")
    dims = {str(k): int(v) for k, v in data["dims"].items()}
    shapes = {str(k): tuple(int(d) for d in v) for k, v in data["param_shapes"].items()}
    return Compiled(from_data(data["program"]), dims, shapes)


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError("msgpack extension types are not allowed")


def store(bundle_id: str, compiled: Compiled) -> bool:
    """Write the entry atomically; False (and nothing raised) when the cache is not writable."""
    path, key = entry_path(bundle_id)
    payload = msgpack.packb({
        "format": FORMAT, "key": key, "program": to_data(compiled.program),
        "dims": compiled.dims,
        "param_shapes": {k: list(v) for k, v in compiled.param_shapes.items()},
    }, use_bin_type=True)
    blob = MAGIC + hashlib.sha256(payload).digest() + payload
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        return False
    return True
