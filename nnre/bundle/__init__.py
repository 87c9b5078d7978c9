"""The .bundle file format on its own: read, validate and write bundles, nothing else.

This package imports only :mod:`nnre.errors`, the standard library, NumPy and msgpack (never
the compiler, the model, the VM, the equations or SymPy), so a tool can check, inspect or
write bundles without the runtime. :mod:`nnre.loader` turns a decoded bundle into a Model.
"""

from nnre.bundle.read import Bundle, decode
from nnre.bundle.write import BundleContent, encode

__all__ = ["Bundle", "BundleContent", "decode", "encode"]
