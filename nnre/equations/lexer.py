"""Equation text → tokens, with every name reduced to its canonical plain spelling.

The lexer uses explicit character classes (never ``str.isalpha``: ``ₜ`` and ``ᵀ`` are letters to
Python) and NFC normalisation (never NFKC, which would turn ``Wᵢ`` into ``Wi``).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from nnre.errors import EquationError
from nnre.names import code_points, invisible

MAX_TEXT_CHARS = 100_000
MAX_NUMBER_CHARS = 32
MAX_NAME_CHARS = 64
MAX_NODES = 20_000  # expression nodes in the whole text, blocks' copies included

# Unicode subscript characters and the plain character each stands for.
SUBSCRIPTS = {
    **{chr(0x2080 + d): str(d) for d in range(10)},
    "₋": "-", "₊": "+", "₍": "(", "₎": ")",
    "ₐ": "a", "ₑ": "e", "ₒ": "o", "ₓ": "x", "ₔ": "ə", "ₕ": "h", "ₖ": "k", "ₗ": "l",
    "ₘ": "m", "ₙ": "n", "ₚ": "p", "ₛ": "s", "ₜ": "t", "ᵢ": "i", "ⱼ": "j", "ᵣ": "r",
    "ᵤ": "u", "ᵥ": "v", "ᵦ": "β", "ᵧ": "γ", "ᵨ": "ρ", "ᵩ": "φ", "ᵪ": "χ",
}
SUPERSCRIPT_POWERS = {"²": 2, "³": 3}
# Superscript digits: a layer index when they run straight into a subscript (h¹ₜ), else
# ² and ³ are powers (x²) and the others are errors.
SUPERSCRIPT_DIGITS = {"⁰": "0", "¹": "1", "²": "2", "³": "3", "⁴": "4", "⁵": "5", "⁶": "6",
                      "⁷": "7", "⁸": "8", "⁹": "9"}
# Superscript letters: a block's variable written as papers do (hˡₜ, hˡ⁻¹ₜ), under the same
# rule as superscript digits (directly followed by a subscript). Unicode has no superscript q.
SUPERSCRIPT_LETTERS = dict(zip("ᵃᵇᶜᵈᵉᶠᵍʰⁱʲᵏˡᵐⁿᵒᵖʳˢᵗᵘᵛʷˣʸᶻ", "abcdefghijklmnoprstuvwxyz",
                               strict=True))
SUPERSCRIPT_SIGNS = {"⁻": "-", "⁺": "+"}
MAX_LAYER = 999_999_999  # a layer index has at most nine digits
# W^{(1)}, and (2.2) a block's variable or a dimension with an offset: W^{(l)}, h^{(l-1)}
_LAYER_RE = re.compile(r"\^\{\(([0-9]{1,9}|[^\W\d_][^\W_]{0,15}(?:[-+−][0-9]{1,9})?)\)\}")
_SYMBOL_RE = re.compile(r"^(?P<sym>[^\W\d_][^\W_]*?)(?:(?P<sign>[-+])(?P<k>[0-9]+))?$")
LAYER_MARK = "^{("  # how a canonical name with a layer index is told apart: W^{(1)}
TRANSPOSE = "ᵀ"
PRIMES = {"'": "'", "′": "'", "″": "''"}

# Single-character operators and punctuation, mapped to the token kind they produce.
OPERATORS = {
    "=": "=", "+": "+", "-": "-", "−": "-",
    "·": "@", "⋅": "@", "@": "@",
    "*": "*", "⊙": "*", "∘": "*", "/": "/", "÷": "/",
    "^": "^", "(": "(", ")": ")", "[": "[", "]": "]", "{": "{", "}": "}",
    ";": ";", ",": ",", ":": ":", "‖": "‖", "<": "<", ">": ">", "≤": "≤", "≥": "≥",
    "∈": "in", "×": "×", "√": "NAME_SQRT", "ℝ": "REALS", "…": "…",
}

_TIME_RE = re.compile(r"^(?:(?P<sub>.+),)?t(?:(?P<sign>[-+])(?P<k>\d+))?$")


@dataclass(frozen=True)
class Token:
    """One token. For names, ``text`` is the canonical spelling and ``time`` the step offset."""

    kind: str  # NAME, NUMBER, NEWLINE, EOF, or an operator kind from OPERATORS
    text: str
    line: int
    column: int
    time: int | None = None  # NAME only: None (no time index), 0 for ₜ, -k for ₜ₋ₖ, +k for ₜ₊ₖ
    raw: str = ""  # the name exactly as written (after NFC)
    layer: tuple[str, int] | None = None  # NAME only: a symbolic layer index, ('l', -1)


def is_base_letter(ch: str) -> bool:
    """Letters that may start or continue a name: Latin, Greek and other alphabets, not Lm."""
    return unicodedata.category(ch) in ("Lu", "Ll", "Lt", "Lo") and ch != "ℝ"


def _is_mark(ch: str) -> bool:
    return unicodedata.category(ch) in ("Mn", "Me")


class _Scanner:
    """Walks one NFC-normalised text and yields tokens; tracks bracket depth for continuation."""

    def __init__(self, text: str, filename: str | None) -> None:
        self.text = text
        self.lines = text.split("\n")
        self.filename = filename
        self.pos = 0
        self.line = 1
        self.line_start = 0
        self.depth = 0

    def error(self, message: str, pos: int, expected: str | None = None) -> EquationError:
        return EquationError(
            message,
            line=self.line,
            column=pos - self.line_start + 1,
            source_line=self.lines[self.line - 1],
            expected=expected,
            filename=self.filename,
        )

    def token(self, kind: str, text: str, start: int, **extra: object) -> Token:
        return Token(kind, text, self.line, start - self.line_start + 1, **extra)  # type: ignore[arg-type]

    def scan(self) -> list[Token]:
        tokens: list[Token] = []
        text = self.text
        while self.pos < len(text):
            ch = text[self.pos]
            if ch == "\n":
                if self.depth == 0:
                    tokens.append(self.token("NEWLINE", "\n", self.pos))
                self.pos += 1
                self.line += 1
                self.line_start = self.pos
            elif ch in " \t\r\u00a0\u2009\u200a\u202f":
                self.pos += 1
            elif ch == "#":
                while self.pos < len(text) and text[self.pos] != "\n":
                    self.pos += 1
            elif ch.isascii() and ch.isdigit() or (ch == "." and self._digit_at(self.pos + 1)):
                tokens.append(self.number())
            elif is_base_letter(ch) or ch == "_":
                tokens.append(self.name())
            elif ch in SUPERSCRIPT_POWERS:
                tokens.append(self.token("POW", str(SUPERSCRIPT_POWERS[ch]), self.pos))
                self.pos += 1
            elif ch in SUPERSCRIPT_DIGITS:
                raise self.error(f"unexpected character {_describe(ch)}", self.pos,
                                 expected="a layer index right before a subscript ('h¹ₜ'), "
                                          "'h^{(1)}', or a power 'x^4'")
            elif ch in SUPERSCRIPT_LETTERS or ch in SUPERSCRIPT_SIGNS:
                raise self.error(f"unexpected character {_describe(ch)}", self.pos,
                                 expected="a block's variable as a layer index right before "
                                          "a subscript ('hˡₜ', 'hˡ⁻¹ₜ'), or 'h^{(l)}'")
            elif text.startswith("..", self.pos):  # 1..L, the ASCII spelling of 1…L
                tokens.append(self.token("…", "..", self.pos))
                self.pos += 2
            elif ch == TRANSPOSE:
                tokens.append(self.token("T", ch, self.pos))
                self.pos += 1
            elif ch in OPERATORS:
                tokens.append(self.operator(ch))
            else:
                raise self.error(f"unexpected character {_describe(ch)}", self.pos)
        tokens.append(self.token("NEWLINE", "\n", self.pos))
        tokens.append(self.token("EOF", "", self.pos))
        return tokens

    def _digit_at(self, pos: int) -> bool:
        return pos < len(self.text) and self.text[pos].isascii() and self.text[pos].isdigit()

    def operator(self, ch: str) -> Token:
        kind = OPERATORS[ch]
        if kind in ("(", "[", "{"):
            self.depth += 1
        elif kind in (")", "]", "}"):
            self.depth = max(0, self.depth - 1)
        start = self.pos
        self.pos += 1
        if kind == "NAME_SQRT":
            return self.token("NAME", "sqrt", start, raw=ch)
        if kind in ("<", ">") and self.text.startswith("=", self.pos):  # <= and >=
            self.pos += 1
            kind = "≤" if kind == "<" else "≥"
        return self.token(kind, ch, start)

    def number(self) -> Token:
        start = self.pos
        m = re.compile(r"\d*\.?\d*(?:[eE][-+]?\d+)?").match(self.text, self.pos)
        assert m is not None
        literal = m.group(0)
        if literal.endswith(".") and self.text.startswith("..", m.end() - 1):
            literal = literal[:-1]  # 1..L: the number 1, then the range's '..'
            m = re.compile(r"\d+").match(self.text, self.pos)
            assert m is not None
        if len(literal) > MAX_NUMBER_CHARS:
            raise self.error(
                f"numeric literal is {len(literal)} characters long", start,
                expected=f"at most {MAX_NUMBER_CHARS}",
            )
        if self._digit_at(m.end()) or (m.end() < len(self.text) and self.text[m.end()] in "._"
                                       and not self.text.startswith("..", m.end())):
            raise self.error(f"malformed number {self.text[start:m.end() + 1]}", start,
                             expected="a number like 3, 0.5 or 1e-3")
        value = float(literal)
        if value != value or value in (float("inf"), float("-inf")):
            raise self.error(f"numeric literal {literal} is out of range", start)
        self.pos = m.end()
        return self.token("NUMBER", literal, start)

    def name(self) -> Token:
        """Read base letters, marks, primes, a layer index (``¹`` or ``ˡ`` before a subscript,
        or ``^{(1)}``/``^{(l-1)}``, before or after the subscript), then a subscript (Unicode
        or ``_x`` / ``_{...}``)."""
        start = self.pos
        text = self.text
        base: list[str] = []
        while self.pos < len(text):
            ch = text[self.pos]
            if is_base_letter(ch) or _is_mark(ch) or (ch.isascii() and ch.isdigit() and base):
                base.append(ch)
            elif ch in PRIMES:
                base.append(PRIMES[ch])
            else:
                break
            self.pos += 1
        base_text = "".join(base)
        if not base_text:
            raise self.error("a name must start with a letter", start, expected="a letter")
        layer = self.layer(superscripts=True)
        sub = self.subscript()
        if sub and not layer:
            layer = self.layer(superscripts=False)  # W_{xh}^{(1)}
        raw = text[start:self.pos]
        if layer:
            base_text += layer_suffix(layer)
        if len(raw) > MAX_NAME_CHARS:
            raise self.error(f"name is {len(raw)} characters long", start,
                             expected=f"at most {MAX_NAME_CHARS}")
        hidden = invisible(raw)
        if hidden is not None:
            raise self.error(f"name '{raw}' holds an invisible character: {code_points(raw)}",
                             start, expected="letters, digits and marks a reader can see")
        canonical, time = split_time(base_text, sub)
        return self.token("NAME", canonical, start, time=time, raw=raw,
                          layer=symbolic_layer(layer))

    def layer(self, superscripts: bool) -> str:
        """A layer index at the current position in its canonical form ('' if none): a
        whole number (``^{(1)}``, ``¹``), or a block's variable or a dimension with an
        optional offset (``^{(l-1)}``, ``ˡ⁻¹``: ``l-1``). With ``superscripts``, a run of
        superscript digits, or a superscript letter with an optional signed offset, counts
        only when a subscript follows directly, so ``h¹ₜ`` and ``hˡₜ`` are names while
        ``x²`` stays a power."""
        text = self.text
        m = _LAYER_RE.match(text, self.pos)
        if m is not None and _plain_symbol(m.group(1)):
            self.pos = m.end()
            inner = m.group(1).replace("−", "-")
            return str(int(inner)) if inner.isdigit() else _canonical_symbol(inner)
        if not superscripts or self.pos >= len(text):
            return ""
        end = self.pos
        if text[end] in SUPERSCRIPT_LETTERS:
            end += 1
            if end < len(text) and text[end] in SUPERSCRIPT_SIGNS:
                end += 1
        while end < len(text) and text[end] in SUPERSCRIPT_DIGITS:
            end += 1
        written = text[self.pos:end]
        plain = "".join(SUPERSCRIPT_LETTERS.get(ch) or SUPERSCRIPT_SIGNS.get(ch)
                        or SUPERSCRIPT_DIGITS[ch] for ch in written)
        if not written or end >= len(text) or not (text[end] in SUBSCRIPTS or text[end] == "_") \
                or plain[-1] in "+-" or sum(ch in SUPERSCRIPT_DIGITS for ch in written) > 9:
            return ""
        self.pos = end
        return str(int(plain)) if plain.isdigit() else _canonical_symbol(plain)

    def subscript(self) -> str:
        """Collect the subscript after a name's base, in plain characters ('' if none)."""
        text = self.text
        parts: list[str] = []
        while self.pos < len(text):
            ch = text[self.pos]
            if ch in SUBSCRIPTS:
                parts.append(SUBSCRIPTS[ch])
                self.pos += 1
            elif ch == "_" and self.pos + 1 < len(text) and text[self.pos + 1] == "{":
                end = text.find("}", self.pos + 2)
                if end < 0 or "\n" in text[self.pos:end]:
                    raise self.error("unclosed subscript", self.pos, expected="'}'")
                parts.append(text[self.pos + 2:end].replace(" ", "").replace("−", "-"))
                self.pos = end + 1
            elif ch == "_":
                self.pos += 1
                run = []
                while self.pos < len(text) and (
                    is_base_letter(text[self.pos]) or text[self.pos].isascii()
                    and text[self.pos].isdigit()
                ):
                    run.append(text[self.pos])
                    self.pos += 1
                if not run:
                    raise self.error("empty subscript after '_'", self.pos,
                                     expected="a letter, digit or {…}")
                parts.append("".join(run))
            else:
                break
        return "".join(parts)


