"""Blocks (``for l = 1…L:``, spec §3.6): a model of L identical layers written once.

Oracles: the same model written out by hand (same roles, parameters and outputs), a
hand-written NumPy two-layer LSTM, and a NumPy stack of ReLU layers over embedded ids for the
tensor reading. Error positions were worked out by hand from the texts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import nnre
from nndk.check import describe, render_text
from nndk.cli import cli as nndk_cli
from nnre.cli import cli as nnre_cli
from nnre.equations import check, language_version, param_shapes
from nnre.equations.parser import MAX_NODES, parse
from nnre.equations.render import render, time_name
from nnre.errors import EquationError, ShapeError
from nnre.model import Model

RNG = np.random.default_rng(1307)
V, H = 4, 3

LSTM_BLOCK = """\
# two stacked LSTM layers, written once
xₜ, yₜ ∈ ℝ^V
h^{(0)}ₜ = xₜ
for l = 1…L:
    h^{(l)}ₜ, c^{(l)}ₜ ∈ ℝ^H
    f^{(l)}ₜ = σ(W_f^{(l)} h^{(l-1)}ₜ + U_f^{(l)} h^{(l)}ₜ₋₁ + b_f^{(l)})
    i^{(l)}ₜ = σ(W_i^{(l)} h^{(l-1)}ₜ + U_i^{(l)} h^{(l)}ₜ₋₁ + b_i^{(l)})

    # the output gate and the candidate
    o^{(l)}ₜ = σ(W_o^{(l)} h^{(l-1)}ₜ + U_o^{(l)} h^{(l)}ₜ₋₁ + b_o^{(l)})
    g^{(l)}ₜ = tanh(W_c^{(l)} h^{(l-1)}ₜ + U_c^{(l)} h^{(l)}ₜ₋₁ + b_c^{(l)})
    c^{(l)}ₜ = f^{(l)}ₜ ⊙ c^{(l)}ₜ₋₁ + i^{(l)}ₜ ⊙ g^{(l)}ₜ
    h^{(l)}ₜ = o^{(l)}ₜ ⊙ tanh(c^{(l)}ₜ)
