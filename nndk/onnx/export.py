"""Export a bundle's compiled Program as ONNX: one time step, or the whole sequence by Scan.

Export is one short loop over the Program's instruction lists: each op becomes ONNX nodes as
its definition says (``Op.onnx`` in ``nnre.ops``). Parameters become initializers under their
canonical names and the prologue becomes nodes over them (transposes, reshapes), so the graph
shows the weights as they were packed. The step graph takes the inputs and the previous state
(``h_prev``) and gives the outputs and the next state (``h_next``); ``--sequence`` wraps the
same step in a Scan over time. A model with backward state has no step of its own: its
``--sequence`` export is one Scan per time pass, a backward one scanning in reverse. The
unoptimized Program is used: one node per equation operation reads best.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nndk import __version__
from nndk.onnx.common import (
    DEFAULT_EXPORT_OPSET,
    META_BUNDLE,
    META_STATE,
    ONNX_DTYPE,
    OnnxError,
    check_export_opset,
    require_onnx,
)
from nnre.compiler import Compiler
from nnre.equations import check
from nnre.lowering import Lowering
from nnre.model import Model
from nnre.ops import OPS
from nnre.program import Instr, Program, backward, pass_index
from nnre.program import state_key as api_key


def state_key(name: str, lag: int) -> str:
    """The Model's name for a state (``h``, or ``h@t-2`` for an older step)."""
    return name if lag == 1 else f"{name}@t-{lag}"


def state_names(key: str) -> tuple[str, str]:
    """ONNX names of a state before and after a step."""
    return f"{key}_prev", f"{key}_next"


