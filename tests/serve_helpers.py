"""Run the real ``nnre serve`` in a subprocess on a free port, and read what it answers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kw.pop("timeout", 60), **kw)

    def log_lines(self) -> list[str]:
        return self.log.read_text(encoding="utf-8", errors="replace").splitlines()

    def access(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_lines() if line.startswith("{")]


@contextmanager
def running(args: list[str], tmp: Path, env: dict[str, str] | None = None,
            stop: bool = True) -> Iterator[Server]:
    """``nnre serve ARGS --port FREE`` until ready (GET /v2/health/ready is 200); SIGTERM at
    the end, which must exit 0."""
    port = free_port()
    log = tmp / f"serve-{port}.log"
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "nnre", "serve", *args, "--port",
                                 str(port)], cwd=ROOT, env=full_env, stderr=err)
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    try:
        _wait_ready(server)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
            if stop:
                assert code == 0, f"exit {code}: " + "\n".join(server.log_lines()[-20:])


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + 60
    with httpx.Client(timeout=5) as client:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise AssertionError("the server exited: " + "\n".join(server.log_lines()))
            try:
                if client.get(server.url + "/v2/health/ready").status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
    raise AssertionError("the server did not get ready")


def sse(response: httpx.Response) -> list[Any]:
    """The events of a server-sent event stream: decoded JSON, or "[DONE]"."""
    out: list[Any] = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: "):]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of Prometheus text (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        key, value = line.rsplit(" ", 1)
        base, _, rest = key.partition("{")
        got = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
        if base == name and got == want:
            return float(value)
    return 0.0
