"""Training checkpoints: one ``.npz`` file (arrays + a JSON record), written atomically.

An interrupted write never leaves a broken file where a good one was (``nndk/files.py``:
written beside it, flushed to disk, then renamed over it). Nothing is pickled.
"""

from __future__ import annotations

import json
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from nndk import config
from nndk.files import atomic_link, atomic_write
from nndk.optim import OPTIMIZERS
from nndk.schema import MAX_COUNT, Rule, check_dims, check_fields
from nnre.errors import NnreError

FORMAT = "nndk-checkpoint/1"
FILENAME = "checkpoint.npz"  # the latest: what --resume and nndk pack read
BEST = "best.npz"  # the one with the lowest validation loss so far
STEP_FILE = re.compile(r"step-([0-9]{9})\.npz")  # the last --keep checkpoints, by step
DEFAULT_KEEP = 3


class CheckpointError(NnreError):
    """A checkpoint that is missing, unreadable or of another format."""

    code = "bad-checkpoint"


def save(directory: str | Path, arrays: dict[str, np.ndarray], record: dict[str, Any],
         keep: int = DEFAULT_KEEP, best: bool = False) -> Path:
    """Write arrays and a JSON-able record as ``directory/checkpoint.npz``, also named
    ``step-NNNNNNNNN.npz`` (the last ``keep`` of those are kept) and, if ``best``,
    ``best.npz``. Every name is switched atomically; the copies are hard links."""
    folder = Path(directory)
    path = folder / FILENAME
    meta = json.dumps({"format": FORMAT, **record}, sort_keys=True).encode("utf-8")
    payload = {**arrays, "meta.json": np.frombuffer(meta, dtype=np.uint8)}
    atomic_write(path, lambda f: np.savez(f, **payload))  # type: ignore[arg-type]
    atomic_link(path, folder / f"step-{int(record['step']):09d}.npz")
    if best:
        atomic_link(path, folder / BEST)
    for old in step_files(folder)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def step_files(folder: Path) -> list[Path]:
    """The ``step-*.npz`` checkpoints in ``folder``, oldest first."""
    return sorted(p for p in folder.glob("step-*.npz") if STEP_FILE.fullmatch(p.name))


def claim(directory: str | Path, run_id: str | None, overwrite: bool) -> None:
    """Make sure writing run ``run_id`` into ``directory`` replaces no other run.

    A checkpoint of another run (or an unreadable one) there is refused, unless
    ``overwrite``: then that run's checkpoint files (and only those) are removed first, so
    the kept and best checkpoints never mix two runs."""
    folder = Path(directory)
    path = folder / FILENAME
    if not path.exists():
        return
    try:
        record = load(path)[1]
    except CheckpointError:
        record = {}
    if record and record.get("run_id") == run_id:
        return
    if not overwrite:
        what = (f"another run's checkpoint (step {record['step']}, data "
                f"{record['data_path']})" if record else "an unreadable checkpoint")
        raise CheckpointError(f"{folder}: holds {what}; continue it with --resume {folder}, "
                              "replace it with --overwrite, or choose another "
                              "--checkpoint-dir")
    for old in [path, folder / BEST, *step_files(folder)]:
        old.unlink(missing_ok=True)


def resolve(source: str | Path) -> Path:
    """The checkpoint file meant by ``source``: itself, or ``checkpoint.npz`` in a directory."""
    path = Path(source)
    return path / FILENAME if path.is_dir() else path


