"""Progress of long work on stderr: a redrawn bar in a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from nndk.losses import bits
from nndk.train import Progress


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Reporter:
    """Turns training Progress into a bar (TTY) or lines (logs, CI), and prints samples."""

    def __init__(self, stream: TextIO | None = None, width: int = 24) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.width = width
        self.started = time.perf_counter()
        self.val: float | None = None

    def __call__(self, p: Progress) -> None:
        if p.val_loss is not None:
            self.val = p.val_loss
        eta = (p.total - p.step) * (time.perf_counter() - self.started) / max(p.step, 1)
        val = ""
        if self.val is not None:
            val = f" val {self.val:.4f}" + (f" ({bits(self.val):.3f} bits)" if p.bits else "")
        text = (f"step {p.step}/{p.total} loss {p.loss:.4f}{val} "
                f"{p.chars_per_s:,.0f} {p.unit}/s ETA {_clock(eta)}")
        if self.tty:
            filled = int(self.width * p.step / max(p.total, 1))
            bar = "#" * filled + "-" * (self.width - filled)
            self.stream.write(f"\r[{bar}] {text}\x1b[K")
            if p.sample is not None or p.step == p.total:
                self.stream.write("\n")
        elif p.val_loss is not None or p.step == p.total:
            self.stream.write(text + "\n")
        if p.sample is not None:
            self.stream.write(f"--- sample at step {p.step} ---\n{p.sample}\n---\n")
        self.stream.flush()
