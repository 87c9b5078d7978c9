"""Training checkpoints: one ``.npz`` file (arrays + a JSON record), written atomically.

An interrupted write never leaves a broken file where a good one was: the new file is
written beside it, flushed to disk, then renamed over it. Nothing is pickled.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from nnre.errors import NnreError

FORMAT = "nndk-checkpoint/1"
FILENAME = "checkpoint.npz"


class CheckpointError(NnreError):
    """A checkpoint that is missing, unreadable or of another format."""

    code = "bad-checkpoint"


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(directory: str | Path, arrays: dict[str, np.ndarray], record: dict[str, Any]) -> Path:
    """Write arrays and a JSON-able record as ``directory/checkpoint.npz``."""
    path = Path(directory) / FILENAME
    meta = json.dumps({"format": FORMAT, **record}, sort_keys=True).encode("utf-8")
    payload = {**arrays, "meta.json": np.frombuffer(meta, dtype=np.uint8)}
    atomic_write(path, lambda f: np.savez(f, **payload))  # type: ignore[arg-type]
    return path


def load(source: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint file, or ``checkpoint.npz`` inside a directory."""
    path = Path(source)
    if path.is_dir():
        path = path / FILENAME
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint here")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.array(data[k]) for k in data.files}
        record = json.loads(arrays.pop("meta.json").tobytes().decode("utf-8"))
    except (OSError, ValueError, KeyError) as err:
        raise CheckpointError(f"{path}: not a readable checkpoint ({err})") from None
    if record.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {record.get('format')!r}, expected {FORMAT!r}")
    return arrays, record
