"""Header validation is linear: a header at every cap at once validates in well under a second.

The caps (``nnre.bundle.format``) allow 2**20 items per array and 2**16 tensors; any quadratic
step (a per-item ``list.count``, a nested scan) turns such a header into an hours-long stall of
``inspect``/``verify``/``load``. The bound is on this process's CPU time (not wall time), so
other work on a loaded machine does not make it fail; it still catches a quadratic step.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from bundle_helpers import canonical

from nnre.bundle.format import MAX_CONTAINER_LEN, MAX_TENSORS
from nnre.bundle.header import decode_header
from nnre.bundle.schema import validate_header
from nnre.errors import BundleError

BOUND = 5.0  # seconds: linear validation takes 0.65 s here, a quadratic one hours; the margin
#             is for a loaded CI machine
SHA = "0" * 64


def _labels(n: int) -> list[str]:
    return [format(i, "x") for i in range(n)]


def _vocab(n: int) -> list[str]:
    chars = (chr(c) for c in range(0x20, 0x110000) if not 0xD800 <= c < 0xE000)
    return [ch for ch, _ in zip(chars, range(n), strict=False)]


def _header(vocab: list[str], labels: list[str], tensors: int) -> dict[str, Any]:
    names = sorted(f"w_{i}" for i in range(tensors))
    table = [{"name": n, "dtype": "uint8", "shape": [1], "offset": 64 * i, "nbytes": 1,
              "sha256": SHA} for i, n in enumerate(names)]
    return {
        "requires": ["equations/1"],
        "model": {"equations": "y = x", "dtype": "float32", "dims": {},
                  "signature": {"inputs": {"x": {"dtype": "float32", "shape": [len(vocab)]}},
                                "outputs": {"y": {"dtype": "float32", "shape": [len(labels)]}},
                                "state": {}}},
        "metadata": {"name": "caps", "version": "1.0.0",
                     "codecs": {"x": {"id": "char", "vocab": vocab},
                                "y": {"id": "argmax-label", "labels": labels}}},
        "tensors": table,
    }


def _timed(f: Any, *args: Any) -> float:
    """CPU seconds this process spent in f (other processes on a busy machine do not count)."""
    t0 = time.process_time()
    f(*args)
    return time.process_time() - t0


def test_a_header_at_every_cap_validates_fast() -> None:
    header = _header(_vocab(MAX_CONTAINER_LEN), _labels(MAX_CONTAINER_LEN), MAX_TENSORS)
    assert _timed(validate_header, header, 0) < BOUND  # 0.65 s here, for 2 × 2**20 + 65,536 items


def test_a_capped_header_decodes_and_validates_fast() -> None:
    """The same through the byte path, sized to fit the 16 MiB header cap."""
    raw = canonical(_header(_vocab(1 << 19), _labels(MAX_CONTAINER_LEN), MAX_TENSORS // 2))
    assert _timed(lambda: validate_header(decode_header(raw), 0)) < BOUND


def test_the_ascii_fast_path_agrees_with_the_name_grammar() -> None:
    import random

    from nnre.bundle import schema

    rng = random.Random(5)
    alphabet = "aZ09_'@}{ -~\x7f\tx"
    for _ in range(20_000):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6)))
        fast = bool(schema._ASCII_NAME.match(name))
        slow_ok = schema._slow_is_name(name)
        assert fast <= slow_ok, name  # the fast path never accepts what the grammar refuses
        if name.isascii():
            assert fast == slow_ok, name


@pytest.mark.parametrize("field", ["vocab", "labels"])
def test_a_duplicate_at_the_end_of_a_capped_array_is_found_fast(field: str) -> None:
    vocab, labels = _vocab(MAX_CONTAINER_LEN), _labels(MAX_CONTAINER_LEN)
    items = vocab if field == "vocab" else labels
    items[-1] = items[-2]
    header = _header(vocab, labels, 1)
    t0 = time.process_time()
    with pytest.raises(BundleError) as err:
        validate_header(header, 0)
    assert time.process_time() - t0 < BOUND
    assert err.value.code == "duplicate-name"
    assert f"{field}[{MAX_CONTAINER_LEN - 1}]" in str(err.value)
