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
import zipfile
from collections.abc import Iterator, Mapping
from typing import IO, Any

import numpy as np

from nnre.codecs import LabelCodec, codecs_of
from nnre.errors import FeedError
from nnre.model import Model


def parse_json_feeds(text: str, where: str) -> dict[str, Any]:
    """One JSON object of arrays; ``where`` names the source in errors (file, line)."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise FeedError(f"{where}: not valid JSON ({err.msg} at line {err.lineno} "
                        f"column {err.colno})") from None
    if not isinstance(obj, dict):
        raise FeedError(f"{where}: expected a JSON object mapping input names to arrays, "
                        f"got {type(obj).__name__}")
    return obj


def read_npz(stream: IO[bytes], where: str) -> dict[str, Any]:
    """Named arrays from an .npz, never unpickling anything."""
    try:
        with np.load(stream, allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, AttributeError) as err:
        raise FeedError(f"{where}: not a readable .npz of numeric arrays ({err})") from None


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
    """Outputs as one JSON object (one line), with labels for argmax-label outputs."""
    result: dict[str, Any] = {k: v.tolist() for k, v in outputs.items()}
    for name, codec in codecs_of(model.metadata, list(outputs)).items():
        if isinstance(codec, LabelCodec):
            result[f"{name}.label"] = codec.decode(outputs[name])
    return json.dumps(result, ensure_ascii=False, allow_nan=True)


def jsonl_results(model: Model, lines: Iterator[str], where: str) -> Iterator[str]:
    """One result line per non-blank input line, in order."""
    for number, line in enumerate(lines, 1):
        if line.strip():
            at = f"{where}:{number}"
            yield to_json(model, run_feeds(model, parse_json_feeds(line, at), at))


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
