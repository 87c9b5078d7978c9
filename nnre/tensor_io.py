"""Tensors in and out for ``nnre run --input``: JSON objects or .npz → feeds → outputs → JSON.

A feed is checked against the model's signature before anything runs, and every problem is a
FeedError saying what was expected and what came. A recurrent model (one with state) takes a
sequence with time leading, ``(T, n)`` or ``(T, B, n)``, and runs it with ``Model.run``; a
model without state takes ``(n,)`` or ``(B, n)`` and runs one ``Model.step``. Keys naming a
state entry give the initial state. Outputs are arrays (as nested lists in JSON); an output
with an ``argmax-label`` codec also gets its label(s) under ``"<name>.label"``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from typing import IO, Any

import numpy as np

from nnre.bundle.info import json_escaped
from nnre.codecs import LabelCodec, codecs_of
from nnre.errors import FeedError
from nnre.model import Model

MAX_INPUT_BYTES = 1 << 30  # one --input file, read whole
MAX_JSON_CHARS = 256 << 20
MAX_JSON_DEPTH = 32
MAX_INT_DIGITS = 309  # 10**309 > the largest float64


def parse_json_feeds(text: str, where: str) -> dict[str, Any]:
    """One JSON object of arrays; ``where`` names the source in errors (file, line)."""
    obj = loads(text, where)
    if not isinstance(obj, dict):
        raise FeedError(f"{where}: expected a JSON object mapping input names to arrays, "
                        f"got {type(obj).__name__}")
    return obj


def loads(text: str, where: str) -> Any:
    """One JSON value read within limits (the one JSON reader of files, lines and request
    bodies): at most MAX_JSON_CHARS characters and MAX_JSON_DEPTH levels of nesting (a
    tensor needs about ten), and integers of at most MAX_INT_DIGITS digits (more does not
    fit a float64; Python itself refuses 4300). Anything else is a FeedError."""
    if len(text) > MAX_JSON_CHARS:
        raise FeedError(f"{where}: {len(text):,} characters of JSON, more than the cap of "
                        f"{MAX_JSON_CHARS:,}")
    try:
        obj = json.loads(text, parse_int=_parse_int, parse_float=_parse_float)
    except FeedError as err:  # from the number hooks, which do not know where they are
        raise FeedError(f"{where}: {err}") from None
    except json.JSONDecodeError as err:
        raise FeedError(f"{where}: not valid JSON ({err.msg} at line {err.lineno} "
                        f"column {err.colno})") from None
    except RecursionError:
        raise FeedError(f"{where}: JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as err:  # e.g. CPython's int digit limit, whatever the hook missed
        raise FeedError(f"{where}: a JSON value that cannot be read ({err})") from None
    if _depth(obj) > MAX_JSON_DEPTH:
        raise FeedError(f"{where}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return obj


def _parse_int(digits: str) -> int | float:
    """Small ints stay exact; larger ones become floats (NumPy would make them objects)."""
    n = len(digits.lstrip("-"))
    if n > MAX_INT_DIGITS:
        raise FeedError(f"an integer of {n:,} digits in the JSON; at most {MAX_INT_DIGITS} "
                        "fit a float64")
    return int(digits) if n <= 18 else float(digits)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise FeedError(f"the number {text:.40}{'…' if len(text) > 40 else ''} is beyond "
                        "the float64 range")
    return value


def _depth(value: Any) -> int:
    """Nesting depth of lists and dicts, iteratively (no recursion to exhaust)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (list, dict)):
            deepest = max(deepest, d)
            if d <= MAX_JSON_DEPTH:
                stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def read_npz(stream: IO[bytes], where: str) -> dict[str, Any]:
    """Named arrays from an .npz, within size limits, never unpickling anything."""
    from nnre.npz import read_npz as bounded
    return dict(bounded(stream, where))


def run_feeds(model: Model, feeds: Mapping[str, Any], where: str) -> dict[str, np.ndarray]:
    """Check the feeds against the signature, run, and return the outputs."""
    recurrent = bool(model.state)
    names = set(model.inputs) | set(model.state)
    unknown = sorted(set(feeds) - names)
    if unknown:
        raise FeedError(f"{where}: unknown name '{unknown[0]}'; the model's inputs are "
                        + ", ".join(model.inputs)
                        + (f" and its state {', '.join(model.state)}" if recurrent else ""))
    xs = {n: _array(v, f"{where}: input '{n}'", model.dtype)
          for n, v in feeds.items() if n in model.inputs}
    for name, spec in model.inputs.items():
        if name not in xs:
            raise FeedError(f"{where}: missing input '{name}': expected "
                            f"{_layout(spec.shape, recurrent)} {spec.dtype}")
        arr, dims = xs[name], spec.shape
        ok = arr.shape[-len(dims):] == dims if dims else True
        lead = arr.ndim - len(dims)
        if not ok or lead not in ((1, 2) if recurrent else (0, 1)):
            raise FeedError(f"{where}: input '{name}' has shape {list(arr.shape)}; expected "
                            f"{_layout(dims, recurrent)}")
    state = {n: _array(v, f"{where}: state '{n}'", model.dtype)
             for n, v in feeds.items() if n in model.state} or None
    if state is not None and len(state) != len(model.state):
        missing = sorted(set(model.state) - set(state))
        raise FeedError(f"{where}: initial state given without '{missing[0]}' "
                        "(give all of it or none)")
    try:
        outputs, _ = model.run(xs, state) if recurrent else model.step(xs, state)
    except FeedError as err:
        raise FeedError(f"{where}: {err}") from None
    return outputs


def to_json(model: Model, outputs: Mapping[str, np.ndarray]) -> str:
    """Outputs as one JSON object (one line), with labels for argmax-label outputs; labels
    come from the file, so characters a terminal would obey are written as JSON escapes."""
    result: dict[str, Any] = {k: v.tolist() for k, v in outputs.items()}
    for name, codec in codecs_of(model.metadata, list(outputs)).items():
        if isinstance(codec, LabelCodec):
            result[f"{name}.label"] = codec.decode(outputs[name])
    return json_escaped(json.dumps(result, ensure_ascii=False, allow_nan=True))


def jsonl_results(model: Model, lines: Iterator[str], where: str) -> Iterator[str]:
    """One result line per non-blank input line, in order."""
    for number, line in enumerate(lines, 1):
        if line.strip():
            at = f"{where}:{number}"
            yield to_json(model, run_feeds(model, parse_json_feeds(line, at), at))


def bounded_lines(stream: IO[str]) -> Iterator[str]:
    """The lines of ``stream``, none read past MAX_JSON_CHARS + 1 characters: a longer line
    arrives cut (and is then refused by :func:`parse_json_feeds`) instead of being held in
    memory whole, however long it is."""
    return iter(lambda: stream.readline(MAX_JSON_CHARS + 1), "")


def _array(value: Any, what: str, dtype: str) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError):
        arr = None
    if arr is None or arr.dtype == object:
        raise FeedError(f"{what} is not a rectangular array of numbers (ragged or mixed)")
    if arr.dtype.kind not in "fiub":
        raise FeedError(f"{what} holds {arr.dtype} values; expected "
                        f"numbers, as {dtype}")
    return arr.astype(dtype, copy=False)


def _layout(dims: tuple[int, ...], recurrent: bool) -> str:
    inner = ", ".join(map(str, dims))
    if recurrent:
        return f"(time, {inner}) or (time, batch, {inner})"
    alone = f"({inner},)" if len(dims) == 1 else f"({inner})"
    return f"{alone} or (batch, {inner})"
