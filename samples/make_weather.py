"""Writes samples/weather.csv, samples/weather.bundle and two input files for it: a tiny
classifier of tensors.

The lighthouse keeper's three readings, each in [0, 1] — wind, rain and fog — and the word
the log uses for them: ``storm`` when wind and rain together pass 1.2, else ``fog`` when fog
passes 0.6, else ``clear``. The data comes from a fixed seed and is written as CSV (text, so
its bytes and sha256 are the same everywhere); the model is the ``mlp`` template (H=8)
trained on it by ``nndk train`` and packed by ``nndk pack`` with an ``argmax-label`` codec,
so ``nnre run samples/weather.bundle --input -`` prints a label beside the scores. A fixed
``SOURCE_DATE_EPOCH`` keeps the bundle's bytes the same from run to run. The inputs the
README runs it on are ``weather-feeds.npz`` (``nnre run --input``) and
``weather-requests.jsonl`` (``--input-jsonl``), written with fixed bytes too.

Run: python samples/make_weather.py   (from the repository root, with the environment
active; about 10 s)
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
LABELS = ["clear", "fog", "storm"]


def readings(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n rows of (wind, rain, fog), two decimals each, and their classes (indices of LABELS)."""
    x = np.round(np.random.default_rng(seed).uniform(0, 1, size=(n, 3)), 2)
    storm = x[:, 0] + x[:, 1] > 1.2
    fog = x[:, 2] > 0.6
    return x, np.where(storm, 2, np.where(fog, 1, 0))


def write_csv(path: Path) -> None:
    x, y = readings()
    lines = ["x.0,x.1,x.2,target"]
    lines += [f"{a:.2f},{b:.2f},{c:.2f},{t}" for (a, b, c), t in zip(x, y, strict=True)]
    path.write_text("\n".join(lines) + "\n", encoding="ascii")


def write_feeds(npz: Path, jsonl: Path) -> None:
    """Five readings as an .npz (a zip with a fixed date, so fixed bytes), and one JSON
    request per line."""
    x = readings(5, seed=1)[0].astype(np.float32)
    with zipfile.ZipFile(npz, "w") as z:
        buf = io.BytesIO()
        np.lib.format.write_array(buf, x)
        z.writestr(zipfile.ZipInfo("x.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue())
    rows = [json.dumps({"x": [[float(v) for v in row]]}) for row in x.astype(float).round(2)]
    jsonl.write_text("\n".join(rows) + "\n", encoding="ascii")


def nndk(*args: str) -> None:
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1795000000"}
    subprocess.run([sys.executable, "-m", "nndk", *args], check=True, env=env)


def main() -> None:
    data = HERE / "weather.csv"
    write_csv(data)
    write_feeds(HERE / "weather-feeds.npz", HERE / "weather-requests.jsonl")
    codec = json.dumps({"id": "argmax-label", "labels": LABELS})
    with tempfile.TemporaryDirectory() as ck:
        nndk("train", str(data), "--model", "mlp", "--set", "H=8", "--loss", "ce",
             "--steps", "1500", "--batch-size", "32", "--lr", "0.01", "--eval-every", "500",
             "--seed", "0", "--checkpoint-dir", ck)
        nndk("pack", ck, "--name", "weather", "--version", "1.0.0",
             "--description", "wind, rain, fog in [0, 1] -> clear | fog | storm "
             "(samples/make_weather.py)", "--license", "MIT", "--author", "nnre developers",
             "--codec", f"y={codec}", "-o", str(HERE / "weather.bundle"))


if __name__ == "__main__":
    main()
