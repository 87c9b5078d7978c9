"""ONNX ops the language has no function for, written with the functions it has.

Each converter writes the op's ONNX definition as an expression over one per-example value
(``Sinh(x) = (eˣ − e⁻ˣ)/2``, ``Sign(x) = (x > 0) − (x < 0)``, ``Celu(x) = α·elu(x/α)``), so
the bundle needs no op of its own and reads as the formula. A value used twice is named
first (``u₁ = …``) so the text shows it once. Variadic Sum and Mean are sums of their inputs,
broadcast as ``+`` is; the rule in :mod:`nndk.onnx.ops` decides what may broadcast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from nndk.onnx import expr as ex
from nndk.onnx.graph import Importer
from nndk.onnx.values import Const, Dyn, Unsupported, Value

Args = list[Value | None]
Rule = Callable[[Importer, Any, Args, dict[str, Any]], list[Value]]
Formula = Callable[[Importer, ex.Expr, dict[str, Any]], ex.Expr]


def _x(imp: Importer, node: Any, args: Args, twice: bool) -> Dyn:
    from nndk.onnx.ops import _dyn

    x = _dyn(args[0], f"the input of {node.op_type}")
    return imp.define(x, stem="u") if twice else x


def _unary(formula: Formula, twice: bool = True) -> Rule:
    """A rule from a formula over the input's expression (named first when read twice)."""
    def rule(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
        x = _x(imp, node, args, twice)
        return [x.like(formula(imp, x.expr, at))]
    return rule


def scaled(imp: Importer, k: float, e: ex.Expr) -> ex.Expr:
    """``k ⊙ e``, as ``−(|k| ⊙ e)`` when k < 0 (so a sum prints it with a minus)."""
    if k == 1.0:
        return e
    term = ex.Bin("⊙", imp.num(abs(k)), e)
    return ex.Neg(term) if k < 0 else term


def _f32(at: dict[str, Any], key: str, default: float) -> float:
    """An attribute as ONNX stores it (float32), as a Python float."""
    return float(np.float32(at.get(key, default)))


def call(name: str, e: ex.Expr) -> ex.Expr:
    return ex.Call(name, e)


def _selu(imp: Importer, x: ex.Expr, at: dict[str, Any]) -> ex.Expr:
    """γ·x for x > 0, γ·α(eˣ − 1) otherwise: γα·elu(x) + γ(1 − α)·relu(x)."""
    alpha = _f32(at, "alpha", 1.67326319217681884765625)
    gamma = _f32(at, "gamma", 1.05070102214813232421875)
    return ex.add(scaled(imp, gamma * alpha, call("elu", x)),
                  scaled(imp, gamma * (1.0 - alpha), call("relu", x)))


def _celu(imp: Importer, x: ex.Expr, at: dict[str, Any]) -> ex.Expr:
    """max(0, x) + min(0, α(e^(x/α) − 1)) = α·elu(x/α)."""
    alpha = _f32(at, "alpha", 1.0)
    if alpha <= 0:
        raise Unsupported(f"Celu with alpha={alpha:g} (ONNX requires alpha > 0)")
    if alpha == 1.0:
        return call("elu", x)
    return scaled(imp, alpha, call("elu", ex.Bin("/", x, imp.num(alpha))))


def _shrink(imp: Importer, x: ex.Expr, at: dict[str, Any]) -> ex.Expr:
    lambd, bias = _f32(at, "lambd", 0.5), _f32(at, "bias", 0.0)
    if bias == 0.0:
        return ex.Bin("⊙", x, ex.Bin(">", call("abs", x), imp.num(lambd)))
    high = ex.Bin("⊙", ex.sub(x, imp.num(bias)), ex.Bin(">", x, imp.num(lambd)))
    low = ex.Bin("⊙", ex.add(x, imp.num(bias)), ex.Bin("<", x, imp.num(-lambd)))
    return ex.add(high, low)


def _hard_sigmoid(imp: Importer, x: ex.Expr, at: dict[str, Any]) -> ex.Expr:
    """max(0, min(1, αx + β)); the defaults 0.2, 0.5 are the function hardsigmoid."""
    alpha, beta = _f32(at, "alpha", 0.2), _f32(at, "beta", 0.5)
    if (alpha, beta) == (float(np.float32(0.2)), float(np.float32(0.5))):
        return call("hardsigmoid", x)
    inner = ex.add(scaled(imp, alpha, x), imp.num(beta))
    return ex.Call("clip", inner, (("min", 0.0), ("max", 1.0)))


def _swish(imp: Importer, x: ex.Expr, at: dict[str, Any]) -> ex.Expr:
    alpha = _f32(at, "alpha", 1.0)
    if alpha == 1.0:
        return call("silu", x)
    return ex.Bin("⊙", x, call("σ", scaled(imp, alpha, x)))


def _is_inf(imp: Importer, x: ex.Expr, at: dict[str, Any]) -> ex.Expr:
    """|x| above the largest finite number of the model's dtype (NaN compares false)."""
    big = imp.num(float(np.finfo(imp.dtype).max))
    pos, neg = int(at.get("detect_positive", 1)), int(at.get("detect_negative", 1))
    if pos and neg:
        return ex.Bin(">", call("abs", x), big)
    if pos:
        return ex.Bin(">", x, big)
    if neg:
        return ex.Bin("<", x, ex.Neg(big))
    raise Unsupported("IsInf that detects neither sign (every entry is false)")


def _half(imp: Importer, e: ex.Expr) -> ex.Expr:
    return ex.Bin("/", e, imp.num(2.0))


FORMULAS: dict[str, tuple[Formula, bool]] = {  # op type → (formula, reads x twice)
    "Reciprocal": (lambda imp, x, at: ex.Bin("/", imp.num(1.0), x), False),
    "Softsign": (lambda imp, x, at: ex.Bin("/", x, ex.add(imp.num(1.0), call("abs", x))), True),
    "Sinh": (lambda imp, x, at: _half(imp, ex.sub(call("exp", x), call("exp", ex.Neg(x)))),
             True),
    "Cosh": (lambda imp, x, at: _half(imp, ex.add(call("exp", x), call("exp", ex.Neg(x)))),
             True),
    "Tan": (lambda imp, x, at: ex.Bin("/", call("sin", x), call("cos", x)), True),
    "Asinh": (lambda imp, x, at: call("log", ex.add(x, call("sqrt", ex.add(
        ex.Pow(x, 2.0), imp.num(1.0))))), True),
    "Acosh": (lambda imp, x, at: call("log", ex.add(x, call("sqrt", ex.sub(
        ex.Pow(x, 2.0), imp.num(1.0))))), True),
    "Atanh": (lambda imp, x, at: _half(imp, call("log", ex.Bin(
        "/", ex.add(imp.num(1.0), x), ex.sub(imp.num(1.0), x)))), True),
    "Sign": (lambda imp, x, at: ex.sub(ex.Bin(">", x, imp.num(0.0)),
                                       ex.Bin("<", x, imp.num(0.0))), True),
    "Selu": (_selu, True),
    "Celu": (_celu, False),
    "ThresholdedRelu": (lambda imp, x, at: ex.Bin("⊙", x, ex.Bin(
        ">", x, imp.num(_f32(at, "alpha", 1.0)))), True),
    "Shrink": (_shrink, True),
    "HardSigmoid": (_hard_sigmoid, False),
    "Swish": (_swish, True),
    "IsInf": (_is_inf, False),
    "IsNaN": (lambda imp, x, at: ex.sub(imp.num(1.0), ex.Bin("≥", x, x)), True),  # NaN ≱ NaN
}


def _prelu(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    """x for x ≥ 0, slope·x otherwise: relu(x) − slope ⊙ relu(−x)."""
    from nndk.onnx.ops import RULES

    x = _x(imp, node, args, twice=True)
    neg = x.like(ex.Call("relu", ex.Neg(x.expr)))
    times = RULES["Mul"](imp, node, [args[1], neg], {})[0]
    assert isinstance(times, Dyn)
    return [times.like(ex.sub(ex.Call("relu", x.expr), times.expr))]


def _pow(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    """``x^k`` for a constant exponent that is one number."""
    x = _x(imp, node, args, twice=False)
    k = args[1]
    if not isinstance(k, Const) or np.asarray(k.value).size == 0:
        raise Unsupported("Pow with an exponent that is not a constant")
    flat = np.asarray(k.value, dtype=np.float64).reshape(-1)
    if not np.all(flat == flat[0]) or not np.isfinite(flat[0]):
        raise Unsupported("Pow with an exponent that differs between entries")
    if np.asarray(k.value).ndim > len(x.shape) + imp.lead:
        raise Unsupported("Pow with an exponent of more axes than its base")
    return [x.like(ex.Pow(x.expr, float(flat[0])))]


def _variadic(mean: bool) -> Rule:
    """Sum and Mean of one or more inputs: ``a + b + c`` (÷ n), broadcast as Add does."""
    def rule(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
        from nndk.onnx.ops import RULES

        parts = [a for a in args if a is not None]
        total = parts[0]
        for part in parts[1:]:
            total = RULES["Add"](imp, node, [total, part], {})[0]
        if not isinstance(total, Dyn):
            raise Unsupported(f"{node.op_type} without a per-example value")
        if mean and len(parts) > 1:
            return [total.like(ex.Bin("/", total.expr, imp.num(len(parts))))]
        return [total]
    return rule


RULES: dict[str, Rule] = {
    **{op: _unary(formula, twice) for op, (formula, twice) in FORMULAS.items()},
    "PRelu": _prelu, "Pow": _pow, "Sum": _variadic(False), "Mean": _variadic(True),
}


def _logic(op: str) -> Rule:
    """And, Or, Xor of booleans (0 and 1): a ⊙ b, max(a, b), |a − b|; Equal of numbers:
    (a ≥ b) ⊙ (a ≤ b), false for NaN as in ONNX."""
    def rule(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
        from nndk.onnx.ops import operands

        (a, b), form = operands(imp, node, args[:2], "k")
        if op == "Equal":
            return [form.like(ex.Bin("⊙", ex.Bin("≥", a, b), ex.Bin("≤", a, b)))]
        if op == "And":
            return [form.like(ex.Bin("⊙", a, b))]
        if op == "Or":
            return [form.like(ex.Call("max", a, more=(b,)))]
        return [form.like(ex.Call("abs", ex.sub(a, b)))]
    return rule


def _not(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    x = _x(imp, node, args, twice=False)
    return [x.like(ex.sub(imp.num(1.0), x.expr))]


RULES.update({op: _logic(op) for op in ("And", "Or", "Xor", "Equal")})
RULES["Not"] = _not


def _one_hot(imp: Importer, node: Any, args: Args, at: dict[str, Any]) -> list[Value]:
    """off + (on − off) ⊙ (i ≥ c) ⊙ (i ≤ c) for c = 0 … depth−1 along the new axis (a negative
    index counts from the end; one out of range gives a row of 'off', as in ONNX)."""
    x = _x(imp, node, args, twice=True)
    depth, values = args[1], args[2]
    if not isinstance(depth, Const) or not isinstance(values, Const):
        raise Unsupported("OneHot with a depth or values computed per example")
    n = int(np.asarray(depth.value).reshape(()))
    off, on = (float(v) for v in np.asarray(values.value, np.float64).reshape(-1)[:2])
    rank = len(x.shape) + 1
    axis = int(at.get("axis", -1))
    k = (axis + rank + imp.lead if axis < 0 else axis) - imp.lead
    if k < 0 or len(x.shape) > 1 and k != 0 or x.flat:
        raise Unsupported("OneHot with its new axis before the batch or among a tensor's axes")
    index = x.expr if len(x.shape) != 1 or k == 1 else ex.Tr(x.expr)
    wrapped = imp.define(x.like(ex.add(index, ex.Bin("⊙", imp.num(float(n)),
                                                     ex.Bin("<", index, imp.num(0.0))))))
    shape = (n,) + (1,) * (rank - 1) if k == 0 else (1, n)
    c = ex.Name(imp.weight(np.arange(n, dtype=imp.dtype).reshape(shape), "c", ("iota", shape)))
    hot = ex.Bin("⊙", ex.Bin("≥", wrapped.expr, c), ex.Bin("≤", wrapped.expr, c))
    out = list(x.shape)
    out.insert(k, n)
    body = ex.add(imp.num(off), scaled(imp, on - off, hot)) if off else scaled(imp, on, hot)
    return [Dyn(body, tuple(out), False)]


RULES["OneHot"] = _one_hot
