"""Names a reader can tell apart: invisible code points and lookalike names are refused,
in equations and in bundles, with the code points shown."""

from __future__ import annotations

import pytest
from bundle_helpers import lstm_content

from nnre.bundle.write import write
from nnre.equations import check
from nnre.errors import BundleError, EquationError
from nnre.names import skeleton


@pytest.mark.parametrize(("text", "shown"), [
    ("y = W\u3164 x", "U+3164 HANGUL FILLER"),  # an invisible letter (category Lo)
    ("y = x\u034f + x", "U+034F COMBINING GRAPHEME JOINER"),  # an invisible mark
    ("y = a\ufe00b", "U+FE00 VARIATION SELECTOR-1"),
])
def test_invisible_characters_in_names_are_refused(text: str, shown: str) -> None:
    with pytest.raises(EquationError, match="invisible character") as err:
        check(text)
    assert shown in str(err.value) and err.value.line == 1


@pytest.mark.parametrize(("text", "first", "second"), [
    ("y = x + \u0445", "x", "\u0445"),  # Latin x, Cyrillic ha
    ("input x\ny = \uff58 + x", "\uff58", "x"),  # fullwidth x first
    ("y = o \u2299 \u03bf", "o", "\u03bf"),  # Latin o, Greek omicron
    ("y = A + \u0391", "A", "\u0391"),  # Latin A, Greek Alpha
])
def test_lookalike_names_are_refused(text: str, first: str, second: str) -> None:
    with pytest.raises(EquationError, match=f"names '{first}' and '{second}' look alike"):
        check(text)


def test_mathematical_greek_is_not_a_lookalike() -> None:
    check("α, ρ, ν ∈ ℝ\na, p, v ∈ ℝ^3\ny = α ⊙ a + ρ ⊙ p + ν ⊙ v")
    assert skeleton("α") != skeleton("a") and skeleton("ο") == skeleton("o")


def test_a_bundle_name_with_an_invisible_character_is_refused(tmp_path) -> None:
    content = lstm_content()
    content.tensors["W\u3164"] = content.tensors.pop("W_i")
    with pytest.raises(BundleError, match="U\\+3164 HANGUL FILLER") as err:
        write(tmp_path / "x.bundle", content)
    assert err.value.code == "bad-name"
