"""Say what a file that is not a .bundle looks like, from its first bytes only.

Used when the magic does not match, so a user who renamed a checkpoint, an archive or a model
from another framework to ``.bundle`` learns what they actually have. Nothing is parsed beyond
fixed prefixes; the rules are a table of (test, description), first match wins.
"""

from __future__ import annotations

import codecs
import re
import struct
from collections.abc import Callable

from nnre.bundle.format import MAGIC


def _zip(head: bytes) -> str | None:
    if not head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return None
    # The first local file header's name sits at byte 30; its length is at byte 26.
    first = b""
    if len(head) >= 30:
        (n,) = struct.unpack_from("<H", head, 26)
        first = head[30:30 + n]
    if first.endswith(b".npy"):
        return "a NumPy .npz archive (a ZIP of .npy files); pack it with `nndk pack`"
    if first.endswith(b".pkl") or b"/data.pkl" in head or b"archive/" in first:
        return "a PyTorch checkpoint (a ZIP holding a pickle); never load untrusted pickles"
    if b"config.json" in first or b"metadata.json" in first:
        return "a Keras .keras archive (a ZIP)"
    return "a ZIP archive"


def _pickle(head: bytes) -> str | None:
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return f"a Python pickle (protocol {head[1]}); pickles can run code when loaded"
    return None


def _safetensors(head: bytes) -> str | None:
    if len(head) >= 9 and head[8:9] == b"{":
        (n,) = struct.unpack_from("<Q", head, 0)
        if n < 100_000_000:
            return "a safetensors file (8-byte length, then a JSON header)"
    return None


def _onnx(head: bytes) -> str | None:
    # ModelProto: field 1 (ir_version) varint, then usually opset_import (8), producer (2)…
    if len(head) >= 3 and head[0] == 0x08 and head[1] < 0x80 and head[2] in (
        0x12, 0x1A, 0x22, 0x2A, 0x32, 0x3A, 0x42
    ):
        return "an ONNX model (protobuf ModelProto)"
    return None


def _mangled_magic(head: bytes) -> str | None:
    if head[1:5] == MAGIC[1:5] or head.startswith(b"NNRE"):
        return "a .bundle damaged by a text-mode transfer (the magic's CR LF or high byte " \
               "changed)"
    return None


#: Lines only Python source starts with (a docstring, an import, a def, a shebang).
_PYTHON = re.compile(r'\A\s*(?:"""|\'\'\')|^(?:import \w|from [\w.]+ import |def \w+\(|'
                     r'class \w+[(:]|#!.*python)', re.M)
#: A time-indexed definition (``hₜ = …``, ``h_t = …``) or a declaration (``x ∈ ℝ^V``): what
#: every recurrent equation text has and other text rarely does. A bare ``=`` is not enough.
_EQUATIONS = re.compile(r"^\s*[^\W\d]\w*(?:ₜ|_t|_\{t\})\s*=|∈\s*ℝ", re.M)


def _text(head: bytes) -> str | None:
    try:  # incremental: a character cut at byte 512 is not a decoding error
        text = codecs.getincrementaldecoder("utf-8")().decode(head[:512], final=False)
    except UnicodeDecodeError:
        return None
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        return "JSON or other text"
    if _PYTHON.search(text):
        return "Python source code"
    if _EQUATIONS.search(text):
        return "an equations text file; pack it with weights using `nndk pack`"
    return "a text file"


_PREFIXES: tuple[tuple[bytes, str], ...] = (
    (b"GGUF", "a GGUF model (llama.cpp)"),
    (b"lmgg", "a legacy GGML model"),
    (b"tjgg", "a legacy GGJT model"),
    (b"\x93NUMPY", "a single NumPy .npy array"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (e.g. a Keras .h5 model)"),
    (b"\x1f\x8b", "a gzip-compressed file"),
    (b"\xfd7zXZ\x00", "an xz-compressed file"),
    (b"BZh", "a bzip2-compressed file"),
)

_RULES: tuple[Callable[[bytes], str | None], ...] = (
    _mangled_magic, _zip, _pickle, _safetensors, _onnx, _text,
)


def describe(head: bytes) -> str:
    """A short phrase naming what ``head`` (a file's first bytes) looks like."""
    if not head:
        return "an empty file"
    for prefix, what in _PREFIXES:
        if head.startswith(prefix):
            return what
    if len(head) >= 8 and head[4:8] == b"TFL3":
        return "a TensorFlow Lite model"
    for rule in _RULES:
        found = rule(head)
        if found:
            return found
    return "unknown binary data"
