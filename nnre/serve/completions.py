"""OpenAI-compatible text completions: requests checked into streams, streams into responses.

``POST /v1/completions`` with ``model``, ``prompt`` (a string or a list of them), ``max_tokens``
(default 16), ``temperature``, ``top_p``, ``seed``, ``stop`` (a string or up to 4), ``n``,
``stream`` (+ ``stream_options.include_usage``), ``echo``, ``user``; nnre's own sampling
settings as extensions (``top_k``, ``min_p``, ``repeat_penalty``, ``repeat_last_n``) and
``session_id``. A token is a character. Settings left out take the bundle's recommendation
(``nnre inspect`` shows it), as ``nnre run`` does, so a request with a seed gives the text
``nnre run --seed`` gives; choice i of n draws with ``seed + i`` (``nnre run --num-samples``).
Fields OpenAI has and nnre does not (logprobs, penalties by frequency, logit bias, best_of,
suffix) are accepted only at their neutral values; any other field is refused, as OpenAI
refuses an unrecognized argument. Nothing in a request is ever evaluated as a template.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nnre.codecs import Sampler
from nnre.errors import FeedError
from nnre.generate import default_prime
from nnre.serve.engine import TextEngine, TextStream
from nnre.serve.errors import RequestError

MAX_STOPS = 4
MAX_CHOICES = 128
SETTINGS = ("temperature", "top_k", "top_p", "min_p", "repeat_penalty", "repeat_last_n")
#: fields OpenAI defines that nnre does not implement → the values that mean "off"
NEUTRAL: dict[str, tuple[Any, ...]] = {
    "logprobs": (None,), "presence_penalty": (None, 0), "frequency_penalty": (None, 0),
    "logit_bias": (None, {}), "suffix": (None,),
}
FIELDS = ("model", "prompt", "max_tokens", "seed", "stop", "n", "stream", "stream_options",
          "echo", "user", "best_of", "session_id", *SETTINGS, *NEUTRAL)


@dataclass(frozen=True)
class Completion:
    """A checked request."""

    model: str
    prompts: list[str]
    max_tokens: int
    n: int
    stops: tuple[str, ...]
    stream: bool
    usage_chunk: bool
    echo: bool
    seed: int | None
    settings: dict[str, Any]
    session_id: str | None


def parse(body: Mapping[str, Any], max_tokens: int) -> Completion:
    """Check the fields (RequestError naming the field), before any model is looked at."""
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise RequestError(f"unrecognized request argument: {unknown[0]}", param=unknown[0])
    for name, neutral in NEUTRAL.items():
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or value not in neutral[1:]):
            raise RequestError(f"{name} is not supported by nnre (leave it out)", param=name)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("'model' must be the name of a served model", param="model")
    prompt = body.get("prompt", "")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or \
            not all(isinstance(p, str) for p in prompts):
        raise RequestError("'prompt' must be a string or a non-empty list of strings "
                           "(token arrays have no meaning here: a token is a character)",
                           param="prompt")
    if any(len(p) > max_tokens for p in prompts):
        raise RequestError(f"a prompt is longer than {max_tokens:,} characters, this "
                           "server's cap", param="prompt")
    count = _whole(body, "max_tokens", 16, 0, max_tokens)
    n = _whole(body, "n", 1, 1, MAX_CHOICES)
    if len(prompts) * n > MAX_CHOICES:
        raise RequestError(f"{len(prompts)} prompts × n={n} is more than {MAX_CHOICES} "
                           "completions", param="n")
    best_of = body.get("best_of")
    if best_of is not None and (isinstance(best_of, bool) or best_of not in (1, n)):
        raise RequestError("best_of is not supported by nnre", param="best_of")
    stream = _flag(body, "stream")
    options = body.get("stream_options")
    if options is not None and not (stream and isinstance(options, dict)
                                    and set(options) <= {"include_usage"}
                                    and isinstance(options.get("include_usage", False), bool)):
        raise RequestError("'stream_options' is {\"include_usage\": true|false}, with "
                           "stream: true", param="stream_options")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                             or not 0 <= seed < 1 << 63):
        raise RequestError("'seed' must be a whole number ≥ 0", param="seed")
    session = body.get("session_id")
    if session is not None and (not isinstance(session, str) or n != 1 or len(prompts) != 1):
        raise RequestError("'session_id' is a string, for one prompt and n=1",
                           param="session_id")
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise RequestError("'user' must be a string", param="user")
    return Completion(model, prompts, count, n, _stops(body.get("stop")), stream,
                      bool((options or {}).get("include_usage")), _flag(body, "echo"),
                      seed, {k: body[k] for k in SETTINGS if body.get(k) is not None},
                      session)


def _whole(body: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestError(f"'{name}' must be a whole number from {low} to {high:,}",
                           param=name)
    return value


def _flag(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RequestError(f"'{name}' must be true or false", param=name)
    return value


def _stops(stop: Any) -> tuple[str, ...]:
    stops = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or len(stops) > MAX_STOPS or \
            not all(isinstance(s, str) and s for s in stops):
        raise RequestError(f"'stop' must be a non-empty string or a list of at most "
                           f"{MAX_STOPS}", param="stop")
    return tuple(stops)


def streams(req: Completion, engine: TextEngine, recommended: Mapping[str, Any],
            pending: Sequence[int] = (), started: bool = False, seen: Sequence[int] = ()
            ) -> list[TextStream]:
    """One stream per (prompt, choice), each with its own sampler: the bundle's recommended
    settings under the request's, seed + index. A session gives its next codes to feed
    (``pending``), whether it has a state to go on from (``started``) and what that state has
    read (``seen``, for a model with a context). A fresh prompt longer than a model's context
    keeps its last ``context`` characters, as ``nnre run`` does."""
    settings = {k: v for k, v in recommended.items() if k in (*SETTINGS, "greedy")}
    settings |= req.settings
    if "temperature" in req.settings:
        settings.pop("greedy", None)  # the request's temperature decides (0: greedy)
    seed = req.seed
    greedy = settings.get("greedy") or settings.get("temperature") == 0
    if seed is None and not greedy:
        seed = secrets.randbelow(1 << 31)  # as nnre run: a random seed when none is given
    vocab = engine.vocab
    waker = asyncio.Event()  # one for the request: its reader wakes for any of its streams
    out = []
    for p, prompt in enumerate(req.prompts):
        continuing = started or bool(pending)
        try:
            codes = list(pending) + _codes(engine, prompt, continuing)
        except FeedError as err:
            raise RequestError(f"prompt: {err}", param="prompt") from None
        if engine.context and not continuing:
            codes = codes[-engine.context:]
        for i in range(req.n):
            index = p * req.n + i
            try:
                sampler = Sampler(len(vocab), seed=None if seed is None else seed + index,
                                  **settings)
            except FeedError as err:
                raise RequestError(str(err)) from None
            sampler.remember(codes)
            out.append(TextStream(deque(codes), sampler, req.max_tokens, req.stops,
                                  keep_state=req.session_id is not None,
                                  notify_text=req.stream, waker=waker, seen=list(seen)))
    return out


def _codes(engine: TextEngine, prompt: str, continuing: bool) -> list[int]:
    """The codes of a prompt; an empty one starts from ``nnre run``'s default prime (a
    newline, when the vocabulary has one), unless a session goes on."""
    if not prompt and not continuing:
        prompt = default_prime(engine.model)
    if not prompt:
        raise RequestError("this session has nothing to read: give a prompt", param="prompt")
    return engine.chars.encode(prompt)


class Writer:
    """The response objects of one request, chunks and final (OpenAI's field order)."""

    def __init__(self, req: Completion, request_id: str) -> None:
        self.req = req
        self.id = f"cmpl-{request_id}"
        self.created = int(time.time())
        head = json.dumps({"id": self.id, "object": "text_completion", "created": self.created,
                           "model": req.model})
        self._head = "data: " + head[:-1] + ', "choices": [{"text": '

    def chunk(self, index: int, text: str, finish: str | None) -> str:
        return (f'{self._head}{json.dumps(text)}, "index": {index}, "logprobs": null, '
                f'"finish_reason": {json.dumps(finish)}}}]}}\n\n')

    def usage(self, streams: Sequence[TextStream]) -> dict[str, int]:
        prompt = sum(len(p) for p in self.req.prompts)
        drawn = sum(s.drawn for s in streams)
        return {"prompt_tokens": prompt, "completion_tokens": drawn,
                "total_tokens": prompt + drawn}

    def usage_chunk(self, streams: Sequence[TextStream]) -> str:
        return "data: " + json.dumps({"id": self.id, "object": "text_completion",
                                      "created": self.created, "model": self.req.model,
                                      "choices": [], "usage": self.usage(streams)}) + "\n\n"

    def whole(self, streams: Sequence[TextStream]) -> dict[str, Any]:
        choices = []
        for index, s in enumerate(streams):
            prompt = self.req.prompts[index // self.req.n] if self.req.echo else ""
            choices.append({"text": prompt + "".join(s.text), "index": index,
                            "logprobs": None, "finish_reason": s.finish})
        return {"id": self.id, "object": "text_completion", "created": self.created,
                "model": self.req.model, "choices": choices, "usage": self.usage(streams)}


async def events(writer: Writer, streams: Sequence[TextStream], waker: Any
                 ) -> AsyncIterator[str]:
    """The server-sent events of a streamed completion: a chunk whenever a stream has new
    text (all it has, so a reader that falls behind gets longer chunks, never a backlog of
    short ones), its finish reason with its last text, usage if asked, then ``[DONE]``."""
    sent = [0] * len(streams)
    open_ = set(range(len(streams)))
    if writer.req.echo:
        for index in open_:
            yield writer.chunk(index, writer.req.prompts[index // writer.req.n], None)
    while open_:
        await waker.wait()
        waker.clear()
        if any(s.cancelled for s in streams):
            return  # the client went away
        for index in sorted(open_):
            s = streams[index]
            done = s.done  # read before the text: the engine appends text, then sets done
            end = len(s.text)
            text = "".join(s.text[sent[index]:end])
            sent[index] = end
            if done and s.error is not None:
                yield "data: " + json.dumps({"error": {"message": str(s.error),
                                                       "type": "server_error"}}) + "\n\n"
                open_.discard(index)
            elif done:
                yield writer.chunk(index, text, s.finish)
                open_.discard(index)
            elif text:
                yield writer.chunk(index, text, None)
    if writer.req.usage_chunk:
        yield writer.usage_chunk(streams)
    yield "data: [DONE]\n\n"
