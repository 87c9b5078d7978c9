"""Pack an equation file and its weights into a versioned .bundle with provenance.

The equations are checked against the weights by the runtime's own ``Model.from_equations``
(dimensions inferred from the weights; a missing, extra or misshaped weight is an error that
names it), and the file is written by the runtime's writer, which runs the reader's validator:
whatever packs, loads.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nndk import __version__, checkpoint
from nndk.files import atomic_write, clean_stale
from nnre import budget
from nnre.bundle.write import BundleContent, chunks, plan
from nnre.errors import NnreError
from nnre.files import open_regular, target_folder
from nnre.model import Model
from nnre.npz import read_npz


class PackError(NnreError):
    """Inputs to ``nndk pack`` that cannot make a bundle (unreadable weights, bad options)."""


@dataclass(frozen=True)
class PackRequest:
    """Everything ``nndk pack`` was asked for; options map one to one."""

    equations: Path  # an .eqn file, or a training checkpoint (directory or .npz)
    weights: Path | None
    output: Path
    name: str
    version: str
    description: str | None = None
    license: str | None = None
    authors: tuple[str, ...] = ()
    meta: tuple[str, ...] = ()  # "key=value" strings, stored in metadata.extra
    dtype: str | None = None  # compute dtype; default: float64 if every weight is, else float32
    created: str | None = None  # RFC 3339 UTC; default: $SOURCE_DATE_EPOCH, else none stored
    codecs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PackResult:
    path: Path
    bundle_id: str
    size: int
    tensors: int


def read_weights(path: Path) -> dict[str, np.ndarray]:
    """Named arrays from an .npz, within the memory budget (sizes and compression ratios
    checked before anything is inflated; never unpickling anything)."""
    with open_regular(path, PackError) as f:  # never block on a FIFO
        return read_npz(f, str(path), budget.limit(), PackError)


def source_date() -> str | None:
    """RFC 3339 UTC from $SOURCE_DATE_EPOCH (reproducible builds), or None when it is unset.

    ``nndk pack`` never reads the clock: the same inputs give the same bytes (spec §6)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if not epoch:
        return None
    try:
        seconds = int(epoch)
    except ValueError as err:
        raise PackError(f"SOURCE_DATE_EPOCH={epoch!r} is not an integer") from err
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def parse_meta(pairs: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise PackError(f"--meta expects key=value, got {pair!r}")
        if key in out:
            raise PackError(f"--meta {key!r} given twice")
        out[key] = value
    return out


def build_content(equations: str, weights: Mapping[str, np.ndarray], metadata: dict[str, Any],
                  *, dtype: str | None = None, filename: str | None = None) -> BundleContent:
    """Check equations against weights and gather what the bundle stores (the pack API)."""
    if dtype is None:
        dtype = "float64" if weights and all(
            np.asarray(w).dtype == np.float64 for w in weights.values()) else "float32"
    _finite(weights)
    model = Model.from_equations(equations, weights, None, dtype, filename=filename)
    signature = {"inputs": model.inputs, "outputs": model.outputs, "state": model.state}
    return BundleContent(equations, dtype, model.dims, signature, metadata, model.weights(),
                         requires=(f"equations/{model.language}",))


def _finite(weights: Mapping[str, np.ndarray]) -> None:
    """A NaN or infinite weight makes every output NaN: refuse it, naming where it is."""
    for name, value in sorted(weights.items()):
        arr = np.asarray(value)
        if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
            where = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
            raise PackError(f"weight {name!r} holds {arr[where]} at index {list(where)}; "
                            "a bundle stores finite weights only")


def is_checkpoint(path: Path) -> bool:
    return path.is_dir() or path.suffix == ".npz"


def pack(req: PackRequest) -> PackResult:
    """Read, check, and atomically write the bundle."""
    metadata: dict[str, Any] = {"name": req.name, "version": req.version,
                                "producer": f"nndk {__version__}"}
    optional = {"created": req.created or source_date(),
                "description": req.description, "license": req.license,
                "authors": list(req.authors), "extra": parse_meta(req.meta),
                "codecs": dict(req.codecs)}
    metadata.update({k: v for k, v in optional.items() if v})
    if not req.equations.exists():
        raise PackError(f"{req.equations}: no such file or directory (SOURCE is an .eqn file "
                        "or a checkpoint of nndk train)")
    if is_checkpoint(req.equations):
        if req.weights is not None:
            raise PackError("--weights goes with an .eqn file; a checkpoint has its weights")
        text, weights, trained = from_checkpoint(req.equations)
        metadata = trained | metadata
    else:
        if req.weights is None:
            raise PackError(f"{req.equations}: --weights is required to pack an .eqn file")
        try:
            with open_regular(req.equations, PackError) as f:  # never block on a FIFO
                text = f.read().decode("utf-8")
        except UnicodeDecodeError as err:
            raise PackError(f"{req.equations}: not UTF-8 text ({err.reason})") from err
        weights = read_weights(req.weights)
    content = build_content(text, weights, metadata, dtype=req.dtype,
                            filename=str(req.equations))
    bundle_id = write_bundle(req.output, content)
    return PackResult(req.output, bundle_id, req.output.stat().st_size, len(content.tensors))


def write_bundle(path: Path, content: BundleContent) -> str:
    """Write a bundle atomically through a recognisable nndk temporary (``nndk/files.py``),
    first removing any left in that directory by a killed ``nndk pack``; returns its id.

    ``plan`` is the runtime writer's own validation and layout, so the bytes are the same as
    ``nnre.bundle.write.write`` would produce."""
    clean_stale(target_folder(path))  # a missing folder is an error naming it, not made
    prefix, arrays, bundle_id = plan(content)

    def emit(f: Any) -> None:
        for piece in chunks(prefix, arrays):
            f.write(piece)

    atomic_write(path, emit)
    return bundle_id


def from_checkpoint(path: Path) -> tuple[str, dict[str, np.ndarray], dict[str, Any]]:
    """Equations, weights and trained-model metadata (codecs, sampling, provenance)."""
    arrays, record = checkpoint.load(path)
    weights = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    config = record["config"]
    hyper = {k: v for k, v in config.items() if isinstance(v, int | float | str | bool)}
    hyper |= {f"dim_{k}": v for k, v in config.get("dims", {}).items()}
    losses = {f"{k}": float(v) for k, v in record.get("history", {}).items()}
    provenance: dict[str, Any] = {"data_sha256": record["data_sha256"],
                                  "hyperparameters": hyper, "steps": record["step"],
                                  "seed": config["seed"]}
    if losses:
        provenance["final_losses"] = losses
    metadata: dict[str, Any] = {"provenance": provenance}
    if record.get("vocab") is not None:  # a character model
        vocab = list(record["vocab"])
        metadata["codecs"] = {record["input"]: {"id": "char", "vocab": vocab},
                              record["output"]: {"id": "sample", "vocab": vocab}}
        metadata["sampling"] = {"temperature": float(config.get("temperature", 1.0))}
    return record["equations"], weights, metadata
