"""Serve bundles as Ray Serve replicas with nnre.ray_serve, ask them once over HTTP, stop.

The deployment is the whole ``nnre serve`` application in each replica (Open Inference
Protocol on /v2, OpenAI completions on /v1, /metrics), behind Ray's proxy on --port. This
script starts a local Ray, deploys --replicas replicas of the models, sends a completion
to the first text model and an inference to the first other one (with random inputs of
its shape), prints both answers and shuts down; with --keep it serves until Ctrl-C instead,
as ``nnre serve MODEL... --replicas N`` does.

Run: python samples/ray/serve.py MODEL.bundle... [--replicas 2] [--port 8000] [--keep]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # run from a checkout without installing


def ask(url: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as r:
        return json.load(r)


def try_models(base: str, models: list[Any]) -> None:
    """One completion from the first text model, one inference from the first other."""
    import numpy as np

    from nnre.serve.registry import is_text, name_of

    for path, model in models:
        name = name_of(path)
        if is_text(model):
            r = ask(f"{base}/v1/completions", {"model": name, "prompt": "The ",
                                               "max_tokens": 60, "seed": 7})
            print(f"{name}: The {r['choices'][0]['text']!r}")
            break
    for path, model in models:
        if model.state or is_text(model):
            continue
        name = name_of(path)
        inputs = [{"name": n, "shape": [1, *s.shape], "datatype": "FP32",
                   "data": np.random.default_rng(0).uniform(0, 1, s.shape).ravel().tolist()}
                  for n, s in model.inputs.items()]
        r = ask(f"{base}/v2/models/{name}/infer", {"inputs": inputs})
        print(f"{name}: " + ", ".join(f"{o['name']} = {o['data']}" for o in r["outputs"]))
        break


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--keep", action="store_true", help="serve until Ctrl-C")
    args = parser.parse_args()
    logging.getLogger("ray").setLevel(logging.ERROR)

    import ray

    import nnre
    import nnre.ray_serve

    models = [(path, nnre.load(path)) for path in args.models]
    ray.init(num_cpus=max(2, args.replicas), include_dashboard=False, log_to_driver=False)
    try:
        start = time.monotonic()
        nnre.ray_serve.run(args.models, num_replicas=args.replicas, port=args.port)
        base = f"http://127.0.0.1:{args.port}"
        print(f"{args.replicas} replicas up in {time.monotonic() - start:.1f} s on {base}; "
              f"ready: {ask(base + '/v2/health/ready')['ready']}")
        try_models(base, models)
        if args.keep:
            print("serving until Ctrl-C")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        nnre.ray_serve.shutdown()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
