"""Field rules as data, and the one function that checks values against them.

The same rules check the options of ``nndk train`` (named as flags, ``--seq-length``) and
the record of a checkpoint read back from disk (named as fields, ``config.seq_length``), so a
hostile checkpoint is refused by exactly the checks a user's typo is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

MAX_DIM = 2**31 - 1  # the equation language's limit on one dimension
MAX_COUNT = 2**62  # steps, positions: far beyond any real run, and still a safe Python int


@dataclass(frozen=True)
class Rule:
    """What one field may hold: a kind, optional bounds, optional choices, or None."""

    kind: str  # "int", "float", "str", "bool", "dict", "list"
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low is excluded (> rather than ≥)
    high_open: bool = False
    choices: tuple[str, ...] | None = None
    optional: bool = False

    def describe(self) -> str:
        what = {"int": "an integer", "float": "a number", "str": "a string",
                "bool": "true or false", "dict": "a mapping", "list": "a list"}[self.kind]
        if self.choices:
            what = "one of " + ", ".join(self.choices)
        if self.low is not None:
            what += f" {'>' if self.low_open else '≥'} {_num(self.low)}"
        if self.high is not None:
            what += f"{' and' if self.low is not None else ''} " \
                    f"{'<' if self.high_open else '≤'} {_num(self.high)}"
        return what + (" (or none)" if self.optional else "")


def _num(x: float) -> str:
    return f"{int(x):,}" if x == int(x) and abs(x) < 1e15 else f"{x:g}"


_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "str": (str,),
                                       "bool": (bool,), "dict": (dict,), "list": (list,)}


def fits(value: Any, rule: Rule) -> bool:
    """Whether ``value`` satisfies ``rule`` (bools are not numbers; NaN fits no bound)."""
    if value is None:
        return rule.optional
    if isinstance(value, bool) and rule.kind != "bool":
        return False
    if not isinstance(value, _TYPES[rule.kind]):
        return False
    if rule.choices is not None and value not in rule.choices:
        return False
    if isinstance(value, int | float):
        return _in_range(value, rule)
    return True


def _in_range(value: int | float, rule: Rule) -> bool:
    if not math.isfinite(value):
        return False
    if rule.low is not None and (value <= rule.low if rule.low_open else value < rule.low):
        return False
    return rule.high is None or (value < rule.high if rule.high_open else value <= rule.high)


def check_fields(values: Mapping[str, Any], rules: Mapping[str, Rule],
                 name: Callable[[str], str], fail: Callable[[str], Exception],
                 required: bool = True) -> None:
    """Raise ``fail(message)`` at the first field that is missing or breaks its rule."""
    for key, rule in rules.items():
        if key not in values:
            if required and not rule.optional:
                raise fail(f"{name(key)} is missing (expected {rule.describe()})")
            continue
        if not fits(values[key], rule):
            raise fail(f"{name(key)} must be {rule.describe()}, got {values[key]!r:.60}")


def check_dims(dims: Any, name: str, fail: Callable[[str], Exception]) -> None:
    """A mapping of dimension names to integers in [1, 2³¹ − 1]."""
    if not isinstance(dims, dict):
        raise fail(f"{name} must be a mapping of dimension names to sizes, got {dims!r:.60}")
    rule = Rule("int", 1, MAX_DIM)
    for key, value in dims.items():
        if not isinstance(key, str) or not fits(value, rule):
            raise fail(f"{name}: {key}={value!r:.60} is not a size ({rule.describe()})")
