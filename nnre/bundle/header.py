"""Header bytes <-> plain Python values: bounded msgpack decoding and canonical encoding.

Decoding never trusts the input: explicit size limits (msgpack otherwise sizes them from the
input), no ext types (the Timestamp ext bypasses ``ext_hook``, so types are re-checked), string
keys only, duplicate keys refused, bounded nesting, and the bytes must be exactly the
canonical encoding of what they decode to (one value, one byte string: no malleability).
"""

from __future__ import annotations

import math
from typing import Any

import msgpack

from nnre.bundle.format import (
    MAX_CONTAINER_LEN,
    MAX_DEPTH,
    MAX_HEADER_BYTES,
    MAX_STRING_BYTES,
    PREAMBLE_SIZE,
)
from nnre.errors import BundleError

_SCALARS = (type(None), bool, int, float, str)


def _refuse_ext(code: int, data: bytes) -> Any:
    raise BundleError("ext-type", f"msgpack ext type {code} is not allowed in a header",
                        field="header", offset=PREAMBLE_SIZE)


def _pairs_to_dict(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if not isinstance(key, str):
            raise BundleError("non-string-key", f"map key {key!r} is not a string",
                                field="header")
        if key in out:
            raise BundleError("duplicate-key", f"duplicate map key {key!r}", field="header")
        out[key] = value
    return out


def decode_header(raw: bytes) -> dict[str, Any]:
    """Decode and check one canonical msgpack map; every failure is an BundleError."""
    if len(raw) > MAX_HEADER_BYTES:
        raise BundleError("header-too-large", f"{len(raw)} bytes > cap {MAX_HEADER_BYTES}",
                            field="header")
    try:
        value = msgpack.unpackb(
            raw,
            raw=False,
            use_list=True,
            strict_map_key=True,
            object_pairs_hook=_pairs_to_dict,
            ext_hook=_refuse_ext,
            max_str_len=MAX_STRING_BYTES,
            max_bin_len=0,
            max_array_len=MAX_CONTAINER_LEN,
            max_map_len=MAX_CONTAINER_LEN,
            max_ext_len=16,  # lets ext_hook / the type check name the ext type
        )
    except BundleError:
        raise
    except msgpack.ExtraData as err:
        raise BundleError("header-msgpack", "trailing bytes after the header map",
                            field="header", offset=PREAMBLE_SIZE) from err
    except (ValueError, msgpack.UnpackException, RecursionError) as err:
        detail = str(err) or type(err).__name__
        raise BundleError("header-msgpack", f"not valid msgpack: {detail}",
                            field="header", offset=PREAMBLE_SIZE) from err
    if not isinstance(value, dict):
        raise BundleError("header-msgpack", f"header is a {type(value).__name__}, "
                            "expected a msgpack map", field="header", offset=PREAMBLE_SIZE)
    _check_plain(value, "header", 0)
    if encode_header(value) != raw:
        raise BundleError("non-canonical-header", "header bytes are not the canonical "
                            "encoding (keys sorted, shortest forms, float64 floats)",
                            field="header", offset=PREAMBLE_SIZE)
    return value


def _check_plain(value: Any, path: str, depth: int) -> None:
    """Only nil, bool, int, float64, str, array and map; bounded depth; finite floats."""
    if depth > MAX_DEPTH:
        raise BundleError("header-too-deep", f"nesting deeper than {MAX_DEPTH}", field=path)
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(item, f"{path}.{key}", depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_plain(item, f"{path}[{i}]", depth + 1)
    elif not isinstance(value, _SCALARS):
        raise BundleError("ext-type", f"{type(value).__name__} values are not allowed "
                            "(only nil, bool, int, float, str, array, map)", field=path)
    elif isinstance(value, float) and not math.isfinite(value):
        raise BundleError("bad-value", f"non-finite float {value!r}", field=path)


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [_sorted(v) for v in value]
    return value


def encode_header(value: dict[str, Any]) -> bytes:
    """The canonical msgpack bytes of a header map: keys sorted by code point (= UTF-8 byte
    order) at every level, shortest int/str/array/map forms, floats as float64, no bin/ext."""
    out = msgpack.packb(_sorted(value), use_bin_type=True, use_single_float=False,
                        strict_types=False, datetime=False)
    assert isinstance(out, bytes)
    return out
