"""Optimizers (SGD with momentum, Adam, AdamW, Adagrad, RMSProp), clipping, schedules.

Each optimizer updates the parameter arrays in place and keeps its state as named arrays,
so a checkpoint can store it and ``--resume`` continues bit for bit. Clipping and the
learning-rate schedules follow PyTorch and nanoGPT exactly (``tests/test_optim_torch.py``
compares them with ``torch.optim.AdamW``, ``clip_grad_norm_`` and nanoGPT's ``get_lr``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np

Arrays = dict[str, np.ndarray]


class Optimizer:
    """Base: ``step(params, grads, lr)`` updates params in place; ``state`` is checkpointed."""

    name = "base"

    def __init__(self, params: Arrays, decayed: Collection[str] = (), **hyper: float) -> None:
        self.hyper = dict(hyper)
        self.decayed = frozenset(decayed)  # the parameters weight decay applies to
        self.state: Arrays = {}
        self.t = 0
        self._scratch: dict[tuple[tuple[int, ...], str], np.ndarray] = {}

    def slot(self, kind: str, name: str, like: np.ndarray) -> np.ndarray:
        key = f"{kind}/{name}"
        if key not in self.state:
            self.state[key] = np.zeros_like(like)
        return self.state[key]

    def scratch(self, like: np.ndarray) -> np.ndarray:
        """A temporary of ``like``'s shape (not state: never checkpointed)."""
        key = (like.shape, like.dtype.str)
        if key not in self._scratch:
            self._scratch[key] = np.empty_like(like)
        return self._scratch[key]

    def step(self, params: Arrays, grads: Arrays, lr: float) -> None:
        self.t += 1
        for name, p in params.items():
            self.update(name, p, grads[name], lr)

    def update(self, name: str, p: np.ndarray, g: np.ndarray, lr: float) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    name = "sgd"

    def update(self, name: str, p: np.ndarray, g: np.ndarray, lr: float) -> None:
        momentum = self.hyper.get("momentum", 0.9)
        v = self.slot("velocity", name, p)
        v *= momentum
        v -= lr * g
        p += v


class Adam(Optimizer):
    name = "adam"

    def moments(self, name: str, p: np.ndarray, g: np.ndarray, b1: float, b2: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², in place (no temporaries on large
        weights); returns m, v and a scratch array of p's shape."""
        m, v = self.slot("m", name, p), self.slot("v", name, p)
        tmp = self.scratch(p)
        np.multiply(g, 1 - b1, out=tmp)
        m *= b1
        m += tmp
        np.multiply(g, g, out=tmp)
        tmp *= 1 - b2
        v *= b2
        v += tmp
        return m, v, tmp

    def update(self, name: str, p: np.ndarray, g: np.ndarray, lr: float) -> None:
        b1, b2 = self.hyper.get("beta1", 0.9), self.hyper.get("beta2", 0.999)
        eps = self.hyper.get("eps", 1e-8)
        m, v, tmp = self.moments(name, p, g, b1, b2)
        step = lr * np.sqrt(1 - b2 ** self.t) / (1 - b1 ** self.t)
        np.sqrt(v, out=tmp)
        tmp += eps
        np.divide(m, tmp, out=tmp)
        tmp *= step
        p -= tmp


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019), as ``torch.optim.AdamW``.

    First p ← p·(1 − lr·λ) for the parameters in ``decayed`` (the trainer names those with
    two axes or more, as nanoGPT does: matrices and embeddings, not biases or norm gains),
    then Adam's step with ε added to √v̂ as PyTorch places it (``Adam`` above adds it to √v,
    the paper's efficient form; the two differ only when √v̂ is near ε).
    """

    name = "adamw"

    def update(self, name: str, p: np.ndarray, g: np.ndarray, lr: float) -> None:
        b1, b2 = self.hyper.get("beta1", 0.9), self.hyper.get("beta2", 0.999)
        eps, decay = self.hyper.get("eps", 1e-8), self.hyper.get("weight_decay", 0.0)
        if decay and name in self.decayed:
            p *= 1 - lr * decay
        m, v, tmp = self.moments(name, p, g, b1, b2)
        np.sqrt(v, out=tmp)
        tmp /= math.sqrt(1 - b2 ** self.t)
        tmp += eps
        np.divide(m, tmp, out=tmp)
        tmp *= lr / (1 - b1 ** self.t)
        p -= tmp


class Adagrad(Optimizer):
    name = "adagrad"

    def update(self, name: str, p: np.ndarray, g: np.ndarray, lr: float) -> None:
        acc = self.slot("sum_sq", name, p)
        acc += g * g
        p -= lr * g / (np.sqrt(acc) + self.hyper.get("eps", 1e-8))


class RMSProp(Optimizer):
    name = "rmsprop"

    def update(self, name: str, p: np.ndarray, g: np.ndarray, lr: float) -> None:
        rho = self.hyper.get("decay", 0.95)
        acc = self.slot("mean_sq", name, p)
        acc *= rho
        acc += (1 - rho) * g * g
        p -= lr * g / (np.sqrt(acc) + self.hyper.get("eps", 1e-8))


OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {
    cls.name: cls for cls in (SGD, Adam, AdamW, Adagrad, RMSProp)
}

#: The hyperparameters an optimizer reads from the run's options, with their defaults
#: (PyTorch's betas; nanoGPT's weight decay, 0.1). An option given for an optimizer that
#: does not read it is refused (``nndk.config.validate``), never silently ignored.
HYPER: dict[str, dict[str, float]] = {
    "adam": {"beta1": 0.9, "beta2": 0.999},
    "adamw": {"beta1": 0.9, "beta2": 0.999, "weight_decay": 0.1},
}


def clip_global_norm(grads: Arrays, max_norm: float) -> float:
    """Scale all gradients together so their joint L2 norm is at most ``max_norm``, as
    ``torch.nn.utils.clip_grad_norm_``: by max_norm / (norm + 1e-6) when that is below 1.

    Returns the norm before clipping (``max_norm <= 0`` disables clipping).
    """
    total = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
    scale = max_norm / (total + 1e-6)
    if max_norm > 0 and scale < 1:
        for g in grads.values():
            g *= scale
    return total


SCHEDULES = ("constant", "step", "cosine")


@dataclass(frozen=True)
class Schedule:
    """The learning rate at each step: a linear warm-up, then constant, step or cosine decay.

    ``at(step)`` is nanoGPT's ``get_lr(it)`` (``step`` counts the updates made before this
    one, as its ``iter_num``): lr·(step+1)/(warmup+1) during the first ``warmup`` steps;
    then ``lr``, or ``lr``·``decay``^(step // ``decay_every``), or cosine from ``lr`` down to
    ``min_lr`` at ``decay_steps`` (counted from step 0, warm-up included) and ``min_lr`` after.
    """

    lr: float
    kind: str = "step"
    warmup: int = 0
    decay: float = 1.0
    decay_every: int = 0
    min_lr: float = 0.0
    decay_steps: int = 0

    def at(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / (self.warmup + 1)
        if self.kind == "step" and self.decay_every > 0 and self.decay != 1.0:
            return self.lr * self.decay ** (step // self.decay_every)
        if self.kind != "cosine":
            return self.lr
        if step >= self.decay_steps:  # at decay_steps itself the cosine is at min_lr too
            return self.min_lr
        ratio = (step - self.warmup) / (self.decay_steps - self.warmup)
        coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
        return self.min_lr + coeff * (self.lr - self.min_lr)
