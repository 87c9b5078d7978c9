"""Reader/writer round trips checked against hand-built bytes (the spec, written out here)."""

from __future__ import annotations

import hashlib
import io
import mmap
import os

import numpy as np
import pytest
from bundle_helpers import MAGIC, canonical, forge, lstm_content, split

from nnre import bundle
from nnre.bundle.format import DTYPES
from nnre.bundle.schema import Spec
from nnre.bundle.write import BundleContent, encode, write
from nnre.errors import BundleError


def hand_header(content: BundleContent) -> dict:
    """The header map the spec prescribes, built without nnre's writer."""
    entries, offset = [], 0
    for name in sorted(content.tensors):
        arr = np.ascontiguousarray(content.tensors[name])
        raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        entries.append({"name": name, "dtype": str(arr.dtype), "shape": list(arr.shape),
                        "offset": offset, "nbytes": len(raw),
                        "sha256": hashlib.sha256(raw).hexdigest()})
        offset = (offset + len(raw) + 63) // 64 * 64
    sig = {side: {n: {"dtype": s.dtype, "shape": list(s.shape)} for n, s in specs.items()}
           for side, specs in content.signature.items()}
    return {"requires": ["equations/1"], "metadata": dict(content.metadata),
            "model": {"equations": content.equations, "dtype": content.dtype,
                      "dims": dict(content.dims), "signature": sig},
            "tensors": entries}


def hand_section(content: BundleContent) -> bytes:
    out = b""
    for name in sorted(content.tensors):
        out += b"\0" * (-len(out) % 64) + np.ascontiguousarray(content.tensors[name]).tobytes()
    return out


def test_writer_matches_hand_built_bytes() -> None:
    content = lstm_content()
    assert encode(content) == forge(hand_header(content), hand_section(content))


def test_golden_preamble_and_layout() -> None:
    blob = encode(lstm_content())
    assert blob[:8] == bytes.fromhex("89 4e 4e 52 45 0d 0a 1a")
    assert blob[8:12] == b"\x01\x00\x00\x00"  # major 1, minor 0, little-endian u16s
    n = int.from_bytes(blob[12:16], "little")
    assert hashlib.sha256(blob[: 16 + n]).digest() == blob[16 + n: 48 + n]
    header, section = split(blob)
    assert [t["name"] for t in header["tensors"]] == sorted(header["tensors"][i]["name"]
                                                             for i in range(14))
    last = header["tensors"][-1]
    assert len(section) == last["offset"] + last["nbytes"]
    assert all(t["offset"] % 64 == 0 for t in header["tensors"])


def test_bundle_id_is_sha256_of_preamble_and_header() -> None:
    blob = encode(lstm_content())
    n = int.from_bytes(blob[12:16], "little")
    assert bundle.decode(blob).bundle_id == hashlib.sha256(blob[: 16 + n]).hexdigest()


def test_deterministic_and_independent_of_insertion_order() -> None:
    a = lstm_content()
    b = BundleContent(a.equations, a.dtype, a.dims, a.signature, a.metadata,
                      dict(reversed(list(a.tensors.items()))))
    assert encode(a) == encode(b)


def test_round_trip_values_and_header() -> None:
    content = lstm_content(description="a test", authors=["Ada", "Linus"])
    got = bundle.decode(encode(content), check_data=True)
    assert got.header.equations == content.equations
    assert got.header.dims == {"H": 3, "V": 4}
    assert got.header.signature["state"]["h"] == Spec((3,), "float32")
    assert got.header.metadata["authors"] == ["Ada", "Linus"]
    for name, arr in content.tensors.items():
        np.testing.assert_array_equal(got.tensors[name], arr)
        assert got.tensors[name].dtype == arr.dtype


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_every_dtype_round_trips(dtype: str) -> None:
    arr = (np.arange(24) % 7).astype(dtype).reshape(2, 3, 4)
    content = lstm_content()
    tensors = dict(content.tensors, Z_extra=arr)
    got = bundle.decode(encode(BundleContent(content.equations, "float32", content.dims,
                                             content.signature, content.metadata, tensors)))
    np.testing.assert_array_equal(got.tensors["Z_extra"], arr)
    assert got.tensors["Z_extra"].dtype == DTYPES[dtype]


