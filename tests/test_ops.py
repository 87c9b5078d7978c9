"""The op table: every op defines what each consumer needs, and its fields agree with each other.

Oracles: SymPy's own evaluation of an op's symbolic form against its NumPy kernel and its
scalar fold; float64 central differences of the kernel against its VJP (⟨J·t, c⟩ ≈ ⟨t, Jᵀ·c⟩
along random directions, as JAX's check_vjp); the unfolded and ufunc forms against the kernel.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import sympy as sp

from nndk.onnx.ops import rule_for
from nnre.ops import BY_ARITY, BY_ONNX, FUNCTIONS, OPS, Op
from nnre.program import Instr, Program, ProgramDataError, Slot, check_program

# Arguments (shapes) and attributes for one call of each op; rows lead, as at run time.
CALLS: dict[str, tuple[list[tuple[int, ...]], dict[str, Any]]] = {
    "add": ([(3, 4), (3, 4)], {}), "sub": ([(3, 4), (3, 4)], {}),
    "mul": ([(3, 4), (3, 4)], {}), "div": ([(3, 4), (3, 4)], {}),
    "matmul": ([(3, 4), (4, 5)], {}), "rowdot": ([(3, 4), (3, 4)], {}),
    "pow": ([(3, 4)], {"exponent": 3.0}),
    "softmax": ([(3, 4)], {"axis": -1}), "log_softmax": ([(3, 4)], {"axis": -1}),
    "layer_norm": ([(3, 4)], {"axis": -1, "eps": 0.1}),
    "rms_norm": ([(3, 4)], {"axis": -1, "eps": 0.1}),
    "concat": ([(3, 2), (3, 4)], {"axis": -1}),
    "slice": ([(3, 6)], {"start": 1, "stop": 4}), "reshape": ([(3, 4)], {"shape": (3, 2, 2)}),
    "transpose": ([(3, 4)], {}),
    **{name: ([(3, 4)], {"axis": -1}) for name in ("sum", "mean", "max", "min", "norm")},
    "maximum": ([(3, 4), (3, 4)], {}), "minimum": ([(3, 4), (3, 4)], {}),
    "where": ([(3, 4), (3, 4), (3, 4)], {}),
    **{name: ([(3, 4), (3, 4)], {}) for name in ("less", "greater", "less_equal",
                                                 "greater_equal")},
    "leaky_relu": ([(3, 4)], {"slope": 0.2}), "clip": ([(3, 4)], {"min": -0.5, "max": 1.5}),
    "conv": ([(4, 1, 3, 3), (3, 2, 5, 4)], {"stride": (2, 1), "pads": (1, 0, 0, 1),
                                           "dilation": (1, 2), "groups": 2}),
    "conv_bias": ([(3, 2, 3), (3, 2, 6), (3,)], {"stride": (1,), "pads": (1, 1),
                                                 "dilation": (1,), "groups": 1}),
    "maxpool": ([(3, 2, 5, 4)], {"kernel": (2, 2), "stride": (1, 2), "pads": (1, 0, 0, 0)}),
    "avgpool": ([(3, 2, 7)], {"kernel": (3,), "stride": (2,), "pads": (1, 1)}),
    "gather": ([(5, 4), (3, 2)], {}),
    "permute": ([(3, 2, 4)], {"axes": (1, 0)}),  # a table, and 2 ids per example (drawn as ids)
    "append": ([(3, 5, 4), (3, 1, 4), (3, 1)], {"axis": -2}),  # a history, an entry, steps
}
#: Arguments that are constants (no rows): matmul's matrix, a convolution's weight and bias.
CONSTANT = {("matmul", 1), ("conv", 0), ("conv_bias", 0), ("conv_bias", 2), ("gather", 0)}
#: Arguments that are whole numbers (ids): no derivative to difference.
WHOLE = {("gather", 1), ("append", 2)}
UNARY: tuple[list[tuple[int, ...]], dict[str, Any]] = ([(3, 4)], {})


def _args(name: str, rng: np.random.Generator) -> tuple[list[np.ndarray], dict[str, Any]]:
    shapes, attrs = CALLS.get(name, UNARY)
    low = 0.2 if name in ("log", "sqrt", "div", "pow") else -2.0  # inside the domain
    if name == "gather":  # a table and whole-number ids into it
        return [rng.uniform(low, 2.0, shapes[0]),
                rng.integers(0, shapes[0][0], shapes[1]).astype(float)], attrs
    if name == "append":  # each row's step: a whole number below the history's size
        return [rng.uniform(low, 2.0, shapes[0]), rng.uniform(low, 2.0, shapes[1]),
                rng.integers(0, shapes[0][1], shapes[2]).astype(float)], attrs
    return [rng.uniform(low, 2.0, s) for s in shapes], attrs


def _forward(op: Op, args: list[np.ndarray], attrs: dict[str, Any]) -> np.ndarray:
    if op.view:
        return np.array(op.kernel(*args, **attrs))
    # per-example arguments lose their rows in a shape rule; constants keep their shape
    shapes = [a.shape if (op.name, i) in CONSTANT else a.shape[1:]
              for i, a in enumerate(args)]
    shape = op.shape(*shapes, **attrs)
    rows = next(a.shape[0] for i, a in enumerate(args) if (op.name, i) not in CONSTANT)
    out = np.empty((rows, *shape))
    op.kernel(*args, out=out, **attrs)
    return out


def test_every_op_defines_what_its_consumers_need() -> None:
    for name, op in OPS.items():
        assert op.name == name
        assert op.onnx is not None, f"{name}: no ONNX export"
        if op.view:
            assert op.vjp is None and not op.fusable, name  # its gradient is a view
        else:
            assert op.vjp is not None, f"{name}: no VJP"
        assert op.reads <= {"args", "out"}, name
        if op.param_attrs is not None:  # parameters become attributes through a rule
            made = op.param_attrs(2, **op.params)
            assert set(made) == set(op.attrs), name
            assert all(isinstance(v, op.attrs[k]) for k, v in made.items()), name
        elif op.spellings and not op.tensor:  # SymPy (vector reading) and constant folding
            assert op.fold is not None, name
            assert op.vector or op.arity > 1 or op.sympy is not None, name
            assert set(op.params) <= set(op.attrs), name  # parameters become attributes
        shapes, attrs = CALLS.get(name, UNARY)
        if op.fusable:  # entry by entry: the shape of its arguments
            assert op.shape(*[s[1:] for s in shapes], **attrs) == shapes[0][1:], name
        assert name in CALLS or op.shape((4,)) == (4,), f"{name}: add a row to CALLS"
        if op.reduces:  # one number per row
            assert op.vector and op.shape((5,), axis=-1) == (1,), name


def test_spellings_and_onnx_names_are_unambiguous() -> None:
    spellings = [(s, op.arity) for op in OPS.values() for s in op.spellings]
    assert len(spellings) == len(set(spellings)) == len(BY_ARITY)  # one op per arity
    assert set(FUNCTIONS) == {s for op in OPS.values() for s in op.spellings}
    onnx = [t for op in OPS.values() for t in op.onnx_import]
    assert len(onnx) == len(set(onnx)) == len(BY_ONNX)
    assert all(rule_for(t) for t in BY_ONNX)  # the importer converts every op it is said to


@pytest.mark.parametrize("name", sorted(n for n, op in OPS.items() if op.sympy is not None))
def test_sympy_form_kernel_and_fold_agree(name: str) -> None:
    op = OPS[name]
    assert op.sympy is not None and op.fold is not None
    d = sp.Symbol("d", real=True)
    params = CALLS.get(name, UNARY)[1]
    form = op.sympy(sp, d, **params)
    xs = np.array([[0.3, 1.7, 0.05, 2.5]]) if name in ("log", "sqrt") else \
        np.array([[-3.0, -0.4, 0.0, 2.2]])
    out = _forward(op, [xs], params)
    for x, y in zip(xs[0], out[0], strict=True):
        exact = float(form.subs(d, sp.Float(x)).evalf(30))
        assert y == pytest.approx(exact, rel=1e-12, abs=1e-15), (name, x)
        assert op.fold(float(x), **params) == pytest.approx(exact, rel=1e-12, abs=1e-15), \
            (name, x)


def _vjp_case(name: str, seed: int) -> tuple[Any, np.random.Generator, list[np.ndarray],
                                             dict[str, Any], np.ndarray, np.ndarray]:
    """An op with a VJP, arguments, attributes, its output and a random output gradient."""
    op, rng = OPS[name], np.random.default_rng(seed)
    args, attrs = _args(name, rng)
    out = _forward(op, args, attrs)
    assert op.vjp is not None
    return op, rng, args, attrs, out, rng.normal(size=out.shape)


@pytest.mark.parametrize("name", sorted(n for n, op in OPS.items() if op.vjp is not None))
def test_vjp_against_central_differences(name: str) -> None:
    op, rng, args, attrs, out, c = _vjp_case(name, 7)
    for i, arg in enumerate(args):
        if (name, i) in WHOLE:
            assert not np.any(op.vjp(c, out, args, attrs, i))  # ids: nothing flows back
            continue
        t, eps = rng.normal(size=arg.shape), 1e-6
        plus = [a + eps * t if k == i else a for k, a in enumerate(args)]
        minus = [a - eps * t if k == i else a for k, a in enumerate(args)]
        jt = (_forward(op, plus, attrs) - _forward(op, minus, attrs)) / (2 * eps)
        contribution = op.vjp(c, out, args, attrs, i)
        assert np.sum(jt * c) == pytest.approx(np.sum(t * contribution), rel=1e-6, abs=1e-8), \
            (name, i)


@pytest.mark.parametrize("name", sorted(n for n, op in OPS.items() if op.vjp_calls or op.passes))
def test_fused_vjp_equals_the_rule(name: str) -> None:
    op, _, args, attrs, out, g = _vjp_case(name, 3)
    for i in range(len(args)):
        expected = op.vjp(g, out, args, attrs, i)
        if op.passes:
            np.testing.assert_array_equal(expected, op.passes[i] * g)
        if op.vjp_calls is not None:
            dest = np.empty_like(g)
            for call in op.vjp_calls(i, g, out, args, dest):
                call()
            np.testing.assert_allclose(dest, expected, rtol=1e-12)


@pytest.mark.parametrize("name", sorted(n for n, op in OPS.items() if op.unfold or op.ufunc))
def test_unfolded_and_ufunc_forms_equal_the_kernel(name: str) -> None:
    op, rng = OPS[name], np.random.default_rng(5)
    args, attrs = _args(name, rng)
    expected = _forward(op, args, attrs)
    out = np.empty_like(expected)
    if op.unfold is not None:
        for call in op.unfold(*args, out=out, **attrs):
            call()
        np.testing.assert_array_equal(out, expected)
    if op.ufunc is not None:
        np.testing.assert_array_equal(op.ufunc(*args, out=out, **attrs), expected)


def _one(op: str, attrs: tuple[tuple[str, Any], ...]) -> Program:
    prog = Program("float32", slots=[Slot("x", "input", (4,), "pre"),
                                     Slot("%1", "temp", (4,), "pre")])
    prog.inputs, prog.outputs = {"x": 0}, {"y": 1}
    prog.pre.append(Instr(op, 1, (0,), attrs))
    return prog


def test_programs_may_carry_only_the_attributes_an_op_declares() -> None:
    check_program(_one("softmax", (("axis", -1),)))
    for attrs in [(("where", 0),), (("axis", 1.5),), (("axis", True),)]:
        with pytest.raises(ProgramDataError):
            check_program(_one("softmax", attrs))
    with pytest.raises(ProgramDataError):
        check_program(_one("tanh", (("out", 0),)))
