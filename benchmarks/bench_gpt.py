"""The gpt template: training characters/s against PyTorch, and generation µs per character
at context positions 16, 64 and 256, in one process.

Training: one step of ``nndk train``'s learner on the sequence form (forward over a batch of
12 windows of 64 characters, mean cross-entropy of every position, backward, clipping, Adam)
against the same network in PyTorch (``gpt_torch.GPT``: nanoGPT's model, same weights) with
``torch.optim.Adam`` and ``clip_grad_norm_``, at 1 and 2 threads. Target (issue #13): nndk ≥
0.5 × PyTorch's characters/s.

Generation at batch 1, the template's size (L=4, heads=4, d=128) with a context of 256:
µs for each of 8 characters drawn after a prime that brings the stream to position p, by
``Model.generate`` (the cached step), by nnre recomputing the prefix (``Model.run`` over the
p characters for every character), and by PyTorch stepping with its own key/value cache.
Targets: cached at 256 ≤ 1.5 × cached at 16; nnre cached ≤ 1.2 × PyTorch cached.

Run: python benchmarks/bench_gpt.py [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from timing import best_of

import nnre
from nndk.learner import Learner
from nndk.losses import cross_entropy
from nndk.models import read_model
from nnre.equations import check
from nnre.threads import set_blas_threads

VOCAB = 65
TRAIN = {"L": 4, "heads": 4, "d": 128, "context": 64}
BATCH = 12


def learner(dims: dict[str, int], seed: int = 0) -> Learner:
    text, _ = read_model("gpt")
    return Learner(check(text, dims, known={"y": (VOCAB,)}), text, "adam", seed, "auto",
                   sequence=True)


def training(repeats: int) -> tuple[float, float | None]:
    """Seconds per step: nndk, PyTorch (None without it)."""
    lrn = learner(TRAIN)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, VOCAB, (BATCH, TRAIN["context"] + 1))
    x, targets = ids[:, :-1], ids[:, 1:]
    feeds = {"x": x[:, :, None].astype(np.float32)}

    def nndk_step() -> None:
        run = lrn.forward(feeds, 1, BATCH, None)
        values = run.full[lrn.prog.outputs["y"]]
        _, seeds = cross_entropy(lrn.prog, "y", values.reshape(-1, VOCAB), targets.reshape(-1))
        lrn.update(run, {k: v.reshape(run.full[k].shape) for k, v in seeds.items()}, 1e-3, 1.0)

    ours = best_of(nndk_step, repeats)
    try:
        import torch
        from gpt_torch import GPT
    except ImportError:
        return ours, None
    weights = {n: a.reshape(lrn.shapes[n]) for n, a in lrn.params.items()}
    net = GPT(weights, TRAIN["L"], TRAIN["heads"])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    tx, ty = torch.tensor(x), torch.tensor(targets.reshape(-1))

    def torch_step() -> None:
        loss = torch.nn.functional.cross_entropy(net(tx).reshape(-1, VOCAB), ty)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()

    return ours, best_of(torch_step, repeats)


def generation(positions: list[int], repeats: int) -> dict[str, list[float]]:
    """µs per character at each position: cached, recomputed, PyTorch cached."""
    dims = {**TRAIN, "context": max(positions)}
    lrn = learner(dims, seed=1)
    text, _ = read_model("gpt")
    weights = {n: a.reshape(lrn.shapes[n]) for n, a in lrn.params.items()}
    vocab = [chr(32 + i) for i in range(VOCAB)]
    codecs = {"x": {"id": "char", "vocab": vocab}, "y": {"id": "sample", "vocab": vocab}}
    model = nnre.Model.from_equations(text, weights, dims, metadata={"codecs": codecs})
    rng = np.random.default_rng(2)
    table: dict[str, list[float]] = {"nnre cached": [], "nnre recomputed": [],
                                     "PyTorch cached": []}
    draws = 8
    for p in positions:
        prime = "".join(vocab[i] for i in rng.integers(0, VOCAB, p - draws))

        def cached(prime: str = prime) -> None:
            stream = model.generate(prime, draws, temperature=0)
            next(stream)  # the prime: not timed
            start = time.perf_counter()
            for _ in stream:
                pass
            cached.last = (time.perf_counter() - start) / (draws - 1)  # type: ignore[attr-defined]

        best = float("inf")
        for _ in range(repeats):
            cached()
            best = min(best, cached.last)  # type: ignore[attr-defined]
        table["nnre cached"].append(best * 1e6)
        feeds = {"x": rng.integers(0, VOCAB, (p, 1)).astype(np.float32)}
        table["nnre recomputed"].append(best_of(lambda f=feeds: model.run(f), repeats) * 1e6)
        table["PyTorch cached"].append(_torch_cached(weights, dims, p, draws, repeats))
    return table


def _torch_cached(weights: dict[str, np.ndarray], dims: dict[str, int], p: int, draws: int,
                  repeats: int) -> float:
    try:
        import torch
        from gpt_torch import GPT
    except ImportError:
        return float("nan")
    net = GPT(weights, dims["L"], dims["heads"])
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            cache: list = [None] * dims["L"]
            for t in range(p - draws):
                net.step(t % VOCAB, t, cache)
            start = time.perf_counter()
            for t in range(p - draws, p):
                net.step(t % VOCAB, t, cache)
            best = min(best, (time.perf_counter() - start) / draws)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1 thread, fewer repeats")
    args = parser.parse_args()
    repeats = 2 if args.quick else args.repeats
    for threads in (1,) if args.quick else (1, 2):
        set_blas_threads(threads)
        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:
            pass
        ours, ref = training(repeats)
        chars = BATCH * TRAIN["context"]
        line = f"training, {threads} thread(s): nndk {chars / ours:,.0f} chars/s"
        if ref is not None:
            line += f", PyTorch {chars / ref:,.0f} chars/s, ratio {ref / ours:.2f}× (≥ 0.5)"
        print(line)
    set_blas_threads(1)
    positions = [16, 64, 256]
    table = generation(positions, repeats)
    print("\ngeneration at batch 1, 1 thread, µs per character (context 256, L=4, d=128)")
    print(f"{'position':>24}" + "".join(f"{p:>10}" for p in positions))
    for name, row in table.items():
        print(f"{name:>24}" + "".join(f"{v:>10.0f}" for v in row))
    cached, torch_row = table["nnre cached"], table["PyTorch cached"]
    print(f"cached 256 / cached 16: {cached[-1] / cached[0]:.2f} (≤ 1.5); nnre / PyTorch "
          f"cached: " + ", ".join(f"{a / b:.2f}" for a, b in zip(cached, torch_row,
                                                                  strict=True)) + " (≤ 1.2)")


if __name__ == "__main__":
    main()
