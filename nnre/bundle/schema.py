"""The one header validator: a decoded header map -> a checked, typed :class:`Header`.

Run by the reader on every file and by the writer before a byte is written, so nothing can be
packed that would not load. Field rules are tables of (required, checker); a header of a newer
minor version may carry unknown keys, which are then ignored, never interpreted.
"""

from __future__ import annotations

import datetime
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nnre.bundle.format import (
    CODECS,
    COMPUTE_DTYPES,
    DTYPES,
    KNOWN_REQUIRES,
    MAX_DIM,
    MAX_NDIM,
    MAX_TENSOR_BYTES,
    MAX_TENSORS,
    VERSION_MINOR,
)
from nnre.errors import BundleError
from nnre.names import code_points, invisible

SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
SIDES = ("inputs", "outputs", "state")
FLOAT_MAX = 1.7976931348623157e308


@dataclass(frozen=True)
class Spec:
    """Shape (without batch) and dtype name of one signature entry."""

    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class TensorEntry:
    """One row of the tensor table; ``offset`` is relative to the tensor section."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int
    sha256: str


@dataclass(frozen=True)
class Header:
    """A fully checked header."""

    requires: tuple[str, ...]
    equations: str
    dtype: str
    dims: dict[str, int]
    signature: dict[str, dict[str, Spec]]
    metadata: dict[str, Any]
    tensors: tuple[TensorEntry, ...]


Check = Callable[[Any, str], Any]


def _fail(path: str, message: str, code: str = "bad-field") -> BundleError:
    return BundleError(code, message, field=path)


def _type_name(v: Any) -> str:
    return {bool: "bool", int: "int", float: "float", str: "string", list: "array",
            dict: "map", type(None): "nil"}.get(type(v), type(v).__name__)


def string(max_len: int = 1 << 22, min_len: int = 0) -> Check:
    def check(v: Any, path: str) -> str:
        if not isinstance(v, str):
            raise _fail(path, f"expected a string, found {_type_name(v)}")
        if not min_len <= len(v) <= max_len:
            raise _fail(path, f"length {len(v)} outside [{min_len}, {max_len}]")
        return v

    def all_fine(items: list[Any]) -> bool:
        """The whole array at C speed (a capped array holds 2**20 strings)."""
        return set(map(type, items)) <= {str} and (
            not items or (min_len <= min(map(len, items)) and max(map(len, items)) <= max_len))
    check.all_fine = all_fine  # type: ignore[attr-defined]
    return check


def pattern(regex: re.Pattern[str], what: str) -> Check:
    def check(v: Any, path: str) -> str:
        if not isinstance(v, str) or not regex.match(v):
            raise _fail(path, f"expected {what}, found {v!r:.80}")
        return v
    return check


def integer(lo: int, hi: int) -> Check:
    def check(v: Any, path: str) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise _fail(path, f"expected an integer, found {_type_name(v)}")
        if not lo <= v <= hi:
            raise _fail(path, f"{v} outside [{lo}, {hi}]", "bad-value")
        return v
    return check


def number(v: Any, path: str) -> float | int:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _fail(path, f"expected a number, found {_type_name(v)}")
    return v


def real(lo: float, hi: float, *, open_lo: bool = False) -> Check:
    """A msgpack float (never an int: 1 and 1.0 are different bytes) in [lo, hi] or (lo, hi]."""
    def check(v: Any, path: str) -> float:
        if not isinstance(v, float):
            raise _fail(path, f"expected a float (write 1.0, not 1), found {_type_name(v)}")
        if v < lo or v > hi or (open_lo and v == lo):
            raise _fail(path, f"{v!r} outside {'(' if open_lo else '['}{lo}, {hi}]",
                        "bad-value")
        return v
    return check


def timestamp(v: Any, path: str) -> str:
    """RFC 3339 UTC in the one form of the spec, and a real calendar date and time."""
    if not isinstance(v, str) or not RFC3339_UTC.match(v):
        raise _fail(path, f"expected an RFC 3339 UTC time like 2024-01-31T12:00:00Z, "
                    f"found {v!r:.80}")
    try:
        datetime.datetime.strptime(v[:19], "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        raise _fail(path, f"{v!r} is not a real date and time", "bad-value") from None
    return v


def boolean(v: Any, path: str) -> bool:
    if not isinstance(v, bool):
        raise _fail(path, f"expected a bool, found {_type_name(v)}")
    return v


def scalar(v: Any, path: str) -> Any:
    if isinstance(v, (list, dict)):
        raise _fail(path, f"expected nil, bool, number or string, found {_type_name(v)}")
    return v


def _letter(ch: str) -> bool:
    return unicodedata.category(ch) in ("Lu", "Ll", "Lt", "Lo") and ch != "ℝ"


def _base_char(ch: str) -> bool:
    return _letter(ch) or unicodedata.category(ch) in ("Mn", "Me") or ch in "0123456789'"


def _subscript_char(ch: str) -> bool:
    return unicodedata.category(ch)[0] not in "CZ" and ch not in "@}"


# The same grammar for ASCII-only names, which are nearly all of them, at regex speed.
_ASCII_NAME = re.compile(
    r"[A-Za-z][A-Za-z0-9']*(?:\^\{\([0-9]+\)\})?(?:_[\x21-\x3f\x41-\x7c\x7e]+)?\Z")
_LAYER = re.compile(r"\^\{\([0-9]+\)\}\Z")  # a layer index ends the base: W^{(1)}_xh


def is_name(v: str) -> bool:
    """A canonical name of the equation language that a bundle can store (spec §3.4)."""
    return bool(len(v) <= 128 and _ASCII_NAME.match(v)) or _slow_is_name(v)


def _slow_is_name(v: str) -> bool:
    """The grammar character by character (any script)."""
    base, sep, sub = v.partition("_")
    layer = _LAYER.search(base)
    base = base[:layer.start()] if layer else base
    return (1 <= len(v) <= 128 and _letter(v[0]) and all(map(_base_char, base))
            and (not sep or (sub != "" and all(map(_subscript_char, sub))))
            and unicodedata.normalize("NFC", v) == v and invisible(v) is None)


def name(v: Any, path: str) -> str:
    """Tensor, dimension and signature names: canonical equation names, e.g. W_i, y', c̃."""
    if not isinstance(v, str) or not is_name(v):
        shown = f"{v!r:.80}" + (f" ({code_points(v[:8])})" if isinstance(v, str) and
                                invisible(v) else "")
        raise _fail(path, f"expected a canonical equation name like W_i or y', found {shown}",
                    "bad-name")
    return v


