"""AdamW, the learning-rate schedules and clipping against PyTorch and nanoGPT's get_lr.

The oracles are independent of nndk: ``torch.optim.AdamW`` and
``torch.nn.utils.clip_grad_norm_`` (skipped without torch), and nanoGPT's ``get_lr``
written out here as nanoGPT's train.py has it.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest

from nndk.optim import OPTIMIZERS, Schedule, clip_global_norm
from nndk.train import TrainConfig, start

torch = pytest.importorskip("torch")


def nanogpt_get_lr(it: int, learning_rate: float, warmup_iters: int, lr_decay_iters: int,
                   min_lr: float) -> float:
    """nanoGPT's train.py, verbatim but for the arguments."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    assert 0 <= decay_ratio <= 1
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return min_lr + coeff * (learning_rate - min_lr)


@pytest.mark.parametrize(("warmup", "decay_steps"), [(0, 20), (5, 20), (3, 12), (10, 11)])
def test_cosine_schedule_is_nanogpts_get_lr(warmup: int, decay_steps: int) -> None:
    schedule = Schedule(1e-3, "cosine", warmup, min_lr=1e-4, decay_steps=decay_steps)
    for it in range(decay_steps + 5):
        assert schedule.at(it) == pytest.approx(
            nanogpt_get_lr(it, 1e-3, warmup, decay_steps, 1e-4), rel=1e-15, abs=0), it


def test_warmup_then_constant_or_step_decay() -> None:
    constant = Schedule(0.5, "constant", warmup=4)
    assert [constant.at(i) for i in range(6)] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.5]
    step = Schedule(0.5, "step", warmup=2, decay=0.1, decay_every=3)
    want = [0.5 / 3, 1.0 / 3, 0.5, 0.05, 0.05, 0.05, 0.005]
    assert [step.at(i) for i in range(7)] == pytest.approx(want, rel=1e-12)


def test_the_trainer_follows_get_lr_to_the_last_step(tmp_path: Path) -> None:
    """--lr-decay-steps defaults to the run's total steps, --min-lr to --lr / 10."""
    corpus = tmp_path / "c.txt"
    rng = random.Random(0)
    corpus.write_text(" ".join(rng.choice(["ab", "cd", "efg"]) for _ in range(600)))
    trainer = start(TrainConfig(dims={"H": 8}, seq_length=5, batch_size=2, steps=20,
                                lr=3e-3, warmup=4, lr_schedule="cosine"), corpus)
    for it in range(20):
        trainer.step = it
        assert trainer.learning_rate() == pytest.approx(
            nanogpt_get_lr(it, 3e-3, 4, 20, 3e-4), rel=1e-15), it


def test_adamw_matches_torch_over_twenty_steps() -> None:
    """Decoupled decay on the matrices only (nanoGPT's two parameter groups), the betas of
    shakespeare_char, a warm-up and cosine learning rate changed at every step."""
    rng = np.random.default_rng(0)
    shapes = {"W": (5, 3), "E": (7, 4), "b": (5,), "g": (4,)}
    start_values = {k: rng.normal(size=s) for k, s in shapes.items()}
    grads = [{k: rng.normal(size=s) for k, s in shapes.items()} for _ in range(20)]
    ours = {k: v.copy() for k, v in start_values.items()}
    opt = OPTIMIZERS["adamw"](ours, decayed={"W", "E"}, beta1=0.9, beta2=0.99,
                              weight_decay=0.1)
    theirs = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
              for k, v in start_values.items()}
    groups = [{"params": [theirs["W"], theirs["E"]], "weight_decay": 0.1},
              {"params": [theirs["b"], theirs["g"]], "weight_decay": 0.0}]
    torch_opt = torch.optim.AdamW(groups, lr=1e-2, betas=(0.9, 0.99), eps=1e-8)
    schedule = Schedule(1e-2, "cosine", warmup=3, min_lr=1e-3, decay_steps=20)
    for it, g in enumerate(grads):
        lr = schedule.at(it)
        opt.step(ours, {k: v.copy() for k, v in g.items()}, lr)
        for group in torch_opt.param_groups:
            group["lr"] = lr
        for k, t in theirs.items():
            t.grad = torch.tensor(g[k])
        torch_opt.step()
        for k, t in theirs.items():
            np.testing.assert_allclose(ours[k], t.detach().numpy(), rtol=1e-12, atol=1e-14,
                                       err_msg=f"{k} at step {it}")
    assert not np.allclose(ours["b"], start_values["b"] * 0.999)  # it moved


def test_training_with_adamw_is_torch_adamw_with_nanogpts_groups(tmp_path: Path) -> None:
    """Three steps of nndk train: the weights equal torch.optim.AdamW's fed the same
    (clipped) gradients, with weight decay on parameters of two axes or more only (the
    LSTM's matrices, not its biases: the forget-gate bias starts at 1, where decay shows)."""
    corpus = tmp_path / "c.txt"
    rng = random.Random(1)
    corpus.write_text(" ".join(rng.choice(["the", "cat", "sat", "on"]) for _ in range(800)))
    config = TrainConfig(dims={"H": 8}, seq_length=6, batch_size=3, steps=3, lr=0.05,
                         optimizer="adamw", weight_decay=0.5, beta2=0.99, warmup=1, clip=1.0,
                         lr_schedule="cosine", sample_length=0)
    trainer = start(config, corpus)
    shapes = trainer.learner.shapes
    theirs = {k: torch.tensor(np.array(v).reshape(shapes[k]), requires_grad=True)
              for k, v in trainer.params.items()}
    decay = [t for k, t in theirs.items() if len(shapes[k]) >= 2]
    no_decay = [t for k, t in theirs.items() if len(shapes[k]) < 2]
    assert len(decay) == 9 and len(no_decay) == 5  # W·, U·, W_y; b·, b_y
    torch_opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.5},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  betas=(0.9, 0.99), eps=1e-8)
    for _ in range(3):
        lr = trainer.learning_rate()
        trainer.train_step()
        back = trainer.learner.buffers(config.seq_length, config.batch_size)[1]
        for k, g in back.param_grads().items():  # after clipping, as the update saw them
            theirs[k].grad = torch.tensor(np.array(g).reshape(shapes[k]))
        for group in torch_opt.param_groups:
            group["lr"] = lr
        torch_opt.step()
        for k, t in theirs.items():
            np.testing.assert_allclose(trainer.params[k].reshape(shapes[k]),
                                       t.detach().numpy(), rtol=2e-5, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("max_norm", [0.5, 3.0, 1e3])
def test_clipping_is_torchs_clip_grad_norm(max_norm: float) -> None:
    rng = np.random.default_rng(3)
    grads = {k: rng.normal(size=s).astype(np.float32)
             for k, s in {"W": (6, 5), "b": (6,), "E": (4, 3, 2)}.items()}
    tensors = [torch.tensor(v.copy()) for v in grads.values()]
    params = [torch.zeros_like(t, requires_grad=True) for t in tensors]
    for p, t in zip(params, tensors, strict=True):
        p.grad = t
    want = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    got = clip_global_norm(grads, max_norm)
    assert got == pytest.approx(want, rel=1e-6)
    for (k, g), p in zip(grads.items(), params, strict=True):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-6, atol=1e-8, err_msg=k)
