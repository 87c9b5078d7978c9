"""Models at ``https://`` and ``s3://`` locations: fetched once into the cache by content,
verified in full, then opened from there like any local file (the ``remote`` extra).

fsspec gives one file interface over HTTP (aiohttp) and S3 (s3fs), with HEAD-based ``info``
(size, ``ETag``, ``Last-Modified``) and bounded range reads. What is fetched is decided in
this order, each step before a byte of the model is downloaded:

1. ``info``: the announced size is checked against the memory budget (a server claiming
   100 GB is refused here), and, before a download, against the free disk. A 404 or a
   refused connection is one :class:`~nnre.errors.FetchError`.
2. The remote bundle id: one range read of the file's first 64 KiB (the preamble and, for
   most bundles, the whole header and its digest; a longer header costs a second read).
   The id commits to the header, which holds every tensor's sha256, so a cached file with
   that id and size *is* the remote content: nothing is downloaded. A changed file has
   another id, even at the same size and second (where ``Last-Modified`` and mtime-based
   ETags cannot tell). A server without range requests answers with the whole file, of
   which only the start is read. When the id cannot be had (a header past 64 KiB on such a
   server), the validators recorded at the last download (``ETag``, S3's ``VersionId``,
   with ``Last-Modified`` and the size) decide; without an ETag or a version (a date alone
   has a resolution of one second), the file is downloaded again.
3. The download streams into a temporary file in the cache, stops past the announced size
   (or the budget, when none was announced), and is refused when it ends short. The whole
   file is then checked by the bundle reader (structure, header digest, every tensor's
   sha256) before it is renamed to ``<bundle id>.bundle``: a truncated or corrupted
   download never enters the cache.

Layout under the compile cache's directory (private to the user, see :mod:`nnre.cache`):
``remote/<bundle id>.bundle`` and ``remote/refs/<HMAC of the URL>`` (the validators of the
last download, signed with the cache's key). With the cache off (``NNRE_NO_CACHE=1``) or not
private, files go to a private temporary directory removed at exit. fsspec, aiohttp and s3fs
are imported only here, on the first remote location: ``import nnre`` never needs them.
"""

from __future__ import annotations

import atexit
import hashlib
import hmac
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from nnre import budget
from nnre import cache as compile_cache
from nnre.bundle.format import DIGEST_SIZE, MAGIC, MAX_HEADER_BYTES, PREAMBLE, PREAMBLE_SIZE
from nnre.errors import BundleError, FetchError

SCHEMES = ("http", "https", "s3")
EXTRA = "pip install 'nnre[remote]'"
CHUNK = 1 << 20  # bytes per read of a download
PROBE_BYTES = 1 << 16  # the probe's first range read: the preamble, and most headers whole
CONNECT_TIMEOUT = 30.0  # seconds to connect; a stalled server fails instead of hanging
READ_TIMEOUT = 60.0  # seconds without a byte
DISK_RESERVE = 64 << 20  # left free on the cache's disk after a download
_STRONG = ("ETag", "VersionId", "Content-MD5", "Digest")  # change with the content
_VALIDATORS = (*_STRONG, "Last-Modified", "LastModified")
_temp_root: Path | None = None


def is_remote(location: object) -> bool:
    """Whether ``location`` is a URL this module fetches (``http(s)://``, ``s3://``)."""
    if not isinstance(location, str) or "://" not in location:
        return False
    return location.split("://", 1)[0].lower() in SCHEMES


@dataclass(frozen=True)
class Remote:
    """What ``info`` says about a remote file: size (None when not announced) and the
    validators that change with its content."""

    url: str
    size: int | None
    validators: dict[str, str]


def fetch(url: str) -> Path:
    """The local, verified copy of the bundle at ``url``: from the cache when the remote
    content is the one cached, else downloaded, verified and cached (see the module doc)."""
    fs, path = _filesystem(url)
    remote = _probe(fs, path, url)
    _within_budget(remote)
    root, key = _store()
    bundle_id = _remote_id(fs, path, remote)
    hit = _cached(root, key, remote, bundle_id)
    if hit is not None:
        return hit
    tmp = _download(fs, path, remote, _room(remote, root), root)
    try:
        bundle_id = _verify(tmp, url)
        final = root / f"{bundle_id}.bundle"
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _mark_verified(final, bundle_id)
    _write_ref(root, key, remote, bundle_id)
    return final


def version(url: str) -> str:
    """What tells the content at ``url`` now, without downloading it: the remote bundle id
    (one ``info`` and one range read, the start of :func:`fetch`), or, when that cannot be
    had, the size and validators as JSON. ``nnre serve`` polls it to see a new version;
    FetchError when the server cannot be reached."""
    fs, path = _filesystem(url)
    remote = _probe(fs, path, url)
    bundle_id = _remote_id(fs, path, remote)
    if bundle_id is not None:
        return bundle_id
    return json.dumps({"size": remote.size, **remote.validators}, sort_keys=True)


# -- the file system and its errors ------------------------------------------------------------