STATE_KEY = re.compile(r"^(?P<name>[^@]+)(@t[-+][1-9][0-9]{0,8})?$")


def signature_name(v: Any, path: str) -> str:
    """A signature name: an identifier, or for state lagged further back, ``name@t-N`` (for
    backward state read further ahead, ``name@t+N``)."""
    m = STATE_KEY.match(v) if isinstance(v, str) else None
    if m is None:
        raise _fail(path, f"expected a signature name, found {v!r:.80}", "bad-name")
    name(m.group("name"), path)
    return str(v)


def array_of(item: Check, max_len: int = 1 << 20, unique: bool = False) -> Check:
    def check(v: Any, path: str) -> list[Any]:
        if not isinstance(v, list):
            raise _fail(path, f"expected an array, found {_type_name(v)}")
        if len(v) > max_len:
            raise _fail(path, f"{len(v)} items > cap {max_len}")
        fast = getattr(item, "all_fine", None)
        try:  # paths are made only when an item fails: 2**20 f-strings cost a third of a second
            out = list(v) if fast is not None and fast(v) else [item(x, path) for x in v]
        except BundleError:
            for i, x in enumerate(v):  # again, so that the error names the failing item
                item(x, f"{path}[{i}]")
            raise
        if unique:
            _check_unique(out, path)
        return out
    return check


def _check_unique(items: list[Any], path: str) -> None:
    """One pass with a set: linear, because a capped array still holds 2**20 items and a
    per-item ``list.count`` on one duplicate near the end took hours (hardening issue)."""
    if len(set(items)) == len(items):  # the common case, at C speed
        return
    seen: set[Any] = set()
    for i, x in enumerate(items):
        if x in seen:
            raise _fail(f"{path}[{i}]", f"duplicate item {x!r:.80}", "duplicate-name")
        seen.add(x)


def map_of(key: Check, value: Check) -> Check:
    def check(v: Any, path: str) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise _fail(path, f"expected a map, found {_type_name(v)}")
        return {key(k, f"{path}.{k}"): value(x, f"{path}.{k}") for k, x in v.items()}
    return check


Fields = Mapping[str, tuple[bool, Check]]


