"""Writes samples/corpus.txt: a small, deterministic English-like corpus for char models.

A tiny grammar of sentences about a lighthouse keeper's log, with dates, numbers, names and
punctuation, so a character model has structure to learn at every scale (spelling, words,
agreement, line format). The same seed always gives the same bytes.

Run: python samples/make_corpus.py [--sentences 6000] [-o samples/corpus.txt]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

NAMES = ["Ada", "Bram", "Cleo", "Dmitri", "Elin", "Farid", "Greta", "Hugo"]
WEATHER = ["calm", "foggy", "windy", "clear", "stormy", "grey", "bright"]
SEA = ["flat", "choppy", "rough", "quiet", "heavy", "silver"]
THINGS = ["lamp", "lens", "bell", "door", "stairs", "radio", "boat", "rope", "kettle"]
VERBS = ["cleaned", "checked", "painted", "mended", "oiled", "tested", "counted"]
SHIPS = ["a trawler", "two yachts", "the ferry", "a cargo ship", "no ships", "a tug"]
MONTHS = ["March", "April", "May", "June", "July", "August", "September", "October"]
WINDS = ["north", "south", "east", "west"]
BIRDS = ["gulls", "terns", "gannets", "puffins", "cormorants"]


def sentence(rng: random.Random) -> str:
    kind = rng.randrange(6)
    who = rng.choice(NAMES)
    if kind == 0:
        return f"The weather was {rng.choice(WEATHER)} and the sea was {rng.choice(SEA)}."
    if kind == 1:
        return f"{who} {rng.choice(VERBS)} the {rng.choice(THINGS)} before noon."
    if kind == 2:
        return f"We saw {rng.choice(SHIPS)} to the {rng.choice(WINDS)}."
    if kind == 3:
        hours, litres = rng.randint(2, 14), rng.randint(1, 9)
        return f"The lamp burned for {hours} hours and used {litres} litres of oil."
    if kind == 4:
        return f"{who} counted {rng.randint(3, 90)} {rng.choice(BIRDS)} on the rocks."
    return f"Wind from the {rng.choice(WINDS)}, force {rng.randint(1, 9)}."


def corpus(sentences: int, seed: int = 1) -> str:
    rng = random.Random(seed)
    lines, day = [], 1
    while sentences > 0:
        month = MONTHS[((day - 1) // 30) % len(MONTHS)]
        lines.append(f"{(day - 1) % 30 + 1} {month}.")
        for _ in range(rng.randint(2, 5)):
            lines.append(sentence(rng))
            sentences -= 1
        lines.append("")
        day += 1
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=6000)
    parser.add_argument("-o", "--output", default=str(Path(__file__).with_name("corpus.txt")))
    args = parser.parse_args()
    Path(args.output).write_text(corpus(args.sentences), encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
