"""A serverless function (the AWS Lambda handler signature, ``handler(event, context)``)
that loads an nnre bundle at cold start and answers one request per call.

The model is ``$NNRE_MODEL`` (a path, or an https:// or s3:// URL fetched once into the
cache: ``pip install 'nnre[remote]'``), by default ``samples/lighthouse.bundle``. It is
loaded when the module is imported, which the platform does once per instance (the cold
start); each call then only runs it. On Lambda the only writable folder is /tmp, so the
cache goes to /tmp/nnre-cache there unless XDG_CACHE_HOME says otherwise.

The event is API Gateway's (the request as a JSON string in ``body``, base64 when
``isBase64Encoded``) or, for a direct invocation, the request object itself:

* a completion, for a text model: ``{"prompt": "3 May.", "max_tokens": 100, "temperature":
  0.8, "top_p": 0.9, "top_k": 10, "seed": 1, "stop": "\\n\\n"}`` (unset settings take the
  bundle's) → ``{"object": "text_completion", "model", "choices": [{"index": 0, "text",
  "finish_reason": "length"|"stop"}], "usage": {…}}``, as OpenAI's completions answer;
* an inference, for any model, as the Open Inference Protocol (KServe v2) writes it:
  ``{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [0.9, 0.8, 0.1]}]}``
  → ``{"model_name", "outputs": [{"name", "shape", "datatype", "data"}]}``, and for an
  output with an ``argmax-label`` codec its labels as a BYTES output ``<name>.label``.

Bad requests answer status 400 with ``{"error": "…"}`` (one line, nnre's message); nothing
else ever shows a traceback (an unexpected fault is a 500 with a fixed message).

Try it locally: ``python samples/serverless/handler.py '{"prompt": "3 May.", "max_tokens":
60, "seed": 1}'`` prints the response the platform would get. On AWS Lambda: the handler is
``handler.handler``; ship nnre and numpy (and the model, or point NNRE_MODEL at an s3://
URL the function's role may read).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
if "AWS_LAMBDA_FUNCTION_NAME" in os.environ:  # only /tmp is writable on Lambda
    os.environ.setdefault("XDG_CACHE_HOME", "/tmp/nnre-cache")

import nnre  # noqa: E402
from nnre import budget  # noqa: E402
from nnre.codecs import LabelCodec, codecs_of  # noqa: E402
from nnre.tensor_io import parse_json_feeds, run_feeds  # noqa: E402

MODEL_LOCATION = os.environ.get("NNRE_MODEL", str(HERE.parent / "lighthouse.bundle"))
MODEL = nnre.load(MODEL_LOCATION)  # the cold start: once per instance
NAME = str(MODEL.metadata.get("name", "model"))
MAX_BODY = 1 << 20  # bytes of request
MAX_TOKENS = 4096  # characters one completion may ask for
SETTINGS = {"temperature": (int, float), "top_p": (int, float), "top_k": (int,),
            "min_p": (int, float), "repeat_penalty": (int, float), "repeat_last_n": (int,)}
DATATYPES = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64}


class BadRequest(Exception):
    """What the caller got wrong: answered with status 400 and this message."""


def handler(event: Any, context: Any) -> dict[str, Any]:
    """One request in, one API-Gateway-style response out (statusCode, headers, body)."""
    try:
        request = _request(event)
        if "prompt" in request:
            return _response(200, complete(request))
        if "inputs" in request:
            return _response(200, infer(request))
        raise BadRequest("the request has neither 'prompt' (a completion) nor 'inputs' (an "
                         "inference)")
    except (BadRequest, nnre.NnreError) as err:
        return _response(400, {"error": str(err).split("\n", 1)[0]})
    except Exception:  # never a traceback to the caller; the platform's log keeps the type
        print(f"nnre handler: unexpected {sys.exc_info()[0].__name__}", file=sys.stderr)
        return _response(500, {"error": "internal error"})


def _request(event: Any) -> dict[str, Any]:
    if not isinstance(event, dict):
        raise BadRequest("the event is not a JSON object")
    if "body" not in event:
        return event  # a direct invocation: the event is the request
    body = event["body"]
    if not isinstance(body, str):
        raise BadRequest("the request has no body")
    if len(body) > MAX_BODY * 2:
        raise BadRequest(f"the body is larger than {MAX_BODY:,} bytes")
    if event.get("isBase64Encoded"):
        try:
            body = base64.b64decode(body, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise BadRequest("the body is not base64 of UTF-8 text") from None
    if len(body.encode("utf-8")) > MAX_BODY:
        raise BadRequest(f"the body is larger than {MAX_BODY:,} bytes")
    return parse_json_feeds(body, "request")  # bounded: size, depth, number sizes


def complete(request: dict[str, Any]) -> dict[str, Any]:
    prompt, length = request.get("prompt"), request.get("max_tokens", 16)
    if not isinstance(prompt, str) or not prompt:
        raise BadRequest("'prompt' must be a non-empty string")
    if isinstance(length, bool) or not isinstance(length, int) or not 0 <= length <= MAX_TOKENS:
        raise BadRequest(f"'max_tokens' must be an integer in [0, {MAX_TOKENS}]")
    settings = dict(MODEL.sampling)
    for key, types in SETTINGS.items():
        if key in request:
            value = request[key]
            if isinstance(value, bool) or not isinstance(value, types):
                raise BadRequest(f"'{key}' must be a number")
            settings[key] = value
    seed, stop = request.get("seed"), request.get("stop")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise BadRequest("'seed' must be an integer")
    if stop is not None and (not isinstance(stop, str) or not stop):
        raise BadRequest("'stop' must be a non-empty string")
    text = "".join(MODEL.generate(prompt, length, seed=seed, stop=stop, **settings))
    stopped = stop is not None and text.endswith(stop)
    if stopped:
        text = text[:-len(stop)]  # as OpenAI answers: the stop sequence is not returned
    done = len(text) + (len(stop) if stopped and stop else 0)
    return {"object": "text_completion", "model": NAME,
            "choices": [{"index": 0, "text": text,
                         "finish_reason": "stop" if stopped else "length"}],
            "usage": {"prompt_tokens": len(prompt), "completion_tokens": done,
                      "total_tokens": len(prompt) + done}}


def infer(request: dict[str, Any]) -> dict[str, Any]:
    inputs = request["inputs"]
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("'inputs' must be a non-empty list")
    feeds = {}
    for i, tensor in enumerate(inputs):
        name, array = _tensor(tensor, f"inputs[{i}]")
        if name in feeds:
            raise BadRequest(f"inputs[{i}]: '{name}' is given twice")
        feeds[name] = array
    outputs = run_feeds(MODEL, feeds, "request")
    answer: dict[str, Any] = {"model_name": NAME,
                              "model_version": str(MODEL.metadata.get("version", "")),
                              "outputs": [{"name": n, "shape": list(v.shape),
                                           "datatype": "FP64" if v.dtype == np.float64
                                           else "FP32", "data": v.reshape(-1).tolist()}
                                          for n, v in outputs.items()]}
    for name, codec in codecs_of(MODEL.metadata, list(outputs)).items():
        if isinstance(codec, LabelCodec) and not MODEL.state:  # its labels, as BYTES
            labels = codec.decode(outputs[name].reshape(-1, outputs[name].shape[-1]))
            answer["outputs"].append({"name": f"{name}.label", "shape": [len(labels)],
                                      "datatype": "BYTES", "data": labels})
    if "id" in request:
        answer["id"] = str(request["id"])
    return answer


def _tensor(tensor: Any, where: str) -> tuple[str, np.ndarray]:
    """An OIP input tensor as (name, array): shape, datatype and data checked, the size
    against the memory budget before anything is allocated."""
    if not isinstance(tensor, dict):
        raise BadRequest(f"{where} must be an object with name, shape, datatype, data")
    name, shape = tensor.get("name"), tensor.get("shape")
    datatype, data = tensor.get("datatype"), tensor.get("data")
    if not isinstance(name, str):
        raise BadRequest(f"{where}: 'name' must be a string")
    if datatype not in DATATYPES:
        raise BadRequest(f"{where}: 'datatype' must be one of {', '.join(DATATYPES)}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool)
                                               and d >= 0 for d in shape):
        raise BadRequest(f"{where}: 'shape' must be a list of integers ≥ 0")
    count = budget.size(shape, 1)
    budget.check(budget.size(shape, 8), f"{where}: a tensor of shape {shape}",
                 lambda m: BadRequest(m))
    flat = np.asarray(data, dtype=object).reshape(-1) if isinstance(data, list) else None
    if flat is None or flat.size != count:
        raise BadRequest(f"{where}: 'data' must hold {count:,} numbers for shape {shape}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in flat):
        raise BadRequest(f"{where}: 'data' must hold numbers only")
    return name, flat.astype(DATATYPES[datatype]).reshape(shape)


def _response(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": status, "headers": {"Content-Type": "application/json"},
            "body": json.dumps(body, ensure_ascii=False)}


if __name__ == "__main__":  # a local call: python samples/serverless/handler.py '{"prompt": …}'
    request = sys.argv[1] if len(sys.argv) > 1 else sys.stdin.read()
    print(json.dumps(handler({"body": request, "isBase64Encoded": False}, None),
                     ensure_ascii=False))
    sys.exit(0)
