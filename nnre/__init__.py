"""nnre: run neural networks written as Unicode equations plus weight matrices.

``load``, ``verify``, ``Model`` and ``TensorSpec`` are imported on first use, so that
``import nnre.bundle`` (the file format alone) does not bring in the model and the VM.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from nnre.errors import (
    BundleError,
    ContextError,
    EquationError,
    FeedError,
    FetchError,
    NnreError,
    OutputError,
    ShapeError,
)

if TYPE_CHECKING:
    from nnre.loader import load, verify
    from nnre.model import Model, TensorSpec

__version__ = "0.1.0"

_LAZY = {"load": "nnre.loader", "verify": "nnre.loader", "Model": "nnre.model",
         "TensorSpec": "nnre.model"}

__all__ = [
    "BundleError",
    "EquationError",
    "ContextError",
    "FeedError",
    "FetchError",
    "Model",
    "NnreError",
    "OutputError",
    "ShapeError",
    "TensorSpec",
    "__version__",
    "load",
    "verify",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'nnre' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
