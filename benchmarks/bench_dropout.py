"""What AdamW and --dropout cost a training step, against the plain Adam step, same process.

A char-LSTM (V=65, batch 32, T=50) trained by nndk's TextTrainer: plain with Adam, plain
with AdamW (decoupled decay on the matrices), the LSTM with dropout(hₜ) on its state and
dropout on the read-out's input at P = 0 (the instructions removed) and at P = 0.2 (two mask
inputs of T·B·H entries drawn per step, and two products more each way).

Run: python benchmarks/bench_dropout.py [--repeats 5] [--threads 1] [--quick]
"""

from __future__ import annotations

import argparse

import numpy as np
from timing import best_of

from nndk.data import TextData
from nndk.models import read_model
from nndk.train import TrainConfig
from nndk.train_text import TextTrainer
from nnre.threads import set_blas_threads

V, B, T = 65, 32, 50
LSTM = read_model("lstm")[0]
DROPPED = LSTM.replace("hₜ = oₜ ∘ σ_h(cₜ)", "hₜ = dropout(oₜ ∘ σ_h(cₜ))").replace(
    "W_y hₜ", "W_y dropout(hₜ)")


def trainer(hidden: int, text: np.ndarray, equations: str, **options: object) -> TextTrainer:
    vocab = "".join(chr(32 + i) for i in range(V))
    data = TextData(vocab, text, text[:0], "0" * 64)
    config = TrainConfig(dims={"H": hidden}, seq_length=T, batch_size=B, lr=2e-3, clip=5.0,
                         sample_length=0, **options)  # type: ignore[arg-type]
    return TextTrainer(config, "<bench>", equations, "lstm.eqn", data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="H=128 only, 2 repeats")
    args = parser.parse_args()
    set_blas_threads(args.threads)
    repeats = 2 if args.quick else args.repeats
    rng = np.random.default_rng(0)
    cases = {
        "adam": (LSTM, {}),
        "adamw": (LSTM, {"optimizer": "adamw"}),
        "adamw, dropout() P=0": (DROPPED, {"optimizer": "adamw"}),
        "adamw, dropout() P=0.2": (DROPPED, {"optimizer": "adamw", "dropout": 0.2}),
    }
    print(f"char-LSTM training step, V={V}, B={B}, T={T}, float32, {args.threads} thread(s), "
          f"best of {repeats} interleaved; chars/s and time relative to plain Adam (lower is "
          "better)")
    for hidden in [128] if args.quick else [128, 512]:
        text = rng.integers(0, V, size=B * T * 4 + 1).astype(np.int32)
        trainers = {name: trainer(hidden, text, eq, **opt) for name, (eq, opt) in cases.items()}
        times = {name: float("inf") for name in trainers}
        for _ in range(repeats):  # interleaved: a busy spell of the machine hits every case
            for name, tr in trainers.items():
                times[name] = min(times[name], best_of(tr.train_step, 1))
        for name, seconds in times.items():
            print(f"H={hidden:<4} {name:<24} {B * T / seconds:>9,.0f} chars/s "
                  f"{seconds / times['adam']:>6.2f}×")


if __name__ == "__main__":
    main()
