"""gelu and erf (nnre/ops/special.py) forward and gelu's VJP vs PyTorch, in one process.

A (12, 64, 512) activation, as a transformer's MLP makes, in float32 and float64, 1 thread
on both sides. nnre runs the op's kernel (``Op.kernel`` into a preallocated ``out``), its
bound calls (``Op.unfold`` / ``Op.vjp_calls``: what the runtime's tapes run) and, for the
VJP, the rule returning a new array (``Op.vjp``); PyTorch runs torch.nn.functional.gelu,
torch.erf, and autograd's backward through gelu (``torch.autograd.grad`` on a kept graph).
Prints µs per call, best of N, as wall time (benchmarks/timing.py) and as this thread's CPU
time (``time.thread_time``: on a loaded machine a call of several ms is nearly always
preempted, which only the wall time counts), nnre / torch on CPU time, and the load
average; both sides are checked to agree first.

Run: python benchmarks/bench_activations.py [--repeats 20] [--shape 12 64 512]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from timing import best_of

from nnre.ops import OPS
from nnre.threads import set_blas_threads


def cpu_best_of(fn: Callable[[], object], repeats: int) -> float:
    """The fewest CPU seconds this thread spent in one call of ``fn``."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.thread_time()
        fn()
        best = min(best, time.thread_time() - start)
    return best


def _run_all(calls: list[Callable[[], Any]]) -> None:
    for call in calls:
        call()


def cases(torch: Any, x: np.ndarray, g: np.ndarray) -> list[tuple[str, dict[str, Any], Any]]:
    """(label, nnre ways by name, torch way) per measured operation, each checked."""
    gelu, erf = OPS["gelu"], OPS["erf"]
    out, dest = np.empty_like(x), np.empty_like(x)
    xt = torch.tensor(x, requires_grad=True)
    gt = torch.tensor(g)
    yt = torch.nn.functional.gelu(xt)
    # torch's gelu is ½·x·(1 + erf(x/√2)), which cancels for x ≪ 0: absolute agreement there
    tol, atol = 4 * np.finfo(x.dtype).eps, 16 * np.finfo(x.dtype).eps
    gelu.kernel(x, out=out)
    np.testing.assert_allclose(out, yt.detach().numpy(), rtol=tol, atol=atol)
    erf.kernel(x, out=dest)
    np.testing.assert_allclose(dest, torch.erf(xt.detach()).numpy(), rtol=tol, atol=atol)
    assert gelu.vjp is not None
    vjp = gelu.vjp
    (want,) = torch.autograd.grad(yt, xt, gt, retain_graph=True)
    np.testing.assert_allclose(vjp(g, out, [x], {}, 0), want.numpy(), rtol=tol, atol=atol)

    forward = {"kernel": lambda: gelu.kernel(x, out=out)}
    if gelu.unfold is not None:
        bound = gelu.unfold(x, out=out)
        forward["bound"] = lambda: _run_all(bound)
    erfs = {"kernel": lambda: erf.kernel(x, out=dest)}
    if erf.unfold is not None:
        bound_erf = erf.unfold(x, out=dest)
        erfs["bound"] = lambda: _run_all(bound_erf)
    backward = {"rule": lambda: vjp(g, out, [x], {}, 0)}
    if gelu.vjp_calls is not None:
        bound_vjp = gelu.vjp_calls(0, g, out, [x], dest)
        backward["bound"] = lambda: _run_all(bound_vjp)
    xd = xt.detach()
    return [("gelu", forward, lambda: torch.nn.functional.gelu(xd)),
            ("erf", erfs, lambda: torch.erf(xd)),
            ("gelu VJP", backward,
             lambda: torch.autograd.grad(yt, xt, gt, retain_graph=True))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--shape", type=int, nargs="+", default=[12, 64, 512])
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    set_blas_threads(1)
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"shape {tuple(args.shape)}, 1 thread, best of {args.repeats}; "
          f"load average {load} on {os.cpu_count()} cores")
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        x = (rng.standard_normal(args.shape) * 2).astype(dtype)
        g = rng.standard_normal(args.shape).astype(dtype)
        print(f"\n{np.dtype(dtype).name}:")
        print(f"  {'':22s} {'wall µs':>8s} {'CPU µs':>8s}  nnre/torch (CPU)")
        for label, ours, theirs in cases(torch, x, g):
            ways = {"torch": theirs, **{f"nnre {k}": v for k, v in ours.items()}}
            ref = 0.0
            for k, (way, fn) in enumerate(ways.items()):
                wall = best_of(fn, args.repeats) * 1e6
                cpu = cpu_best_of(fn, args.repeats) * 1e6
                ref = ref or cpu
                ratio = f"×{cpu / ref:5.1f}" if k else ""
                print(f"  {label if not k else '':9s} {way:12s} {wall:8.0f} {cpu:8.0f}  {ratio}")


if __name__ == "__main__":
    main()
