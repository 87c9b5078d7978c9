"""Hostile bytes: every truncation, every bit flip, forged lengths and values; fuzzing.

Each case must end in an BundleError quickly and in bounded memory; the
crafted one-rule-broken files live in formats/vectors (run by test_vectors.py).
"""

from __future__ import annotations

import struct
import time
import tracemalloc

import msgpack
import pytest
from bundle_helpers import canonical, forge, lstm_content, reseal, split
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nnre import bundle
from nnre.bundle.layout import data_start
from nnre.bundle.write import encode
from nnre.errors import BundleError

BASE = encode(lstm_content())
HEADER_LEN = struct.unpack_from("<I", BASE, 12)[0]
START = data_start(HEADER_LEN)


def test_every_truncation_of_the_header_and_sampled_data_is_refused() -> None:
    cuts = list(range(START + 1)) + list(range(START + 1, len(BASE), 37))
    for n in cuts:
        with pytest.raises(BundleError) as info:
            bundle.decode(BASE[:n])
        assert info.value.code in {"truncated", "bad-magic"}, (n, info.value)
        assert info.value.code == "bad-magic" or "byte" in str(info.value)


def test_every_single_bit_flip_is_detected_when_verifying() -> None:
    offsets = list(range(START + 64)) + list(range(START + 64, len(BASE), 7))
    for off in offsets:
        for bit in range(8):
            blob = bytearray(BASE)
            blob[off] ^= 1 << bit
            with pytest.raises(BundleError):
                bundle.decode(bytes(blob), check_data=True)


def test_flip_in_tensor_data_names_the_tensor_and_offset() -> None:
    blob = bytearray(BASE)
    blob[START + 2] ^= 0x80
    with pytest.raises(BundleError, match=rf"tensor 'U_c'.*\(at byte {START}\)"):
        bundle.decode(bytes(blob), check_data=True)


@pytest.mark.parametrize("length", [HEADER_LEN + 1, len(BASE), 2**24, 2**32 - 1])
def test_forged_header_length(length: int) -> None:
    blob = BASE[:12] + struct.pack("<I", length) + BASE[16:]
    with pytest.raises(BundleError, match="header|digest|msgpack|need"):
        bundle.decode(blob)


def _bounded(blob: bytes) -> BundleError:
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(BundleError) as info:
            bundle.decode(blob, check_data=True)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 5.0  # generous: a busy 2-core CI machine
    assert peak < 8 * len(blob) + (1 << 20), peak
    assert isinstance(info.value, BundleError)
    return info.value


def _shape(i: int, shape: list[int]):
    return lambda h: h["tensors"][i].update(shape=shape)


FORGED = [
    ("negative dim", _shape(0, [-1, 3]), "bad-value"),
    ("huge dim", _shape(0, [2**63 - 1]), "bad-value"),
    ("product overflows 64 bits", _shape(0, [2**31 - 1] * 3), "tensor-too-large"),
    ("dim one past the limit", _shape(0, [2**31]), "bad-value"),
    ("product at the cap", _shape(0, [2**22, 2**22]), "tensor-too-large"),
    ("nine dims", _shape(0, [1] * 9), "bad-field"),
    ("bool dim", _shape(0, [True, 3]), "bad-field"),
    ("float dim", _shape(0, [3.0, 3]), "bad-field"),
    ("offset negative", lambda h: h["tensors"][1].update(offset=-64), "bad-value"),
    ("offset 2**64-1", lambda h: h["tensors"][1].update(offset=2**64 - 1), "bad-value"),
    ("nbytes huge", lambda h: h["tensors"][0].update(nbytes=2**60), "bad-value"),
    ("sha256 upper case", lambda h: h["tensors"][0].update(
        sha256=h["tensors"][0]["sha256"].upper()), "bad-field"),
    ("name with control", lambda h: h["tensors"][0].update(name="U\x1b[2J"), "bad-name"),
    ("name not NFC", lambda h: h["tensors"][0].update(name="Ue\u0301"), "bad-name"),
    ("65537 tensors", lambda h: h.update(tensors=[0] * 65537), "bad-field"),
    ("dims zero", lambda h: h["model"].update(dims={"H": 0, "V": 4}), "bad-value"),
    ("equations empty", lambda h: h["model"].update(equations=""), "bad-field"),
    ("compute dtype int", lambda h: h["model"].update(dtype="int32"), "bad-field"),
    ("NaN temperature", lambda h: h["metadata"].update(sampling={"temperature": float("nan")}),
     "bad-value"),
    ("no requires", lambda h: h.pop("requires"), "missing-field"),
    ("two equation versions", lambda h: h.update(requires=["equations/1", "equations/1"]),
     "duplicate-name"),
    ("created not UTC", lambda h: h["metadata"].update(created="2024-01-01T00:00:00+02:00"),
     "bad-field"),
    ("temperature zero", lambda h: h["metadata"].update(sampling={"temperature": 0.0}),
     "bad-value"),
    ("temperature as int", lambda h: h["metadata"].update(sampling={"temperature": 1}),
     "bad-field"),
    ("top_p above one", lambda h: h["metadata"].update(sampling={"top_p": 1.5}), "bad-value"),
    ("top_p zero", lambda h: h["metadata"].update(sampling={"top_p": 0.0}), "bad-value"),
    ("top_k negative", lambda h: h["metadata"].update(sampling={"top_k": -1}), "bad-value"),
    ("loss as int", lambda h: h["metadata"].update(provenance={"final_losses": {"t": 1}}),
     "bad-field"),
    ("created 30 February", lambda h: h["metadata"].update(created="2024-02-30T00:00:00Z"),
     "bad-value"),
    ("created hour 24", lambda h: h["metadata"].update(created="2024-01-01T24:00:00Z"),
     "bad-value"),
    ("dims past the limit", lambda h: h["model"].update(dims={"H": 2**31, "V": 4}),
     "bad-value"),
    ("signature dtype not the compute dtype", lambda h: h["model"]["signature"]["inputs"][
        "x"].update(dtype="float16"), "bad-value"),
    ("name with @", lambda h: h["tensors"][0].update(name="U_a@t-2"), "bad-name"),
    ("name starting with _", lambda h: h["tensors"][0].update(name="_U"), "bad-name"),
    ("name with a modifier letter", lambda h: h["tensors"][0].update(name="Uᵢ"), "bad-name"),
    ("empty subscript", lambda h: h["tensors"][0].update(name="U_"), "bad-name"),
    ("requires is checked before unknown fields", lambda h: h.update(
        requires=["equations/1", "gpu/1"], bogus=1), "unsupported-feature"),
    ("missing before unknown", lambda h: (h["metadata"].pop("name"), h["metadata"].update(
        zzz=1)), "missing-field"),
    ("missing fields reported in key order", lambda h: (h["metadata"].pop("name"),
                                                       h["metadata"].pop("version")),
     "missing-field"),
    ("codec on state", lambda h: h["metadata"].update(codecs={"h": {"id": "argmax-label",
                                                                    "labels": list("abc")}}),
     "bad-codec"),
    ("codec for unknown name", lambda h: h["metadata"].update(codecs={"q": {"id": "tensor"}}),
     "bad-codec"),
]


