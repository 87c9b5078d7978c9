"""Finds an equation file by path or by template name, and reads it as UTF-8 text."""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path

from nnre.equations.parser import parse
from nnre.equations.roles import dimension_names
from nnre.errors import EquationError

#: The templates shipped in nndk/templates (each a plain .eqn file).
TEMPLATE_NAMES = ("lstm", "gru", "rnn", "mlp", "lstm2", "gru2", "mlp_ln", "cnn", "gpt")


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


def declared_dims(text: str, filename: str) -> list[str]:
    """The dimension names the equations declare (``hₜ ∈ ℝ^H`` declares H; so does a
    block's bound, ``for l = 1…L:``), in order."""
    return list(dimension_names(parse(text, filename, expand=False)))


def resolve_dims(text: str, filename: str, given: dict[str, int],
                 default: dict[str, int] | None = None) -> dict[str, int]:
    """``given`` checked against the model's dimensions, plus defaults the model declares.

    A name the model does not declare would otherwise be silently ignored (``--set h=64``
    training at the default H=128), so it is an error suggesting the closest name.
    """
    declared = declared_dims(text, filename)
    for name in given:
        if name not in declared:
            close = ([d for d in declared if d.lower() == name.lower()]
                     or difflib.get_close_matches(name, declared, n=1))
            hint = f"did you mean {close[0]}? " if close else ""
            raise EquationError(f"--set {name}={given[name]}: the model has no dimension "
                                f"{name!r} ({hint}its dimensions: "
                                f"{', '.join(declared) or 'none'})", filename=filename)
    return {k: v for k, v in (default or {}).items() if k in declared} | given