def _plain_symbol(inner: str) -> bool:
    """A layer index names a variable made of letters (2.1's class, not ``ₜ`` or ``ᵀ``) and
    ASCII digits, or is a whole number."""
    m = _SYMBOL_RE.match(inner.replace("−", "-"))
    return inner.isdigit() or m is not None and is_base_letter(inner[0]) and all(
        is_base_letter(ch) or ch.isascii() and ch.isdigit() for ch in m.group("sym"))


def _canonical_symbol(inner: str) -> str:
    """``l``, ``l-1``, ``l+2`` as written (an offset of 0 and leading zeros dropped)."""
    m = _SYMBOL_RE.match(inner)
    assert m is not None
    offset = int(m.group("k") or 0) * (-1 if m.group("sign") == "-" else 1)
    return m.group("sym") + (f"{offset:+d}" if offset else "")


def symbolic_layer(layer: str) -> tuple[str, int] | None:
    """A canonical layer index that names a block's variable or a dimension, split into
    that name and the offset (``'l-1'`` → ``('l', -1)``); None for a number or no index."""
    if not layer or layer.isdigit():
        return None
    m = _SYMBOL_RE.match(layer)
    assert m is not None
    return m.group("sym"), int(m.group("k") or 0) * (-1 if m.group("sign") == "-" else 1)