yₜ = softmax(W_y h^{(L)}ₜ + b_y)
"""


def written_out(layers: int) -> str:
    """The same LSTM with every layer written by hand (the oracle for the block)."""
    lines = ["xₜ, yₜ ∈ ℝ^V", "h^{(0)}ₜ = xₜ"]
    for n in range(1, layers + 1):
        p = n - 1
        lines += [f"h^{{({n})}}ₜ, c^{{({n})}}ₜ ∈ ℝ^H"]
        for gate, f in (("f", "σ"), ("i", "σ"), ("o", "σ"), ("c", "tanh")):
            target = "g" if gate == "c" else gate
            lines.append(f"{target}^{{({n})}}ₜ = {f}(W_{gate}^{{({n})}} h^{{({p})}}ₜ + "
                         f"U_{gate}^{{({n})}} h^{{({n})}}ₜ₋₁ + b_{gate}^{{({n})}})")
        lines += [f"c^{{({n})}}ₜ = f^{{({n})}}ₜ ⊙ c^{{({n})}}ₜ₋₁ + i^{{({n})}}ₜ ⊙ g^{{({n})}}ₜ",
                  f"h^{{({n})}}ₜ = o^{{({n})}}ₜ ⊙ tanh(c^{{({n})}}ₜ)"]
    lines.append(f"yₜ = softmax(W_y h^{{({layers})}}ₜ + b_y)")
    return "\n".join(lines) + "\n"


def lstm_weights(layers: int) -> dict[str, np.ndarray]:
    w: dict[str, np.ndarray] = {}
    for n in range(1, layers + 1):
        for g in "fioc":
            w[f"W^{{({n})}}_{g}"] = RNG.normal(size=(H, V if n == 1 else H)) * 0.6
            w[f"U^{{({n})}}_{g}"] = RNG.normal(size=(H, H)) * 0.6
            w[f"b^{{({n})}}_{g}"] = RNG.normal(size=H) * 0.2
    w["W_y"] = RNG.normal(size=(V, H))
    w["b_y"] = RNG.normal(size=V)
    return w


def reference_lstm(w: dict[str, np.ndarray], xs: np.ndarray, layers: int) -> np.ndarray:
    """A stacked LSTM in NumPy, one step and one layer at a time, from zero state."""
    def sig(z: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-z))

    h = [np.zeros(H) for _ in range(layers + 1)]
    c = [np.zeros(H) for _ in range(layers + 1)]
    ys = []
    for x in xs:
        below = x
        for n in range(1, layers + 1):
            def gate(g: str, n: int = n, below: np.ndarray = below) -> np.ndarray:
                return (w[f"W^{{({n})}}_{g}"] @ below + w[f"U^{{({n})}}_{g}"] @ h[n]
                        + w[f"b^{{({n})}}_{g}"])
            f, i, o, g = sig(gate("f")), sig(gate("i")), sig(gate("o")), np.tanh(gate("c"))
            c[n] = f * c[n] + i * g
            h[n] = o * np.tanh(c[n])
            below = h[n]
        z = w["W_y"] @ below + w["b_y"]
        e = np.exp(z - z.max())
        ys.append(e / e.sum())
    return np.array(ys)


# -- meaning ------------------------------------------------------------------------------
def test_a_block_is_the_same_model_as_its_layers_written_out() -> None:
    dims = {"L": 2, "H": H, "V": V}
    block, by_hand = check(LSTM_BLOCK, dims), check(written_out(2), dims)
    assert block.roles.order == by_hand.roles.order
    assert block.roles.params == by_hand.roles.params
    assert block.roles.state == by_hand.roles.state == {
        "h^{(1)}": 1, "c^{(1)}": 1, "h^{(2)}": 1, "c^{(2)}": 1}
    assert block.roles.inputs == ["x"] and block.roles.outputs == ["y"]
    assert param_shapes(block) == param_shapes(by_hand)
    assert param_shapes(block)["W^{(1)}_f"] == (H, V)
    assert param_shapes(block)["W^{(2)}_f"] == (H, H)
    for name in block.roles.order:  # every copy is the equation written by hand
        assert render(block.roles.equations[name].expr) == \
            render(by_hand.roles.equations[name].expr)
    assert block.shapes.dims == {"H": H, "V": V, "L": 2}
    assert language_version(block) == 2


def test_a_block_runs_as_the_written_out_model_and_numpy() -> None:
    w = lstm_weights(2)
    xs = RNG.normal(size=(7, V))
    block = Model.from_equations(LSTM_BLOCK, w, {"L": 2}, dtype="float64")
    by_hand = Model.from_equations(written_out(2), w, dtype="float64")
    ys, state = block.run({"x": xs})
    ys_hand, state_hand = by_hand.run({"x": xs})
    np.testing.assert_allclose(ys["y"], reference_lstm(w, xs, 2), rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(ys["y"], ys_hand["y"])
    assert state.keys() == state_hand.keys()
    assert block.dims == {"H": H, "V": V, "L": 2}


def test_the_weights_give_the_number_of_layers() -> None:
    """Without L, the weights' names W^{(1)}_f … W^{(3)}_f fix it (as shapes fix H)."""
    w = lstm_weights(3)
    model = Model.from_equations(LSTM_BLOCK, w, dtype="float64")
    assert model.dims["L"] == 3
    xs = RNG.normal(size=(5, V))
    np.testing.assert_allclose(model.run({"x": xs})[0]["y"], reference_lstm(w, xs, 3),
                               rtol=1e-12, atol=1e-14)
    with pytest.raises(ShapeError, match="missing weights 'W\\^\\{\\(3\\)\\}_f'"):
        Model.from_equations(LSTM_BLOCK, lstm_weights(2), {"L": 3}, dtype="float64")


def test_the_tensor_reading_expands_blocks_too() -> None:
    """Ids embedded as rows, then ReLU layers over the rows (a text read with tensors)."""
    text = """\
xₜ ∈ ℕ
E ∈ ℝ^(V×D)
h^{(0)}ₜ = E[xₜ]
for k = 1..N:
	h^{(k)}ₜ = relu(h^{(k-1)}ₜ W^{(k)} + b^{(k)})
	W^{(k)} ∈ ℝ^(D×D)
	b^{(k)} ∈ ℝ^(1×D)
yₜ = softmax(h^{(N)}ₜ Wₒ)
"""
    d, n = 3, 3
    w = {"E": RNG.normal(size=(V, d)), "W_o": RNG.normal(size=(d, V))}
    for k in range(1, n + 1):
        w[f"W^{{({k})}}"] = RNG.normal(size=(d, d))
        w[f"b^{{({k})}}"] = RNG.normal(size=(1, d))
    checked = check(text, {"N": n, "V": V, "D": d}, {k: v.shape for k, v in w.items()})
    assert checked.tensors and checked.roles.params == [
        "E", "W^{(1)}", "b^{(1)}", "W^{(2)}", "b^{(2)}", "W^{(3)}", "b^{(3)}", "W_o"]
    model = Model.from_equations(text, w, {"N": n, "V": V, "D": d}, dtype="float64")
    ids = np.array([0, 3, 1, 2, 2])
    want = []
    for i in ids:
        h = w["E"][i:i + 1]
        for k in range(1, n + 1):
            h = np.maximum(h @ w[f"W^{{({k})}}"] + w[f"b^{{({k})}}"], 0)
        z = h @ w["W_o"]
        want.append(np.exp(z) / np.exp(z).sum())
    got = model.run({"x": ids.astype(np.float64)[:, None]})[0]["y"]
    np.testing.assert_allclose(got.reshape(len(ids), -1), np.array(want).reshape(len(ids), -1),
                               rtol=1e-12)


