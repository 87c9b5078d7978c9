"""The ``nnre serve`` command's options and its one call; imports click and nnre only, so the
CLI can list it without the ``serve`` extra installed (the server is imported when it runs)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import click

from nnre import budget

SERVE_HELP = """Serve models over HTTP until SIGTERM or Ctrl-C (which drain the requests
in flight first).

Each bundle is served under its file name without .bundle (a folder: every *.bundle in
it, and those added later; an https:// or s3:// URL, with the remote extra: fetched and
verified at the start, then checked for a new version every --watch-interval seconds). A
bundle replaced by renaming a new file over it, or a new version at its URL, is reloaded
(checked in full first: a bad file is refused and the old model keeps serving; requests
in flight finish on the model they started with).

With --replicas N (the ray extra) the same application runs as N Ray Serve replicas, each
loading the models once and batching its own requests; a session's requests then carry
its id in the header x-session-id, which keeps them on one replica.

\b
Endpoints:
  /v2/health/live, /v2/health/ready, /v2/models/NAME[/ready]   Open Inference Protocol
  POST /v2/models/NAME/infer                                   tensors (KServe v2 JSON)
  POST /v1/completions, GET /v1/models                         OpenAI-style text
  /metrics                                                     Prometheus

\b
Examples:
  nnre serve samples/lighthouse.bundle samples/weather.bundle --port 8000
  nnre serve models/ --host 0.0.0.0 --max-batch 128
  nnre serve https://example.com/m.bundle --watch-interval 60
  nnre serve samples/lighthouse.bundle --replicas 2
  curl -s localhost:8000/v1/completions -d '{"model": "lighthouse", "prompt": "The ",
       "max_tokens": 100, "seed": 7}'

Needs the serve extra: pip install "nnre[serve]".
"""

def _size(ctx: click.Context, param: click.Parameter, value: str) -> int:
    try:
        return budget.parse_bytes(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


def serve_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The options of ``nnre serve`` (applied by nnre.cli, beside the shared ones)."""
    options = [
        click.argument("sources", nargs=-1, required=True, metavar="MODEL.bundle|DIR|URL..."),
        click.option("--host", default="127.0.0.1", show_default=True,
                     help="Address to listen on (0.0.0.0: every interface)."),
        click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
                     help="Port to listen on (0: any free one, printed at start)."),
        click.option("--max-batch", type=click.IntRange(min=1), default=64, show_default=True,
                     help="Most generation streams stepped together per model, and most "
                          "examples in one inference batch."),
        click.option("--max-wait-ms", type=click.FloatRange(min=0), default=2.0,
                     show_default=True,
                     help="How long an inference request waits for others to batch with."),
        click.option("--no-batching", is_flag=True,
                     help="Step every stream and run every inference request alone (the "
                          "baseline benchmarks/bench_serve.py compares against)."),
        click.option("--max-body", default="16M", show_default=True, callback=_size,
                     metavar="SIZE", help="Largest request body (413 beyond)."),
        click.option("--max-tokens", type=click.IntRange(min=1), default=1 << 16,
                     show_default=True,
                     help="Cap on a completion's max_tokens and on a prompt's characters."),
        click.option("--session-timeout", type=click.FloatRange(min=0, min_open=True),
                     default=600.0, show_default=True,
                     help="Seconds an unused session keeps its state."),
        click.option("--max-sessions", type=click.IntRange(min=0), default=1024,
                     show_default=True, help="Most sessions open at once (429 beyond)."),
        click.option("--reload-interval", type=click.FloatRange(min=0), default=1.0,
                     show_default=True,
                     help="Seconds between checks for replaced bundles (0: never reload)."),
        click.option("--watch-interval", type=click.FloatRange(min=0), default=30.0,
                     show_default=True,
                     help="Seconds between checks of https:// and s3:// models for a new "
                          "version (0: never; a new one is fetched and verified in full "
                          "before it takes over)."),
        click.option("--replicas", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Serve as this many Ray Serve replicas behind Ray's proxy (the ray "
                          "extra; a local Ray, or the cluster RAY_ADDRESS names); 0: one "
                          "process, no Ray."),
        click.option("--drain-timeout", type=click.FloatRange(min=0), default=30.0,
                     show_default=True,
                     help="On SIGTERM, seconds to let requests in flight finish."),
        click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
                     default="info", show_default=True,
                     help="Log level (info: one JSON access line per request)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def serve_main(sources: tuple[str, ...], host: str, port: int, max_batch: int,
               max_wait_ms: float, no_batching: bool, max_body: int, max_tokens: int,
               session_timeout: float, max_sessions: int, reload_interval: float,
               watch_interval: float, replicas: int, drain_timeout: float,
               log_level: str) -> None:
    for package in ("uvicorn", "starlette", "prometheus_client"):
        try:
            importlib.import_module(package)
        except ImportError:
            raise click.ClickException(f"nnre serve needs the serve extra ({package} is not "
                                       "installed): pip install \"nnre[serve]\"") from None
    from nnre.serve.server import ServeConfig, serve

    cfg = ServeConfig(host=host, port=port, max_batch=max_batch, max_wait=max_wait_ms / 1000,
                      batching=not no_batching, max_body=max_body, max_tokens=max_tokens,
                      session_timeout=session_timeout, max_sessions=max_sessions,
                      reload_interval=reload_interval, watch_interval=watch_interval,
                      drain_timeout=drain_timeout, log_level=log_level)
    if replicas:
        from nnre.ray_serve import serve_until_signal

        serve_until_signal(list(sources), cfg, replicas)
    else:
        serve(list(sources), cfg)
