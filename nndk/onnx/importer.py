"""``nndk import``: an ONNX file → an ImportResult (equations, weights, name maps) → a bundle.

Reading is defensive: the model file is opened as a regular file only (never a FIFO), its
external data files are read only from inside its directory with every offset and length
checked (:mod:`nndk.onnx.external`), the checker runs first, and every
problem in the graph is reported at once (see :mod:`nndk.onnx.graph`). The bundle records
where it came from: the ONNX producer and opset, how ONNX names map onto the model's, and, for
a graph nndk exported, the original bundle id as its lineage parent.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

from nndk import __version__
from nndk.onnx import expr as ex
from nndk.onnx.common import META_BUNDLE, OnnxError, require_onnx
from nndk.onnx.external import inline
from nndk.onnx.graph import Importer, ImportResult, start, state_meta, state_offset
from nndk.onnx.rearrange import written
from nndk.onnx.scan import unscan
from nndk.onnx.values import (
    BatchFirst,
    Dyn,
    Final,
    Finals,
    Label,
    Last,
    Lazy,
    SeqY,
    Unsupported,
)
from nnre import budget
from nnre.files import open_regular

_SEMVER = re.compile(r"^\d+\.\d+\.\d+$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def read(path: str | Path) -> Any:
    """Load and check an ONNX model file, with its external data read defensively."""
    onnx = require_onnx()
    with open_regular(path, OnnxError) as f:
        size = os.fstat(f.fileno()).st_size
        if size > budget.limit():
            raise OnnxError(f"{path}: a model file of {size} bytes exceeds the memory budget "
                            f"of {budget.limit()} bytes")
        data = f.read()
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as err:  # protobuf raises its own DecodeError, among others
        raise OnnxError(f"{path}: not an ONNX model ({type(err).__name__})") from err
    inline(proto, path, used=size)
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as err:
        first = str(err).strip().split("\n", 1)[0]
        raise OnnxError(f"{path}: not a valid ONNX model: {first}") from err
    return proto


def import_model(proto: Any, source: str = "<onnx>") -> ImportResult:
    """Convert a loaded ONNX model; raises OnnxError naming every unsupported node."""
    flat = unscan(proto)  # our own --sequence export: its Scans' bodies are the step
    imp = start(flat.proto, flat.backward)
    imp.run()
    declared = _outputs(imp)
    if imp.problems:
        parts = [f"{reason} (node{'s' if len(nodes) > 1 else ''} "
                 + ", ".join(f"'{n}'" for n in nodes) + ")"
                 for reason, nodes in imp.problems.items()]
        raise OnnxError(f"{source}: cannot import {len(parts)} kind(s) of node: "
                        + "; ".join(parts))
    producer = " ".join(p for p in (proto.producer_name, proto.producer_version) if p)
    weights = {ex.canonical_name(k): v for k, v in imp.weights.items()}
    if not imp.outputs:
        raise OnnxError(f"{source}: no output is a vector of numbers ("
                        + "; ".join(f"'{k}' is {v}" for k, v in imp.dropped.items()) + ")")
    return ImportResult(_text(imp, declared, producer), weights, imp.dtype, imp.inputs,
                        imp.outputs, imp.lead == 2, imp.opset, producer, imp.dropped,
                        tuple(imp.batch_first))


def _outputs(imp: Importer) -> list[str]:
    """Equations for the graph's outputs and next states; returns the declared outputs."""
    targets = {t.text for t, _ in imp.equations}
    for key, (_, out_name) in state_meta(imp.proto).items():
        name, step = state_offset(key, key in imp.backward_keys)
        value = imp.values.get(out_name)
        if isinstance(value, Dyn) and step in (-1, 1):
            old = value.expr
            if isinstance(old, ex.Name) and old.text in targets and old.time == 0:
                _rename(imp, old.text, name)  # the step's own equation for it: call it h
            else:
                imp.equations.append((ex.Name(name, 0), value.expr))
            targets.add(name)
        elif not (isinstance(value, Dyn) and value.expr == ex.Name(name, step - step // abs(step))):
            imp.problems.setdefault(f"next state '{out_name}' is not a per-example value",
                                    []).append(out_name)
        imp.outputs[out_name] = (key, "state")
    declared: list[str] = []
    finals: list[str] = []
    inputs = {ex.show(v.expr) for v in imp.values.values() if isinstance(v, Dyn)
              and isinstance(v.expr, ex.Name) and v.expr.text in
              {n for n, _ in imp.inputs.values()}}
    for vi in imp.proto.graph.output:
        value = imp.values.get(vi.name)
        if vi.name in imp.outputs or value is None:
            continue
        if isinstance(value, Lazy):  # entries moved around: written out, batch first
            try:
                value = written(imp, value)
            except Unsupported as err:
                imp.problems.setdefault(f"output: {err}", []).append(vi.name)
                continue
        if isinstance(value, BatchFirst):  # [N, T, …] in ONNX; the model gives [T, N, …]
            value = value.dyn
            imp.batch_first.append(vi.name)
        last = isinstance(value, Last)  # ONNX gives the last step; the model every step
        if isinstance(value, Last):
            value = value.dyn
        if isinstance(value, Label):
            imp.dropped[vi.name] = (f"a class index (ArgMax of '{value.source}'), not a vector "
                                    "of numbers; to get it from the scores, give them an "
                                    "argmax-label codec: nndk pack BUNDLE --codec "
                                    "'NAME={\"id\": \"argmax-label\", \"labels\": […]}'")
            continue
        if isinstance(value, Finals):  # stacked layers' final states, [layers, N, H]
            imp.outputs[vi.name] = (",".join(value.states), "states")
            finals.append(value.states[-1])
            continue
        if isinstance(value, Final):
            imp.outputs[vi.name] = (value.state, "state")
            finals.append(value.state)
            continue
        if not isinstance(value, Dyn | SeqY):
            imp.problems.setdefault(f"output is a {type(value).__name__}, not a value that "
                                    "varies per example", []).append(vi.name)
            continue
        kind = "last" if last else \
            "directions" if isinstance(value, SeqY) and len(value.exprs) > 1 else "output"
        target = value.expr if isinstance(value, Dyn) else \
            value.exprs[0] if len(value.exprs) == 1 else ex.Stack(value.exprs)
        if not (isinstance(target, ex.Name) and target.text in targets
                and target.time == imp.time()):
            stem = "y"
            text = imp.names.prefer(vi.name, stem, subscript=not imp.timed)
            imp.equations.append((ex.Name(text, imp.time()), target))
            targets.add(text)
            target = ex.Name(text, imp.time())
        imp.outputs[vi.name] = (ex.canonical_name(target.text), kind)
        if target.text not in declared:
            declared.append(target.text)
            shown = f"{ex.show(target)} ∈"
            if isinstance(value, Dyn) and value.tensor and target.text not in inputs and \
                    not any(d.startswith(shown) for d in imp.declarations):
                space = "×".join(map(str, value.shape))  # shown, and read with tensor shapes
                imp.declarations.append(f"{ex.show(target)} ∈ ℝ^({space})")
    return declared or finals[:1]  # a model needs an output: the state, at every step


def _rename(imp: Importer, old: str, new: str) -> None:
    """Call the equation ``old`` by the state's name ``new`` everywhere."""
    def walk(e: ex.Expr) -> ex.Expr:
        if isinstance(e, ex.Name):
            return ex.Name(new, e.time) if e.text == old and e.time == 0 else e
        if isinstance(e, ex.Call):
            return ex.Call(e.func, walk(e.arg), e.params, tuple(walk(m) for m in e.more))
        if isinstance(e, ex.Bin):
            return ex.Bin(e.op, walk(e.a), walk(e.b))
        if isinstance(e, ex.Neg | ex.Tr):
            return type(e)(walk(e.a))
        if isinstance(e, ex.Stack):
            return ex.Stack(tuple(walk(p) for p in e.parts))
        if isinstance(e, ex.Part):
            return ex.Part(walk(e.a), e.start, e.stop)
        if isinstance(e, ex.Pow):
            return ex.Pow(walk(e.a), e.k)
        return e

    imp.equations = [(walk(t), walk(e)) for t, e in imp.equations]  # type: ignore[misc]
    for key, value in list(imp.values.items()):
        if isinstance(value, Dyn):
            imp.values[key] = value.like(walk(value.expr))
    old_key = ex.canonical_name(old)
    imp.outputs = {k: (ex.canonical_name(new), kind) if name == old_key else (name, kind)
                   for k, (name, kind) in imp.outputs.items()}


def _text(imp: Importer, declared: list[str], producer: str) -> str:
    lines = [f"# Imported from ONNX ({producer or 'unknown producer'}, opset {imp.opset}) "
             f"by nndk {__version__}."]
    if imp.batch_first and imp.lead == 2:
        lines.append("# Time-major: the ONNX graph's " + ", ".join(imp.batch_first)
                     + " [N, T, …] (batch_first) are [T, N, …] here.")
    elif imp.batch_first:
        lines.append("# An example per row: the ONNX graph's " + ", ".join(imp.batch_first)
                     + " [K, N] (an example per column) are [N, K] here.")
    lines += [f"# The ONNX graph's {o} is {n} at the last step only (here: at every step)."
              for o, (n, kind) in imp.outputs.items() if kind == "last"]
    if not imp.timed:
        lines.append("input " + ", ".join(n for n, kind in imp.inputs.values()
                                          if kind == "input"))
    if declared:
        lines.append("output " + ", ".join(declared))
    lines += imp.declarations
    lines.append("")
    lines += [f"{ex.show(target)} = {ex.show(e)}" for target, e in imp.equations]
    return "\n".join(lines) + "\n"


def bundle_metadata(proto: Any, result: ImportResult, name: str | None, version: str | None,
                    source: str) -> dict[str, Any]:
    """Bundle metadata: name and version (given, or carried from nndk's export), provenance."""
    props = {p.key: p.value for p in proto.metadata_props}
    version = version or props.get("version", "")
    meta: dict[str, Any] = {
        "name": name or props.get("name") or proto.graph.name or Path(source).stem,
        "version": version if _SEMVER.match(version) else "0.1.0",
        "producer": f"nndk {__version__}",
        "extra": {"onnx.source": Path(source).name, "onnx.producer": result.producer,
                  "onnx.opset": str(result.opset),
                  "onnx.inputs": json.dumps(result.inputs, ensure_ascii=False),
                  "onnx.outputs": json.dumps(result.outputs, ensure_ascii=False),
                  **({"onnx.left_out": json.dumps(result.dropped, ensure_ascii=False)}
                     if result.dropped else {}),
                  **({"onnx.batch_first": json.dumps(list(result.batch_first),
                                                     ensure_ascii=False)}
                     if result.batch_first else {})},
    }
    if _HEX64.match(props.get("bundle_id", "")):
        meta["lineage"] = {"parent": props["bundle_id"]}
    if META_BUNDLE in props:  # nndk's own export: the codecs, sampling, provenance… come back
        from nndk.pack import inherited

        kept = inherited(carried_metadata(props[META_BUNDLE], source))
        meta = kept | meta | {"extra": kept.get("extra", {}) | meta["extra"]}
    return meta


def carried_metadata(text: str, source: str) -> dict[str, Any]:
    """The bundle metadata an nndk export carried, never trusted: strict JSON (no NaN or
    infinities, no repeated keys), then the bundle reader's own check of ``metadata``."""
    from nnre.bundle.schema import metadata_record
    from nnre.errors import BundleError

    where = f"{source}: metadata {META_BUNDLE}"

    def refuse(what: str) -> float:
        raise ValueError(f"{what} is not a finite number")

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, item in pairs:
            if key in out:
                raise ValueError(f"key {key!r} repeated")
            out[key] = item
        return out

    def finite(text: str) -> float:
        value = float(text)
        return value if math.isfinite(value) else refuse(text)

    try:
        value = json.loads(text, parse_constant=refuse, parse_float=finite,
                           object_pairs_hook=unique)
    except (ValueError, RecursionError) as err:
        raise OnnxError(f"{where} is not the JSON of a bundle's metadata ({err})") from None
    try:
        return dict(metadata_record()(value, META_BUNDLE))
    except BundleError as err:
        raise OnnxError(f"{where}: {err}") from None


def import_file(path: str | Path, output: str | Path, *, name: str | None = None,
                version: str | None = None, created: str | None = None) -> tuple[str, Any]:
    """Import ``path`` and write the bundle to ``output``; returns (bundle id, ImportResult)."""
    from nndk.pack import build_content, source_date
    from nnre.bundle.write import write

    proto = read(path)
    result = import_model(proto, str(path))
    meta = bundle_metadata(proto, result, name, version, str(path))
    stamp = created or source_date()  # never the clock: the same import, the same bytes
    if stamp:
        meta["created"] = stamp
    content = build_content(result.equations, result.weights, meta, dtype=result.dtype,
                            filename=f"{path}[imported equations]")
    return write(Path(output), content), result