def _filesystem(url: str) -> tuple[Any, str]:
    """fsspec's file system for this URL, with timeouts, or a FetchError naming the extra."""
    scheme = url.split("://", 1)[0].lower()
    try:
        import fsspec

        if scheme == "s3":
            import s3fs  # noqa: F401  (fsspec finds it by the scheme)

            options: dict[str, Any] = {"config_kwargs": {"connect_timeout": CONNECT_TIMEOUT,
                                                         "read_timeout": READ_TIMEOUT}}
        else:
            import aiohttp

            timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT,
                                            sock_read=READ_TIMEOUT)
            options = {"client_kwargs": {"timeout": timeout}}
    except ImportError as err:
        raise FetchError(f"{url}: reading models from {scheme}:// needs the remote extra "
                         f"({err.name} is missing): {EXTRA}") from None
    with _errors(url):
        return fsspec.core.url_to_fs(url, **options)


@contextmanager
def _errors(url: str) -> Iterator[None]:
    """Whatever the network libraries raise (aiohttp, botocore, fsspec's FileNotFoundError
    wrapping the HTTP error), as one FetchError saying what happened to ``url``."""
    try:
        yield
    except (FetchError, BundleError):
        raise
    except Exception as err:  # a boundary with third-party network code: name it, never trace
        raise FetchError(f"{url}: {_describe(err)}") from None


def _describe(err: BaseException) -> str:
    cause = err.__cause__ or err.__context__
    if isinstance(err, FileNotFoundError) and cause is not None:
        err = cause  # fsspec's info wraps the HTTP error of its last attempt
    status = getattr(err, "status", None)
    if isinstance(status, int):
        reason = {404: "not found", 403: "access denied", 401: "not authorized"}.get(
            status, getattr(err, "message", "") or "refused")
        return f"{reason} (HTTP {status})"
    if isinstance(err, FileNotFoundError):
        return "not found"
    if isinstance(err, PermissionError):
        return f"access denied ({err})"
    name = type(err).__name__
    text = str(err).split("\n", 1)[0] or name
    if "Credentials" in name:  # botocore's NoCredentialsError, PartialCredentialsError
        text += " (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
    return f"{name}: {text}" if name not in text else text


def _probe(fs: Any, path: str, url: str) -> Remote:
    with _errors(url):
        fs.invalidate_cache(path)  # s3fs answers info from its listing cache otherwise
        info = fs.info(path)
    if info.get("type", "file") != "file":
        raise FetchError(f"{url}: not a file (it is a {info.get('type')})")
    size = info.get("size")
    size = int(size) if isinstance(size, int) and size >= 0 else None
    validators = {k: str(info[k]) for k in _VALIDATORS if info.get(k)}
    return Remote(url, size, validators)


# -- where files go, and how much may come -------------------------------------------------------

def _store() -> tuple[Path, bytes | None]:
    """The folder for fetched bundles and the key that signs their records; a private
    temporary folder (and no key) when the cache is off or not private to the user."""
    global _temp_root
    key = compile_cache.secret() if compile_cache.enabled() else None
    if key is not None:
        root = compile_cache.cache_dir() / "remote"
        if compile_cache.own_dir(root) and compile_cache.own_dir(root / "refs"):
            return root, key
    if _temp_root is None:
        _temp_root = Path(tempfile.mkdtemp(prefix="nnre-remote-"))
        atexit.register(shutil.rmtree, _temp_root, True)
    return _temp_root, None


def _within_budget(remote: Remote) -> None:
    """An announced size past the memory budget is refused before anything else is asked."""
    limit = budget.limit()
    if remote.size is not None and remote.size > limit:
        raise FetchError(f"{remote.url}: the server announces {budget.show(remote.size)}, "
                         f"past the memory budget of {budget.show(limit)} (set "
                         f"{budget.ENV} or --max-bytes to allow more)")


def _room(remote: Remote, root: Path) -> int:
    """The most bytes a download may bring: the announced size when the cache's disk has
    room for it; without one, the smaller of the budget and the free disk (the download is
    cut off there)."""
    free = shutil.disk_usage(root).free - DISK_RESERVE
    if remote.size is None:
        return max(0, min(budget.limit(), free))
    if remote.size > free:
        raise FetchError(f"{remote.url}: the file has {budget.show(remote.size)}, more than "
                         f"the {budget.show(max(free, 0))} free for the cache in {root}")
    return remote.size


# -- is the cached copy the remote content? -----------------------------------------------------

def _remote_id(fs: Any, path: str, remote: Remote) -> str | None:
    """The remote bundle's id (its header digest) from the file's first ``PROBE_BYTES`` (one
    range read; a server without ranges sends the file's start, read no further), and one
    more range read when the header is longer; None when that cannot be had or the file
    does not start like a bundle."""
    size = remote.size
    if size is None or size < PREAMBLE_SIZE + DIGEST_SIZE:
        return None
    first = min(size, PROBE_BYTES)
    with _errors(remote.url):
        try:
            with fs.open(path, "rb", block_size=first, cache_type="none", size=size) as f:
                head = f.read(first)
                if len(head) < PREAMBLE_SIZE or not head.startswith(MAGIC):
                    return None
                at = PREAMBLE_SIZE + PREAMBLE.unpack(head[:PREAMBLE_SIZE])[3]
                if at - PREAMBLE_SIZE > MAX_HEADER_BYTES or at + DIGEST_SIZE > size:
                    return None
                if at + DIGEST_SIZE <= len(head):
                    digest = head[at:at + DIGEST_SIZE]
                else:
                    f.seek(at)
                    digest = f.read(DIGEST_SIZE)
        except ValueError:  # fsspec: the server answered a range past 0 with the whole file
            return None
    return digest.hex() if len(digest) == DIGEST_SIZE else None