def record(fields: Fields, lenient: bool) -> Check:
    """A map with known keys: required ones present, unknown ones refused unless lenient."""
    required = [key for key, (needed, _) in sorted(fields.items()) if needed]
    known = set(fields)

    def check(v: Any, path: str) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise _fail(path, f"expected a map, found {_type_name(v)}")
        for key in required:
            if key not in v:
                raise _fail(f"{path}.{key}", "required field is missing", "missing-field")
        if not lenient and not v.keys() <= known:
            unknown = sorted(set(v) - known)
            raise _fail(f"{path}.{unknown[0]}", f"unknown field (known: {', '.join(fields)})",
                        "unknown-field")
        return {k: fields[k][1](x, f"{path}.{k}") for k, x in v.items() if k in fields}
    return check


def _spec(lenient: bool) -> Check:
    fields = {"dtype": (True, pattern(re.compile("^(" + "|".join(DTYPES) + ")$"), "a dtype")),
              "shape": (True, array_of(integer(0, MAX_DIM), MAX_NDIM))}
    rec = record(fields, lenient)

    def check(v: Any, path: str) -> Spec:
        r = rec(v, path)
        return Spec(tuple(r["shape"]), r["dtype"])
    return check


def _tensor_entry(lenient: bool) -> Check:
    fields = {
        "name": (True, name),
        "dtype": (True, pattern(re.compile("^(" + "|".join(DTYPES) + ")$"), "a dtype")),
        "shape": (True, array_of(integer(0, MAX_DIM), MAX_NDIM)),
        "offset": (True, integer(0, MAX_TENSOR_BYTES * MAX_TENSORS)),
        "nbytes": (True, integer(0, MAX_TENSOR_BYTES)),
        "sha256": (True, pattern(HEX64, "64 lowercase hex digits")),
    }
    rec = record(fields, lenient)

    def check(v: Any, path: str) -> TensorEntry:
        r = rec(v, path)
        entry = TensorEntry(r["name"], r["dtype"], tuple(r["shape"]), r["offset"],
                            r["nbytes"], r["sha256"])
        count = 1
        for d in entry.shape:  # Python ints: no overflow; capped after every factor
            count *= d
            if count * DTYPES[entry.dtype].itemsize > MAX_TENSOR_BYTES:
                raise _fail(f"{path}.shape", f"{list(entry.shape)} holds more than "
                            f"{MAX_TENSOR_BYTES} bytes", "tensor-too-large")
        want = count * DTYPES[entry.dtype].itemsize
        if entry.nbytes != want:
            raise _fail(f"{path}.nbytes", f"{entry.nbytes} but {entry.dtype} "
                        f"{list(entry.shape)} needs {want}", "bad-nbytes")
        return entry
    return check


def _metadata_fields(lenient: bool) -> Fields:
    text = string()
    return {
        "name": (True, string(256, 1)),
        "version": (True, pattern(SEMVER, "a semantic version like 1.0.0")),
        "description": (False, text),
        "license": (False, string(256)),
        "authors": (False, array_of(string(256), 1024)),
        "created": (False, timestamp),
        "producer": (False, string(256)),
        "lineage": (False, record({"parent": (True, pattern(HEX64, "a bundle id"))}, lenient)),
        "provenance": (False, record({
            "data_sha256": (False, pattern(HEX64, "64 lowercase hex digits")),
            "hyperparameters": (False, map_of(string(256), scalar)),
            "steps": (False, integer(0, 1 << 63)),
            "final_losses": (False, map_of(string(256), real(-FLOAT_MAX, FLOAT_MAX))),
            "seed": (False, integer(0, (1 << 64) - 1)),
        }, lenient)),
        "sampling": (False, record({
            "temperature": (False, real(0.0, FLOAT_MAX, open_lo=True)),
            "top_k": (False, integer(0, MAX_DIM)),
            "top_p": (False, real(0.0, 1.0, open_lo=True)),
            "greedy": (False, boolean),
        }, lenient)),
        "codecs": (False, map_of(signature_name, record(
            {"id": (True, string(64)), "vocab": (False, array_of(string(1, 1), unique=True)),
             "labels": (False, array_of(string(256), unique=True))}, lenient))),
        "extra": (False, map_of(string(256), string())),
    }


def metadata_record(lenient: bool = False) -> Check:
    """The check of ``header.metadata`` alone: also for metadata that travels outside a
    bundle (nndk's ONNX export carries it in ``metadata_props``) and comes back in."""
    return record(_metadata_fields(lenient), lenient)


