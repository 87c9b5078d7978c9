"""What one primitive is: the ``Op`` record every consumer reads, and helpers to build one.

An ``Op`` carries everything the project knows about a primitive, so that adding one is one
block in one file: its spellings in equations, its SymPy form and its value on one number
(the parser and the compiler), its shape rule and NumPy kernel (the runtime), whether the
optimizer may fuse it, its vector-Jacobian product and what that reads (nndk's autodiff),
and its ONNX node (nndk's exporter and importer). The runtime never calls the training or
ONNX fields; they sit here, as plain NumPy and plain data, because a rule kept beside its
forward computation cannot drift from it (micrograd, JAX). No SymPy or ONNX is imported:
SymPy forms receive the module as an argument, ONNX rules receive nndk's emitter.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Shape = tuple[int, ...]
Array = np.ndarray
Call = Callable[[], Any]
#: (gradient of the output, output value, argument values, attrs, argument index)
#: → the contribution to that argument's gradient (before un-broadcasting).
Vjp = Callable[[Array, Array, list[Array], dict[str, Any], int], Array]
#: (argument index, g, out, args, dest) → ufunc calls that write the contribution into dest.
VjpCalls = Callable[[int, Array, Array, list[Array], Array], list[Call]]


@dataclass(frozen=True)
class Op:
    """One primitive. Fields are grouped by the consumer that reads them."""

    name: str  # the key in programs and in the compile cache
    # -- runtime ---------------------------------------------------------------------
    kernel: Callable[..., Any]  # (*args, out=, **attrs) → out; a view op: (*args, **attrs)
    shape: Callable[..., Shape]  # runtime shapes of the arguments (rows left out) → out's
    attrs: Mapping[str, type] = field(default_factory=dict)  # allowed attributes, typed
    view: bool = False  # returns a view of its first argument and writes nothing
    ufunc: Callable[..., Any] | None = None  # same as kernel, callable without a wrapper
    #: The kernel as bound ufunc calls over its ``out`` (scratch made once), for the
    #: per-step tapes: one Python frame less per call and no allocation per step.
    unfold: Callable[..., list[Call]] | None = None
    products: bool = False  # runs BLAS matrix products: on one thread unless told (threads)
    #: (args, out= a max pool's result, pool= its attrs, floor= 0 for a ReLU after the pool
    #: or None, **attrs) → bound calls of them all, for a result that pool alone reads
    #: (``nnre.vm``: conv, pool and ReLU in one pass), or None.
    pooled: Callable[..., list[Call] | None] | None = None
    #: Its result is fastest laid out with the rows last (conv, pooling): the VM allocates it
    #: so (``nnre.layout``); the kernel takes any memory order.
    batch_last: bool = False
    #: Its result is laid out batch last when its first argument is (a matrix product of
    #: a flattened conv chain by a constant: it then writes (outputs, rows) directly, and
    #: the softmax after it reduces along rows of 256 entries instead of 10, 12 → 2 µs on
    #: the digits CNN at batch 256).
    follows_batch_last: bool = False
    #: (argument shapes, **attrs) → entries per row the kernel allocates while it runs and
    #: frees after (conv's im2col columns): counted by the memory budget (nnre.budget).
    scratch: Callable[..., int] | None = None
    # -- equations -------------------------------------------------------------------
    spellings: tuple[str, ...] = ()  # names in equation text; the first is how it prints
    arity: int = 1  # arguments in equation text: max(x) reduces, max(a, b) is entry by entry
    since: int = 2  # the version of the equation language that has it (formats/equations.md)
    #: Parameters written after a semicolon, ``leaky_relu(x; slope=0.2)``, with their
    #: defaults; each is also an attribute of the instruction (``attrs``).
    params: Mapping[str, float] = field(default_factory=dict)
    #: (spatial rank, **params) → attributes, for an op whose parameters are not its
    #: attributes as written: ``conv(W, x; pad=1)`` has ``pads=(1, 1, 1, 1)`` in 2-D.
    param_attrs: Callable[..., dict[str, Any]] | None = None
    sympy: Callable[..., Any] | None = None  # (sympy, d, **params) → the scalar form f(d)
    fold: Callable[..., float] | None = None  # f(v, **params) on one number: constant folding
    vector: bool = False  # a function of the whole vector (softmax), not entry by entry
    reduces: bool = False  # a vector in, one number out (sum, mean, max, min, norm)
    #: It takes ``axis=k`` after a semicolon (``Σ(x; axis=1)``, ``softmax(x; axis=0)``): along
    #: that axis only, in the tensor reading (formats/equations.md §6.1).
    takes_axis: bool = False
    infix: str = ""  # its operator in equation text ('+', '−', '⊙', '/'), if any
    # -- optimizer -------------------------------------------------------------------
    fusable: bool = False  # entry by entry: one call over adjacent slices equals several
    # -- nndk: autodiff ---------------------------------------------------------------
    vjp: Vjp | None = None  # None for view ops: a view's gradient is the same view
    reads: frozenset[str] = frozenset()  # what the VJP reads: "args", "out"
    passes: tuple[int, ...] = ()  # ±1 per argument when its gradient is ±g itself
    vjp_calls: VjpCalls | None = None  # the VJP as ufunc calls into a buffer (no temporaries)
    grad_views: bool = False  # each argument's gradient is a view of g (concat)
    #: (argument shapes, **attrs) → entries per row the VJP allocates while it runs, the
    #: gradient it returns included (maxpool's padded copies of x and of its gradient):
    #: counted by training's memory estimate (nndk.budget). None: as many as ``scratch``.
    vjp_scratch: Callable[..., int] | None = None
    # -- nndk: ONNX ------------------------------------------------------------------
    #: export: the ONNX op type of a one-node mapping (attributes passed as they are), or a
    #: rule (emitter, instr, input names, output name) writing the nodes itself.
    onnx: str | Callable[..., None] | None = None
    onnx_import: tuple[str, ...] = ()  # ONNX op types imported as this op's function
    # -- tensors ---------------------------------------------------------------------
    tensor: bool = False  # only tensors have it (conv, pooling, flatten): the tensor reading
    tensor_input: int = 0  # which argument is the per-example value (conv(W, x): 1)


def same(a: Shape, *rest: Shape, **_: Any) -> Shape:
    return a


def broadcast(a: Shape, b: Shape, **_: Any) -> Shape:
    return tuple(np.broadcast_shapes(a, b))


def passing(signs: tuple[int, ...]) -> Vjp:
    """The VJP of an op whose arguments' gradients are ±g (add, sub, neg, copy)."""
    return lambda g, out, args, attrs, i: g if signs[i] > 0 else -g


def calls(*steps: tuple[Callable[..., Any], tuple[Any, ...]]) -> list[Call]:
    """Bound calls ``fn(*operands, out=last operand)`` from (fn, operands) pairs."""
    return [functools.partial(fn, *ops[:-1], out=ops[-1]) for fn, ops in steps]


def elementwise(name: str, ufunc: Callable[..., Any], **fields: Any) -> Op:
    """A function applied entry by entry with a NumPy ufunc of its own."""
    return Op(name, lambda x, out: ufunc(x, out=out), same, ufunc=ufunc, fusable=True,
              **fields)


def binary(name: str, ufunc: Callable[..., Any], **fields: Any) -> Op:
    """An entry-by-entry operator of two broadcast arguments."""
    return Op(name, lambda a, b, out: ufunc(a, b, out=out), broadcast, ufunc=ufunc,
              fusable=True, **fields)