def _cached(root: Path, key: bytes | None, remote: Remote, bundle_id: str | None
            ) -> Path | None:
    """The cached file holding the remote content, if there is one (see the module doc)."""
    if bundle_id is None:
        ref = _read_ref(root, key, remote.url)
        if (ref is None or not set(remote.validators) & set(_STRONG)
                or ref.get("size") != remote.size or ref.get("validators") != remote.validators):
            return None  # Last-Modified alone has a resolution of a second: fetch again
        bundle_id = str(ref.get("bundle_id"))
    path = root / f"{bundle_id}.bundle"
    try:
        if path.stat().st_size == remote.size:
            _write_ref(root, key, remote, bundle_id)
            return path
    except OSError:
        pass
    return None


def _ref_path(root: Path, key: bytes, url: str) -> Path:
    return root / "refs" / hmac.new(key, url.encode(), hashlib.sha256).hexdigest()[:48]


def _read_ref(root: Path, key: bytes | None, url: str) -> dict[str, Any] | None:
    if key is None:
        return None
    try:
        blob = _ref_path(root, key, url).read_bytes()[:1 << 16]
        mac, _, payload = blob.partition(b"\n")
        if not hmac.compare_digest(mac, hmac.new(key, payload, hashlib.sha256).hexdigest()
                                   .encode()):
            return None
        ref = json.loads(payload)
    except (OSError, ValueError):
        return None
    return ref if isinstance(ref, dict) and ref.get("url") == url else None


def _write_ref(root: Path, key: bytes | None, remote: Remote, bundle_id: str) -> None:
    if key is None:
        return
    payload = json.dumps({"url": remote.url, "size": remote.size, "bundle_id": bundle_id,
                          "validators": remote.validators}, sort_keys=True).encode()
    mac = hmac.new(key, payload, hashlib.sha256).hexdigest().encode()
    path = _ref_path(root, key, remote.url)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(mac + b"\n" + payload)
        os.replace(tmp, path)
    except OSError:
        pass  # best effort, like the compile cache: the next load downloads again


# -- download and verify ------------------------------------------------------------------------

def _download(fs: Any, path: str, remote: Remote, cap: int, root: Path) -> Path:
    """Stream the file into a temporary file in ``root``: at most ``cap`` bytes are read
    (one more tells a server that sends more than it said), fewer than announced is an
    error; the temporary file is removed on any failure."""
    fd, name = tempfile.mkstemp(dir=root, prefix=".fetch-", suffix=".part")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out, _errors(remote.url), _stream(fs, path, remote) as src:
            got = 0
            while got <= cap:
                try:
                    chunk = src.read(min(CHUNK, cap + 1 - got))
                except Exception as err:  # the connection broke (aiohttp: payload errors)
                    raise FetchError(f"{remote.url}: the download ended after {got:,} "
                                     f"bytes{_of(remote)}: {_describe(err)}") from None
                if not chunk:
                    break
                out.write(chunk)
                got += len(chunk)
        if got > cap:
            said = (f"more than the {cap:,} bytes it announced" if remote.size is not None
                    else f"more than the {cap:,} bytes the budget and the disk allow")
            raise FetchError(f"{remote.url}: the server sent {said}; download stopped")
        if remote.size is not None and got < remote.size:
            raise FetchError(f"{remote.url}: the download ended after {got:,} "
                             f"bytes{_of(remote)}")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _of(remote: Remote) -> str:
    return f" of the {remote.size:,} announced" if remote.size is not None else ""


def _stream(fs: Any, path: str, remote: Remote) -> IO[bytes]:
    """One streaming GET over HTTP (ranges would cost a request per block); S3 reads ranges
    of ``CHUNK`` bytes."""
    if remote.url.split("://", 1)[0].lower() == "s3":
        return fs.open(path, "rb", block_size=CHUNK, cache_type="none", size=remote.size)
    return fs.open(path, "rb", block_size=0, size=remote.size)


def _verify(tmp: Path, url: str) -> str:
    """Check the downloaded file in full with the bundle reader; its bundle id."""
    from nnre.bundle.read import decode

    try:  # mapped: a large download is hashed from the page cache, never copied in memory
        return decode(tmp, check_data=True, mapped=True).bundle_id
    except BundleError as err:
        raise err.at_source(url) from None


def _mark_verified(path: Path, bundle_id: str) -> None:
    """Tell the loader (through the cache's signed record) that this file's digests were
    all checked, so a large model is not hashed a second time at its first load."""
    if not compile_cache.enabled():
        return
    st = path.stat()
    compile_cache.mark_verified(bundle_id, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
                                            st.st_ctime_ns))
