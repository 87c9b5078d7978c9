"""ONNX LSTM, GRU and RNN nodes → the recurrence written out as time-indexed equations.

ONNX stacks the gates in its own orders (LSTM ``i o f c``, GRU ``z r h``) along the rows of
``W``, ``R`` and ``B`` (``B`` = input biases then recurrent biases); the converter slices them
into one named matrix per gate. GRU follows ONNX exactly: ``hₜ = (1 − zₜ) ⊙ ĥₜ + zₜ ⊙ hₜ₋₁``,
and with ``linear_before_reset`` the reset gate multiplies ``U_h hₜ₋₁ + b_hh``. ``Y`` is the
hidden state at every step, ``Y_h``/``Y_c`` the state after the last step (nnre's final state).
The reverse direction is the same cell over backward state (``h'ₜ₊₁`` where the forward one
reads ``hₜ₋₁``, formats/equations.md §4), its names primed (``h'``, ``W'_i``); a
bidirectional node is both, ``Y``'s direction axis holding ``[hₜ; h'ₜ]`` and ``Y_h`` the
forward state after the last step and the reverse one at the first. Default layout, no
clipping and no sequence lengths. PyTorch's ``batch_first`` is not the node's ``layout`` but
Transposes around it, read in :mod:`nndk.onnx.shapes` (the imported model is time-major).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nndk.onnx import expr as ex
from nndk.onnx.graph import Importer
from nndk.onnx.ops import operand
from nndk.onnx.values import (
    Const,
    Dyn,
    Final,
    Finals,
    InitState,
    SeqY,
    Unsupported,
    Value,
    Zeros,
)
from nnre.ops import BY_ONNX

GATES = {"LSTM": "iofc", "GRU": "zrh", "RNN": "h"}
DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"],
                       "RNN": ["Tanh"]}
#: The activations ONNX allows in LSTM/GRU/RNN (its spec's list; runtimes match them
#: ignoring case).
SPEC_ACTIVATIONS = ("Relu", "Tanh", "Sigmoid", "Affine", "LeakyRelu", "ThresholdedRelu",
                    "ScaledTanh", "HardSigmoid", "Elu", "Softsign", "Softplus")
#: Those that are functions of ours, by their ONNX names.
ACTIVATIONS = {t: op.spellings[0] for t, op in BY_ONNX.items()
               if op.spellings and not op.vector and t in SPEC_ACTIVATIONS}


class Cell:
    """One direction of a recurrent node being written out: its weights by gate, names, and
    equations. The reverse direction (``d`` = 1 of a bidirectional node, or a reverse one)
    reads its state one step later and primes its names."""

    def __init__(self, imp: Importer, node: Any, args: list[Value | None], at: dict[str, Any],
                 d: int, way: str, acts: list[str]) -> None:
        self.imp, self.op, self.way = imp, node.op_type, way
        w, r = (np.asarray(a.value) for a in args[1:3])  # type: ignore[union-attr]
        self.hidden = int(at.get("hidden_size") or r.shape[-1])
        self.w, self.r = w[d], r[d]
        b = args[3] if len(args) > 3 and args[3] is not None else None
        zeros = np.zeros(2 * len(GATES[self.op]) * self.hidden)
        self.b = np.asarray(b.value)[d] if isinstance(b, Const) else zeros
        self.suffix = "" if imp.recurrent_count == 1 else str(imp.recurrent_count)
        self.acts = acts
        self.linear_before_reset = bool(at.get("linear_before_reset", 0))
        self.x = operand(imp, args[0])  # type: ignore[arg-type]
        self.step = -1 if way == "forward" else 1  # where the state is read: ₜ₋₁ or ₜ₊₁

    def rows(self, arr: np.ndarray, gate: str, offset: int = 0) -> np.ndarray:
        k = GATES[self.op].index(gate) + offset
        return arr[k * self.hidden:(k + 1) * self.hidden]

    def primed(self, stem: str) -> str:
        """``h`` → ``h'``, ``W_i`` → ``W'_i`` in the reverse direction."""
        if self.way == "forward":
            return stem
        base, sep, sub = stem.partition("_")
        return f"{base}'{sep}{sub}"

    def name(self, stem: str) -> str:
        stem = self.primed(stem)
        return self.imp.names.prefer(stem + self.suffix, stem, subscript=False)

    def param(self, stem: str, value: np.ndarray) -> ex.Name:
        stem = self.primed(stem)
        text = stem + self.suffix
        return ex.Name(self.imp.weight(value, stem, prefer=text))

    def affine(self, gate: str, h_prev: ex.Expr, bias: bool = True) -> ex.Expr:
        """``W_g xₜ + U_g hₜ₋₁ + b_g`` (the bias left out when it is zero)."""
        out: ex.Expr = ex.Bin("+", ex.Bin("·", self.param(f"W_{gate}", self.rows(self.w, gate)),
                                          self.x),
                              ex.Bin("·", self.param(f"U_{gate}", self.rows(self.r, gate)),
                                     h_prev))
        n = len(GATES[self.op])
        b = self.rows(self.b, gate) + (self.rows(self.b, gate, n) if bias else 0)
        return ex.add(out, self.param(f"b_{gate}", b)) if np.any(b != 0) else out

    def define(self, stem: str, value: ex.Expr) -> ex.Name:
        target = ex.Name(self.name(stem), 0)
        self.imp.equations.append((target, value))
        return target


def convert_recurrent(imp: Importer, node: Any, args: list[Value | None], at: dict[str, Any]
                      ) -> list[Value]:
    _refuse(imp, node, args, at)
    ways = WAYS[_direction(at)]
    acts = _activations(node.op_type, at.get("activations"), len(ways))
    imp.recurrent_count += 1
    hs: list[ex.Name] = []
    finals: dict[str, list[str]] = {"h": [], "c": []}
    for d, way in enumerate(ways):
        cell = Cell(imp, node, args, at, d, way, acts[d])
        state = {"h": ex.Name(cell.name("h"), 0)}
        if cell.op == "LSTM":
            state["c"] = ex.Name(cell.name("c"), 0)
        prev = {k: ex.Name(v.text, cell.step) for k, v in state.items()}
        {"LSTM": _lstm, "GRU": _gru, "RNN": _rnn}[cell.op](cell, state, prev, args, d)
        hs.append(state["h"])
        for key, value in state.items():
            finals[key].append(ex.canonical_name(value.text))
            imp.states[finals[key][-1]] = value
            if cell.step > 0:
                imp.backward.add(finals[key][-1])
    for i, key in ((5, "h"), (6, "c")):
        _initial(imp, args[i] if len(args) > i else None, finals[key])
    hidden = cell.hidden
    outs: list[Value] = [SeqY(tuple(hs), hidden)]
    for key in ("h", "c") if node.op_type == "LSTM" else ("h",):
        names = finals[key]
        outs.append(Final(names[0], hidden) if len(names) == 1 else Finals(tuple(names), hidden))
    return outs


def _lstm(cell: Cell, state: dict[str, ex.Name], prev: dict[str, ex.Name],
          args: list[Value | None], d: int) -> None:
    f_act, g_act, h_act = cell.acts
    peep = args[7] if len(args) > 7 else None
    p = np.asarray(peep.value)[d] if isinstance(peep, Const) else np.zeros(3 * cell.hidden)

    def gate(g: str, c: ex.Name) -> ex.Expr:
        pre = cell.affine(g, prev["h"])
        weights = p["iof".index(g) * cell.hidden:("iof".index(g) + 1) * cell.hidden]
        if np.any(weights != 0):
            pre = ex.add(pre, ex.Bin("⊙", cell.param(f"p_{g}", weights), c))
        return ex.Call(f_act, pre)

    i = cell.define("i", gate("i", prev["c"]))
    f = cell.define("f", gate("f", prev["c"]))
    cand = cell.define("c̃", ex.Call(g_act, cell.affine("c", prev["h"])))
    cell.imp.equations.append((state["c"], ex.add(ex.Bin("⊙", f, prev["c"]),
                                                  ex.Bin("⊙", i, cand))))
    o = cell.define("o", gate("o", state["c"]))
    cell.imp.equations.append((state["h"], ex.Bin("⊙", o, ex.Call(h_act, state["c"]))))


def _gru(cell: Cell, state: dict[str, ex.Name], prev: dict[str, ex.Name],
         args: list[Value | None], d: int) -> None:
    f_act, g_act = cell.acts
    z = cell.define("z", ex.Call(f_act, cell.affine("z", prev["h"])))
    r = cell.define("r", ex.Call(f_act, cell.affine("r", prev["h"])))
    if cell.linear_before_reset:
        inner: ex.Expr = ex.Bin("·", cell.param("U_h", cell.rows(cell.r, "h")), prev["h"])
        rb = cell.rows(cell.b, "h", 3)
        if np.any(rb != 0):
            inner = ex.add(inner, cell.param("b_hh", rb))
        pre: ex.Expr = ex.Bin("+", ex.Bin("·", cell.param("W_h", cell.rows(cell.w, "h")), cell.x),
                     ex.Bin("⊙", r, inner))
        wb = cell.rows(cell.b, "h")
        pre = ex.add(pre, cell.param("b_h", wb)) if np.any(wb != 0) else pre
    else:
        pre = cell.affine("h", ex.Bin("⊙", r, prev["h"]))
    cand = cell.define("ĥ", ex.Call(g_act, pre))
    keep = ex.Bin("⊙", ex.sub(cell.imp.num(1.0), z), cand)
    cell.imp.equations.append((state["h"], ex.add(keep, ex.Bin("⊙", z, prev["h"]))))


def _rnn(cell: Cell, state: dict[str, ex.Name], prev: dict[str, ex.Name],
         args: list[Value | None], d: int) -> None:
    cell.imp.equations.append((state["h"], ex.Call(cell.acts[0], cell.affine("h", prev["h"]))))


def _activations(op: str, given: list[str] | None, ways: int) -> list[list[str]]:
    """The functions of the gates of each direction, from the attribute's ONNX names (the
    forward direction's first; default: ONNX's own)."""
    names = list(given or DEFAULT_ACTIVATIONS[op] * ways)
    count = len(DEFAULT_ACTIVATIONS[op])
    if len(names) != count * ways:
        which = "one direction takes" if ways == 1 else "two directions take"
        raise Unsupported(f"{op} with {len(names)} activations ({which} {count * ways})")
    by_lower = {k.lower(): k for k in ACTIVATIONS}
    unknown = [a for a in names if str(a).lower() not in by_lower]
    if unknown:
        raise Unsupported(f"{op} activation {unknown[0]} (the equations have "
                          + ", ".join(ACTIVATIONS) + ")")
    mapped = [ACTIVATIONS[by_lower[str(a).lower()]] for a in names]
    return [mapped[i * count:(i + 1) * count] for i in range(ways)]


def _initial(imp: Importer, value: Value | None, names: list[str]) -> None:
    """An initial state: zeros (a constant, or a fill shaped by the batch), or a graph input
    that becomes the model's state (both directions' with two)."""
    if value is None or not names:
        return
    if isinstance(value, Const):
        if np.any(np.asarray(value.value) != 0):
            raise Unsupported("a recurrent op with a nonzero constant initial state")
        return
    if isinstance(value, Zeros):  # zeros shaped by the batch size: the default state
        return
    if not isinstance(value, InitState):
        raise Unsupported("a recurrent op whose initial state is computed")
    imp.inputs[value.onnx_name] = (names[0], "state") if len(names) == 1 else \
        (",".join(names), "states")


def _full_length(imp: Importer, lens: Value) -> bool:
    """sequence_lens that says every sequence runs the whole length changes nothing."""
    steps = imp.lead_sizes[0] if imp.lead_sizes else None
    return isinstance(lens, Const) and steps is not None and bool(
        np.all(np.asarray(lens.value) == steps))


#: The directions of each ``direction`` attribute, in ONNX's order along Y's direction axis.
WAYS = {"forward": ("forward",), "reverse": ("reverse",),
        "bidirectional": ("forward", "reverse")}


def _direction(at: dict[str, Any]) -> str:
    d = at.get("direction", "forward")
    return d.decode() if isinstance(d, bytes) else str(d)


def _refuse(imp: Importer, node: Any, args: list[Value | None], at: dict[str, Any]) -> None:
    """Everything the equations do not express is refused here, by name."""
    op = node.op_type
    checks = [
        (imp.lead == 2, "mixed with a graph of single steps"),
        (isinstance(args[0], Dyn) and len(args[0].shape) == 1,
         "X must be a per-example sequence [T, N, input]"),
        (all(isinstance(a, Const) for a in args[1:3]), "W and R must be constant"),
        (len(args) <= 3 or args[3] is None or isinstance(args[3], Const),
         "B must be constant"),
        (len(args) <= 4 or args[4] is None or _full_length(imp, args[4]),
         "sequence_lens shorter than the sequence"),
        (_direction(at) in WAYS, f"direction {_direction(at)}"),
        (not at.get("layout", 0), "layout 1 (batch first)"),
        ("clip" not in at, "clip"),
        (not at.get("input_forget", 0), "input_forget"),
        ("activation_alpha" not in at and "activation_beta" not in at,
         "activation_alpha/beta"),
        (len(args) <= 7 or args[7] is None or isinstance(args[7], Const),
         "P must be constant"),
    ]
    for ok, what in checks:
        if not ok:
            raise Unsupported(f"{op}: {what}")
