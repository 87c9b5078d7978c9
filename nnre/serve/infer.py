"""Open Inference Protocol (KServe v2) tensors: requests checked into feeds, outputs into JSON.

The protocol's REST JSON (github.com/kserve/open-inference-protocol, inference_rest.md):
``{"id"?, "parameters"?, "inputs": [{"name", "shape", "datatype", "data", "parameters"?}],
"outputs"?: [{"name", "parameters"?}]}``, data flat in row-major order or nested as the shape
says; the response echoes ``model_name``, ``model_version``, ``id`` and gives ``outputs``
(flat data). A model without state takes ``(batch, …)`` (or one example without the batch
axis); a recurrent one takes ``(time, batch, …)`` (or ``(time, …)``) and runs the sequence
from the zero state, or from a session's state (``parameters.session_id``). An input with a
``char`` codec also takes BYTES: strings, one per batch row, read through the vocabulary.
An output with an ``argmax-label`` codec comes with its labels as ``"<name>.label"`` (BYTES).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnre import budget
from nnre.codecs import CharCodec, LabelCodec, codecs_of, rows
from nnre.errors import FeedError
from nnre.model import Model
from nnre.serve.errors import RequestError

#: OIP datatype → NumPy dtype for the numbers it accepts (BYTES: strings, for a char codec)
DATATYPES: dict[str, Any] = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32,
                             "INT64": np.int64, "BYTES": None}
OUT_DATATYPE = {"float32": "FP32", "float64": "FP64"}
MAX_RANK = 16
LABEL = ".label"


@dataclass(eq=False)
class Job:
    """One infer request's feeds, in batch form: ``(batch, …)``, or ``(time, batch, …)``."""

    feeds: dict[str, np.ndarray]
    rows: int  # batch
    steps: int | None  # time, for a recurrent model
    batched: bool  # the request had a batch axis (else the outputs lose it again)
    outputs: list[str]  # names to return, in order
    id: str | None
    session_id: str | None
    init: dict[str, np.ndarray] | None = None  # a session's state


def metadata(name: str, version: str, model: Model) -> dict[str, Any]:
    """``GET /v2/models/{name}``: inputs and outputs with datatype and shape (-1: any)."""
    lead = [-1, -1] if model.state else [-1]
    dtype = OUT_DATATYPE[model.dtype]
    inputs = [{"name": n, "datatype": dtype, "shape": [*lead, *s.shape]}
              for n, s in model.inputs.items()]
    outputs = [{"name": n, "datatype": dtype, "shape": [*lead, *s.shape]}
               for n, s in model.outputs.items()]
    outputs += [{"name": n + LABEL, "datatype": "BYTES", "shape": lead}
                for n in _labelled(model)]
    return {"name": name, "versions": [version], "platform": "nnre", "inputs": inputs,
            "outputs": outputs}


def parse(model: Model, body: Mapping[str, Any]) -> Job:
    """Check an inference request against the model's signature (RequestError: what and
    where); numbers are converted to the model's dtype, strings read by the char codec."""
    _known(body, ("id", "parameters", "inputs", "outputs"), "the request")
    req_id = body.get("id")
    if req_id is not None and not (isinstance(req_id, str) and len(req_id) <= 256):
        raise RequestError("'id' must be a string of at most 256 characters", param="id")
    params = _object(body.get("parameters"), "'parameters'")
    _known(params, ("session_id",), "'parameters'")
    session = params.get("session_id")
    if session is not None and not isinstance(session, str):
        raise RequestError("'parameters.session_id' must be a string")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise RequestError("'inputs' must be a non-empty list of tensors", param="inputs")
    arrays: dict[str, np.ndarray] = {}
    for k, item in enumerate(inputs):
        name, arr = _tensor(model, item, f"inputs[{k}]")
        if name in arrays:
            raise RequestError(f"input '{name}' is given twice")
        arrays[name] = arr
    missing = [n for n in model.inputs if n not in arrays]
    if missing:
        spec = model.inputs[missing[0]]
        raise RequestError(f"missing input '{missing[0]}' of shape {list(spec.shape)} per "
                           "example")
    return Job(*_layout(model, arrays), outputs=_requested(model, body.get("outputs")),
               id=req_id, session_id=session)


