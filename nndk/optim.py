"""Optimizers (SGD with momentum, Adam, Adagrad, RMSProp), global-norm clipping, decay.

Each optimizer updates the parameter arrays in place and keeps its state as named arrays,
so a checkpoint can store it and ``--resume`` continues bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Arrays = dict[str, np.ndarray]


class Optimizer:
    """Base: ``step(params, grads, lr)`` updates params in place; ``state`` is checkpointed."""

    name = "base"

    def __init__(self, params: Arrays, **hyper: float) -> None:
        self.hyper = dict(hyper)
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

    def update(self, name: str, p: np.ndarray, g: np.ndarray, lr: float) -> None:
        b1, b2 = self.hyper.get("beta1", 0.9), self.hyper.get("beta2", 0.999)
        eps = self.hyper.get("eps", 1e-8)
        m, v = self.slot("m", name, p), self.slot("v", name, p)
        tmp = self.scratch(p)  # every operation in place: no temporaries on large weights
        np.multiply(g, 1 - b1, out=tmp)
        m *= b1
        m += tmp
        np.multiply(g, g, out=tmp)
        tmp *= 1 - b2
        v *= b2
        v += tmp
        step = lr * np.sqrt(1 - b2 ** self.t) / (1 - b1 ** self.t)
        np.sqrt(v, out=tmp)
        tmp += eps
        np.divide(m, tmp, out=tmp)
        tmp *= step
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
    cls.name: cls for cls in (SGD, Adam, Adagrad, RMSProp)
}


def clip_global_norm(grads: Arrays, max_norm: float) -> float:
    """Scale all gradients together so their joint L2 norm is at most ``max_norm``.

    Returns the norm before clipping (``max_norm <= 0`` disables clipping).
    """
    total = float(np.sqrt(sum(float(np.vdot(g, g)) for g in grads.values())))
    if max_norm > 0 and total > max_norm:
        scale = max_norm / (total + 1e-12)
        for g in grads.values():
            g *= scale
    return total


def learning_rate(base: float, step: int, decay: float, decay_every: int) -> float:
    """Step decay: multiply by ``decay`` every ``decay_every`` steps (1.0 or 0 disables)."""
    if decay_every <= 0 or decay == 1.0:
        return base
    return base * decay ** (step // decay_every)
