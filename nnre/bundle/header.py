"""Header bytes <-> plain Python values: bounded msgpack decoding and canonical encoding.

Decoding never trusts the input: explicit size limits (msgpack otherwise sizes them from the
input), no bin or ext values (the Timestamp ext bypasses ``ext_hook``, so types are re-checked),
string keys only, duplicate keys refused, bounded nesting, finite floats, and the bytes must be
exactly the canonical encoding of what they decode to (one value, one byte string). The checks
run in the order of ``formats/bundle.md`` §7 step 4, so a header with several defects always
reports the same code.
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
    raise BundleError("forbidden-type", f"msgpack ext type {code} is not allowed in a header",
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
    """Decode and check one canonical msgpack map; every failure is a BundleError."""
    if len(raw) > MAX_HEADER_BYTES:
        raise BundleError("header-too-large", f"{len(raw)} bytes > cap {MAX_HEADER_BYTES}",
                            field="header")
    try:
        value = msgpack.unpackb(
            raw,
            raw=False,
            use_list=True,
            strict_map_key=False,  # _pairs_to_dict refuses non-string keys with its code
            object_pairs_hook=_pairs_to_dict,
            ext_hook=_refuse_ext,
            max_str_len=MAX_STRING_BYTES,
            max_bin_len=MAX_STRING_BYTES,  # decoded (bounded by the header), then refused
            max_array_len=MAX_CONTAINER_LEN,
            max_map_len=MAX_CONTAINER_LEN,
            max_ext_len=MAX_STRING_BYTES,  # every ext reaches ext_hook / the type check
        )
    except BundleError:
        raise
    except msgpack.StackError as err:  # msgpack's own nesting limit (1024) is past ours
        raise BundleError("header-too-deep", f"nesting deeper than {MAX_DEPTH}",
                          field="header", offset=PREAMBLE_SIZE) from err
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
    """Only nil, bool, int, float, str, array and map; finite floats; containers (only they
    count) at depth <= MAX_DEPTH, the header map being at depth 0."""
    if isinstance(value, (dict, list)) and depth > MAX_DEPTH:
        raise BundleError("header-too-deep", f"a container at nesting depth {depth}, deeper "
                          f"than {MAX_DEPTH}", field=path)
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(item, f"{path}.{key}", depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_plain(item, f"{path}[{i}]", depth + 1)
    elif not isinstance(value, _SCALARS):
        raise BundleError("forbidden-type", f"{type(value).__name__} values are not allowed "
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
