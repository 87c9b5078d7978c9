"""The HTTP application: Open Inference Protocol v2, OpenAI completions, /metrics.

Starlette (routing, requests, streamed responses) under uvicorn. Every handler reads its body
through :func:`read_json` (a size cap: 413; a time cap for slow uploads: 408; UTF-8 JSON
within nnre's limits: 400), checks the request completely before queueing any work, and
answers errors as JSON: ``{"error": "…"}`` on the OIP routes, OpenAI's ``{"error":
{"message", "type", "param", "code"}}`` on ``/v1``. A bug answers 500 with the request id
(the traceback goes to the log, never to the client).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from nnre import __version__, budget
from nnre.errors import FeedError, NnreError
from nnre.serve import completions, infer
from nnre.serve.engine import TextStream
from nnre.serve.errors import NotFound, RequestError
from nnre.serve.metrics import AccessLog, Metrics
from nnre.serve.registry import Entry, Registry
from nnre.serve.sessions import Sessions

log = logging.getLogger("nnre.serve")


@dataclass(frozen=True)
class Limits:
    max_body: int = 16 << 20
    body_timeout: float = 30.0
    max_tokens: int = 1 << 16


class Handlers:
    """The routes' handlers over one registry, session store and metrics."""

    def __init__(self, registry: Registry, sessions: Sessions, metrics: Metrics,
                 limits: Limits) -> None:
        self.registry = registry
        self.sessions = sessions
        self.metrics = metrics
        self.limits = limits

    # -- OIP ----------------------------------------------------------------------------
    async def server_metadata(self, request: Request) -> Response:
        return reply({"name": "nnre", "version": __version__, "extensions": []})

    async def live(self, request: Request) -> Response:
        return reply({"live": True})

    async def ready(self, request: Request) -> Response:
        return reply({"ready": bool(self.registry.entries)})

    async def model_metadata(self, request: Request) -> Response:
        entry = self._entry(request)
        return reply(infer.metadata(entry.name, entry.version, entry.model))

    async def model_ready(self, request: Request) -> Response:
        entry = self._entry(request)
        return reply({"name": entry.name, "ready": True})

    async def infer(self, request: Request) -> Response:
        body = await read_json(request, self.limits)  # first: the connection stays usable
        entry = self._entry(request)
        job = infer.parse(entry.model, body)
        session = None
        if job.session_id is not None:
            if not entry.model.state:
                raise RequestError(f"model {entry.name!r} has no state to keep: sessions are "
                                   "for recurrent models")
            session = self._session(request, job.session_id, entry, "tensor")
            if session.state is not None:
                rows = len(next(iter(session.state.values())))
                if rows != job.rows:
                    self.sessions.close(session)
                    raise RequestError(f"session {job.session_id!r} holds a batch of {rows}; "
                                       f"this request has {job.rows}")
            job.init = session.state
            row = sum(budget.size(spec.shape, np.dtype(spec.dtype).itemsize)
                      for spec in entry.model.state.values())
            try:
                self.sessions.check(job.rows * row)
            except BaseException:
                self.sessions.close(session)
                raise
        try:
            outputs, final = await entry.infer.submit(job)
        except BaseException as err:
            if session is not None:
                self.sessions.close(session)  # unchanged
            if isinstance(err, FeedError):
                raise RequestError(str(err)) from None
            raise
        if session is not None:
            self.sessions.close(session, final)
        return reply(infer.response(entry.name, entry.version, entry.model, job,
                                    request.state.request_id, outputs))

    def _session(self, request: Request, sid: str, entry: Entry, kind: str) -> Any:
        """The request's session; behind replicas (``Sessions.header``), only when the
        request names it in that header too, which is what routes it to the replica that
        holds it: without, it would silently start afresh on another one."""
        header = self.sessions.header
        if header and request.headers.get(header) != sid:
            raise RequestError(f"this server runs as replicas: a request of session {sid!r} "
                               f"carries the header '{header}: {sid}', which takes it to the "
                               "replica holding the session", param="session_id")
        return self.sessions.open(sid, entry.name, entry.model.bundle_id or "", kind)

    def _entry(self, request: Request) -> Entry:
        entry = self.registry.get(request.path_params["name"])
        version = request.path_params.get("version")
        if version is not None and version != entry.version:
            raise NotFound(f"model {entry.name!r} has version {entry.version!r}, not "
                           f"{version!r}")
        return entry

    # -- OpenAI -------------------------------------------------------------------------
    async def list_models(self, request: Request) -> Response:
        return reply({"object": "list", "data": [self._card(e) for e in self._texts()]})

    async def get_model(self, request: Request) -> Response:
        name = request.path_params["name"]
        found = [e for e in self._texts() if e.name == name]
        if not found:
            raise NotFound(f"The model '{name}' does not exist", param="model")
        return reply(self._card(found[0]))

    def _texts(self) -> list[Entry]:
        return [e for _, e in sorted(self.registry.entries.items()) if e.text is not None]

    @staticmethod
    def _card(e: Entry) -> dict[str, Any]:
        return {"id": e.name, "object": "model", "created": int(e.identity[3] // 10**9)
                if len(e.identity) > 3 else 0, "owned_by": "nnre"}

    async def completion(self, request: Request) -> Response:
        req = completions.parse(await read_json(request, self.limits), self.limits.max_tokens)
        entry = self.registry.get(req.model)
        engine = entry.text
        if engine is None:
            raise RequestError(f"model {req.model!r} does not generate text (it needs an "
                               "input with a char codec and an output with a sample codec); "
                               "use /v2/models/…/infer", param="model")
        session = None
        if req.session_id is not None:
            session = self._session(request, req.session_id, entry, "text")
        try:
            streams = completions.streams(req, engine, entry.model.sampling,
                                          session.pending if session else (),
                                          session is not None and session.state is not None,
                                          session.seen if session else ())
            if session is not None:
                streams[0].init = session.state
            engine.submit(streams)
        except BaseException:
            if session is not None:
                self.sessions.close(session)
            raise
        self.metrics.prompt_chars.labels(entry.name).inc(sum(len(p) for p in req.prompts))
        writer = completions.Writer(req, request.state.request_id)
        if req.stream:
            body = self._streamed(request, writer, streams, engine, entry, session)
            return StreamingResponse(body, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        try:
            await until_done(streams, request)
        finally:
            self._finished(streams, engine, entry, session)
        errors = [s.error for s in streams if s.error is not None]
        if errors:
            raise errors[0]
        return reply(writer.whole(streams))

    async def _streamed(self, request: Request, writer: completions.Writer,
                        streams: list[TextStream], engine: Any, entry: Entry, session: Any
                        ) -> AsyncIterator[str]:
        """The events, until the streams end or the client goes away. Its going away is
        watched here, not left to StreamingResponse's cancellation: a task woken at every
        character is never seen waiting by anyio's cancel delivery, so it would generate on
        to max_tokens for nobody."""
        gone = asyncio.ensure_future(_disconnected(request))
        gone.add_done_callback(lambda _: _cancel(streams))
        try:
            async for event in completions.events(writer, streams, streams[0].waker):
                yield event
        finally:  # normally, or the client went away: its streams leave at the next step
            gone.cancel()
            self._finished(streams, engine, entry, session)

    def _finished(self, streams: list[TextStream], engine: Any, entry: Entry,
                  session: Any) -> None:
        for s in streams:
            engine.cancel(s)
        if session is not None:
            s = streams[0]
            done = s.done and s.finish in ("stop", "length")
            self.sessions.close(session, s.final if done else None, s.pending, s.seen)
        chars = sum(s.drawn for s in streams)
        self.metrics.chars.labels(entry.name).inc(chars)
        for s in streams:
            if s.drawn:
                self.metrics.first.labels(entry.name).observe(s.first_at - s.submitted)
            if s.drawn > 1:
                self.metrics.per_char.labels(entry.name).observe(
                    (s.last_at - s.first_at) / (s.drawn - 1))

    # -- the rest -------------------------------------------------------------------------
    async def metrics_text(self, request: Request) -> Response:
        self.metrics.sessions.set(len(self.sessions))
        for name, entry in self.registry.entries.items():
            self.metrics.active.labels(name).set(entry.text.active if entry.text else 0)
        return Response(self.metrics.render(),
                        media_type="text/plain; version=0.0.4; charset=utf-8")


async def until_done(streams: list[TextStream], request: Request) -> None:
    """Wait for every stream to finish; if the client disconnects first, cancel them."""
    waker = streams[0].waker
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        while not all(s.done for s in streams):
            wait = asyncio.ensure_future(waker.wait())
            await asyncio.wait({wait, gone}, return_when=asyncio.FIRST_COMPLETED)
            wait.cancel()
            waker.clear()
            if gone.done():
                _cancel(streams)
                return
    finally:
        gone.cancel()


def _cancel(streams: list[TextStream]) -> None:
    for s in streams:
        s.cancelled = True
    streams[0].waker.set()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def read_json(request: Request, limits: Limits) -> Any:
    """The body as JSON: at most ``max_body`` bytes (413 beyond, before reading them when the
    length is declared), within ``body_timeout`` seconds (408), UTF-8, nnre's JSON limits."""
    from nnre.tensor_io import loads

    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body:
        raise RequestError(f"the body is {int(declared):,} bytes; this server takes at most "
                           f"{limits.max_body:,}", 413)
    try:
        raw = await asyncio.wait_for(_body(request, limits.max_body), limits.body_timeout)
    except asyncio.TimeoutError:
        raise RequestError(f"the body did not arrive within {limits.body_timeout:g} s",
                           408) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RequestError(f"the body is not UTF-8 (byte {err.start:,})") from None
    try:
        body = loads(text, "the body")
    except FeedError as err:
        raise RequestError(str(err)) from None
    if not isinstance(body, dict):
        raise RequestError(f"the body must be a JSON object, not {type(body).__name__}")
    return body


async def _body(request: Request, cap: int) -> bytes:
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > cap:
                raise RequestError(f"the body is over {cap:,} bytes, the most this server "
                                   "takes", 413)
            chunks.append(chunk)
    except ClientDisconnect:
        raise RequestError("the client went away before sending the whole body") from None
    return b"".join(chunks)


def reply(obj: Any, status: int = 200) -> Response:
    """JSON, UTF-8, compact; NaN/Infinity written as JavaScript does (a broken model's
    outputs are shown, not turned into a server error)."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=True, separators=(",", ":"))
    return Response(text.encode("utf-8"), status, media_type="application/json")


def _error_body(request: Request, message: str, status: int, param: str | None) -> Any:
    if request.url.path.startswith("/v1/"):  # OpenAI's error object
        kind = {404: "not_found_error", 429: "rate_limit_error", 413: "invalid_request_error"
                }.get(status, "invalid_request_error" if status < 500 else "server_error")
        return {"error": {"message": message, "type": kind, "param": param, "code": None}}
    return {"error": message}


async def _refused(request: Request, err: Exception) -> Response:
    if isinstance(err, RequestError):
        return reply(_error_body(request, err.message, err.status, err.param), err.status)
    if isinstance(err, HTTPException):
        message = {404: f"no route {request.url.path!r}", 405: f"{request.method} is not "
                   f"allowed on {request.url.path!r}"}.get(err.status_code, str(err.detail))
        return reply(_error_body(request, message, err.status_code, None), err.status_code)
    if isinstance(err, NnreError):  # a model output that cannot be drawn from, and the like
        return reply(_error_body(request, f"the model failed: {err}", 500, None), 500)
    rid = request.scope.get("state", {}).get("request_id", "?")
    log.error("request %s failed", rid, exc_info=err)
    return reply(_error_body(request, f"internal error (request id {rid})", 500, None), 500)


def build_app(handlers: Handlers, lifespan: Callable[[Starlette], Any] | None = None
              ) -> ASGIApp:
    h = handlers
    routes = [
        Route("/v2", h.server_metadata),
        Route("/v2/health/live", h.live),
        Route("/v2/health/ready", h.ready),
        Route("/v2/models/{name}", h.model_metadata),
        Route("/v2/models/{name}/versions/{version}", h.model_metadata),
        Route("/v2/models/{name}/ready", h.model_ready),
        Route("/v2/models/{name}/versions/{version}/ready", h.model_ready),
        Route("/v2/models/{name}/infer", h.infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", h.infer, methods=["POST"]),
        Route("/v1/models", h.list_models),
        Route("/v1/models/{name}", h.get_model),
        Route("/v1/completions", h.completion, methods=["POST"]),
        Route("/metrics", h.metrics_text),
    ]
    handlers_by_error: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        Exception: _refused, HTTPException: _refused, NnreError: _refused}
    app = Starlette(routes=routes, exception_handlers=handlers_by_error,  # type: ignore[arg-type]
                    lifespan=lifespan)
    return AccessLog(app, h.metrics, routes)
