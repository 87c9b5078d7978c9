"""nnre: run neural networks written as Unicode equations plus weight matrices."""

from nnre.bundle import load, verify
from nnre.errors import BundleError, EquationError, FeedError, NnreError, ShapeError
from nnre.model import Model, TensorSpec

__version__ = "0.1.0"

__all__ = [
    "BundleError",
    "EquationError",
    "FeedError",
    "Model",
    "NnreError",
    "ShapeError",
    "TensorSpec",
    "__version__",
    "load",
    "verify",
]