def test_big_endian_and_fortran_inputs_are_stored_little_endian_c_order() -> None:
    content = lstm_content()
    w = content.tensors["W_i"]
    odd = dict(content.tensors, W_i=np.asfortranarray(w.astype(">f4")))
    blob = encode(BundleContent(content.equations, "float32", content.dims, content.signature,
                                content.metadata, odd))
    assert blob == encode(content)


def test_refuses_disallowed_dtype() -> None:
    content = lstm_content()
    bad = dict(content.tensors, W_i=content.tensors["W_i"].astype(np.complex64))
    with pytest.raises(BundleError, match="complex64 is not allowed"):
        encode(BundleContent(content.equations, "float32", content.dims, content.signature,
                             content.metadata, bad))


def test_writer_runs_the_validator() -> None:
    content = lstm_content()
    bad = BundleContent(content.equations, "float32", content.dims, content.signature,
                        {"name": "x", "version": "one"}, content.tensors)
    with pytest.raises(BundleError, match=r"header\.metadata\.version: expected a semantic"):
        encode(bad)


def test_path_reads_are_zero_copy_mmap_views(tmp_path) -> None:
    path = tmp_path / "m.bundle"
    bundle_id = write(path, lstm_content())
    got = bundle.decode(path, mapped=True)  # what files above COPY_BELOW get by default
    assert got.bundle_id == bundle_id
    arr = got.tensors["W_y"]
    assert not arr.flags.writeable and not arr.flags.owndata
    assert isinstance(got.buffer, mmap.mmap)
    base = arr
    while isinstance(base, np.ndarray):
        base = base.base
    assert isinstance(base, memoryview) and base.obj is got.buffer
    assert arr.ctypes.data % 64 == 0


def test_reads_bytes_path_and_file_objects_alike(tmp_path) -> None:
    blob = encode(lstm_content())
    path = tmp_path / "m.bundle"
    path.write_bytes(blob)
    ids = {bundle.decode(blob).bundle_id, bundle.decode(str(path)).bundle_id,
           bundle.decode(io.BytesIO(blob)).bundle_id}
    with open(path, "rb") as f:
        ids.add(bundle.decode(f).bundle_id)
    assert len(ids) == 1


def test_atomic_write_keeps_old_file_on_failure(tmp_path) -> None:
    path = tmp_path / "m.bundle"
    write(path, lstm_content())
    before = path.read_bytes()
    content = lstm_content()
    bad = dict(content.tensors, W_i=np.zeros(2, dtype=np.complex64))
    with pytest.raises(BundleError):
        write(path, BundleContent(content.equations, "float32", content.dims,
                                  content.signature, content.metadata, bad))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.bundle"]


def test_error_names_the_file(tmp_path) -> None:
    path = tmp_path / "broken.bundle"
    path.write_bytes(MAGIC)
    with pytest.raises(BundleError, match=r"broken\.bundle: .*preamble"):
        bundle.decode(path)


def test_newer_minor_with_unknown_keys_is_accepted_and_ignored() -> None:
    content = lstm_content()
    header = hand_header(content)
    header["future"] = {"anything": [1, 2]}
    header["metadata"]["new_field"] = "x"
    got = bundle.decode(forge(header, hand_section(content), minor=7))
    assert got.version == (1, 7)
    assert "new_field" not in got.header.metadata


def test_same_minor_unknown_key_is_refused() -> None:
    content = lstm_content()
    header = hand_header(content)
    header["metadata"]["new_field"] = "x"
    with pytest.raises(BundleError, match=r"header\.metadata\.new_field: unknown field"):
        bundle.decode(forge(header, hand_section(content)))


def test_canonical_helper_agrees_with_writer() -> None:
    blob = encode(lstm_content())
    header, _ = split(blob)
    n = int.from_bytes(blob[12:16], "little")
    assert canonical(header) == blob[16:16 + n]
