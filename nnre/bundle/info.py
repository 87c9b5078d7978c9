"""What ``nnre inspect`` shows: a bundle's facts as a JSON-able dict, and as escaped text.

Every string that came from the file goes through :func:`escaped` before it reaches a
terminal, so control characters, bidi overrides and the like are shown, never obeyed.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

from nnre.bundle.read import Bundle
from nnre.bundle.schema import SIDES


def _hidden(ch: str) -> bool:
    """Characters a terminal may obey rather than show: controls (C0 and the 8-bit C1 set,
    e.g. U+009B, a CSI), format characters (bidi overrides such as U+202E), private-use,
    unassigned and surrogate code points, and line/paragraph separators."""
    category = unicodedata.category(ch)
    return category[0] == "C" or category in ("Zl", "Zp")


def escaped(text: str, keep: str = "") -> str:
    """``text`` with every control, format, private or unassigned character escaped, except
    those in ``keep`` (generated text keeps its newlines and tabs). The one escaping rule for
    everything nnre prints that came from a file."""
    return "".join(ch.encode("unicode_escape").decode("ascii")
                   if _hidden(ch) and ch not in keep else ch for ch in text)


def json_escaped(document: str) -> str:
    """A JSON document with the same characters as :func:`escaped` written as JSON escapes
    (``\\u202e``): still valid JSON decoding to the same strings, but safe on a terminal.
    Such characters can only occur inside strings, where any character may be escaped; the
    one exception is the newline of indented output, which json.dumps never leaves raw inside
    a string, so it is kept."""
    if document.isascii():  # json.dumps already escaped every ASCII control
        return document
    return "".join(json.dumps(ch)[1:-1] if _hidden(ch) and ch != "\n" else ch
                   for ch in document)


def info(bundle: Bundle, *, tensors: bool = True) -> dict[str, Any]:
    """The facts ``inspect`` reports, as plain JSON-able values."""
    h = bundle.header
    out: dict[str, Any] = {
        "file": bundle.source,
        "format": f"{bundle.version[0]}.{bundle.version[1]}",
        "requires": list(h.requires),
        "bundle_id": bundle.bundle_id,
        "size": bundle.size,
        "data_start": bundle.data_start,
        "dtype": h.dtype,
        "dims": dict(h.dims),
        "signature": {side: {n: {"dtype": s.dtype, "shape": list(s.shape)}
                             for n, s in h.signature[side].items()} for side in SIDES},
        "equations": h.equations,
        "metadata": h.metadata,
        "tensor_count": len(h.tensors),
        "tensor_bytes": sum(t.nbytes for t in h.tensors),
    }
    if tensors:  # offsets here are absolute (file) offsets; the header's are data_start-relative
        out["tensors"] = [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape),
                           "offset": bundle.data_start + t.offset, "nbytes": t.nbytes,
                           "sha256": t.sha256} for t in h.tensors]
    return out


def _scalar(v: Any) -> str:
    return escaped(v) if isinstance(v, str) else escaped(repr(v))


def _listing(key: str, items: list[str]) -> str:
    return escaped(repr("".join(items)) if key == "vocab" else repr(items))


def _pairs(d: dict[str, Any]) -> str:
    return "  ".join(f"{escaped(k)}={_scalar(v)}" for k, v in d.items())


def render(facts: dict[str, Any]) -> list[str]:
    """Human-readable lines for :func:`info`'s dict; all file strings escaped."""
    meta = facts["metadata"]
    lines = [
        f"file         {escaped(facts['file'])}",
        f"format       {facts['format']}  (requires {', '.join(map(escaped, facts['requires']))})",
        f"bundle id    {facts['bundle_id']}",
        f"model        {escaped(meta['name'])} {escaped(meta['version'])}",
    ]
    for key in ("description", "license", "created", "producer"):
        if key in meta:
            lines.append(f"{key:<12} {escaped(meta[key])}")
    if meta.get("authors"):
        lines.append(f"{'authors':<12} {', '.join(map(escaped, meta['authors']))}")
    if "lineage" in meta:
        lines.append(f"{'parent':<12} {escaped(meta['lineage']['parent'])}")
    dims = " ".join(f"{escaped(k)}={v}" for k, v in facts["dims"].items()) or "(none)"
    lines += [f"{'dtype':<12} {facts['dtype']}", f"{'dims':<12} {dims}", "signature"]
    for side, label in (("inputs", "input"), ("outputs", "output"), ("state", "state")):
        for n, s in facts["signature"][side].items():
            lines.append(f"  {label:<7} {escaped(n):<10} {s['dtype']} {tuple(s['shape'])}")
    lines.append("equations")
    for i, line in enumerate(facts["equations"].split("\n"), 1):
        if line.strip():
            lines.append(f"  {i:>3}  {escaped(line)}")
    lines += _render_tensors(facts) + _render_extras(meta)
    return lines


def _render_tensors(facts: dict[str, Any]) -> list[str]:
    head = f"tensors      {facts['tensor_count']}, {facts['tensor_bytes']:,} bytes"
    rows = [f"  {escaped(t['name']):<12} {t['dtype']:<8} {str(tuple(t['shape'])):<14} "
            f"{t['nbytes']:>12,} B  sha256 {t['sha256'][:12]}…"
            for t in facts.get("tensors", [])]
    return [head, *rows]


def _render_extras(meta: dict[str, Any]) -> list[str]:
    lines = []
    if meta.get("codecs"):
        lines.append("codecs")
        for target, codec in meta["codecs"].items():
            shown = "  ".join(f"{k}: {_listing(k, v)} ({len(v)})"
                              for k, v in codec.items() if k != "id")
            lines.append(f"  {escaped(target):<10} {escaped(codec['id'])}  {shown}".rstrip())
    if meta.get("sampling"):
        lines.append(f"{'sampling':<12} {_pairs(meta['sampling'])}")
    prov = meta.get("provenance", {})
    if prov:
        lines.append("provenance")
        for key, value in prov.items():
            text = _pairs(value) if isinstance(value, dict) else _scalar(value)
            lines.append(f"  {escaped(key):<16} {text}")
    if meta.get("extra"):
        lines.append("extra")
        lines += [f"  {escaped(k)} = {escaped(v)}" for k, v in meta["extra"].items()]
    return lines
