"""Names a reader can tell apart: no invisible code points, no two names of a model alike.

A bundle displays its equations; if two names look the same (Latin ``x`` and Cyrillic ``х``)
or a name hides a character (U+3164 HANGUL FILLER, U+034F COMBINING GRAPHEME JOINER), what a
person reads is not what the model computes. Invisible means default-ignorable (Unicode's
DerivedCoreProperties); alike means equal UTS #39 skeletons, from Unicode's confusables
data (``nnre/confusables.py``). Used by the lexer, the model checks and the bundle schema.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable

# Default_Ignorable_Code_Point (Unicode 15 DerivedCoreProperties.txt), as inclusive ranges.
_IGNORABLE = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160),
    (0x17B4, 0x17B5), (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E),
    (0x2060, 0x206F), (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)


_INVISIBLE = re.compile("[" + "".join(f"{re.escape(chr(lo))}-{re.escape(chr(hi))}"
                                       for lo, hi in _IGNORABLE) + "]")


def invisible(text: str) -> str | None:
    """The first default-ignorable (invisible) character of ``text``, if any."""
    found = _INVISIBLE.search(text)
    return found.group() if found else None


def code_points(text: str) -> str:
    """``text`` spelled out: ``U+0078 LATIN SMALL LETTER X, U+0445 CYRILLIC SMALL LETTER HA``."""
    return ", ".join(f"U+{ord(ch):04X} {unicodedata.name(ch, 'unnamed')}" for ch in text)


# Small Greek letters are the alphabet of mathematics: α beside a, ρ beside p, γ beside y are
# written on purpose and told apart in every mathematical font, so they keep their own
# identity. Omicron (ο), which no font tells from o, and the capitals stay confusable.
_MATH_GREEK = frozenset("αβγδεζηθικλμνξπρςστυφχψω")


@functools.lru_cache(maxsize=1)
def _prototypes() -> dict[str, str]:
    from nnre.confusables import DATA

    table = {}
    for line in DATA.splitlines():
        source, *target = line.split()
        if chr(int(source, 16)) not in _MATH_GREEK:
            table[chr(int(source, 16))] = "".join(chr(int(t, 16)) for t in target)
    return table


def skeleton(text: str) -> str:
    """UTS #39 skeleton: NFD, each character replaced by its prototype, NFD again (small
    Greek letters but omicron keep their own identity)."""
    table = _prototypes()
    decomposed = unicodedata.normalize("NFD", text)
    return unicodedata.normalize("NFD", "".join(table.get(ch, ch) for ch in decomposed))


def lookalike(names: Iterable[str]) -> tuple[str, str] | None:
    """The first two different names with one skeleton (the earlier one first), if any."""
    seen: dict[str, str] = {}
    for name in names:
        first = seen.setdefault(skeleton(name), name)
        if first != name:
            return first, name
    return None