def test_spellings_of_a_block_are_one_model() -> None:
    """``1..L`` is ``1…L``; ``hˡ⁻¹ₜ`` is ``h^{(l-1)}ₜ``; ``h_t^{(l−1)}`` too; ``ℓ`` works."""
    dims = {"L": 2, "H": H, "V": V}
    want = check(LSTM_BLOCK, dims)
    texts = [
        LSTM_BLOCK.replace("1…L", "1..L"),
        LSTM_BLOCK.replace("h^{(l-1)}ₜ", "hˡ⁻¹ₜ").replace("c^{(l)}ₜ₋₁", "cˡₜ₋₁"),
        LSTM_BLOCK.replace("h^{(l-1)}ₜ", "h_t^{(l−1)}").replace("for l", "for ℓ")
        .replace("(l)", "(ℓ)").replace("(l−1)", "(ℓ−1)"),
    ]
    for text in texts:
        got = check(text, dims)
        assert got.roles.order == want.roles.order and got.roles.params == want.roles.params
        assert [render(got.roles.equations[n].expr) for n in got.roles.order] == \
            [render(want.roles.equations[n].expr) for n in want.roles.order]


def test_layer_bounds_other_than_one() -> None:
    text = "xₜ ∈ ℝ^2\nh^{(1)}ₜ = xₜ\nfor l = 2…4:\n    h^{(l)}ₜ = tanh(W^{(l)} h^{(l-1)}ₜ)\n" \
           "yₜ = h^{(4)}ₜ"
    checked = check(text, weights={f"W^{{({n})}}": (2, 2) for n in (2, 3, 4)})
    assert checked.roles.params == ["W^{(2)}", "W^{(3)}", "W^{(4)}"]
    assert checked.roles.order == ["h^{(1)}", "h^{(2)}", "h^{(3)}", "h^{(4)}", "y"]


def test_a_bound_is_a_dimension_read_as_its_value() -> None:
    model = Model.from_equations("xₜ ∈ ℝ^2\nfor l = 1…L:\n  a^{(l)}ₜ = xₜ / L\n"
                                 "yₜ = a^{(1)}ₜ + a^{(L)}ₜ", {}, {"L": 4}, dtype="float64")
    out, _ = model.step({"x": np.array([4.0, 8.0])})
    np.testing.assert_allclose(out["y"], [2.0, 4.0])


def test_the_body_ends_at_a_line_indented_less_than_its_first() -> None:
    """Indentation is relative: a text indented as a whole (as in a test's string) works,
    blank and comment lines do not end a body, and a line indented less than the body's
    first line (though more than the header) ends it."""
    text = ("  xₜ ∈ ℝ^2\n  for l = 1…2:\n        a^{(l)}ₜ = tanh(xₜ)\n\n  # note\n"
            "        b^{(l)}ₜ = a^{(l)}ₜ\n     yₜ = b^{(1)}ₜ + b^{(2)}ₜ\n")
    checked = check(text)
    assert [eq.target.name for eq in checked.module.equations] == [  # layer by layer
        "a^{(1)}", "b^{(1)}", "a^{(2)}", "b^{(2)}", "y"]
    assert checked.roles.outputs == ["y"]


