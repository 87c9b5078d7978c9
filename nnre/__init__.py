"""nnre: run neural networks written as Unicode equations plus weight matrices."""

from nnre.bundle import load, verify
from nnre.errors import BundleError, EquationError, FeedError, NnreError, ShapeError

__version__ = "0.1.0"

__all__ = [
    "BundleError",
    "EquationError",
    "FeedError",
    "NnreError",
    "ShapeError",
    "__version__",
    "load",
    "verify",
]
