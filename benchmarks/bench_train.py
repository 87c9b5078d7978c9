"""Training throughput (characters per second) of nndk vs hand-written NumPy vs PyTorch CPU.

One training step = forward over T steps, softmax cross-entropy, backpropagation through
time, global-norm clipping and an Adam update, for a char-LSTM with V=65, batch B=32,
H ∈ {128, 512}, T ∈ {50, 100}. All three run in this process with the same thread count;
PyTorch is optional (``pip install torch==2.13.0``).

Run: python benchmarks/bench_train.py [--repeats 5] [--threads 2] [--quick]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
from timing import best_of

from nndk.data import TextData
from nndk.models import read_model
from nndk.train import TrainConfig
from nndk.train_text import TextTrainer
from nnre.threads import set_blas_threads

V, B = 65, 32


def sig(z: np.ndarray) -> np.ndarray:
    return 0.5 * np.tanh(0.5 * z) + 0.5


class NumpyLSTM:
    """The hand-written reference: fused gates, weight gradients as one matmul each."""

    def __init__(self, hidden: int, rng: np.random.Generator) -> None:
        n = hidden
        self.p = {
            "wx": rng.normal(scale=0.1, size=(V, 4 * n)).astype(np.float32),
            "wh": rng.normal(scale=0.1, size=(n, 4 * n)).astype(np.float32),
            "b": np.zeros(4 * n, np.float32),
            "wy": rng.normal(scale=0.1, size=(n, V)).astype(np.float32),
            "by": np.zeros(V, np.float32),
        }
        self.m = {k: np.zeros_like(v) for k, v in self.p.items()}
        self.v = {k: np.zeros_like(v) for k, v in self.p.items()}
        self.t = 0
        self.n = n

    def step(self, x: np.ndarray, targets: np.ndarray) -> float:
        p, n = self.p, self.n
        steps, batch, _ = x.shape
        xz = (x.reshape(-1, V) @ p["wx"] + p["b"]).reshape(steps, batch, 4 * n)
        h = np.zeros((steps + 1, batch, n), np.float32)
        c = np.zeros((steps + 1, batch, n), np.float32)
        gates = np.empty((steps, batch, 4 * n), np.float32)
        tc = np.empty((steps, batch, n), np.float32)
        for t in range(steps):
            z = xz[t] + h[t] @ p["wh"]
            z[:, :3 * n] = sig(z[:, :3 * n])
            z[:, 3 * n:] = np.tanh(z[:, 3 * n:])
            gates[t] = z
            c[t + 1] = z[:, n:2 * n] * c[t] + z[:, :n] * z[:, 3 * n:]
            tc[t] = np.tanh(c[t + 1])
            h[t + 1] = z[:, 2 * n:3 * n] * tc[t]
        hs = h[1:].reshape(-1, n)
        logits = hs @ p["wy"] + p["by"]
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        rows = np.arange(targets.size)
        loss = -float(np.mean(np.log(probs[rows, targets.reshape(-1)])))
        dlog = probs
        dlog[rows, targets.reshape(-1)] -= 1
        dlog /= targets.size
        grads = {"wy": hs.T @ dlog, "by": dlog.sum(axis=0)}
        dhs = (dlog @ p["wy"].T).reshape(steps, batch, n)
        dz = np.empty_like(gates)
        dh_next = np.zeros((batch, n), np.float32)
        dc_next = np.zeros((batch, n), np.float32)
        for t in reversed(range(steps)):
            g = gates[t]
            i, f, o, u = g[:, :n], g[:, n:2 * n], g[:, 2 * n:3 * n], g[:, 3 * n:]
            dh = dhs[t] + dh_next
            dc = dc_next + dh * o * (1 - tc[t] * tc[t])
            d = dz[t]
            d[:, :n] = dc * u * i * (1 - i)
            d[:, n:2 * n] = dc * c[t] * f * (1 - f)
            d[:, 2 * n:3 * n] = dh * tc[t] * o * (1 - o)
            d[:, 3 * n:] = dc * i * (1 - u * u)
            dc_next = dc * f
            dh_next = d @ p["wh"].T
        flat = dz.reshape(-1, 4 * n)
        grads["wx"] = x.reshape(-1, V).T @ flat
        grads["wh"] = h[:-1].reshape(-1, n).T @ flat
        grads["b"] = flat.sum(axis=0)
        norm = np.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
        if norm > 5.0:
            for g in grads.values():
                g *= 5.0 / norm
        self.t += 1
        for k, g in grads.items():
            self.m[k] = 0.9 * self.m[k] + 0.1 * g
            self.v[k] = 0.999 * self.v[k] + 0.001 * g * g
            step = 2e-3 * np.sqrt(1 - 0.999 ** self.t) / (1 - 0.9 ** self.t)
            p[k] -= (step * self.m[k] / (np.sqrt(self.v[k]) + 1e-8)).astype(np.float32)
        return loss


def torch_step(hidden: int, threads: int) -> Callable[[np.ndarray, np.ndarray], float] | None:
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    lstm, head = torch.nn.LSTM(V, hidden), torch.nn.Linear(hidden, V)
    params = list(lstm.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=2e-3)

    def step(x: np.ndarray, targets: np.ndarray) -> float:
        opt.zero_grad()
        out, _ = lstm(torch.from_numpy(x))
        loss = torch.nn.functional.cross_entropy(head(out).reshape(-1, V),
                                                 torch.from_numpy(targets.reshape(-1)))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        return float(loss.detach())

    return step


def nndk_trainer(hidden: int, steps: int, text: np.ndarray) -> TextTrainer:
    vocab = "".join(chr(32 + i) for i in range(V))
    data = TextData(vocab, text, text[:0], "0" * 64)
    config = TrainConfig(dims={"H": hidden}, seq_length=steps, batch_size=B, lr=2e-3,
                         clip=5.0, sample_length=0)
    equations, filename = read_model("lstm")
    return TextTrainer(config, "<bench>", equations, filename, data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="H=128, T=50 only, 2 repeats")
    args = parser.parse_args()
    set_blas_threads(args.threads)
    sizes = [(128, 50)] if args.quick else [(128, 50), (128, 100), (512, 50), (512, 100)]
    repeats = 2 if args.quick else args.repeats
    rng = np.random.default_rng(0)
    print(f"char-LSTM training step (fwd+bwd+clip+Adam), V={V}, B={B}, float32, "
          f"{args.threads} threads, best of {repeats}; chars/s (higher is better)")
    print(f"{'H':>4} {'T':>4} {'numpy':>9} {'nndk':>9} {'torch':>9} {'nndk/numpy':>10} "
          f"{'nndk/torch':>10}")
    for hidden, steps in sizes:
        text = rng.integers(0, V, size=B * steps * 4 + 1).astype(np.int32)
        x = np.eye(V, dtype=np.float32)[text[:B * steps].reshape(B, steps).T]
        y = text[1:B * steps + 1].reshape(B, steps).T.astype(np.int64)
        ref = NumpyLSTM(hidden, rng)
        trainer = nndk_trainer(hidden, steps, text)
        chars = steps * B
        t_np = best_of(lambda r=ref, x=x, y=y: r.step(x, y), repeats)
        t_nd = best_of(lambda tr=trainer: tr.train_step(), repeats)
        ts = torch_step(hidden, args.threads)
        t_pt = best_of(lambda f=ts, x=x, y=y: f(x, y), repeats) if ts else float("nan")
        print(f"{hidden:>4} {steps:>4} {chars / t_np:>9,.0f} {chars / t_nd:>9,.0f} "
              f"{chars / t_pt:>9,.0f} {t_np / t_nd:>10.2f} {t_pt / t_nd:>10.2f}")


if __name__ == "__main__":
    main()
