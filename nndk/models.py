"""Finds an equation file by path or by template name, and reads it as UTF-8 text."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from nnre.errors import EquationError

TEMPLATE_NAMES = ("lstm", "gru", "rnn", "mlp")


def read_model(spec: str) -> tuple[str, str]:
    """(text, filename) for a path to an .eqn file or a template name such as 'lstm'."""
    path = Path(spec)
    if path.is_file():
        data = path.read_bytes()
        name = str(path)
    elif spec in TEMPLATE_NAMES:
        data = resources.files("nndk.templates").joinpath(f"{spec}.eqn").read_bytes()
        name = f"{spec}.eqn"
    else:
        raise EquationError(f"no equation file or template named '{spec}'",
                            expected="a path, or one of " + ", ".join(TEMPLATE_NAMES))
    try:
        return data.decode("utf-8"), name
    except UnicodeDecodeError as err:
        raise EquationError(f"not UTF-8 text (byte {err.start}: {data[err.start]:#04x})",
                            filename=name) from None


def parse_bindings(items: tuple[str, ...] | list[str]) -> dict[str, int]:
    """``['H=128', 'V=65']`` → ``{'H': 128, 'V': 65}``, with a clear error for bad items."""
    dims: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip().isdigit() or int(value) <= 0:
            raise EquationError(f"--set {item!r} is not NAME=POSITIVE_INTEGER",
                                expected="e.g. --set H=128")
        dims[name.strip()] = int(value)
    return dims