def _tensor(model: Model, item: Any, where: str) -> tuple[str, np.ndarray]:
    if not isinstance(item, dict):
        raise RequestError(f"{where} must be an object with name, shape, datatype and data")
    _known(item, ("name", "shape", "datatype", "data", "parameters"), where)
    if _object(item.get("parameters"), f"{where}.parameters"):
        raise RequestError(f"{where}.parameters: no input parameters are supported")
    name, shape, dtype, data = (item.get(k) for k in ("name", "shape", "datatype", "data"))
    if not isinstance(name, str) or name not in model.inputs:
        raise RequestError(f"{where}: unknown input {name!r}; the model's inputs are "
                           + ", ".join(model.inputs))
    where = f"input '{name}'"
    if not (isinstance(shape, list) and len(shape) <= MAX_RANK and all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1 << 40
            for d in shape)):
        raise RequestError(f"{where}: 'shape' must be a list of at most {MAX_RANK} whole "
                           "numbers ≥ 0")
    if dtype not in DATATYPES:
        raise RequestError(f"{where}: datatype {dtype!r} is not supported; use "
                           + ", ".join(DATATYPES) + " (BYTES: text, for an input with a "
                           "char codec)")
    if not isinstance(data, list):
        raise RequestError(f"{where}: 'data' must be a list (flat in row-major order, or "
                           "nested as the shape)")
    arr = _array(data, shape, math.prod(shape), where)
    if dtype == "BYTES":
        return name, _text(model, name, arr, shape, where)
    return name, _numbers(model, arr, dtype, where)


def _array(data: list[Any], shape: list[int], count: int, where: str) -> np.ndarray:
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError, OverflowError):
        raise RequestError(f"{where}: 'data' is not a rectangular array of numbers or "
                           "strings") from None
    if arr.dtype == object:
        raise RequestError(f"{where}: 'data' mixes kinds of values or is ragged")
    if arr.shape == tuple(shape):
        return arr
    if arr.ndim == 1 and arr.size == count:
        return arr.reshape(shape)
    raise RequestError(f"{where}: 'data' holds {arr.size:,} values as {list(arr.shape)}, "
                       f"but 'shape' {shape} needs {count:,}")


def _numbers(model: Model, arr: np.ndarray, dtype: str, where: str) -> np.ndarray:
    kind = arr.dtype.kind
    if dtype.startswith("INT"):
        if kind not in "iu" and arr.size:
            raise RequestError(f"{where}: datatype {dtype} needs whole numbers")
        info = np.iinfo(DATATYPES[dtype])
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise RequestError(f"{where}: a value is out of {dtype}'s range")
    elif kind not in "iuf" and arr.size:
        raise RequestError(f"{where}: datatype {dtype} needs numbers")
    with np.errstate(over="ignore"):
        typed = arr.astype(DATATYPES[dtype])
    if dtype == "FP32" and arr.size and not np.isfinite(typed).all():
        raise RequestError(f"{where}: a value is beyond FP32's range")
    with np.errstate(over="ignore"):
        out = typed.astype(model.dtype)
    if out.size and not np.isfinite(out).all():
        raise RequestError(f"{where}: a value is beyond the model's {model.dtype} range")
    return out


def _text(model: Model, name: str, arr: np.ndarray, shape: list[int], where: str
          ) -> np.ndarray:
    codec = codecs_of(model.metadata, [name])[name]
    if not isinstance(codec, CharCodec):
        raise RequestError(f"{where}: BYTES needs an input with a char codec; this one takes "
                           f"{OUT_DATATYPE[model.dtype]}")
    if len(shape) != 1 or arr.dtype.kind != "U":
        raise RequestError(f"{where}: BYTES data is a list of strings, shape [batch]")
    texts = arr.tolist()
    lengths = {len(t) for t in texts}
    if len(lengths) > 1:
        raise RequestError(f"{where}: the strings of one request must have the same length "
                           f"(they are steps of one batch); got lengths {sorted(lengths)}")
    width = model.inputs[name].shape[0]
    steps = lengths.pop() if lengths else 0
    budget.check(budget.size((steps, len(texts), width), np.dtype(model.dtype).itemsize),
                 f"{where}: {len(texts):,} strings of {steps:,} characters",
                 lambda m: RequestError(m))
    try:
        encoded = [rows(codec.encode(t), width, model.dtype) for t in texts]
    except FeedError as err:
        raise RequestError(f"{where}: {err}") from None
    if not texts:
        return np.zeros((0, 0, width), model.dtype)
    stacked = np.stack(encoded, axis=1)  # (time, batch, width)
    if model.state:
        return stacked
    if stacked.shape[0] != 1:
        raise RequestError(f"{where}: this model reads one character per example; got "
                           f"strings of {stacked.shape[0]}")
    return stacked[0]