# -- errors -------------------------------------------------------------------------------
X2 = "xₜ ∈ ℝ^2\n"
# (id, text, dims, line, column, fragment of the message)
ERRORS = [
    ("no-value", X2 + "for l = 1…L:\n    a^{(l)}ₜ = xₜ\nyₜ = a^{(1)}ₜ", {}, 2, 11,
     "dimension L has no value; --set L=…"),
    ("no-value-outside", X2 + "yₜ = h^{(L)}ₜ", {}, 2, 6, "dimension L has no value"),
    ("no-body", X2 + "for l = 1…2:\nyₜ = xₜ", {}, 2, 1, "the block on line 2 has no body"),
    ("no-body-at-end", X2 + "for l = 1…2:\n# only a comment\n", {}, 2, 1, "has no body"),
    ("nested", X2 + "for l = 1…2:\n  for k = 1…2:\n    a^{(k)}ₜ = xₜ", {}, 3, 3,
     "blocks do not nest: this block is inside the block on line 2"),
    ("tab-vs-spaces", X2 + "for l = 1…2:\n    a^{(l)}ₜ = xₜ\n\tb^{(l)}ₜ = xₜ", {}, 4, 2,
     "mixes tabs and spaces differently from the block's first line (line 3)"),
    ("tab-vs-header", X2 + "  for l = 1…2:\n\ta^{(l)}ₜ = xₜ", {}, 3, 2,
     "differently from the 'for' line (line 2)"),
    ("variable-as-value", X2 + "for l = 1…2:\n    a^{(l)}ₜ = l xₜ", {}, 3, 16,
     "'l' is the block's variable: it is read only in layer indices"),
    ("unknown-index", X2 + "for l = 1…2:\n    a^{(k)}ₜ = xₜ", {}, 3, 5,
     "the layer index 'k' is neither the block's variable 'l' nor a dimension"),
    ("shadows-dimension", "xₜ ∈ ℝ^H\nfor H = 1…2:\n    a^{(H)}ₜ = xₜ", {}, 2, 5,
     "the block's variable 'H' is also a dimension of the text"),
    ("shadows-bound", X2 + "for L = 1…L:\n    a^{(L)}ₜ = xₜ", {"L": 2}, 2, 5,
     "the block's variable 'L' is also a dimension"),
    ("below-zero", X2 + "for l = 1…2:\n    a^{(l)}ₜ = b^{(l-2)}ₜ", {}, 3, 16,
     "in layer 1 of the block on line 2: the layer index 'l-2' of 'b^{(l-2)}ₜ' is -1"),
    ("too-high", X2 + "for l = 1…2:\n    a^{(l)}ₜ = b^{(l+999999999)}ₜ", {}, 3, 16,
     "in layer 1 of the block on line 2: the layer index 'l+999999999'"),
    ("no-layers", X2 + "for l = 3…2:\n    a^{(l)}ₜ = xₜ", {}, 2, 11,
     "the block on line 2 has no layers: it runs from 3 to 2"),
    ("zero-dimension", X2 + "for l = 1…L:\n    a^{(l)}ₜ = xₜ", {"L": 0}, 2, 11,
     "dimension L=0 is not a positive integer"),
    ("no-colon", X2 + "for l = 1…2\n    a^{(l)}ₜ = xₜ", {}, 2, 12,
     "unexpected end of line"),
    ("code-after-colon", X2 + "for l = 1…2: aₜ = xₜ", {}, 2, 14, "unexpected 'aₜ'"),
    ("bad-bound", X2 + "for l = 1.5…2:\n    a^{(l)}ₜ = xₜ", {}, 2, 9,
     "unexpected '1.5' as a layer of the block"),
    ("timed-variable", X2 + "for lₜ = 1…2:\n    a^{(l)}ₜ = xₜ", {}, 2, 5,
     "the block's variable 'lₜ' must be a plain name"),
    ("primed-variable", X2 + "for l' = 1…2:\n    a^{(l)}ₜ = xₜ", {}, 2, 5,
     "the block's variable 'l'' must be a plain name"),
    ("superscript-alone", X2 + "for l = 1…2:\n    aˡ = xₜ", {}, 3, 6,
     "unexpected character 'ˡ' (U+02E1 MODIFIER LETTER SMALL L)"),
    # errors found in one copy say which
    ("shape-in-copy", "xₜ ∈ ℝ^3\nh^{(0)}ₜ = xₜ\nfor l = 1…3:\n    h^{(l)}ₜ = W^{(l)} h^{(l-1)}ₜ\n"
     "    W^{(l)} ∈ ℝ^(2×2)\nyₜ = h^{(3)}ₜ", {}, 4, 24,
     "in layer 1 of the block on line 3: matrix product in the equation for 'h^{(1)}ₜ'"),
    ("defined-twice", X2 + "a^{(2)}ₜ = xₜ\nfor l = 1…3:\n    a^{(l)}ₜ = xₜ", {}, 4, 5,
     "in layer 2 of the block on line 3: 'a^{(2)}' is defined twice (first on line 2)"),
    ("cycle-in-copy", X2 + "for l = 1…2:\n    a^{(l)}ₜ = b^{(l)}ₜ\n    b^{(l)}ₜ = a^{(l)}ₜ\n"
     "yₜ = a^{(1)}ₜ", {}, 3, 5, "in layer 1 of the block on line 2: equations depend on each "
     "other within one step: a^{(1)} → b^{(1)} → a^{(1)}"),
]