def load(source: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint file, or ``checkpoint.npz`` inside a directory, and validate its
    record: a truncated file, a missing field or a hostile value is a CheckpointError."""
    path = resolve(source)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint here")
    arrays = _read_arrays(path)
    if "meta.json" not in arrays:
        raise CheckpointError(f"{path}: not an nndk checkpoint (no meta.json record)")
    try:
        record = json.loads(arrays.pop("meta.json").tobytes().decode("utf-8"))
    except (ValueError, RecursionError) as err:
        raise CheckpointError(f"{path}: the meta.json record is not JSON ({err})") from None
    if isinstance(record, dict) and isinstance(record.get("config"), dict):
        record["config"] = config.LEGACY | record["config"]  # options added since it was written
    validate_record(record, str(path))
    return arrays, record


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    with path.open("rb") as f:
        try:
            with np.load(f, allow_pickle=False) as data:
                return {k: np.array(data[k]) for k in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error,
                AttributeError) as err:
            raise CheckpointError(f"{path}: not a readable checkpoint, truncated or damaged "
                                  f"({err})") from None


RECORD_RULES: dict[str, Rule] = {
    "format": Rule("str", choices=(FORMAT,)),
    "kind": Rule("str", choices=("text", "arrays")),
    "step": Rule("int", 0, MAX_COUNT),
    "config": Rule("dict"),
    "equations": Rule("str"),
    "model_file": Rule("str"),
    "dims": Rule("dict"),
    "optimizer": Rule("dict"),
    "rng": Rule("dict"),
    "history": Rule("dict"),
    "data_path": Rule("str"),
    "data_sha256": Rule("str"),
    "input": Rule("str", optional=True),
    "output": Rule("str"),
    "run_id": Rule("str", optional=True),  # absent in checkpoints of nndk before 0.x
    "best_val_loss": Rule("float", optional=True),
}
KIND_RULES: dict[str, dict[str, Rule]] = {
    "text": {"vocab": Rule("str"), "batch_index": Rule("int", 0, MAX_COUNT),
             "carry": Rule("list")},
    "arrays": {"cursor": Rule("int", 0, MAX_COUNT),
               "classes": Rule("int", 1, MAX_COUNT, optional=True)},  # a classifier's K
}
OPTIMIZER_RULES = {"name": Rule("str", choices=tuple(sorted(OPTIMIZERS))),
                   "t": Rule("int", 0, MAX_COUNT)}


def validate_record(record: Any, where: str) -> None:
    """Every field of a checkpoint's record, by the rules above and the config's own rules."""
    def fail(message: str) -> CheckpointError:
        return CheckpointError(message)

    if not isinstance(record, dict):
        raise fail(f"{where}: the record is not a JSON object")
    if record.get("format") != FORMAT:
        raise fail(f"{where}: format {record.get('format')!r:.40}, expected {FORMAT!r}")
    check_fields(record, RECORD_RULES, lambda k: f"{where}: field {k}", fail)
    check_fields(record, KIND_RULES[record["kind"]], lambda k: f"{where}: field {k}", fail)
    check_fields(record["optimizer"], OPTIMIZER_RULES,
                 lambda k: f"{where}: field optimizer.{k}", fail)
    check_dims(record["dims"], f"{where}: field dims", fail)
    try:
        config.validate(record["config"], where)
    except config.ConfigError as err:
        raise fail(str(err)) from None
    if not re.fullmatch(r"[0-9a-f]{64}", record["data_sha256"]):
        raise fail(f"{where}: field data_sha256 is not a sha256 hex digest")
    for key, value in record["history"].items():
        if not isinstance(key, str) or not (value is None or isinstance(value, float | int)):
            raise fail(f"{where}: field history.{key} must be a number, got {value!r:.40}")
    for key in record.get("carry", []):
        if not (isinstance(key, str) and re.fullmatch(r".+@[0-9]{1,9}", key)):
            raise fail(f"{where}: field carry holds {key!r:.40}, expected NAME@LAG")
    if record["optimizer"]["name"] != record["config"]["optimizer"]:
        raise fail(f"{where}: field optimizer.name {record['optimizer']['name']!r} disagrees "
                   f"with config.optimizer {record['config']['optimizer']!r}")


def take(arrays: dict[str, np.ndarray], key: str, shape: tuple[int, ...], where: str
         ) -> np.ndarray:
    """The array ``key`` of a checkpoint, which must exist with ``shape`` and be numeric."""
    value = arrays.get(key)
    if value is None:
        raise CheckpointError(f"{where}: array {key!r} is missing")
    if value.shape != shape or value.dtype.kind not in "biuf":
        raise CheckpointError(f"{where}: array {key!r} is {value.dtype} {value.shape}, "
                              f"expected {shape}")
    return value
