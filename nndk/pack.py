"""Pack a model into a versioned .bundle with provenance.

The source is an equation file with its weights, a training checkpoint, or another bundle
(relabelled: new name and version, its weights and settings kept, ``lineage.parent`` naming
it). The equations are checked against the weights by the runtime's own
``Model.from_equations`` (dimensions inferred from the weights; a missing, extra or misshaped
weight is an error that names them), and the file is written by the runtime's writer, which
runs the reader's validator: whatever packs, loads.
"""

from __future__ import annotations

import json
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
from nnre.bundle.format import MAGIC, MAX_HEADER_BYTES
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

    equations: Path  # an .eqn file, a training checkpoint (directory or .npz), or a .bundle
    weights: Path | None
    output: Path
    name: str
    version: str
    description: str | None = None
    license: str | None = None
    authors: tuple[str, ...] = ()
    meta: tuple[str, ...] = ()  # "key=value" strings, stored in metadata.extra
    dtype: str | None = None  # compute dtype; default float32 (a bundle SOURCE: its own)
    created: str | None = None  # RFC 3339 UTC; default: $SOURCE_DATE_EPOCH, else none stored
    codecs: Mapping[str, Any] = field(default_factory=dict)  # name → codec entry (§3.5)


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


def parse_codecs(pairs: Sequence[str]) -> dict[str, Any]:
    """``NAME=JSON`` (or ``NAME=@file.json``) → {name: codec entry}. Only the JSON syntax is
    checked here; what the entry may hold is the bundle validator's to say, when it is
    packed, like every other field."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value:
            raise PackError(f"--codec expects NAME=JSON or NAME=@FILE, got {pair!r}")
        if key in out:
            raise PackError(f"--codec {key!r} given twice")
        if value.startswith("@"):
            with open_regular(value[1:], PackError) as f:  # a vocabulary fits in a header
                raw = f.read(MAX_HEADER_BYTES + 1)
            if len(raw) > MAX_HEADER_BYTES:
                raise PackError(f"--codec {key}: {value[1:]} is larger than a bundle header "
                                f"({MAX_HEADER_BYTES} bytes)")
            value = raw.decode("utf-8", errors="replace")
        try:
            entry = json.loads(value)
        except ValueError as err:
            raise PackError(f"--codec {key}: not JSON ({err})") from err
        if not isinstance(entry, dict):
            raise PackError(f"--codec {key}: expected a JSON object like "
                            '{"id": "char", "vocab": ["a", "b"]}')
        out[key] = entry
    return out


def build_content(equations: str, weights: Mapping[str, np.ndarray], metadata: dict[str, Any],
                  *, dtype: str | None = None, filename: str | None = None,
                  dims: Mapping[str, int] | None = None) -> BundleContent:
    """Check equations against weights and gather what the bundle stores (the pack API)."""
    if dtype is None:  # the API's default follows the weights; nndk pack's is float32
        dtype = "float64" if weights and all(
            np.asarray(w).dtype == np.float64 for w in weights.values()) else "float32"
    _finite(weights)
    model = Model.from_equations(equations, weights, dims, dtype, filename=filename)
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
    src = read_source(req)
    inherited = src.metadata
    metadata = inherited | {"name": req.name, "version": req.version,
                            "producer": f"nndk {__version__}"}
    optional = {"created": req.created or source_date(),
                "description": req.description, "license": req.license,
                "authors": list(req.authors),
                "extra": inherited.get("extra", {}) | parse_meta(req.meta),
                "codecs": inherited.get("codecs", {}) | dict(req.codecs)}
    metadata.update({k: v for k, v in optional.items() if v})
    content = build_content(src.equations, src.weights, metadata,
                            dtype=req.dtype or src.dtype, filename=str(req.equations),
                            dims=src.dims)
    bundle_id = write_bundle(req.output, content)
    return PackResult(req.output, bundle_id, req.output.stat().st_size, len(content.tensors))


@dataclass(frozen=True)
class Source:
    """What a SOURCE brings: equations, weights, the metadata a bundle made from it keeps,
    the default compute dtype, and sizes the weights alone do not fix (an image's side)."""

    equations: str
    weights: dict[str, np.ndarray]
    metadata: dict[str, Any]
    dtype: str = "float32"
    dims: Mapping[str, int] | None = None


def read_source(req: PackRequest) -> Source:
    """Equations, weights, the metadata the source brings, and the default compute dtype."""
    path = req.equations
    if not path.exists():
        raise PackError(f"{path}: no such file or directory (SOURCE is an .eqn file, a "
                        "checkpoint of nndk train or a .bundle)")
    if is_checkpoint(path) or is_bundle(path):
        if req.weights is not None:
            raise PackError(f"--weights goes with an .eqn file; {path} has its weights")
        return from_checkpoint(path) if is_checkpoint(path) else from_bundle(path)
    if req.weights is None:
        raise PackError(f"{path}: --weights is required to pack an .eqn file")
    try:
        with open_regular(path, PackError) as f:  # never block on a FIFO
            text = f.read().decode("utf-8")
    except UnicodeDecodeError as err:
        raise PackError(f"{path}: not UTF-8 text ({err.reason})") from err
    return Source(text, read_weights(req.weights), {})


def is_bundle(path: Path) -> bool:
    """A file that starts with the bundle magic (whatever its name)."""
    with open_regular(path, PackError) as f:
        return f.read(len(MAGIC)) == MAGIC


#: Metadata that says which bundle this is; a bundle made from another sets its own.
IDENTITY = ("name", "version", "created", "producer", "lineage")


def inherited(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """What a bundle made from another keeps of its metadata: all but its identity (the
    codecs, sampling settings, provenance, description, license, authors, extra)."""
    return {k: v for k, v in metadata.items() if k not in IDENTITY}


def from_bundle(path: Path) -> Source:
    """A bundle to relabel: everything it holds but its identity, every digest checked; the
    new bundle's lineage names it as the parent."""
    from nnre.loader import load

    model = load(path, check_data=True, cache=False)
    kept = inherited(model.metadata) | {"lineage": {"parent": model.bundle_id}}
    return Source(model.equations, model.weights(), kept, model.dtype, model.dims)


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


def from_checkpoint(path: Path) -> Source:
    """Equations, weights, trained-model metadata (codecs, sampling, provenance) and the
    dimensions the run resolved."""
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
    elif record.get("classes"):  # a classifier: its output reads as class labels
        labels = [str(i) for i in range(int(record["classes"]))]
        metadata["codecs"] = {record["output"]: {"id": "argmax-label", "labels": labels}}
    return Source(record["equations"], weights, metadata, dims=dict(record["dims"]))
