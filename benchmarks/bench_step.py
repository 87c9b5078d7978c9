"""nnre ``Model.run`` over T steps vs a hand-fused NumPy LSTM, in the same process.

Prints µs per step and the ratio nnre / NumPy for H ∈ {128, 512}, B ∈ {1, 32}, with 1 and
2 BLAS threads. Both sides compute the same LSTM with the same float32 weights (softmax
read-out included) and both hoist the input projection out of the time loop.

Run: python benchmarks/bench_step.py [--steps 200] [--repeats 7] [--quick]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from timing import best_of

from nnre import Model
from nnre.threads import set_blas_threads

TEMPLATE = Path(__file__).resolve().parent.parent / "nndk" / "templates" / "lstm.eqn"


def make_weights(hidden: int, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    w: dict[str, np.ndarray] = {}
    for g in "ifoc":
        w[f"W_{g}"] = rng.normal(scale=0.1, size=(hidden, vocab)).astype(np.float32)
        w[f"U_{g}"] = rng.normal(scale=0.1, size=(hidden, hidden)).astype(np.float32)
        w[f"b_{g}"] = rng.normal(scale=0.1, size=hidden).astype(np.float32)
    w["W_y"] = rng.normal(scale=0.1, size=(vocab, hidden)).astype(np.float32)
    w["b_y"] = np.zeros(vocab, np.float32)
    return w


class FusedLSTM:
    """The hand-fused reference: stacked gates, in-place ufuncs, buffers allocated once."""

    def __init__(self, w: dict[str, np.ndarray]) -> None:
        self.hidden = w["U_i"].shape[0]
        self.wx = np.ascontiguousarray(np.concatenate([w[f"W_{g}"] for g in "ifoc"]).T)
        self.uh = np.ascontiguousarray(np.concatenate([w[f"U_{g}"] for g in "ifoc"]).T)
        self.b = np.concatenate([w[f"b_{g}"] for g in "ifoc"])
        self.wy, self.by = np.ascontiguousarray(w["W_y"].T), w["b_y"]

    def run(self, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        steps, batch, _ = xs.shape
        n = self.hidden
        xw = (xs.reshape(steps * batch, -1) @ self.wx + self.b).reshape(steps, batch, 4 * n)
        h = np.zeros((batch, n), np.float32)
        c = np.zeros((batch, n), np.float32)
        z = np.empty((batch, 4 * n), np.float32)
        tc = np.empty((batch, n), np.float32)
        ys = np.empty((steps, batch, self.wy.shape[1]), np.float32)
        for t in range(steps):
            np.matmul(h, self.uh, out=z)
            z += xw[t]
            s = z[:, : 3 * n]
            s *= 0.5
            np.tanh(s, out=s)
            s *= 0.5
            s += 0.5
            g = z[:, 3 * n:]
            np.tanh(g, out=g)
            c *= z[:, n: 2 * n]
            g *= z[:, :n]
            c += g
            np.tanh(c, out=tc)
            np.multiply(z[:, 2 * n: 3 * n], tc, out=h)
            y = ys[t]
            np.matmul(h, self.wy, out=y)
            y += self.by
            y -= y.max(axis=1, keepdims=True)
            np.exp(y, out=y)
            y /= np.add.reduce(y, axis=1, keepdims=True)
        return ys, h, c


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--vocab", type=int, default=65)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, for a smoke run")
    args = parser.parse_args()
    repeats = 2 if args.quick else args.repeats
    text = TEMPLATE.read_text(encoding="utf-8")
    print(f"LSTM, V={args.vocab}, T={args.steps}, float32, best of {repeats}")
    print(f"{'threads':>7} {'H':>5} {'B':>4} {'numpy µs/step':>14} {'nnre µs/step':>13} "
          f"{'nnre/numpy':>10}")
    for threads in (1, 2):
        if not set_blas_threads(threads):
            print("(could not set the BLAS thread count; using the default)")
        for hidden in (128, 512):
            w = make_weights(hidden, args.vocab)
            model = Model.from_equations(text, w)
            fused = FusedLSTM(w)
            for batch in (1, 32):
                xs = np.random.default_rng(1).normal(
                    size=(args.steps, batch, args.vocab)).astype(np.float32)
                want, got = fused.run(xs)[0], model.run({"x": xs})[0]["y"]
                np.testing.assert_allclose(got, want, atol=2e-5)
                t_ref = best_of(lambda xs=xs, f=fused: f.run(xs), repeats) / args.steps
                t_nnre = best_of(lambda xs=xs, m=model: m.run({"x": xs}), repeats) / args.steps
                print(f"{threads:>7} {hidden:>5} {batch:>4} {t_ref * 1e6:>14.1f} "
                      f"{t_nnre * 1e6:>13.1f} {t_nnre / t_ref:>10.2f}")


if __name__ == "__main__":
    main()
