"""nanoGPT's CPU run of shakespeare_char, trained by nndk and by PyTorch side by side: the
validation loss curves, which must agree within 3 % at every evaluation (issue #13).

The configuration is nanoGPT's README example for a CPU (4 layers, 4 heads, 128 wide, context
64, batch 12, 2,000 iterations, AdamW lr 1e-3 with weight decay 0.1 and β₂ 0.99, 100 warm-up
steps, cosine decay to 1e-4, clipping at 1, 20 evaluation batches every 250 steps, no
dropout), on samples/shakespeare/input.txt split as nanoGPT splits it (the first 90 % of the
characters train). nndk trains its ``gpt`` template with ``nndk train``'s own trainer; PyTorch
trains ``gpt_torch.GPT`` (nanoGPT's model) from the same initial weights, on the same windows,
with ``torch.optim.AdamW`` (decay on the matrices only, as nanoGPT) and nanoGPT's learning
rate schedule. Both are evaluated on the same held-out windows. nanoGPT itself reports about
1.88 nats per character at the end of this run.

Run: python benchmarks/bench_gpt_parity.py [--steps 2000] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from nndk.config import TrainConfig
from nndk.train import start
from nndk.train_sequence import VALIDATION, WINDOWS
from nnre.threads import set_blas_threads

CORPUS = Path(__file__).resolve().parent.parent / "samples" / "shakespeare" / "input.txt"
DIMS = {"L": 4, "heads": 4, "d": 128, "context": 64}


def nanogpt_lr(step: int, lr: float, warmup: int, decay: int, min_lr: float) -> float:
    """nanoGPT's get_lr: linear warm-up, cosine decay, then min_lr."""
    if step < warmup:
        return lr * (step + 1) / (warmup + 1)
    if step > decay:
        return min_lr
    ratio = (step - warmup) / (decay - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch
    from gpt_torch import GPT

    set_blas_threads(args.threads)
    torch.set_num_threads(args.threads)
    config = TrainConfig(model="gpt", dims=dict(DIMS), seq_length=DIMS["context"],
                         batch_size=12, steps=args.steps, lr=1e-3, optimizer="adamw",
                         weight_decay=0.1, beta2=0.99, warmup=100, lr_schedule="cosine",
                         min_lr=1e-4, lr_decay_steps=args.steps, clip=1.0,
                         eval_every=args.eval_every, eval_iters=20, val_split="nanogpt")
    trainer = start(config, CORPUS)
    lrn = trainer.learner
    net = GPT({n: a.reshape(lrn.shapes[n]).copy() for n, a in lrn.params.items()},
              DIMS["L"], DIMS["heads"])
    decay = [p for p in net.parameters() if p.dim() >= 2]
    rest = [p for p in net.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": rest, "weight_decay": 0.0}], lr=1e-3,
                            betas=(0.9, 0.99))
    seed = config.seed

    def torch_val() -> float:
        total = 0.0
        with torch.no_grad():
            for i in range(config.eval_iters):
                x, y = trainer.windows(trainer.data.val, config.batch_size, [seed, i, VALIDATION])
                logits = net(torch.tensor(x.astype(np.int64)))
                target = torch.tensor(y.reshape(-1).astype(np.int64))
                total += float(torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), target))
        return total / config.eval_iters

    print(f"{'step':>6} {'nndk val':>10} {'PyTorch val':>12} {'difference':>11}")
    worst, times = 0.0, {"nndk": 0.0, "PyTorch": 0.0}
    for step in range(args.steps + 1):
        if step % args.eval_every == 0 or step == args.steps:
            ours, ref = trainer.evaluate(), torch_val()
            assert ours is not None
            worst = max(worst, abs(ours - ref) / ref)
            print(f"{step:>6} {ours:>10.4f} {ref:>12.4f} {100 * (ours - ref) / ref:>10.2f}%",
                  flush=True)
        if step == args.steps:
            break
        start_time = time.perf_counter()
        trainer.train_step()
        times["nndk"] += time.perf_counter() - start_time
        start_time = time.perf_counter()
        x, y = trainer.windows(trainer.data.train, config.batch_size, [seed, step, WINDOWS])
        lr = nanogpt_lr(step, 1e-3, 100, args.steps, 1e-4)
        for group in opt.param_groups:
            group["lr"] = lr
        logits = net(torch.tensor(x.astype(np.int64)))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 torch.tensor(y.reshape(-1).astype(np.int64)))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        times["PyTorch"] += time.perf_counter() - start_time
    chars = args.steps * config.batch_size * DIMS["context"]
    print(f"largest difference: {100 * worst:.2f}% (≤ 3%); training chars/s at "
          f"{args.threads} thread(s): nndk {chars / times['nndk']:,.0f}, PyTorch "
          f"{chars / times['PyTorch']:,.0f}")


if __name__ == "__main__":
    main()