@pytest.mark.parametrize(("text", "dims", "line", "column", "fragment"),
                         [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS])
def test_block_errors_are_located(text: str, dims: dict[str, int], line: int, column: int,
                                  fragment: str) -> None:
    with pytest.raises(EquationError) as info:
        check(text, dims)
    err = info.value
    assert fragment in err.message, str(err)
    assert (err.line, err.column) == (line, column), str(err)
    assert err.source_line == text.split("\n")[line - 1]


def test_a_block_of_two_billion_layers_fails_fast() -> None:
    """The copies are counted before one is made: 2³¹ − 1 layers, given in the text or as
    a dimension, or a body of declarations only, are refused at once."""
    hostile = [
        ("xₜ ∈ ℝ^2\nfor l = 1…2147483647:\n    a^{(l)}ₜ = xₜ\nyₜ = a^{(1)}ₜ", {}),
        ("xₜ ∈ ℝ^2\nfor l = 1…L:\n    a^{(l)}ₜ = xₜ\nyₜ = a^{(1)}ₜ", {"L": 2**31 - 1}),
        ("xₜ ∈ ℝ^2\nyₜ = xₜ\nfor l = 1…L:\n    a^{(l)}ₜ ∈ ℝ^2", {"L": 2**31 - 1}),
        ("xₜ ∈ ℝ^2\nyₜ = xₜ\n" + "for l = 1…L:\n    input a^{(l)}ₜ\n" * 3000,
         {"L": 2**31 - 1}),
    ]
    for text, dims in hostile:
        start = time.perf_counter()
        with pytest.raises(EquationError, match="equations are too large: the block on line"):
            check(text, dims)
        assert time.perf_counter() - start < 5, text[:40]


def test_the_node_limit_counts_every_copy() -> None:
    """A body of 2 nodes (one atom, one for the statement) fits 20 000 nodes so many times."""
    text = "xₜ ∈ ℝ^2\nfor l = 1…L:\n    a^{(l)}ₜ = xₜ\nyₜ = a^{(1)}ₜ"
    per_copy = 2  # the atom xₜ, and one for the statement
    outside = 3  # yₜ's atom and its target, and the one name xₜ declares
    fits = (MAX_NODES - outside) // per_copy
    start = time.perf_counter()
    checked = check(text, {"L": fits})
    assert len(checked.roles.order) == fits + 1
    assert time.perf_counter() - start < 30
    with pytest.raises(EquationError, match="equations are too large"):
        check(text, {"L": fits + 1})


# -- rendering, nndk check, bundles -------------------------------------------------------
def test_rendering_a_text_with_a_block_is_a_fixpoint() -> None:
    shown = render_text(parse(LSTM_BLOCK, expand=False))
    assert "for l = 1…L:\n    h^{(l)}ₜ, c^{(l)}ₜ ∈ ℝ^H\n" in shown
    assert "    f^{(l)}ₜ = σ(W^{(l)}_f · h^{(l-1)}ₜ + U^{(l)}_f · h^{(l)}ₜ₋₁ + b^{(l)}_f)\n" \
        in shown
    assert shown.endswith("yₜ = softmax(W_y · h^{(L)}ₜ + b_y)\n")
    assert render_text(parse(shown, expand=False)) == shown
    dims = {"L": 3, "H": H, "V": V}
    again, want = check(shown, dims), check(LSTM_BLOCK, dims)
    assert again.roles.order == want.roles.order
    assert [render(again.roles.equations[n].expr) for n in again.roles.order] == \
        [render(want.roles.equations[n].expr) for n in want.roles.order]


