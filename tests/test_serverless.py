"""samples/serverless/handler.py, called as a serverless platform does: in a fresh process
that imports it (the cold start loads the model), then events in, responses out. Oracles:
``nnre run`` with the same seed for completions, the hand-written NumPy MLP for inference."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import reference

from nnre.bundle.read import decode

ROOT = Path(__file__).resolve().parent.parent
WEATHER = ROOT / "samples" / "weather.bundle"
LIGHTHOUSE = ROOT / "samples" / "lighthouse.bundle"


def call(model: Path, events: list[Any], tmp_path: Path) -> list[dict[str, Any]]:
    """Import the handler in a new process (model loaded at import), then call it once per
    event; each response with its body parsed."""
    code = f"""
import json, sys
sys.path.insert(0, {str(ROOT / 'samples' / 'serverless')!r})
import handler
events = json.load(sys.stdin)
print(json.dumps([handler.handler(e, None) for e in events]))
"""
    env = {**os.environ, "NNRE_MODEL": str(model), "XDG_CACHE_HOME": str(tmp_path)}
    got = subprocess.run([sys.executable, "-c", code], input=json.dumps(events),
                         capture_output=True, text=True, timeout=120, env=env)
    assert got.returncode == 0, got.stderr
    out = json.loads(got.stdout)
    for r in out:
        assert r["headers"]["Content-Type"] == "application/json"
        assert "Traceback" not in r["body"]
        r["json"] = json.loads(r["body"])
    return out


def gateway(request: Any, b64: bool = False) -> dict[str, Any]:
    body = json.dumps(request)
    if b64:
        return {"body": base64.b64encode(body.encode()).decode(), "isBase64Encoded": True}
    return {"body": body, "isBase64Encoded": False, "httpMethod": "POST"}


def nnre_run(*args: str) -> str:
    got = subprocess.run([sys.executable, "-m", "nnre", "run", str(LIGHTHOUSE), *args],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert got.returncode == 0, got.stderr
    return got.stdout


def test_a_completion_is_the_text_nnre_run_gives(tmp_path: Path) -> None:
    requests = [{"prompt": "3 May.", "max_tokens": 120, "seed": 4},
                {"prompt": "The ", "max_tokens": 200, "seed": 2, "temperature": 0.7,
                 "top_k": 10, "stop": "\n"}]
    first, second, direct = call(LIGHTHOUSE, [gateway(requests[0]),
                                              gateway(requests[1], b64=True), requests[0]],
                                 tmp_path)
    want = nnre_run("--prime", "3 May.", "-n", "120", "--seed", "4")
    assert first["statusCode"] == 200
    body = first["json"]
    assert body["object"] == "text_completion" and body["model"] == "lighthouse-lstm"
    assert "3 May." + body["choices"][0]["text"] == want.rstrip("\n")[:len("3 May.") + 120]
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 6, "completion_tokens": 120, "total_tokens": 126}
    stopped = nnre_run("--prime", "The ", "-n", "200", "--seed", "2", "--temperature", "0.7",
                       "--top-k", "10", "--stop", "\\n")
    choice = second["json"]["choices"][0]
    assert choice["finish_reason"] == "stop" and "\n" not in choice["text"]
    assert "The " + choice["text"] + "\n" == stopped.rstrip("\n") + "\n"
    assert direct["json"] == body  # a direct invocation: the event is the request


def test_an_inference_answers_in_the_open_inference_protocol(tmp_path: Path) -> None:
    x = [[0.9, 0.8, 0.1], [0.1, 0.2, 0.9]]
    request = {"id": "r1", "inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32",
                                       "data": [v for row in x for v in row]}]}
    (got,) = call(WEATHER, [gateway(request)], tmp_path)
    assert got["statusCode"] == 200
    body = got["json"]
    assert body["model_name"] == "weather" and body["id"] == "r1"
    out, labels = body["outputs"]
    assert out["name"] == "y" and out["shape"] == [2, 3] and out["datatype"] == "FP32"
    p = {k: np.asarray(v, np.float64) for k, v in decode(WEATHER).tensors.items()}
    want = reference.mlp(p, np.asarray(x, np.float32).astype(np.float64))
    np.testing.assert_allclose(np.reshape(out["data"], (2, 3)), want, rtol=1e-5, atol=1e-6)
    assert labels == {"name": "y.label", "shape": [2], "datatype": "BYTES",
                      "data": [["clear", "fog", "storm"][i] for i in want.argmax(1)]}


def test_bad_requests_are_400_with_one_line_of_json(tmp_path: Path) -> None:
    tensor = {"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [0.1, 0.2, 0.3]}
    bad = {
        "not JSON": {"body": "{\"inputs\": [", "isBase64Encoded": False},
        "no body": {"body": None},
        "not an object": [1, 2],
        "neither": gateway({"hello": 1}),
        "bad base64": {"body": "***", "isBase64Encoded": True},
        "unknown input": gateway({"inputs": [{**tensor, "name": "z"}]}),
        "wrong shape": gateway({"inputs": [{**tensor, "shape": [1, 4],
                                            "data": [0.1, 0.2, 0.3, 0.4]}]}),
        "data and shape disagree": gateway({"inputs": [{**tensor, "shape": [2, 3]}]}),
        "bad datatype": gateway({"inputs": [{**tensor, "datatype": "BF16"}]}),
        "strings as data": gateway({"inputs": [{**tensor, "data": ["a", "b", "c"]}]}),
        "huge shape": gateway({"inputs": [{**tensor, "shape": [1 << 40, 1 << 20]}]}),
        "deep": {"body": "[" * 100000 + "]" * 100000},
        "text from a tensor model": gateway({"prompt": "hello"}),
    }
    answers = call(WEATHER, list(bad.values()), tmp_path)
    for (what, _), got in zip(bad.items(), answers, strict=True):
        assert got["statusCode"] == 400, what
        assert set(got["json"]) == {"error"} and "\n" not in got["json"]["error"], what
    errors = dict(zip(bad, (a["json"]["error"] for a in answers), strict=True))
    assert "unknown name 'z'" in errors["unknown input"]
    assert "memory budget" in errors["huge shape"]
    assert "does not generate text" in errors["text from a tensor model"]
    text_bad = [gateway({"prompt": "3 May.", "max_tokens": 10 ** 9}),
                gateway({"prompt": "\u20ac", "max_tokens": 5}),
                gateway({"prompt": "a", "temperature": "hot"}),
                gateway({"prompt": "a", "top_p": 7.0})]
    answers = call(LIGHTHOUSE, text_bad, tmp_path)
    assert [a["statusCode"] for a in answers] == [400] * 4
    assert "not in the model's vocabulary" in answers[1]["json"]["error"]
