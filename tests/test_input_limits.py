"""``nnre run --input`` reads .npz and JSON within limits: never a traceback, never a stall.

Hostile inputs built by hand: an .npz whose .npy header declares 12 TiB, a compression bomb,
an object array, a 5,000-digit integer, JSON nested far too deep.
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from numpy.lib import format as npy
from test_run_cli import lstm, nnre_run  # noqa: F401 (the fixture is used by name)

from nnre import npz, tensor_io
from nnre.errors import FeedError


def npy_bytes(dtype: str, shape: tuple[int, ...], data: bytes = b"") -> bytes:
    f = io.BytesIO()
    npy.write_array_header_1_0(f, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                   "shape": shape})
    return f.getvalue() + data


def zipped(members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return out.getvalue()


def refused(blob: bytes, *words: str) -> str:
    with pytest.raises(FeedError) as err:
        tensor_io.read_npz(io.BytesIO(blob), "in.npz")
    for w in words:
        assert w in str(err.value)
    return str(err.value)


def test_a_tiny_npz_declaring_12_tib_is_refused_before_reading() -> None:
    blob = zipped({"x.npy": npy_bytes("<f4", (3 << 40,))})
    assert len(blob) < 300
    refused(blob, "in.npz: x.npy", "13,194,139,533,312 bytes", "holds 0 bytes")


def test_a_compression_bomb_is_refused_by_its_ratio() -> None:
    data = npy_bytes("<f8", (1 << 20,), bytes(8 << 20))
    refused(zipped({"x.npy": data}, zipfile.ZIP_BZIP2), "ratio above", "zip bomb")


def test_declared_sizes_past_the_cap_are_refused(monkeypatch) -> None:
    monkeypatch.setattr(npz, "MAX_FEED_BYTES", 1 << 16)
    blob = zipped({"x.npy": npy_bytes("<f8", (1 << 14,), bytes(8 << 14))}, zipfile.ZIP_DEFLATED)
    refused(blob, "more than 65,536 bytes")


def test_object_arrays_are_never_unpickled() -> None:
    f = io.BytesIO()
    np.save(f, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    refused(zipped({"x.npy": f.getvalue()}), "object", "never unpickled")


def test_a_truncated_member_and_a_bad_name_are_feed_errors() -> None:
    refused(zipped({"x.npy": npy_bytes("<f4", (4,), b"\0" * 8)}), "holds 8 bytes")
    refused(zipped({"x.bin": b"x"}), "NAME.npy")


def test_honest_npz_round_trips() -> None:
    f = io.BytesIO()
    x, y = np.arange(12.0).reshape(3, 4), np.asfortranarray(np.arange(6).reshape(2, 3))
    np.savez_compressed(f, x=x, y=y)
    got = tensor_io.read_npz(io.BytesIO(f.getvalue()), "in.npz")
    np.testing.assert_array_equal(got["x"], x)
    np.testing.assert_array_equal(got["y"], y)


@pytest.mark.parametrize("text, words", [
    ('{"x": [' + "9" * 5000 + "]}", ["in.json: an integer of 5,000 digits"]),
    ('{"x": [1' + "0" * 400 + ".5]}", ["beyond the float64 range"]),
    ('{"x": ' + "[" * 100_000 + "]" * 100_000 + "}", ["nested deeper than 32"]),
    ('{"x": ' + "[" * 40 + "1" + "]" * 40 + "}", ["nested deeper than 32"]),
])
def test_hostile_json_is_a_feed_error(text: str, words: list[str]) -> None:
    with pytest.raises(FeedError) as err:
        tensor_io.parse_json_feeds(text, "in.json")
    for w in words:
        assert w in str(err.value)


def test_json_past_the_size_cap_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(tensor_io, "MAX_JSON_CHARS", 100)
    with pytest.raises(FeedError, match="more than the cap of 100"):
        tensor_io.parse_json_feeds(json.dumps({"x": list(range(100))}), "in.json")


def test_big_but_valid_integers_still_feed() -> None:
    assert tensor_io.parse_json_feeds('{"x": [123456789012345678901234567890]}', "j") == {
        "x": [1.2345678901234568e29]}


@pytest.mark.parametrize("payload", [
    zipped({"x.npy": npy_bytes("<f4", (3 << 40,))}),
    ('{"x": [' + "9" * 5000 + "]}").encode(),
    ("[" * 100_000).encode(),
])
def test_the_cli_prints_one_error_line(lstm, payload: bytes) -> None:  # noqa: F811
    code, out, err = nnre_run(str(lstm), "--input", "-", stdin=payload)
    assert code == 1 and out == "" and "Traceback" not in err
    assert err.startswith("error: <stdin>") and err.rstrip().endswith("[bad-feed]")
    assert err.count("\n") == 1


def test_a_jsonl_line_past_the_cap_is_refused_without_reading_it_whole(lstm) -> None:  # noqa: F811
    code, out, err = nnre_run(str(lstm), "--input-jsonl", "-",
                              stdin='{"x": [[0, 0, 0, 0]]}\n' + "[" * ((256 << 20) + 10))
    assert code == 1 and out.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: <stdin>:2: ") and "[bad-feed]" in err
    assert "more than the cap of 268,435,456" in err


def test_jsonl_lines_are_read_with_a_limit(monkeypatch) -> None:
    monkeypatch.setattr(tensor_io, "MAX_JSON_CHARS", 10)
    stream = io.StringIO('{"x": 1}\n' + "[" * 1000 + "\n{}\n")
    lines = list(tensor_io.bounded_lines(stream))
    assert lines[0] == '{"x": 1}\n' and max(map(len, lines)) == 11 and lines[-1] == "{}\n"
