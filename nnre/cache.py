"""The compile cache: a bundle's compiled Program kept on disk, so a warm load needs no SymPy.

A cache entry is derived data, never trusted: it is keyed by the bundle id (the sha256 of the
bundle's header, which holds the equations, dims, dtype and every tensor's shape) and by the
compiler's identity (nnre's version and a digest of the compiler's own source files). A plain
digest of an entry proves nothing about who wrote it (anyone can recompute one after swapping
``sigmoid`` for ``tanh``), so each entry carries an HMAC-SHA256 under a per-user secret kept
in the cache directory (``key``, 32 random bytes, mode 0600), and the directory must be the
user's own and writable by nobody else: otherwise the cache is not used at all. A missing,
stale, forged, corrupt or inconsistent entry is ignored and rebuilt; the payload is msgpack
of plain data (never pickle), decoded with explicit limits and no extension types, and the
Program passes ``check_program`` (op attributes included) before use. The same key signs the
records of bundle files whose tensor digests were checked (:func:`mark_verified`).

Location: ``$XDG_CACHE_HOME/nnre`` or ``~/.cache/nnre``. ``NNRE_NO_CACHE=1`` (or
``load(..., cache=False)``, ``nnre run --no-cache``) turns it off. Writing is best effort and
atomic (temp file + rename): a read-only cache directory only costs the warm start.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from nnre.files import open_regular
from nnre.program import Program, ProgramDataError, from_data, to_data

MAGIC = b"NNREPRG2"
FORMAT = 2
KEY_BYTES = 32
MAX_ENTRY_BYTES = 64 * 1024 * 1024
#: The files whose code decides what a compiled Program looks like.
_COMPILER_FILES = ("compiler.py", "lowering.py", "optimize.py", "program.py", "ops", "equations")
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


def own_dir(path: Path) -> bool:
    """``path`` exists (made 0700 if not), is a real directory of this user, and nobody else
    may write into it."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(path)
    except OSError:
        return False
    mine = not hasattr(os, "getuid") or st.st_uid == os.getuid()
    return stat.S_ISDIR(st.st_mode) and mine and not st.st_mode & 0o022


def secret() -> bytes | None:
    """This user's cache key (made on first use), or None when the cache must not be used:
    the directory or the key file is not private to the user."""
    base = cache_dir()
    if not own_dir(base):
        return None
    path = base / "key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                     0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(KEY_BYTES))
    except FileExistsError:
        pass
    except OSError:
        return None
    try:
        with open_regular(path, ProgramDataError) as f:
            st = os.fstat(f.fileno())
            key = f.read(KEY_BYTES + 1)
    except (OSError, ProgramDataError):
        return None
    mine = not hasattr(os, "getuid") or st.st_uid == os.getuid()
    if not mine or st.st_mode & 0o077 or len(key) != KEY_BYTES:
        return None
    return key


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()


def entry_path(bundle_id: str) -> tuple[Path, str]:
    """Where the entry for this bundle and this compiler lives, and its key."""
    key = hashlib.sha256(f"{bundle_id}\0{compiler_id()}".encode()).hexdigest()
    return cache_dir() / "programs" / f"{key[:48]}.msgpack", key


def load(bundle_id: str) -> Compiled | None:
    """The cached compile of this bundle, or None when absent, forged or not exactly right."""
    secret_key = secret()
    path, key = entry_path(bundle_id)
    if secret_key is None or not own_dir(path.parent):
        return None
    try:  # a FIFO or device planted at the entry path is ignored (and replaced), never read
        with open_regular(path, ProgramDataError) as f:
            blob = f.read(MAX_ENTRY_BYTES + 1)
    except (OSError, ProgramDataError):
        return None
    try:
        return _decode(blob, key, secret_key)
    except (ProgramDataError, ValueError, TypeError, KeyError, msgpack.UnpackException):
        return None  # corrupt, forged or stale: the caller rebuilds and overwrites it


def _decode(blob: bytes, key: str, secret_key: bytes) -> Compiled:
    head = len(MAGIC) + 32
    if len(blob) > MAX_ENTRY_BYTES or not blob.startswith(MAGIC):
        raise ValueError("not a cache entry")
    payload = blob[head:]
    if not hmac.compare_digest(_mac(secret_key, payload), blob[len(MAGIC):head]):
        raise ValueError("not signed with this user's key")
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
    """Write the entry atomically; False (and nothing raised) when the cache is not usable."""
    path, key = entry_path(bundle_id)
    payload = msgpack.packb({
        "format": FORMAT, "key": key, "program": to_data(compiled.program),
        "dims": compiled.dims,
        "param_shapes": {k: list(v) for k, v in compiled.param_shapes.items()},
    }, use_bin_type=True)
    secret_key = secret()
    if secret_key is None or not own_dir(path.parent):
        return False
    return _write(path, MAGIC + _mac(secret_key, payload) + payload)


def _verified_path(bundle_id: str, identity: tuple[int, ...], secret_key: bytes) -> Path:
    text = f"{bundle_id}\0{identity}".encode()
    return cache_dir() / "verified" / _mac(secret_key, text).hex()[:48]


def is_verified(bundle_id: str, identity: tuple[int, ...]) -> bool:
    """Whether this user's cache says the file with this identity (device, inode, size,
    mtime, ctime) had all its tensor digests checked for this bundle id."""
    secret_key = secret()
    return secret_key is not None and _verified_path(bundle_id, identity, secret_key).is_file()


def mark_verified(bundle_id: str, identity: tuple[int, ...]) -> bool:
    """Record that the file with this identity passed every tensor digest check."""
    secret_key = secret()
    if secret_key is None:
        return False
    path = _verified_path(bundle_id, identity, secret_key)
    return own_dir(path.parent) and _write(path, b"")


def _write(path: Path, blob: bytes) -> bool:
    try:
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
