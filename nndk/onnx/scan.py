"""nndk's own ``--sequence`` export read back: its Scans over time become the step graph again.

``nndk export --sequence`` wraps the step graph (previous state and this step's inputs in,
outputs and next state out) in one Scan whose body names its values ``step.*``. The
equations are the step, so the import flattens such a model: the body's nodes join the
graph, its inputs and outputs take the outer names without the time axis, and the step
importer does the rest. Any other Scan is left alone (and refused by name).

A model with backward state is exported as one Scan per time pass (``back``, ``loop``,
``back2``, …), a backward one scanning its inputs and writing its outputs in reverse, so
every sequence between them stays in time order: the value at position t of a sequence is
the value at step t, whichever pass wrote it. Its bodies flatten the same way, all into one
step: a pass's state input is the state at the previous step of its pass (``hₜ₋₁`` forward,
``gₜ₊₁`` backward) and the sequences one pass writes and a later one reads are per-step
values. Only exactly the layout :func:`nndk.onnx.export._passes_graph` writes is read; a
graph of ours with Scans laid out otherwise is refused naming the Scan and what it lacks.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from nndk.onnx.common import META_STATE, OnnxError

PREFIX = "step."
#: The attributes a time pass's Scan has (no scan axes: time is always the first one).
PASS_ATTRS = {"body", "num_scan_inputs", "scan_input_directions", "scan_output_directions"}


@dataclass(frozen=True)
class Unscanned:
    """The step model, and the keys of its state that run backward (read as ``gₜ₊ₖ``)."""

    proto: Any
    backward: frozenset[str] = frozenset()


def unscan(proto: Any) -> Unscanned:
    """The step model inside one of our sequence exports, or ``proto`` itself."""
    from nndk.onnx.graph import state_meta

    graph = proto.graph
    scans = [n for n in graph.node if n.op_type == "Scan"]
    if not any(p.key == META_STATE for p in proto.metadata_props):
        if len(scans) > 1:
            first = next(i for i, n in enumerate(graph.node) if n.op_type == "Scan")
            raise OnnxError(f"{_scan_label(scans[0], first)} is one of {len(scans)} Scans: nndk "
                            "reads several Scans back only from its own --sequence export of "
                            "a model with backward state (one Scan per time pass), whose "
                            f"metadata '{META_STATE}' names the state each pass carries; this "
                            "graph has no such metadata")
        return Unscanned(proto)  # one Scan of another's: refused by name, as any op
    if not scans:
        return Unscanned(proto)
    if len(scans) == 1 and _one_step_scan(scans[0]):
        return Unscanned(_single(proto, scans[0]))
    return _passes(proto, scans, state_meta(proto))


def _body(scan: Any) -> Any:
    import onnx

    return onnx.helper.get_attribute_value(next(a for a in scan.attribute if a.name == "body"))


def _one_step_scan(scan: Any) -> bool:
    """The single forward Scan of ``--sequence``: its body's names are the outer ones with
    ``step.`` before them."""
    if any(a.name == "scan_input_directions" and any(a.ints) for a in scan.attribute) or \
            not any(a.name == "body" for a in scan.attribute):
        return False
    body = _body(scan)
    inner = [vi.name for vi in (*body.input, *body.output)]
    outer = [*scan.input, *scan.output]
    return len(inner) == len(outer) and all(name == PREFIX + out
                                            for name, out in zip(inner, outer, strict=True))


def _single(proto: Any, scan: Any) -> Any:
    body = _body(scan)
    states = len(scan.input) - next(a.i for a in scan.attribute if a.name == "num_scan_inputs")
    inner = [vi.name for vi in (*body.input, *body.output)]
    outer = [*scan.input, *scan.output]
    flat = _flatten(proto, {id(scan): (body, dict(zip(inner, outer, strict=True)))})
    for i, vi in enumerate([*flat.graph.input, *flat.graph.output]):
        timed = (i >= states) if i < len(flat.graph.input) else \
            (i - len(flat.graph.input) >= states)
        if timed:  # drop the leading time axis: one step at a time
            del vi.type.tensor_type.shape.dim[0]
    return flat


def _flatten(proto: Any, bodies: dict[int, tuple[Any, dict[str, str]]],
             unread: frozenset[str] = frozenset()) -> Any:
    """``proto`` with each Scan in ``bodies`` (by ``id``) replaced by its body's nodes, in
    place, their inputs and outputs renamed to the outer values they stand for; a body's
    Identity giving a sequence in ``unread`` (which nothing reads) is left out."""
    from onnx.numpy_helper import to_array

    flat = copy.deepcopy(proto)
    del flat.graph.node[:]
    same: dict[str, str] = {}  # a body's value → the equal one an earlier body computes
    consts: dict[tuple[Any, ...], str] = {}
    made: dict[tuple[Any, ...], list[str]] = {}
    for node in proto.graph.node:
        if id(node) not in bodies:
            flat.graph.node.append(copy.deepcopy(node))
            continue
        body, rename = bodies[id(node)]
        for init in body.initializer:
            value = (init.data_type, tuple(init.dims), to_array(init).tobytes())
            if value in consts:
                same[init.name] = consts[value]
            else:
                consts[value] = init.name
                flat.graph.initializer.append(init)
        inside = {x for n in body.node for x in n.input}
        outer = set(rename.values())
        for inner in body.node:
            if inner.op_type == "Identity" and rename.get(inner.output[0]) in unread and \
                    inner.output[0] not in inside:
                continue
            moved = copy.deepcopy(inner)
            moved.input[:] = [same.get(x, x) for x in (rename.get(x, x) for x in inner.input)]
            moved.output[:] = [rename.get(x, x) for x in inner.output]
            key = (moved.domain, moved.op_type, tuple(moved.input),
                   tuple(a.SerializeToString() for a in moved.attribute))
            if _pure(moved) and not outer & set(moved.output):
                if key in made:  # the same value again (a pass recomputes what it reads)
                    same.update(zip(moved.output, made[key], strict=True))
                    continue
                made[key] = list(moved.output)
            flat.graph.node.append(moved)
    return flat


def _pure(node: Any) -> bool:
    """The node gives the same outputs for the same inputs (no randomness, no subgraph)."""
    return not node.op_type.startswith("Random") and \
        node.op_type not in ("Dropout", "Bernoulli", "Multinomial") and \
        all(a.type not in (5, 10) for a in node.attribute)  # GRAPH, GRAPHS


def _scan_label(scan: Any, index: int) -> str:
    """As the importer names a node: its name, else its place and first output."""
    return f"Scan node '{scan.name or f'#{index} → ' + (scan.output[0] if scan.output else '')}'"


def _passes(proto: Any, scans: list[Any], states: dict[str, tuple[str, str]]) -> Unscanned:
    """Our export of a model with backward state: the Scans of its time passes, one step."""
    graph = proto.graph
    by_prev = {prev: (key, nxt) for key, (prev, nxt) in states.items()}
    graph_inputs = {vi.name for vi in graph.input}
    sequences = graph_inputs - set(by_prev)  # values laid out [T, N, …]: inputs, then written
    backward: set[str] = set()
    seen: set[str] = set()
    bodies: dict[int, tuple[Any, dict[str, str]]] = {}
    last = max(i for i, n in enumerate(graph.node) if n.op_type == "Scan")
    for index, node in enumerate(graph.node):
        if node.op_type != "Scan":
            read = [x for x in node.input if x in sequences]
            if read and (node.op_type != "Identity" or index < last):
                label = node.name or f"#{index} → {node.output[0] if node.output else ''}"
                raise OnnxError(
                    f"{node.op_type} node '{label}' reads the sequence "
                    f"'{read[0]}' outside a Scan: nndk's --sequence export of a model with "
                    "backward state only hands its time passes' sequences on to the outputs; "
                    "this graph is not one, so it is not read back")
            if read:
                sequences.update(node.output)
            continue
        body, rename, back = _pass(node, index, by_prev, sequences, seen)
        bodies[id(node)] = (body, rename)
        if back:
            backward.update(by_prev[x][0] for x in node.input if x in by_prev)
    for vi in graph.output:
        if vi.name not in sequences and vi.name not in {n for _, n in by_prev.values()}:
            raise OnnxError(f"output '{vi.name}' is neither a sequence a time pass writes nor "
                            "a state's value at the end: this graph is not nndk's --sequence "
                            "export of a model with backward state, so it is not read back")
    missing = [prev for prev in by_prev if prev not in seen]
    if missing:
        raise OnnxError(f"state input '{missing[0]}' is not the state of any Scan (a time pass): "
                        "this graph is not nndk's --sequence export of a model with backward "
                        "state, so it is not read back")
    wanted = {x for n in graph.node for x in n.input} | {vi.name for vi in graph.output}
    written = {x for n in graph.node if n.op_type == "Scan" for x in n.output}
    flat = _flatten(proto, bodies, frozenset(written - wanted))  # the export writes extras
    finals = {n for _, n in by_prev.values()}
    for vi in [*flat.graph.input, *flat.graph.output]:
        if vi.name not in by_prev and vi.name not in finals:
            dims = vi.type.tensor_type.shape.dim
            if len(dims) < 2:
                raise OnnxError(f"'{vi.name}' is a sequence with no time and batch axes "
                                "[T, N, …]: this graph is not nndk's --sequence export, so it "
                                "is not read back")
            del dims[0]  # one step at a time
    return Unscanned(flat, frozenset(backward))


def _pass(scan: Any, index: int, by_prev: dict[str, tuple[str, str]], sequences: set[str],
          seen: set[str]) -> tuple[Any, dict[str, str], bool]:
    """One time pass's Scan checked against the export's layout: its body, the outer names
    of the body's inputs and outputs, and whether it runs backward. ``sequences`` gains the
    sequences it writes; ``seen`` the state inputs it carries."""
    label = _scan_label(scan, index)

    def refuse(what: str) -> OnnxError:
        return OnnxError(f"{label} {what}: nndk reads back only its own --sequence export "
                         "(one Scan per time pass, a backward pass scanning in reverse), so "
                         "this graph is not read back")

    attrs = {a.name: a for a in scan.attribute}
    extra = sorted(set(attrs) - PASS_ATTRS)
    if extra:
        raise refuse(f"has the attribute '{extra[0]}' (a time pass scans along time, the "
                     "first axis)")
    if "body" not in attrs or "num_scan_inputs" not in attrs:
        raise refuse("has no body or no num_scan_inputs")
    body = _body(scan)
    scanned = attrs["num_scan_inputs"].i
    carried = len(scan.input) - scanned
    ways = {*attrs["scan_input_directions"].ints} if "scan_input_directions" in attrs else {0}
    ways |= {*attrs["scan_output_directions"].ints} if "scan_output_directions" in attrs else {0}
    if len(ways) != 1 or not ways <= {0, 1}:
        raise refuse("scans its sequences in different directions (a time pass runs all of "
                     "them one way)")
    back = ways == {1}
    stage = body.name
    if not stage or len(body.input) != len(scan.input) or \
            len(body.output) != len(scan.output) or not 0 < scanned <= len(scan.input):
        raise refuse("does not take and give what its body does")
    rename: dict[str, str] = {}
    for i, outer in enumerate(scan.input):
        inner = body.input[i].name
        if i < carried:
            if outer not in by_prev or outer in seen:
                raise refuse(f"carries '{outer}', which is not a state input of the model "
                             "(named in its metadata) or is carried by another Scan too")
            key, nxt = by_prev[outer]
            if ("@t-" if back else "@t+") in key:
                way = "backward" if back else "forward"
                raise refuse(f"runs {way} but carries the state '{key}', which runs the "
                             "other way")
            if inner != f"{stage}.{outer}":
                raise refuse(f"carries the state '{key}' into its body '{stage}' as "
                             f"'{inner}', not as '{stage}.{outer}'")
            if scan.output[i] != nxt or body.output[i].name != f"{stage}.{nxt}":
                raise refuse(f"does not give the state '{key}' back as '{nxt}' from its "
                             f"body's '{stage}.{nxt}'")
            seen.add(outer)
            rename[body.output[i].name] = nxt
        elif outer not in sequences or not inner.startswith(f"{stage}.in."):
            raise refuse(f"scans '{outer}', which is not an input sequence or one an "
                         "earlier time pass writes")
        rename[inner] = outer
    whole = next((x for n in body.node for x in n.input if x in sequences), None)
    if whole is not None:
        raise refuse(f"reads the whole sequence '{whole}' at every step (a time pass reads "
                     "one step of it, as a scanned input)")
    for i in range(carried, len(scan.output)):
        inner, outer = body.output[i].name, scan.output[i]
        if not inner.startswith(f"{stage}.out.") or outer in sequences:
            raise refuse(f"writes '{outer}' from '{inner}', not a sequence of its own")
        rename[inner] = outer
        sequences.add(outer)
    return body, rename, back
