"""Ray Serve: the ``nnre serve`` application as a deployment of replicas (the ``ray`` extra).

Ray Serve hosts an existing ASGI application through ``serve.ingress`` given a builder
function, which each replica calls when it starts: here that builder is
:func:`nnre.serve.server.make_app`, so every replica is the whole ``nnre serve`` application
(the same routes, errors, limits, metrics and reloads), loading the bundles once, its own
continuous batching over the requests Ray routes to it, and its lifespan (the file and
remote watchers) run by Ray as uvicorn runs it. Ray's proxy takes HTTP on ``host:port`` and
spreads requests over the replicas; ``max_ongoing_requests`` (by default ``max_batch``) is
how many a replica takes before Ray routes to another or queues.

Sessions keep a recurrent model's state in the replica that ran them. With more than one
replica a request naming a session must carry the same id in the ``x-session-id`` header:
Ray's consistent-hash router sends every request with that header to one replica, and the
application refuses (400) a session request without it rather than start the session afresh
on another replica. ``/metrics`` answers for the replica that took the request.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from nnre import budget
from nnre.errors import NnreError

EXTRA = "pip install 'nnre[ray]'"
SESSION_HEADER = "x-session-id"  # Ray's default RAY_SERVE_SESSION_ID_HEADER_KEY
ROUTER = "ray.serve.experimental.consistent_hash_router.ConsistentHashRouter"


def deployment(sources: list[str], cfg: Any = None, *, num_replicas: int = 2,
               num_cpus: float = 1.0, name: str = "nnre", **options: Any) -> Any:
    """A Ray Serve application (``serve.run`` it) of ``num_replicas`` replicas, each
    serving ``sources`` as ``nnre serve`` does with ``cfg`` (a ServeConfig; its host, port
    and drain time are Ray's business here). ``options`` go to ``serve.deployment``."""
    serve = _serve()
    from nnre.serve.server import ServeConfig, make_app

    if num_replicas < 1:
        raise NnreError(f"a deployment has at least 1 replica, not {num_replicas}")
    cfg = cfg or ServeConfig()
    router = _router() if num_replicas > 1 else None
    if router is not None:  # a session lives in one replica: its requests must all go there
        cfg = replace(cfg, session_header=SESSION_HEADER)
    paths = [str(s) for s in sources]
    limit = budget.limit()  # --max-bytes (or NNRE_MAX_BYTES) here holds in every replica

    def build() -> Any:  # runs in each replica, at its start
        from nnre.threads import set_blas_threads

        budget.set_limit(limit)
        set_blas_threads(max(1, int(num_cpus)))  # replicas side by side: no oversubscription
        app, _ = make_app(paths, cfg)
        return app

    settings: dict[str, Any] = {
        "name": name, "num_replicas": num_replicas,
        "ray_actor_options": {"num_cpus": num_cpus},
        "max_ongoing_requests": max(cfg.max_batch, 1),
        "graceful_shutdown_timeout_s": cfg.drain_timeout}
    if router is not None:
        settings["request_router_config"] = router
    settings.update(options)
    return serve.deployment(serve.ingress(build)(), **settings).bind()


def run(sources: list[str], cfg: Any = None, *, num_replicas: int = 2,
        num_cpus: float | None = None, host: str = "127.0.0.1", port: int = 8000,
        route_prefix: str = "/", name: str = "nnre") -> None:
    """Start Ray Serve's proxy on ``host:port`` (Ray already initialised, or a local
    instance, or the cluster ``RAY_ADDRESS`` names) and deploy; returns once every replica
    is up. Each replica reserves ``num_cpus``: by default 1, or the cluster's CPUs shared
    out when it has fewer than one per replica (a replica that cannot be placed would leave
    ``serve.run`` waiting forever)."""
    serve = _serve()
    import ray

    check(sources)
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    if num_cpus is None:
        cpus = float(ray.cluster_resources().get("CPU", 0))
        num_cpus = min(1.0, cpus / num_replicas) if cpus else 1.0
    app = deployment(sources, cfg, num_replicas=num_replicas, num_cpus=num_cpus)
    serve.start(http_options={"host": host, "port": port})
    try:
        serve.run(app, name=name, route_prefix=route_prefix)
    except Exception as err:  # Ray's own (DeploymentFailed, RuntimeError): its first line
        raise NnreError(f"Ray Serve could not start the replicas: "
                        f"{str(err).strip().splitlines()[0]}") from None


def check(sources: list[str]) -> None:
    """Load every model once here, as ``nnre serve`` does before it listens, so a bad file
    is one error naming it rather than replicas failing on Ray (NnreError, OSError)."""
    from nnre.serve.registry import Registry, load_model

    for path in Registry([str(s) for s in sources], _unused)._files(startup=True):
        load_model(path, False)


def _unused(*args: Any) -> Any:
    raise AssertionError("only the file listing of this registry is used")


def serve_until_signal(sources: list[str], cfg: Any, num_replicas: int,
                       announce: Callable[[str], None] = lambda line: print(
                           line, file=sys.stderr)) -> None:
    """``nnre serve --replicas N``: deploy, then wait for SIGTERM or SIGINT and shut Ray
    Serve down (its replicas drain for ``drain_timeout``), and the local Ray if it started
    one. A signal while deploying ends the process (Ray's own handler)."""
    import ray

    started = not ray.is_initialized()
    run(sources, cfg, num_replicas=num_replicas, host=cfg.host, port=cfg.port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # after ray.init, which installs its own
        signal.signal(sig, lambda signum, frame: stop.set())
    shown = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    announce(f"nnre serve: {num_replicas} Ray Serve replica(s) of {', '.join(sources)} on "
             f"http://{shown}:{cfg.port}")
    while not stop.wait(1.0):  # a timed wait: signals are handled between waits
        pass
    shutdown()
    if started:
        ray.shutdown()


def shutdown() -> None:
    """Delete the deployments and stop Ray Serve (Ray itself stays up)."""
    _serve().shutdown()


def _router() -> Any:
    """Ray's session-affinity router (Ray 2.60 on)."""
    try:
        from ray.serve.experimental import consistent_hash_router  # noqa: F401
    except ImportError:
        raise NnreError(f"more than one replica needs Ray 2.60 or later (its consistent-hash "
                        f"router keeps a session on one replica): {EXTRA}") from None
    return {"request_router_class": ROUTER}


def _serve() -> Any:
    try:
        from ray import serve
    except ImportError as err:
        raise NnreError(f"serving on Ray needs Ray Serve ({err.name} is missing): "
                        f"{EXTRA}") from None
    return serve
