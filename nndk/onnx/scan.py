"""nndk's own ``--sequence`` export read back: its Scan over time becomes the step graph again.

``nndk export --sequence`` wraps the step graph (previous state and this step's inputs in,
outputs and next state out) in one Scan whose body names its values ``step.*``. The
equations are the step, so the import flattens such a model: the body's nodes join the
graph, its inputs and outputs take the outer names without the time axis, and the step
importer does the rest. Any other Scan is left alone (and refused by name); the Scans of a
model with backward state (one per time pass) are refused as such.
"""

from __future__ import annotations

import copy
from typing import Any

from nndk.onnx.common import META_STATE, OnnxError

PREFIX = "step."


def unscan(proto: Any) -> Any:
    """The step model inside one of our sequence exports, or ``proto`` itself."""
    import onnx

    graph = proto.graph
    scans = [n for n in graph.node if n.op_type == "Scan"]
    ours = any(p.key == META_STATE for p in proto.metadata_props)
    if ours and any(a.name == "scan_input_directions" and any(a.ints)
                    for n in scans for a in n.attribute):
        raise OnnxError("an nndk --sequence export of a model with backward state (one Scan "
                        "per time pass, the backward ones reversed) is not read back: import "
                        "the bundle it was exported from instead")
    if len(scans) != 1 or not ours:
        return proto
    scan = scans[0]
    body = onnx.helper.get_attribute_value(next(a for a in scan.attribute if a.name == "body"))
    states = len(scan.input) - next(a.i for a in scan.attribute if a.name == "num_scan_inputs")
    inner = [vi.name for vi in (*body.input, *body.output)]
    outer = [*scan.input, *scan.output]
    if any(name != PREFIX + out for name, out in zip(inner, outer, strict=True)):
        return proto
    rename = dict(zip(inner, outer, strict=True))
    flat = copy.deepcopy(proto)
    del flat.graph.node[:]
    flat.graph.node.extend(n for n in graph.node if n is not scan)
    for node in body.node:
        moved = copy.deepcopy(node)
        moved.input[:] = [rename.get(x, x) for x in node.input]
        moved.output[:] = [rename.get(x, x) for x in node.output]
        flat.graph.node.append(moved)
    flat.graph.initializer.extend(body.initializer)
    for i, vi in enumerate([*flat.graph.input, *flat.graph.output]):
        timed = (i >= states) if i < len(flat.graph.input) else \
            (i - len(flat.graph.input) >= states)
        if timed:  # drop the leading time axis: one step at a time
            del vi.type.tensor_type.shape.dim[0]
    return flat
