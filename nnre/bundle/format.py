"""Constants of the .bundle v1 format: magic, versions, caps, dtype table, codec ids.

Every number here is part of the spec in ``formats/bundle.md``; the reader, writer, validator,
CLI and conformance vectors all take them from this module and nowhere else.
"""

from __future__ import annotations

import struct

import numpy as np

#: Eight bytes, PNG-style: a high byte (catches 7-bit transfers), the name, CR LF (catches
#: newline translation), and ^Z (stops ``type`` on Windows).
MAGIC = b"\x89NNRE\r\n\x1a"

#: The format version this reader and writer implement.
VERSION_MAJOR = 1
VERSION_MINOR = 0

#: magic (8 bytes), major (u16 LE), minor (u16 LE), header length (u32 LE).
PREAMBLE = struct.Struct("<8sHHI")
PREAMBLE_SIZE = PREAMBLE.size  # 16
DIGEST_SIZE = 32  # sha256 of bytes [0, PREAMBLE_SIZE + header length), right after the header
ALIGNMENT = 64

#: Hard caps, all checked before anything of that size is allocated.
MAX_HEADER_BYTES = 16 * 1024 * 1024
MAX_STRING_BYTES = 4 * 1024 * 1024  # equations and every other string in the header
MAX_CONTAINER_LEN = 1 << 20  # entries in any one msgpack array or map
MAX_DEPTH = 16  # nesting of maps and arrays in the header
MAX_TENSORS = 1 << 16
MAX_NDIM = 8
MAX_DIM = (1 << 31) - 1  # one dimension; the equation language's limit too
MAX_TENSOR_BYTES = 1 << 44  # 16 TiB: any product beyond this is refused before use

#: dtype name in the file -> little-endian NumPy dtype. Closed set.
DTYPES: dict[str, np.dtype] = {
    "float16": np.dtype("<f2"),
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
    "int32": np.dtype("<i4"),
    "int64": np.dtype("<i8"),
    "uint8": np.dtype("u1"),
}

#: dtypes a model may compute in (``model.dtype``).
COMPUTE_DTYPES = ("float32", "float64")

#: Features a v1.0 reader understands in ``requires``. Exactly one ``equations/N`` is required.
KNOWN_REQUIRES = ("equations/1", "equations/2")

#: Codec ids a v1.0 reader accepts, with the one list parameter each takes (None: no params)
#: and which side of the signature it may sit on.
CODECS: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "tensor": (None, ("inputs", "outputs", "state")),
    "char": ("vocab", ("inputs",)),
    "sample": ("vocab", ("outputs",)),
    "argmax-label": ("labels", ("outputs",)),
}


#: The ``char`` codec's unknown symbol, U+FFFD REPLACEMENT CHARACTER (spec §3.5): when its
#: vocab holds it, a character outside the vocab is read as it instead of being refused.
UNKNOWN_CHAR = "\ufffd"


def dtype_name(dtype: np.dtype) -> str | None:
    """The file's name for a NumPy dtype of either byte order, or None if not allowed."""
    for name, dt in DTYPES.items():
        if dtype == dt or dtype == dt.newbyteorder(">"):
            return name
    return None
