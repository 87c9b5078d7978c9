"""One test per rule that formats/bundle.md settles: exact codes against hand-built bytes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import msgpack
import numpy as np
import pytest
from bundle_helpers import LSTM, canonical, forge, lstm_content, split
from click.testing import CliRunner

import nnre
from nnre import bundle
from nnre.bundle.header import decode_header
from nnre.bundle.info import info
from nnre.bundle.schema import is_name
from nnre.bundle.write import BundleContent, encode
from nnre.cli import cli
from nnre.errors import BundleError

VECTORS = Path(__file__).resolve().parent.parent / "formats" / "vectors"
BASE = encode(lstm_content())


def _nest(depth: int) -> object:
    value: object = 0
    for _ in range(depth):
        value = [value]
    return value


def _decode_code(raw: bytes) -> str:
    with pytest.raises(BundleError) as info_:
        decode_header(raw)
    return info_.value.code


def test_depth_counts_containers_only() -> None:
    # {"a": [[...[0]...]]}: the header map is depth 0, the arrays 1..n, the scalar not at all.
    assert decode_header(msgpack.packb({"a": _nest(16)})) == {"a": _nest(16)}
    assert _decode_code(msgpack.packb({"a": _nest(17)})) == "header-too-deep"
    assert _decode_code(msgpack.packb({"a": {"b": _nest(16)}})) == "header-too-deep"


def test_nesting_past_msgpacks_own_stack_is_still_too_deep() -> None:
    raw = b"\x81\xa1a" + b"\x91" * 5000 + b"\x00"  # fixmap{"a": fixarray^5000 [0]}
    assert _decode_code(raw) == "header-too-deep"


@pytest.mark.parametrize("raw, code", [
    (b"\x81\xa1a\xc4\x00", "forbidden-type"),                # bin 8, empty
    (b"\x81\xa1a\xc4\x03abc", "forbidden-type"),             # bin 8, 3 bytes
    (b"\x81\xa1a\xc7\x20\x05" + b"\0" * 32, "forbidden-type"),  # ext 8, type 5, 32 bytes
    (b"\x81\xa1a\xd6\xff\0\0\0\0", "forbidden-type"),        # timestamp 32 (ext -1)
    (b"\x81\x01\x02", "non-string-key"),                     # {1: 2}
    (b"\x81\xc4\x00\x02", "non-string-key"),                 # {b"": 2}
    (b"\x82\xa1a\x01\xa1a\x02", "duplicate-key"),
    (b"\x81\xa1a\xcb\x7f\xf0\0\0\0\0\0\0", "bad-value"),     # +inf: a value rule, not encoding
    (b"\x81\xa1a\xca\x3f\x80\0\0", "non-canonical-header"),  # 1.0 as float 32
    (b"\x81\xa1a\xcc\x01", "non-canonical-header"),          # 1 as uint 8 instead of fixint
    (b"\x82\xa1b\x01\xa1a\x02", "non-canonical-header"),     # keys out of order
    (b"\x81\xa1a", "header-msgpack"),                        # truncated
    (b"\x92\x01\x02", "header-msgpack"),                     # not a map
])
def test_each_decoding_rule_has_its_one_code(raw, code) -> None:
    assert _decode_code(raw) == code


def test_int_one_and_float_one_are_different_bytes_and_ids() -> None:
    ids = {bundle.decode(encode(lstm_content(provenance={"hyperparameters": {"clip": v}})))
           .bundle_id for v in (1, 1.0)}
    assert len(ids) == 2
    with pytest.raises(BundleError) as err:  # float fields take floats only
        encode(lstm_content(sampling={"temperature": 1}))
    assert err.value.code == "bad-field"
    assert err.value.field == "header.metadata.sampling.temperature"


def test_schema_reports_the_first_missing_key_in_code_point_order() -> None:
    header, section = split(BASE)
    del header["metadata"]["version"], header["metadata"]["name"]
    header["metadata"]["zzz"] = 1
    with pytest.raises(BundleError) as err:
        bundle.decode(forge(canonical(header), section))
    assert (err.value.code, err.value.field) == ("missing-field", "header.metadata.name")


@pytest.mark.parametrize("name, ok", [
    ("W_i", True), ("y'", True), ("x''", True), ("W'_y", True), ("c\u0303", True),
    ("\u0109", True), ("h_i,j", True), ("W2", True), ("σ_g", True), ("h_t-1", True),
    ("c\u0302", False),  # not NFC (ĉ composed is the canonical spelling)
    ("_x", False), ("2W", False), ("'y", False), ("W_", False), ("Wᵢ", False),
    ("h@t-2", False), ("W_a b", False), ("W_a\tb", False), ("ℝ", False), ("", False),
    ("W" * 129, False),
])
def test_bundle_names_are_the_canonical_equation_names(name, ok) -> None:
    assert is_name(name) is ok


def test_a_model_with_primes_packs_and_loads() -> None:
    from bundle_helpers import lstm_weights

    from nndk.pack import build_content
    text = LSTM.replace("hₜ", "h'ₜ").replace("yₜ", "y'ₜ")
    meta = {"name": "p", "version": "1.0.0"}
    model = nnre.load(encode(build_content(text, lstm_weights(), meta)))
    assert set(model.outputs) == {"y'"} and set(model.state) == {"c", "h'"}


def test_float16_weights_in_a_float32_model_are_converted_at_load() -> None:
    content = lstm_content()
    halves = {k: v.astype(np.float16) for k, v in content.tensors.items()}
    blob = encode(BundleContent(content.equations, "float32", content.dims, content.signature,
                                content.metadata, halves))
    got = bundle.decode(blob)
    assert {t.dtype for t in got.header.tensors} == {"float16"}
    model = nnre.load(blob)
    assert model.dtype == "float32"
    np.testing.assert_array_equal(model.weights()["W_i"], halves["W_i"].astype(np.float32))


def test_unused_tensor_is_a_shape_error_at_the_model_stage() -> None:
    content = lstm_content()
    blob = encode(BundleContent(content.equations, "float32", content.dims, content.signature,
                                content.metadata, {**content.tensors, "W_z": np.zeros(2)}))
    bundle.decode(blob, check_data=True)  # a well-formed file …
    with pytest.raises(nnre.ShapeError) as err:  # … that no model can use
        nnre.load(blob)
    assert err.value.code == "shape-error" and "'W_z'" in str(err.value)


def test_unknown_keys_of_a_newer_minor_are_ignored_not_passed_on() -> None:
    got = bundle.decode(VECTORS / "valid" / "future_minor.bundle")
    assert got.version == (1, 7)
    assert "homepage" not in got.header.metadata
    facts = json.dumps(info(got))
    assert "signing" not in facts and "homepage" not in facts and "nested" not in facts


def test_inspect_json_offsets_are_absolute(tmp_path) -> None:
    path = tmp_path / "m.bundle"
    path.write_bytes(BASE)
    result = CliRunner().invoke(cli, ["inspect", "--json", str(path)])
    facts = json.loads(result.output)
    header, section = split(BASE)
    start = len(BASE) - len(section)  # hand-computed: the end minus the tensor section
    assert facts["data_start"] == start
    for entry, row in zip(header["tensors"], facts["tensors"], strict=True):
        assert row["offset"] == start + entry["offset"]
        data = BASE[row["offset"]:row["offset"] + row["nbytes"]]
        assert hashlib.sha256(data).hexdigest() == row["sha256"]


def test_pack_adds_producer_but_never_the_clock(tmp_path, monkeypatch) -> None:
    from bundle_helpers import lstm_weights

    from nndk import __version__
    from nndk.pack import PackRequest, pack
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    eqn, npz = tmp_path / "m.eqn", tmp_path / "w.npz"
    eqn.write_text(LSTM, encoding="utf-8")
    np.savez(npz, **lstm_weights())
    pack(PackRequest(eqn, npz, tmp_path / "m.bundle", "n", "1.0.0"))
    meta = nnre.load(tmp_path / "m.bundle").metadata
    assert "created" not in meta and meta["producer"] == f"nndk {__version__}"