@dataclass
class Emitter:
    """Collects the nodes and initializers of one graph; names every slot once."""

    prog: Program
    opset: int = DEFAULT_EXPORT_OPSET  # rules use newer ONNX ops (Gelu) only where it has them
    prefix: str = ""  # for per-example values: the Scan body's names differ from the outer's
    nodes: list[Any] = field(default_factory=list)
    inits: list[Any] = field(default_factory=list)
    used: set[str] = field(default_factory=set)
    names: dict[int, str] = field(default_factory=dict)
    labels: dict[int, str] = field(default_factory=dict)  # slot → equation it computes

    def fresh(self, hint: str) -> str:
        name, n = hint, 1
        while name in self.used:
            n += 1
            name = f"{hint}#{n}"
        self.used.add(name)
        return name

    def name(self, index: int) -> str:
        if index not in self.names:
            slot = self.prog.slots[index]
            per_example = slot.stage != "prologue"
            base = slot.name if slot.kind in ("input", "param") else \
                self.labels.get(index, f"%{index}")
            if slot.kind == "const" or index in self.prog.literals:
                base = f"const{index}"
            self.names[index] = self.fresh((self.prefix if per_example else "") + base)
        return self.names[index]

    def const(self, value: np.ndarray, hint: str) -> str:
        onnx = require_onnx()
        name = self.fresh(self.prefix + hint)
        self.inits.append(onnx.numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> None:
        onnx = require_onnx()
        self.nodes.append(onnx.helper.make_node(op, inputs, [output], **attrs))

    @property
    def dtype(self) -> str:
        return self.prog.dtype

    @property
    def float_type(self) -> int:
        """The ONNX element type of the program's values (for a Cast back from bool)."""
        return int(ONNX_DTYPE[self.prog.dtype])

    def per_example(self, index: int) -> bool:
        return self.prog.slots[index].stage != "prologue"

    def shape(self, index: int) -> tuple[int, ...]:
        """A slot's shape as ONNX broadcasts it: rows lead per-example values (as 1)."""
        shape = self.prog.slots[index].shape
        return (1, *shape) if self.per_example(index) else shape

    def emit(self, ins: Instr) -> None:
        """The op's ONNX nodes (``Op.onnx``): one node of that type with the instruction's
        attributes, or the op's own rule."""
        rule = OPS[ins.op].onnx
        args, out = [self.name(a) for a in ins.args], self.name(ins.out)
        if rule is None:
            raise OnnxError(f"op '{ins.op}' has no ONNX export rule")
        if isinstance(rule, str):
            self.node(rule, args, out, **dict(ins.attrs))
        else:
            rule(self, ins, args, out)


def export_model(model: Model, *, opset: int = DEFAULT_EXPORT_OPSET, sequence: bool = False,
                 name: str = "nnre", metadata: dict[str, str] | None = None) -> Any:
    """An onnx.ModelProto computing what ``model.step`` (or ``model.run``) computes."""
    onnx = require_onnx()
    check_export_opset(opset)
    if model.program.back_out and not sequence:
        name_ = next(iter(model.program.back_out))
        raise OnnxError(f"'{name_}' is backward state (the equations read it at a later step): "
                        "the model has no step of its own to export; export the whole "
                        "sequence with --sequence")
    weights = model.weights()
    prog, labels = _compile(model, sequence)
    outer = Emitter(prog, opset=opset)
    outer.labels = labels
    for name_, index in prog.params.items():
        _param(outer, index, weights[name_])
    for index, value in prog.literals.items():
        outer.inits.append(onnx.numpy_helper.from_array(value, outer.name(index)))
    for ins in prog.prologue:
        outer.emit(ins)
    # a transformer's sequence form has no loop: every step at once, x and y [N, T, …]
    build = _passes_graph if prog.back_out else \
        _sequence_graph if sequence and prog.state_in else _step_graph
    graph = build(outer, name, ONNX_DTYPE[prog.dtype])
    graph.doc_string = model.equations
    props = dict(metadata or {})
    props[META_STATE] = json.dumps({key: list(state_names(key)) for key in model.state},
                                   ensure_ascii=False)
    proto = onnx.helper.make_model(graph, producer_name="nndk", producer_version=__version__,
                                   opset_imports=[onnx.helper.make_opsetid("", opset)])
    proto.ir_version = onnx.helper.find_min_ir_version_for([proto.opset_import[0]])
    onnx.helper.set_model_props(proto, props)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise OnnxError(f"the exported graph does not pass onnx.checker: {err}") from err
    return proto


def _compile(model: Model, sequence: bool = False) -> tuple[Program, dict[int, str]]:
    """The unoptimized Program, and the slot that holds each equation's value; for
    ``sequence`` and equations whose only state grows a step at a time (attention), their
    sequence form (``nnre.compiler.compile_sequence``)."""
    weights = model.weights()
    checked = check(model.equations, model.dims, {k: v.shape for k, v in weights.items()})
    labels: dict[int, str] = {}
    if checked.sympy is None:  # tensor equations
        roles, steps = checked.roles, 0
        if sequence and roles.appends and set(roles.state) <= set(roles.appends):
            steps = checked.shapes.context or 0  # type: ignore[union-attr]
        lowering = Lowering(checked.module, checked.roles, checked.shapes,  # type: ignore
                            model.dtype, steps)
        prog = lowering.lower()
        for name in checked.roles.order:
            index = lowering.names[name].slot
            if prog.slots[index].kind == "temp":
                labels.setdefault(index, name)
        return prog, labels
    compiler = Compiler(checked.sympy, checked.roles, model.dtype)
    prog = compiler.compile()
    for name in checked.roles.order:
        index = compiler.memo[checked.sympy.symbols[name]]
        if prog.slots[index].kind == "temp":
            labels.setdefault(index, name)
    return prog, labels


def _param(e: Emitter, index: int, value: np.ndarray) -> None:
    """An initializer under the weight's own name and shape, reshaped to the slot if needed."""
    onnx = require_onnx()
    slot = e.prog.slots[index]
    value = np.ascontiguousarray(value)
    if tuple(value.shape) == tuple(slot.shape):
        e.inits.append(onnx.numpy_helper.from_array(value, e.name(index)))
        return
    stored = e.fresh(slot.name)
    e.inits.append(onnx.numpy_helper.from_array(value, stored))
    shape = e.const(np.array(slot.shape, np.int64), "shape")
    e.node("Reshape", [stored, shape], e.name(index))


def _per_example(e: Emitter) -> list[Instr]:
    return [*e.prog.pre, *e.prog.loop, *e.prog.post]


def _step_io(e: Emitter, elem: int, lead: list[str | int]) -> tuple[list[Any], list[Any]]:
    """Emit one step's nodes into ``e``; returns (state-in + input infos, state-out + outputs).

    States come first on both sides (the order Scan wants); names follow ``state_names``.
    """
    onnx = require_onnx()
    prog = e.prog

    def info(name: str, index: int) -> Any:
        return onnx.helper.make_tensor_value_info(name, elem, [*lead, *prog.slots[index].shape])

    ins: list[Any] = []
    for (name, lag), index in prog.state_in.items():
        e.names[index] = e.fresh(e.prefix + state_names(state_key(name, lag))[0])
        ins.append(info(e.names[index], index))
    ins += [info(e.name(index), index) for index in prog.inputs.values()]
    direct = {}
    for name, index in prog.outputs.items():
        if prog.slots[index].kind == "temp" and index not in direct:
            direct[index] = e.names[index] = e.fresh(e.prefix + name)
    for instr in _per_example(e):
        e.emit(instr)
    outs: list[Any] = []
    for (name, lag), index in prog.state_in.items():
        src = prog.state_out[name] if lag == 1 else prog.state_in[(name, lag - 1)]
        out = e.fresh(e.prefix + state_names(state_key(name, lag))[1])
        e.node("Identity", [e.name(src)], out)
        outs.append(info(out, index))
    for name, index in prog.outputs.items():
        if prog.slots[index].stage == "prologue":
            raise OnnxError(f"output '{name}' does not depend on any input or state; "
                            "an ONNX graph of a step cannot give it a batch axis")
        out = direct.pop(index) if index in direct else e.fresh(e.prefix + name)
        if out != e.name(index):
            e.node("Identity", [e.name(index)], out)
        outs.append(info(out, index))
    return ins, outs


def _step_graph(e: Emitter, name: str, elem: int) -> Any:
    onnx = require_onnx()
    ins, outs = _step_io(e, elem, ["N"])
    return onnx.helper.make_graph(e.nodes, name, ins, outs, e.inits)


def _sequence_graph(outer: Emitter, name: str, elem: int) -> Any:
    """The step as a Scan body over time: inputs (T, N, n), state (N, n) in and out."""
    onnx = require_onnx()
    body = Emitter(outer.prog, opset=outer.opset, prefix="step.", used=outer.used,
                   names=dict(outer.names), labels=outer.labels)
    body_in, body_out = _step_io(body, elem, ["N"])
    body_graph = onnx.helper.make_graph(body.nodes, "step", body_in, body_out, body.inits)
    states = len(outer.prog.state_in)

    def outer_info(vi: Any, seq: bool) -> Any:
        dims = [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
        return onnx.helper.make_tensor_value_info(vi.name[len("step."):], elem,
                                                  (["T"] if seq else []) + dims)

    ins = [outer_info(vi, i >= states) for i, vi in enumerate(body_in)]
    outs = [outer_info(vi, i >= states) for i, vi in enumerate(body_out)]
    outer.nodes.append(onnx.helper.make_node(
        "Scan", [vi.name for vi in ins], [vi.name for vi in outs], body=body_graph,
        num_scan_inputs=len(ins) - states))
    return onnx.helper.make_graph(outer.nodes, name, ins, outs, outer.inits)


def _passes_graph(outer: Emitter, name: str, elem: int) -> Any:
    """A program with backward state (``--sequence`` only): one Scan per time pass, in
    order, a backward pass scanning its inputs and writing its outputs in reverse
    (``scan_*_directions``), so every sequence stays in time order. Each body recomputes the
    per-step values of ``pre`` it reads; what a later pass or an output reads goes out as a
    sequence [T, N, …] and comes into the later Scans as a scan input. The graph takes the
    inputs [T, N, …] and each state (a backward one: after the last step) and gives the
    outputs and each state at the end (a backward one: at the first step)."""
    onnx = require_onnx()
    prog = outer.prog
    passes = prog.time_passes()
    bodies = {stage: _pass_body(prog, stage, stage == passes[0]) for stage in passes}
    wanted = {a for instrs in bodies.values() for ins in instrs for a in ins.args
              if pass_index(prog.slots[a].stage)}  # pre values are recomputed where read
    wanted |= {i for i in prog.outputs.values() if prog.slots[i].stage != "prologue"}
    seqs: dict[int, str] = {}  # slot → its sequence in the outer graph
    graph_in: list[Any] = []
    graph_out: list[Any] = []
    for index in prog.inputs.values():
        seqs[index] = outer.name(index)
        graph_in.append(_info(outer.name(index), elem, ["T", "N"], prog.slots[index].shape))
    for stage in passes:
        body = Emitter(prog, opset=outer.opset, prefix=f"{stage}.", used=outer.used,
                       names={i: n for i, n in outer.names.items()
                              if prog.slots[i].stage == "prologue"}, labels=outer.labels)
        keys = prog.back_in if backward(stage) else prog.state_in
        states = {k: i for k, i in keys.items() if prog.slots[i].stage == stage}
        sign = -1 if backward(stage) else 1
        body_in, node_in, body_out, node_out = [], [], [], []
        for (state, lag), index in states.items():
            key = api_key(state, sign * lag)
            body.names[index] = body.fresh(f"{stage}.{key}_prev")
            body_in.append(_info(body.names[index], elem, ["N"], prog.slots[index].shape))
            node_in.append(state_names(key)[0])
            graph_in.append(_info(node_in[-1], elem, ["N"], prog.slots[index].shape))
        made = {ins.out for ins in bodies[stage]} | set(states.values())
        read = sorted({a for ins in bodies[stage] for a in ins.args
                       if a in seqs and a not in made})
        if not read:
            raise OnnxError(f"the time pass '{stage}' reads nothing at each step; a Scan "
                            "needs a sequence to scan")
        for index in read:
            body.names[index] = body.fresh(f"{stage}.in.{prog.slots[index].name}")
            body_in.append(_info(body.names[index], elem, ["N"], prog.slots[index].shape))
            node_in.append(seqs[index])
        for instr in bodies[stage]:
            body.emit(instr)
        out_names = {**(prog.back_out if backward(stage) else prog.state_out)}
        for (state, lag), index in states.items():
            src = out_names[state] if lag == 1 else keys[(state, lag - 1)]
            out = body.fresh(f"{stage}.{api_key(state, sign * lag)}_next")
            body.node("Identity", [body.name(src)], out)
            body_out.append(_info(out, elem, ["N"], prog.slots[index].shape))
            node_out.append(state_names(api_key(state, sign * lag))[1])
            graph_out.append(_info(node_out[-1], elem, ["N"], prog.slots[index].shape))
        for index in sorted(i for i in wanted if i in made and i not in seqs):
            out = body.fresh(f"{stage}.out.{prog.slots[index].name}")
            body.node("Identity", [body.name(index)], out)
            body_out.append(_info(out, elem, ["N"], prog.slots[index].shape))
            seqs[index] = outer.fresh(f"seq.{prog.slots[index].name}")
            node_out.append(seqs[index])
        scanned = len(node_in) - len(states)
        flip = [1 if backward(stage) else 0]
        outer.nodes.append(onnx.helper.make_node(
            "Scan", node_in, node_out, num_scan_inputs=scanned,
            scan_input_directions=flip * scanned,
            scan_output_directions=flip * (len(node_out) - len(states)),
            body=onnx.helper.make_graph(body.nodes, stage, body_in, body_out, body.inits)))
    for out_name, index in prog.outputs.items():
        if prog.slots[index].stage == "prologue":
            raise OnnxError(f"output '{out_name}' does not depend on any input or state; "
                            "an ONNX graph cannot give it a batch axis")
        final = outer.fresh(out_name)
        outer.node("Identity", [seqs[index]], final)
        graph_out.append(_info(final, elem, ["T", "N"], prog.slots[index].shape))
    return onnx.helper.make_graph(outer.nodes, name, graph_in, graph_out, outer.inits)


def _pass_body(prog: Program, stage: str, first: bool) -> list[Instr]:
    """A pass's instructions after the pre instructions they need (recomputed per step);
    the first pass also computes outputs that read no state."""
    instrs = prog.stage_list(stage)
    needed = {a for ins in instrs for a in ins.args}
    if first:
        needed |= set(prog.outputs.values())
    pre = []
    for ins in reversed(prog.pre):
        if ins.out in needed:
            pre.append(ins)
            needed.update(ins.args)
    return [*pre[::-1], *instrs]


def _info(name: str, elem: int, lead: list[str | int], shape: tuple[int, ...]) -> Any:
    onnx = require_onnx()
    return onnx.helper.make_tensor_value_info(name, elem, [*lead, *shape])


def export_bundle(path: str, *, opset: int = DEFAULT_EXPORT_OPSET, sequence: bool = False
                  ) -> Any:
    """Load a .bundle and export it. Its name, version, id and the producer go to metadata,
    and its whole metadata map as JSON under ``nnre.bundle`` (vocabulary, sampling settings,
    provenance…), which ``nndk import`` checks with the bundle schema and restores."""
    from nnre.loader import load

    model = load(path)
    meta = model.metadata
    props = {"name": str(meta.get("name", "")), "version": str(meta.get("version", "")),
             "bundle_id": model.bundle_id or "", "producer": f"nndk {__version__}",
             META_BUNDLE: json.dumps(meta, ensure_ascii=False, sort_keys=True,
                                     allow_nan=False)}
    if meta.get("producer"):
        props["bundle_producer"] = str(meta["producer"])
    return export_model(model, opset=opset, sequence=sequence, name=props["name"] or "nnre",
                        metadata=props)


def save(proto: Any, path: str) -> None:
    """Write an ONNX model to ``path`` atomically (a missing folder is an error naming it)."""
    from nnre.files import atomic_write

    data = proto.SerializeToString()
    atomic_write(path, lambda f: f.write(data))
