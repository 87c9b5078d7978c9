"""The runtime stays minimal: loading and running a model imports neither nndk nor onnx."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
import numpy as np
import nnre
m = nnre.Model.from_equations("hₜ = tanh(W xₜ + U hₜ₋₁)", {"W": np.eye(3), "U": np.eye(3)})
m.run({"x": np.ones((2, 3))})
bad = sorted(k for k in sys.modules if k.split(".")[0] in ("nndk", "onnx", "onnxruntime", "torch"))
print(",".join(bad))
"""


def test_nnre_never_imports_nndk_or_onnx() -> None:
    proc = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True,
                          check=True)
    assert proc.stdout.strip() == ""