def _layout(model: Model, arrays: dict[str, np.ndarray]
            ) -> tuple[dict[str, np.ndarray], int, int | None, bool]:
    """(feeds in batch form, batch, time or None, whether the request had a batch axis)."""
    lead = 2 if model.state else 1
    forms = set()
    feeds = {}
    for name, spec in model.inputs.items():
        arr = arrays[name]
        dims = spec.shape
        if arr.shape[arr.ndim - len(dims):] != dims or arr.ndim - len(dims) not in (
                lead - 1, lead):
            want = ("(time, batch, …) or (time, …)" if model.state
                    else "(batch, …) or one example")
            raise RequestError(f"input '{name}' has shape {list(arr.shape)}; expected {want} "
                               f"with {list(dims)} per example")
        if arr.ndim - len(dims) < lead:
            arr = arr[:, None] if model.state else arr[None]
            forms.add(False)
        else:
            forms.add(True)
        feeds[name] = arr
    if len(forms) > 1 or len({a.shape[:lead] for a in feeds.values()}) > 1:
        raise RequestError("the inputs disagree on " + ("time and batch" if model.state
                                                         else "the batch size"))
    first = next(iter(feeds.values()))
    batch = first.shape[lead - 1]
    steps = first.shape[0] if model.state else None
    if batch < 1 or steps == 0:
        raise RequestError("inputs need at least one example" + (" and one step"
                                                                 if model.state else ""))
    return feeds, batch, steps, forms.pop()


def _requested(model: Model, outputs: Any) -> list[str]:
    every = [*model.outputs, *(n + LABEL for n in _labelled(model))]
    if outputs is None:
        return every
    if not isinstance(outputs, list):
        raise RequestError("'outputs' must be a list of {\"name\": …}", param="outputs")
    names = []
    for k, item in enumerate(outputs):
        if not isinstance(item, dict):
            raise RequestError(f"outputs[{k}] must be an object with a name")
        _known(item, ("name", "parameters"), f"outputs[{k}]")
        if _object(item.get("parameters"), f"outputs[{k}].parameters"):
            raise RequestError(f"outputs[{k}].parameters: no output parameters are supported")
        if item.get("name") not in every:
            raise RequestError(f"outputs[{k}]: unknown output {item.get('name')!r}; the "
                               "model's outputs are " + ", ".join(every))
        names.append(item["name"])
    return names


def response(name: str, version: str, model: Model, job: Job, request_id: str,
             outputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The inference response object (flat data, the request's own layout)."""
    codecs = codecs_of(model.metadata, list(model.outputs))
    tensors = []
    for wanted in job.outputs:
        base = wanted[:-len(LABEL)] if wanted.endswith(LABEL) and wanted not in outputs \
            else wanted
        arr = outputs[base]
        if base != wanted:
            labels = np.asarray(codecs[base].decode(arr.reshape(-1, arr.shape[-1])))
            tensors.append({"name": wanted, "datatype": "BYTES", "shape": list(arr.shape[:-1]),
                            "data": labels.tolist()})
        else:
            tensors.append({"name": wanted, "datatype": OUT_DATATYPE[str(arr.dtype)],
                            "shape": list(arr.shape), "data": arr.ravel().tolist()})
    return {"model_name": name, "model_version": version,
            "id": job.id if job.id is not None else request_id, "outputs": tensors}


def _labelled(model: Model) -> list[str]:
    return [n for n, c in codecs_of(model.metadata, list(model.outputs)).items()
            if isinstance(c, LabelCodec)]


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RequestError(f"{what} must be an object")
    return value


def _known(obj: Mapping[str, Any], keys: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(obj) - set(keys))
    if unknown:
        raise RequestError(f"{where}: unknown field {unknown[0]!r} (known: {', '.join(keys)})")
