"""The served models by name, and their reload when a bundle file is replaced.

A model is named after its file (``samples/lighthouse.bundle`` → ``lighthouse``); a folder
serves every ``*.bundle`` directly inside it, and bundles added to it later; an ``https://``
or ``s3://`` URL (the ``remote`` extra) is fetched into the cache and verified by
``nnre.load`` at the start.

Every poll compares each file's (device, inode, size, mtime, ctime) with the one loaded; every
remote poll (a longer interval: each is a request to the server) asks each URL for its
:func:`nnre.remote.version`, the remote bundle id read from the file's first bytes (so a
change within the same second and size is seen too). A file replaced by an atomic rename, or
a URL with a new version, is loaded afresh on a thread (a URL: fetched and verified into the
cache), checked in full (structure, every tensor digest, equations against the signature),
and only then takes the name over. Requests already running keep the model they started
with, so none is dropped; a file that fails the check is refused (logged, counted in
``nnre_model_reloads_total{result="refused"}``) and the old model keeps serving until the
file changes again. A URL that cannot be reached is logged and asked again at the next poll.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from nnre import remote
from nnre.codecs import text_io
from nnre.errors import FeedError, NnreError
from nnre.loader import load
from nnre.model import Model
from nnre.serve.dynamic import InferBatcher
from nnre.serve.engine import TextEngine
from nnre.serve.errors import NotFound

log = logging.getLogger("nnre.serve")

Identity = tuple[int, ...]


@dataclass(eq=False)
class Entry:
    """One loaded model and its batchers."""

    name: str
    path: str
    model: Model
    version: str
    identity: Identity
    text: TextEngine | None
    infer: InferBatcher

    def close(self) -> None:
        self.infer.runner.close()
        if self.text is not None:
            self.text.runner.close()


#: (name, path, identity, check every digest) → Entry
Builder = Callable[[str, str, Identity, bool], Entry]


def identity(path: str) -> Identity | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def is_text(model: Model) -> bool:
    try:
        text_io(model.metadata, list(model.inputs), list(model.outputs))
    except FeedError:
        return False
    return True


def name_of(path: str) -> str:
    """A model's name: its file name without ``.bundle`` (a URL's too)."""
    where = urlsplit(path).path if remote.is_remote(path) else path
    return Path(where).name.removesuffix(".bundle")


def load_model(path: str, check_data: bool) -> Model:
    """``nnre.load`` (every tensor digest checked when asked: a reload always asks)."""
    return load(path, check_data=True if check_data else None)


class Registry:
    def __init__(self, sources: list[str], build: Builder,
                 on_reload: Callable[[str, str], None] | None = None) -> None:
        self.sources = [os.fspath(s) for s in sources]
        self.build = build
        self.on_reload = on_reload or (lambda name, result: None)
        self.entries: dict[str, Entry] = {}
        self.paths: dict[str, str] = {}  # name → file
        self.seen: dict[str, Identity | None] = {}  # file → identity last loaded or refused
        self.versions: dict[str, str] = {}  # URL → remote version last loaded or refused

    def load_all(self) -> None:
        """The models named on the command line, each checked; the first error is raised
        (NnreError or OSError naming the file), as are two files with one name."""
        for path in self._files(startup=True):
            self._add(path, self.build(name_of(path), path, identity(path) or (), False))

    def get(self, name: str) -> Entry:
        entry = self.entries.get(name)
        if entry is None:
            raise NotFound(f"model {name!r} is not served here; models: "
                           + (", ".join(sorted(self.entries)) or "(none)"), param="model")
        return entry

    def _add(self, path: str, entry: Entry) -> None:
        other = self.paths.get(entry.name)
        if other is not None and other != path:
            raise NnreError(f"two models named {entry.name!r}: {other} and {path} (a model "
                            "is named after its file)")
        self.entries[entry.name] = entry
        self.paths[entry.name] = path
        self.seen[path] = entry.identity

    def _files(self, startup: bool = False) -> list[str]:
        out = []
        for source in self.sources:
            if remote.is_remote(source):  # fetched and verified once, at the start
                if startup:
                    out.append(source)
            elif os.path.isdir(source):
                for name in sorted(os.listdir(source)):
                    path = os.path.join(source, name)
                    if name.endswith(".bundle") and not name.startswith(".") and \
                            os.path.isfile(path):
                        out.append(path)
            elif startup or source in self.seen:
                out.append(source)
        return out

    async def poll(self) -> None:
        """Reload every file whose identity changed since it was last loaded or refused."""
        for path in self._files():
            now = identity(path)
            if now is None or now == self.seen.get(path):
                continue  # gone (mid-replace, or removed: the model keeps serving) or same
            self.seen[path] = now
            name = name_of(path)
            if name in self.paths and self.paths[name] != path:
                log.error("not loading %s: the name %r is taken by %s", path, name,
                          self.paths[name])
                continue
            await self._reload(name, path, now)

    async def poll_remote(self) -> None:
        """Reload every URL whose remote version changed since it was last loaded or
        refused (the first poll takes a URL's version as the one loaded when the remote
        bundle id cannot be read, and compares the id with the model's when it can)."""
        for url in (s for s in self.sources if remote.is_remote(s)):
            try:
                now = await asyncio.to_thread(remote.version, url)
            except NnreError as err:
                log.warning("could not check %s for a new version (the model keeps "
                            "serving): %s", url, err)
                continue
            name = name_of(url)
            entry = self.entries.get(name)
            last = self.versions.get(url)
            self.versions[url] = now
            if now == last or entry is not None and (
                    now == entry.model.bundle_id or last is None and now.startswith("{")):
                continue
            await self._reload(name, url, ())

    async def _reload(self, name: str, path: str, ident: Identity) -> None:
        """Load ``path`` in full on a thread; it takes ``name`` over only if it passes."""
        try:
            entry = await asyncio.to_thread(self.build, name, path, ident, True)
        except (NnreError, OSError) as err:
            log.error("refused %s (the model keeps serving the last good file): %s",
                      path, err)
            self.on_reload(name, "refused")
            return
        old = self.entries.get(name)
        if old is not None and old.model.bundle_id == entry.model.bundle_id and \
                remote.is_remote(path):
            entry.close()  # the URL went back and forth between two checks: nothing new
            return
        self._add(path, entry)
        self.on_reload(name, "loaded")
        log.info("loaded %s as %r (version %s, id %s)%s", path, name, entry.version,
                 entry.model.bundle_id and entry.model.bundle_id[:16],
                 " in place of the previous file" if old else "")

    def close(self) -> None:
        for entry in self.entries.values():
            entry.close()
