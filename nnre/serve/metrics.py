"""``/metrics`` in Prometheus' text format, and one structured access-log line per request.

prometheus_client is the Prometheus project's own Python client: its exposition output is the
format's reference (names, label escaping, histogram buckets with ``+Inf``, ``_count`` and
``_sum``), its metrics are thread-safe (the batchers may observe from a model's thread), and
it has no dependencies. A registry per server, not the library's global one, so two servers
in one process (tests) never share counts.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60)
PER_CHAR = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, .01, .025, .05, .1)
BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")

access_log = logging.getLogger("nnre.serve.access")


class Metrics:
    def __init__(self) -> None:
        disable_created_metrics()  # no *_created series: noise for every label set
        r = self.registry = CollectorRegistry()
        self.requests = Counter("nnre_requests", "HTTP requests answered, by route, method "
                                "and status", ["route", "method", "status"], registry=r)
        self.errors = Counter("nnre_request_errors", "Requests answered with a 4xx or 5xx "
                              "status, by route and status", ["route", "status"], registry=r)
        self.latency = Histogram("nnre_request_duration_seconds", "Time from a request's "
                                 "arrival to its last byte sent, by route", ["route"],
                                 buckets=LATENCY, registry=r)
        self.chars = Counter("nnre_generated_characters", "Characters generated (a token is "
                             "a character)", ["model"], registry=r)
        self.prompt_chars = Counter("nnre_prompt_characters", "Prompt characters read",
                                    ["model"], registry=r)
        self.first = Histogram("nnre_time_to_first_character_seconds", "Per completion: from "
                               "the request to its first character drawn", ["model"],
                               buckets=LATENCY, registry=r)
        self.per_char = Histogram("nnre_time_per_character_seconds", "Per completion: the "
                                  "time between its first and last characters drawn, over the "
                                  "characters after the first", ["model"], buckets=PER_CHAR,
                                  registry=r)
        self.batch = Histogram("nnre_batch_size", "Streams per generation step (kind=text) or "
                               "examples per inference batch (kind=tensor)", ["model", "kind"],
                               buckets=BATCH, registry=r)
        self.queue = Gauge("nnre_queue_depth", "Streams or requests waiting to join a batch",
                           ["model", "kind"], registry=r)
        self.active = Gauge("nnre_active_streams", "Generation streams being stepped",
                            ["model"], registry=r)
        self.sessions = Gauge("nnre_sessions", "Sessions open", registry=r)
        self.reloads = Counter("nnre_model_reloads", "Bundle files seen to change, by result "
                               "(loaded or refused)", ["model", "result"], registry=r)

    def observer(self, model: str, kind: str) -> Callable[[str, float], None]:
        """What a batcher calls per step/batch ("batch", size) and per change ("queue", n)."""
        batch = self.batch.labels(model, kind)
        queue = self.queue.labels(model, kind)

        def observe(what: str, value: float) -> None:
            if what == "batch":
                batch.observe(value)
            else:
                queue.set(value)
        return observe

    def render(self) -> bytes:
        return generate_latest(self.registry)


class AccessLog:
    """ASGI middleware: a request id (the client's ``X-Request-Id`` when it is a plain token,
    else a new one) in ``scope["state"]`` and the response's ``X-Request-Id``; one JSON log
    line and the request metrics when the response's last byte is sent (a stream's too)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: list[Any]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        rid = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = rid
        start = time.perf_counter()
        status = [0, 0]  # status, body bytes

        async def send_logged(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", []),
                                      (b"x-request-id", rid.encode())]
            elif message["type"] == "http.response.body":
                status[1] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_logged)
        finally:
            self._record(scope, rid, status[0] or 500, status[1], time.perf_counter() - start)

    def _record(self, scope: Scope, rid: str, status: int, size: int, seconds: float) -> None:
        route = self._route(scope)
        self.metrics.requests.labels(route, scope["method"], str(status)).inc()
        if status >= 400:
            self.metrics.errors.labels(route, str(status)).inc()
        self.metrics.latency.labels(route).observe(seconds)
        client = scope.get("client")
        access_log.info(json.dumps({
            "request_id": rid, "method": scope["method"], "path": scope["path"],
            "status": status, "bytes": size, "ms": round(seconds * 1000, 3),
            "client": f"{client[0]}:{client[1]}" if client else None}))

    def _route(self, scope: Scope) -> str:
        """The route's template (``/v2/models/{name}/infer``), never the raw path: a label per
        model name a client makes up would grow the metrics without bound."""
        for route in self.routes:
            match, _ = route.matches(scope)
            if match != Match.NONE:
                return str(route.path)
        return "other"
