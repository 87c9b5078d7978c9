"""``nnre serve``: models over HTTP (the ``serve`` extra: uvicorn, starlette, prometheus_client).

Modules in the order a request meets them: ``server`` (uvicorn, signals, the file watcher),
``app`` (routes, bodies, errors as JSON), ``metrics`` (``/metrics``, access log),
``infer`` (Open Inference Protocol tensors) and ``dynamic`` (their dynamic batching),
``completions`` (OpenAI's text completions) and ``engine`` (continuous batching of text
streams), ``sessions``, ``registry`` (models by name, reloads), ``rows`` and ``runner``.
Nothing in ``nnre`` imports this package; the CLI imports it when ``serve`` runs.
"""
