"""A real HTTP server on 127.0.0.1 for remote-model tests: serves bytes from a dict, with
single byte-range requests (206 + Content-Range), optional ETag, a fixed Last-Modified, and
misbehaving paths (a size it does not send, more than it announced, 100 GB announced).

Every request is logged as (method, path, Range header) so tests can tell what was
downloaded. ``ranges=False`` answers every GET with the whole file (200), as servers without
range support do.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LAST_MODIFIED = "Mon, 01 Jan 2024 00:00:00 GMT"  # fixed: content changes in the same second


@dataclass
class Site:
    files: dict[str, bytes] = field(default_factory=dict)
    etags: bool = False
    ranges: bool = True
    #: path -> "short" (announces the size, sends 100 bytes less), "more" (announces the
    #: size, sends 4 MiB more without a Content-Length), "huge" (announces 100 GB)
    behaviour: dict[str, str] = field(default_factory=dict)
    log: list[tuple[str, str, str | None]] = field(default_factory=list)
    url: str = ""

    def gets(self, path: str) -> list[str | None]:
        """The Range headers of the GETs of ``path`` (None: the whole file)."""
        return [r for m, p, r in self.log if m == "GET" and p == path]


def _handler(site: Site) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def _answer(self, body: bool) -> None:
            rng = self.headers.get("Range")
            site.log.append((self.command, self.path, rng))
            data = site.files.get(self.path)
            how = site.behaviour.get(self.path)
            if data is None and how != "huge":
                self.send_error(404, "Not Found")
                return
            if how == "huge":
                self._headers(200, 100 << 30)
                return  # never sends the body (a test asserts that nobody asked for it)
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "") if site.ranges else None
            if m and body:
                lo = int(m.group(1))
                hi = min(int(m.group(2)) if m.group(2) else len(data) - 1, len(data) - 1)
                if lo >= len(data):
                    self.send_error(416)
                    return
                self._headers(206, hi - lo + 1, f"bytes {lo}-{hi}/{len(data)}")
                self.wfile.write(data[lo:hi + 1])
                return
            if how == "more" and body:  # no Content-Length: the body runs until we close
                self.send_response(200)
                self.send_header("Last-Modified", LAST_MODIFIED)
                self.end_headers()
                try:
                    self.wfile.write(data + b"\0" * (4 << 20))
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True
                return
            self._headers(200, len(data))
            if body:
                self.wfile.write(data[:-100] if how == "short" else data)
                self.close_connection = True

        def _headers(self, status: int, length: int, content_range: str | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(length))
            self.send_header("Last-Modified", LAST_MODIFIED)
            self.send_header("Content-Type", "application/octet-stream")
            if site.ranges:
                self.send_header("Accept-Ranges", "bytes")
            if content_range:
                self.send_header("Content-Range", content_range)
            data = site.files.get(self.path, b"")
            if site.etags:
                import hashlib

                self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest()[:16] + '"')
            self.end_headers()

    return Handler


@contextmanager
def serving(site: Site) -> Iterator[Site]:
    """Serve ``site`` on a free port of 127.0.0.1 for the duration of the block."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(site))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    site.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()
