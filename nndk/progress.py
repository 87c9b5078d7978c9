"""Progress of a training run: what each step reports, its pace, and how it is shown on stderr
(a redrawn bar in a terminal, plain log lines otherwise)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from nndk.losses import bits


@dataclass
class Progress:
    step: int
    total: int
    loss: float
    val_loss: float | None
    chars_per_s: float  # items per second of training alone: characters, or examples
    sample: str | None = None
    unit: str = "chars"
    bits: bool = True  # the loss is a cross-entropy worth showing in bits per item
    eta: float = 0.0  # seconds: the remaining steps and evaluations at their measured pace
    accuracy: float | None = None  # a classifier's: this step's batch
    val_accuracy: float | None = None  # a classifier's: at this evaluation


class Pace:
    """Training and evaluation timed apart, so speed and ETA are not skewed by evaluations.

    Speed is items per second of training steps alone (an evaluation of a large held-out
    part once took most of a run's time and showed as slow training). The ETA is the
    remaining steps at that speed plus the remaining evaluations at their mean measured
    duration. ``clock`` is injectable for tests.
    """

    def __init__(self, items_per_step: int, eval_every: int,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.items_per_step, self.eval_every, self.clock = items_per_step, eval_every, clock
        self.train_s = self.eval_s = 0.0
        self.steps = self.evals = 0
        self._since = 0.0

    def start(self) -> None:
        self._since = self.clock()

    def trained(self) -> None:
        """A training step ended (since ``start``)."""
        now = self.clock()
        self.train_s += now - self._since
        self.steps += 1
        self._since = now

    def evaluated(self) -> None:
        """An evaluation (with its sample and checkpoint) ended (since ``trained``)."""
        now = self.clock()
        self.eval_s += now - self._since
        self.evals += 1
        self._since = now

    def rate(self) -> float:
        return self.steps * self.items_per_step / self.train_s if self.train_s > 0 else 0.0

    def eta(self, step: int, total: int) -> float:
        """Seconds left: steps (step, total] and the evaluations among them."""
        left = (total - step) * (self.train_s / self.steps if self.steps else 0.0)
        evals = total // self.eval_every - step // self.eval_every
        evals += 1 if total % self.eval_every and step < total else 0  # the last step's
        return left + evals * (self.eval_s / self.evals if self.evals else 0.0)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _percent(x: float) -> str:
    return f"{100 * x:.1f}%"


class Reporter:
    """Turns training Progress into a bar (TTY) or lines (logs, CI), and prints samples.

    Not in a terminal, a line is written at every evaluation, at the last step and, with
    ``print_every`` N > 0, every N steps."""

    def __init__(self, stream: TextIO | None = None, width: int = 24,
                 print_every: int = 0) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.width = width
        self.print_every = print_every
        self.val: float | None = None
        self.val_accuracy: float | None = None

    def line(self, p: Progress) -> str:
        if p.val_loss is not None:
            self.val, self.val_accuracy = p.val_loss, p.val_accuracy
        acc = f" acc {_percent(p.accuracy)}" if p.accuracy is not None else ""
        val = ""
        if self.val is not None:
            val = f" val {self.val:.4f}" + (f" ({bits(self.val):.3f} bits)" if p.bits else "")
        if self.val_accuracy is not None:
            val += f" val acc {_percent(self.val_accuracy)}"
        return (f"step {p.step}/{p.total} loss {p.loss:.4f}{acc}{val} "
                f"{p.chars_per_s:,.0f} {p.unit}/s ETA {_clock(p.eta)}")

    def __call__(self, p: Progress) -> None:
        text = self.line(p)
        if self.tty:
            filled = int(self.width * p.step / max(p.total, 1))
            bar = "#" * filled + "-" * (self.width - filled)
            self.stream.write(f"\r[{bar}] {text}\x1b[K")
            if p.sample is not None or p.step == p.total:
                self.stream.write("\n")
        elif (p.val_loss is not None or p.step == p.total
              or (self.print_every and p.step % self.print_every == 0)):
            self.stream.write(text + "\n")
        if p.sample is not None:
            self.stream.write(f"--- sample at step {p.step} ---\n{p.sample}\n---\n")
        self.stream.flush()