@pytest.mark.parametrize("why, edit, code", FORGED, ids=[f[0] for f in FORGED])
def test_forged_fields_fail_fast_with_their_code(why, edit, code) -> None:
    assert _bounded(reseal(BASE, edit)).code == code


def test_msgpack_length_prefixes_beyond_the_header_do_not_allocate() -> None:
    for raw in (b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff",
                b"\xc6\x7f\xff\xff\xff", b"\x91" * 100_000 + b"\xc0"):
        err = _bounded(forge(raw, b""))
        assert err.code in {"header-msgpack", "header-too-deep"}, err


def test_duplicate_keys_deep_inside_are_refused() -> None:
    header, section = split(BASE)
    # {"name": "a", "name": "b"}: a two-entry fixmap whose entries are two one-entry maps' bodies
    inner = b"\x82" + canonical({"name": "a"})[1:] + canonical({"name": "b"})[1:]
    raw = canonical(header).replace(canonical(header["metadata"]), inner)
    err = _bounded(forge(raw, section))
    assert err.code == "duplicate-key" and "'name'" in str(err)


def test_non_string_keys_are_refused() -> None:
    header, section = split(BASE)
    raw = msgpack.packb({1: 2}, use_bin_type=True)
    assert _bounded(forge(raw, section)).code == "non-string-key"


def _mutations() -> st.SearchStrategy[bytes]:
    flips = st.lists(st.tuples(st.integers(0, len(BASE) - 1), st.integers(1, 255)),
                     min_size=1, max_size=4)
    cut = st.integers(0, len(BASE))
    return st.one_of(
        flips.map(lambda fs: _apply(BASE, fs)),
        cut.map(lambda n: BASE[:n]),
        st.binary(max_size=256).map(lambda junk: BASE[:16] + junk),
        st.binary(max_size=512),
    )


def _apply(blob: bytes, flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(blob)
    for off, mask in flips:
        out[off] ^= mask
    return bytes(out)


def _header_mutations() -> st.SearchStrategy[bytes]:
    """Mutate the msgpack header itself and re-seal the digest, to reach the parser."""
    raw = BASE[16:16 + HEADER_LEN]
    flips = st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(1, 255)),
                     min_size=1, max_size=3)
    return flips.map(lambda fs: forge(_apply(raw, fs), BASE[START:]))


def _fuzz_once(blob: bytes) -> None:
    try:
        bundle.decode(blob, check_data=True)
    except BundleError:
        pass


@settings(max_examples=150, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_mutations(), _header_mutations()))
def test_fuzz_reader_short(blob: bytes) -> None:
    _fuzz_once(blob)


@pytest.mark.slow
@settings(max_examples=200_000, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_mutations(), _header_mutations()))
def test_fuzz_reader_long(blob: bytes) -> None:
    _fuzz_once(blob)