def _top_fields(lenient: bool) -> Fields:
    spec = _spec(lenient)
    sig = map_of(signature_name, spec)
    return {
        "requires": (True, array_of(string(64), 64, unique=True)),
        "model": (True, record({
            "equations": (True, string(min_len=1)),
            "dtype": (True, pattern(re.compile("^(" + "|".join(COMPUTE_DTYPES) + ")$"),
                                    "a compute dtype (" + ", ".join(COMPUTE_DTYPES) + ")")),
            "dims": (True, map_of(name, integer(1, MAX_DIM))),
            "signature": (True, record({s: (True, sig) for s in SIDES}, lenient)),
        }, lenient)),
        "metadata": (True, metadata_record(lenient)),
        "tensors": (True, array_of(_tensor_entry(lenient), MAX_TENSORS)),
    }


def validate_header(value: dict[str, Any], file_minor: int) -> Header:
    """Check a decoded header map against the v1 schema and its cross-field rules.

    In the order of spec §7 step 5: ``requires`` first (a file needing a feature this reader
    lacks may well have fields it does not know), then every field depth-first in key order,
    then the rules that relate fields to each other."""
    lenient = file_minor > VERSION_MINOR
    if "requires" not in value:
        raise _fail("header.requires", "required field is missing", "missing-field")
    _check_requires(array_of(string(64), 64, unique=True)(value["requires"], "header.requires"))
    top = record(_top_fields(lenient), lenient)(value, "header")
    model, meta = top["model"], top["metadata"]
    _check_tensor_order(top["tensors"])
    _check_signature_dtypes(model["signature"], model["dtype"])
    _check_codecs(meta.get("codecs", {}), model["signature"])
    return Header(tuple(top["requires"]), model["equations"], model["dtype"], model["dims"],
                  model["signature"], meta, tuple(top["tensors"]))


def _check_requires(requires: list[str]) -> None:
    for i, feature in enumerate(requires):
        if feature not in KNOWN_REQUIRES:
            raise _fail(f"header.requires[{i}]", f"this reader does not support feature "
                        f"{feature!r} (supported: {', '.join(KNOWN_REQUIRES)})",
                        "unsupported-feature")
    if sum(f.startswith("equations/") for f in requires) != 1:
        raise _fail("header.requires", "must name exactly one equation-language version "
                    "such as 'equations/1'", "missing-field")


def _check_tensor_order(tensors: list[TensorEntry]) -> None:
    for i in range(1, len(tensors)):
        a, b = tensors[i - 1].name, tensors[i].name
        if a == b:
            raise _fail(f"header.tensors[{i}].name", f"duplicate tensor {b!r}",
                        "duplicate-name")
        if a > b:
            raise _fail(f"header.tensors[{i}].name", f"tensor {b!r} after {a!r}: tensors "
                        "must be sorted by name (code point order)", "unsorted-tensors")


def _check_signature_dtypes(signature: dict[str, dict[str, Spec]], dtype: str) -> None:
    """Inputs, outputs and state are values the model computes with: its compute dtype."""
    for side in SIDES:
        for key, spec in signature[side].items():
            if spec.dtype != dtype:
                raise _fail(f"header.model.signature.{side}.{key}.dtype", f"{spec.dtype}, but "
                            f"the model computes in {dtype} (signature dtypes are always "
                            "model.dtype)", "bad-value")


def _check_codecs(codecs: dict[str, dict[str, Any]], signature: dict[str, Any]) -> None:
    for target, codec in codecs.items():
        path = f"header.metadata.codecs.{target}"
        if codec["id"] not in CODECS:
            raise _fail(f"{path}.id", f"unknown codec id {codec['id']!r} (known ids: "
                        f"{', '.join(CODECS)})", "unknown-codec")
        param, sides = CODECS[codec["id"]]
        side = next((s for s in SIDES if target in signature[s]), None)
        if side not in sides:
            raise _fail(path, f"codec {codec['id']!r} applies to one of the signature's "
                        f"{' or '.join(sides)}, and {target!r} is not one", "bad-codec")
        extra = sorted(set(codec) - {"id", param})
        if extra or (param and param not in codec):
            raise _fail(path, f"codec {codec['id']!r} takes exactly the parameter "
                        f"{param or '(none)'}", "bad-codec")
        shape = signature[side][target].shape
        if codec["id"] == "char" and tuple(shape) == (1,):
            continue  # an input of ids (x ∈ ℕ): the model checks their number (loader)
        if param and (len(shape) != 1 or shape[0] != len(codec[param])):
            raise _fail(f"{path}.{param}", f"{len(codec[param])} entries, but {target!r} "
                        f"has shape {list(shape)}", "bad-codec")