def layer_suffix(layer: str) -> str:
    """How a layer index is spelled in a canonical name: ``h^{(1)}`` (the form papers write,
    which reads back as the same name; ``h^1`` would read as a power)."""
    return f"^{{({layer})}}"


def split_time(base: str, sub: str) -> tuple[str, int | None]:
    """Split a subscript into its plain part and its time offset: ('W', 'i') → ('W_i', None)."""
    if not sub:
        return base, None
    m = _TIME_RE.match(sub)
    if m is None:
        return f"{base}_{sub}", None
    offset = int(m.group("k") or 0)
    if m.group("sign") == "-":
        offset = -offset
    plain = m.group("sub")
    return (f"{base}_{plain}" if plain else base), offset


def _describe(ch: str) -> str:
    name = unicodedata.name(ch, "")
    shown = ch if ch.isprintable() else repr(ch)[1:-1]
    return f"{shown!r} (U+{ord(ch):04X}{' ' + name if name else ''})"


def tokenize(text: str, filename: str | None = None) -> list[Token]:
    """Turn equation text into tokens; raises EquationError with line and column on bad input."""
    if len(text) > MAX_TEXT_CHARS:
        raise EquationError(
            f"equation text is {len(text)} characters long",
            expected=f"at most {MAX_TEXT_CHARS}", filename=filename,
        )
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n"))
    return _Scanner(text, filename).scan()


def canonical_name(spelling: str) -> str:
    """The canonical plain spelling of one name as written, e.g. 'hₜ₋₁' → 'h', 'Wᵢ' → 'W_i'."""
    tokens = tokenize(spelling)
    if len(tokens) != 3 or tokens[0].kind != "NAME":
        raise EquationError(f"{spelling!r} is not a single name")
    if tokens[0].layer is not None:  # W^{(l)} stands for W^{(1)}, W^{(2)}, … in a block
        raise EquationError(f"{spelling!r} has no layer number",
                            expected=f"a whole number as its layer, e.g. "
                                     f"{tokens[0].text.replace(tokens[0].layer[0], '1', 1)!r}")
    return tokens[0].text