def test_superscript_layers_render_in_braces() -> None:
    eq = parse("for l = 1…2:\n  hˡₜ = tanh(hˡ⁻¹ₜ + h_{q,t-1}^{(l+1)})", expand=False) \
        .blocks[0].body.equations[0]
    assert time_name(eq.target.name, eq.target.time) == "h^{(l)}ₜ"
    assert render(eq.expr) == "tanh(h^{(l-1)}ₜ + h^{(l+1)}_{q,t-1})"


def test_nndk_check_shows_the_block_and_lists_every_copy() -> None:
    report = describe(LSTM_BLOCK, {"L": 2, "H": H, "V": V})
    lines = report.splitlines()
    start = lines.index("  for l = 1…L:  # L=2")
    assert lines[start - 1] == "  h^{(0)}ₜ = xₜ"
    assert lines[start + 1] == ("      f^{(l)}ₜ = σ(W^{(l)}_f · h^{(l-1)}ₜ + U^{(l)}_f · "
                                "h^{(l)}ₜ₋₁ + b^{(l)}_f)")
    assert lines[start + 7] == "  yₜ = softmax(W_y · h^{(L)}ₜ + b_y)"
    listing = report[report.index("program:"):]
    assert "W^{(1)}_f" in listing and "W^{(2)}_c" in listing and "h^{(l" not in listing
    assert "dims: H=3, L=2, V=4" in report


def test_nndk_check_takes_the_number_of_layers_from_set(tmp_path: Path) -> None:
    path = tmp_path / "stack.eqn"
    path.write_text(LSTM_BLOCK, encoding="utf-8")
    result = CliRunner().invoke(nndk_cli, ["check", str(path), "--set", "L=3", "--set", "V=5"])
    assert result.exit_code == 0, result.output
    assert "  for l = 1…L:  # L=3" in result.output and "W^{(3)}_c" in result.output
    result = CliRunner().invoke(nndk_cli, ["check", str(path), "--set", "V=5"])
    assert result.exit_code != 0 and isinstance(result.exception, EquationError)
    assert result.exception.one_line().startswith(
        f"{path}:4:11: dimension L has no value; --set L=…")


def test_a_packed_block_keeps_its_text_and_inspect_shows_it(tmp_path: Path) -> None:
    w = lstm_weights(2)
    (tmp_path / "m.eqn").write_text(LSTM_BLOCK, encoding="utf-8")
    np.savez(tmp_path / "w.npz", **w)  # type: ignore[arg-type]
    out = tmp_path / "m.bundle"
    result = CliRunner().invoke(nndk_cli, [
        "pack", str(tmp_path / "m.eqn"), "--weights", str(tmp_path / "w.npz"), "--name",
        "stack", "--version", "1.0.0", "--dtype", "float64", "-o", str(out)])
    assert result.exit_code == 0, result.output
    shown = CliRunner().invoke(nnre_cli, ["inspect", str(out)])
    assert shown.exit_code == 0, shown.output
    assert "    4  for l = 1…L:" in shown.output
    assert "   14  yₜ = softmax(W_y h^{(L)}ₜ + b_y)" in shown.output
    assert "L=2" in shown.output
    facts = json.loads(CliRunner().invoke(nnre_cli, ["inspect", "--json", str(out)]).output)
    assert facts["equations"] == LSTM_BLOCK and facts["dims"]["L"] == 2
    assert {t["name"] for t in facts["tensors"]} == set(w)
    model = nnre.load(out)
    xs = RNG.normal(size=(6, V))
    np.testing.assert_allclose(model.run({"x": xs})[0]["y"], reference_lstm(w, xs, 2),
                               rtol=1e-12, atol=1e-14)


def test_a_block_alone_needs_version_2() -> None:
    """Even a block whose copies hold no layer index (one copy of 'yₜ = xₜ') is a text a
    version-1 reader cannot parse."""
    checked = check("xₜ ∈ ℝ^2\nfor l = 1…1:\n    yₜ = xₜ")
    assert checked.roles.order == ["y"] and language_version(checked) == 2
    assert language_version(check("xₜ ∈ ℝ^2\nyₜ = xₜ")) == 1


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="for l=1…L:.\n\t h^{(l-1)}ₜ+ˡ⁻¹xW_#", max_size=48))
def test_block_texts_fail_only_with_equation_errors(text: str) -> None:
    """Any mix of the characters blocks are made of parses, or fails with an EquationError
    (never another exception); what parses renders to a text that renders the same."""
    try:
        written = parse(text, expand=False)
    except EquationError:
        return
    shown = render_text(written)
    assert render_text(parse(shown, expand=False)) == shown
    try:
        check(text, {"L": 2})
    except EquationError:
        pass
