"""``nnre serve``: load the models, bind the port, run uvicorn until SIGTERM/SIGINT drains.

uvicorn is the ASGI server (HTTP/1.1 keep-alive, flow control per connection, graceful
shutdown); on SIGTERM it stops accepting, waits for the requests in flight (streams too) up to
``drain_timeout``, then runs the application's shutdown, and the process exits 0. The socket
is bound here, before uvicorn starts, so a port in use is one ``error:`` line like every other
failure, and ``--port 0`` can say which port it got.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from nnre.remote import is_remote
from nnre.serve.app import Handlers, Limits, build_app
from nnre.serve.dynamic import InferBatcher
from nnre.serve.engine import TextEngine
from nnre.serve.metrics import Metrics
from nnre.serve.registry import Entry, Identity, Registry, is_text, load_model
from nnre.serve.sessions import Sessions

log = logging.getLogger("nnre.serve")

#: Seconds an idle keep-alive connection stays open: longer than clients keep idle ones
#: (httpx 5 s, requests/urllib3 until reuse, load balancers ~60 s), so a client never sends a
#: request on a connection the server is closing at that moment (seen with uvicorn's 5 s:
#: a few ReadErrors in 2,000 requests under load).
KEEP_ALIVE = 65


@dataclass(frozen=True)
class ServeConfig:
    """The options of ``nnre serve`` (see its --help)."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 64
    max_wait: float = 0.002
    batching: bool = True
    max_body: int = 16 << 20
    body_timeout: float = 30.0
    max_tokens: int = 1 << 16
    session_timeout: float = 600.0
    max_sessions: int = 1024
    max_waiting: int = 4096
    reload_interval: float = 1.0
    watch_interval: float = 30.0
    drain_timeout: float = 30.0
    log_level: str = "info"
    session_header: str = ""  # behind replicas (nnre.ray_serve): sessions need this header


def builder(cfg: ServeConfig, metrics: Metrics) -> Callable[[str, str, Identity, bool], Entry]:
    def build(name: str, path: str, ident: Identity, check_data: bool) -> Entry:
        model = load_model(path, check_data)
        text = TextEngine(model, model.metadata, max_batch=cfg.max_batch,
                          batching=cfg.batching, max_waiting=cfg.max_waiting,
                          observe=metrics.observer(name, "text"), name=name) \
            if is_text(model) else None
        tensors = InferBatcher(model, max_batch=cfg.max_batch, max_wait=cfg.max_wait,
                               batching=cfg.batching, max_waiting=cfg.max_waiting,
                               observe=metrics.observer(name, "tensor"), name=name)
        version = str(model.metadata.get("version") or "1")
        return Entry(name, path, model, version, ident, text, tensors)
    return build


def make_app(sources: list[str], cfg: ServeConfig,
             on_shutdown: Callable[[], None] = lambda: None) -> tuple[ASGIApp, list[str]]:
    """The ASGI application serving ``sources`` (models loaded and checked now: NnreError or
    OSError naming the file), and the names it serves. Its lifespan runs the watchers of
    files and URLs; ``nnre serve`` runs it under uvicorn, and anything that hosts ASGI can
    host it (Ray Serve's replicas: :mod:`nnre.ray_serve`)."""
    metrics = Metrics()
    registry = Registry(sources, builder(cfg, metrics),
                        lambda name, result: metrics.reloads.labels(name, result).inc())
    registry.load_all()
    sessions = Sessions(cfg.session_timeout, cfg.max_sessions, header=cfg.session_header)
    limits = Limits(cfg.max_body, cfg.body_timeout, cfg.max_tokens)
    handlers = Handlers(registry, sessions, metrics, limits)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        watch = asyncio.create_task(_watch(registry, sessions, cfg.reload_interval))
        remote = asyncio.create_task(_watch_remote(registry, cfg.watch_interval))
        try:
            yield
        finally:
            watch.cancel()
            remote.cancel()
            registry.close()
            on_shutdown()

    return build_app(handlers, lifespan), sorted(registry.entries)


def serve(sources: list[str], cfg: ServeConfig,
          announce: Callable[[str], None] = lambda line: print(line, file=sys.stderr)
          ) -> None:
    """Serve until a signal; NnreError/OSError for models that cannot be loaded or a port
    that cannot be bound (before anything is served)."""
    _logging(cfg.log_level)
    drained = [False]
    app, names = make_app(sources, cfg, lambda: drained.__setitem__(0, True))
    sock = _bind(cfg.host, cfg.port)
    host, port = sock.getsockname()[:2]
    # The event loop and HTTP parser are named, not uvicorn's "auto", which takes uvloop
    # and httptools whenever installed (Ray Serve's extra brings both): the server would
    # change with the environment. Its flow control, keep-alive, slow clients and 408s are
    # tested on these.
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on",
                            loop="asyncio", http="h11", ws="none",
                            timeout_graceful_shutdown=math.ceil(cfg.drain_timeout),
                            timeout_keep_alive=KEEP_ALIVE, log_level=cfg.log_level)
    server = uvicorn.Server(config)
    shown = f"[{host}]" if ":" in host else host
    announce(f"nnre serve: {len(names)} model(s) ({', '.join(names)}) on "
             f"http://{shown}:{port}")

    def after_drain(signum: int, frame: Any) -> None:
        """uvicorn re-raises the signal it drained for once it is done; by then the drain
        was the clean exit. Before that (still loading), the signal ends the process."""
        if not drained[0]:
            raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, after_drain)
    server.run(sockets=[sock])


async def _watch(registry: Registry, sessions: Sessions, interval: float) -> None:
    """Reload replaced bundles and end idle sessions, every ``interval`` seconds."""
    while True:
        await asyncio.sleep(interval if interval > 0 else 5.0)
        sessions.sweep()
        if interval > 0:
            try:
                await registry.poll()
            except Exception:  # a bug here must not stop the watching
                log.exception("watching the model files failed")


async def _watch_remote(registry: Registry, interval: float) -> None:
    """Check the https:// and s3:// models for a new version every ``interval`` seconds."""
    if interval <= 0 or not any(is_remote(s) for s in registry.sources):
        return
    while True:
        await asyncio.sleep(interval)
        try:
            await registry.poll_remote()
        except Exception:  # a bug here must not stop the watching
            log.exception("watching the remote models failed")


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket. Its protocol is named (IPPROTO_TCP, not 0): asyncio turns
    Nagle's algorithm off (TCP_NODELAY) only on sockets that say TCP, and with it on, every
    stream's small chunks waited for the client's delayed ACK (~40 ms to a first character)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise OSError(err.errno, f"cannot listen on {host}:{port}: {err.strerror}") from None
    sock.set_inheritable(True)
    return sock


def _logging(level: str) -> None:
    """Access lines as they are (JSON), everything else with its level and source."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Format())
    for name in ("nnre.serve", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if record.name == "nnre.serve.access":
            return record.getMessage()
        source = record.name.removesuffix(".error")
        text = f"{record.levelname.lower()}: {source}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text
