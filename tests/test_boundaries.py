"""The runtime stays minimal: loading and running a model imports neither nndk nor onnx."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CODE = """
import sys
import numpy as np
import nnre
m = nnre.Model.from_equations("hₜ = tanh(W xₜ + U hₜ₋₁)", {"W": np.eye(3), "U": np.eye(3)})
m.run({"x": np.ones((2, 3))})
bad = sorted(k for k in sys.modules if k.split(".")[0] in ("nndk", "onnx", "onnxruntime", "torch",
             "starlette", "uvicorn", "prometheus_client", "httpx", "anyio"))
print(",".join(bad))
"""


def test_nnre_never_imports_nndk_or_onnx() -> None:
    proc = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True,
                          check=True)
    assert proc.stdout.strip() == ""


def test_the_cli_imports_the_server_only_to_serve() -> None:
    """``nnre --help`` (every command listed, ``serve`` too) loads none of the serve extra."""
    code = ("import sys; from nnre import cli; print(sorted(k for k in sys.modules if "
            "k.split('.')[0] in ('starlette', 'uvicorn', 'prometheus_client', 'anyio')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert proc.stdout.strip() == "[]"


# Functions for apps that embed nnre, which nnre itself has no reason to call.
EMBEDDING_API = {"get_blas_threads", "map_dataset"}  # map_dataset: nnre.ray's pipeline


def _definitions_and_uses(root: Path) -> tuple[dict[str, str], dict[str, set[str]]]:
    """Top-level functions and classes of each module under ``root`` (name → module), and
    the names each module reads (module → names), from the syntax tree."""
    defined: dict[str, str] = {}
    used: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        module = str(path.relative_to(root.parent))
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            hook = node.name.startswith("__") if hasattr(node, "name") else False
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.decorator_list \
                    and not hook:  # decorated: registered (a CLI command); __getattr__ & co.
                defined[node.name] = module
        names = used.setdefault(module, set())
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                names.add(node.id)
            elif isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, ast.ImportFrom):
                names.update(alias.name for alias in node.names)
    return defined, used


def test_nnre_holds_no_code_only_nndk_uses() -> None:
    """Every top-level function and class of nnre is used by nnre itself (a module other
    than its own, or its own module past the definition): code that only nndk (or nothing)
    calls belongs in nndk. Op definitions' training and ONNX fields are data of the op,
    read through ``Op``, so the functions behind them are used by their own module."""
    defined, used = _definitions_and_uses(ROOT / "nnre")
    reads = {name: 0 for name in defined}
    for module, names in used.items():
        for name in names & set(defined):
            if module != defined[name]:
                reads[name] += 1
    for path in sorted((ROOT / "nnre").rglob("*.py")):
        module = str(path.relative_to(ROOT))
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):  # a use inside the defining module counts too
            if isinstance(node, ast.Name) and defined.get(node.id) == module:
                reads[node.id] += 1
    unused = sorted(f"{defined[n]}::{n}" for n, count in reads.items()
                    if count == 0 and n not in EMBEDDING_API)
    assert not unused, f"defined in nnre, used only outside it (move to nndk or delete): {unused}"
