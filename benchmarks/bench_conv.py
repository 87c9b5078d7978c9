"""The conv kernel (nnre/ops/conv.py) forward and backward vs torch.nn.functional, in one process.

Two LeNet-ish layers at batch 256, float32, 1 thread on both sides (torch.set_num_threads
and nnre's BLAS setting): 1→16 channels on 8×8 and 16→32 channels on 4×4, 3×3 kernels,
pad 1, with a bias. Backward is the three VJPs (W, x, b) against torch's autograd of the
same call. Prints ms per call and the ratio nnre / torch; both sides are checked to agree.
nnre's side runs as the VM and the trainer bind a conv chain: x, the result and g batch
last (``nnre.layout``), the forward as its calls bound once (``Op.unfold``);
``--rows-first`` times the kernel over plain (rows, C, H, W) arrays instead.

Run: python benchmarks/bench_conv.py [--repeats 7] [--batch 256] [--rows-first] [--quick]
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from timing import best_of

from nnre.ops import OPS
from nnre.threads import set_blas_threads

LAYERS = [("1→16, 8×8", 1, 16, 8), ("16→32, 4×4", 16, 32, 4)]
ATTRS: dict[str, Any] = {"stride": (1, 1), "pads": (1, 1, 1, 1), "dilation": (1, 1),
                         "groups": 1}


def _laid_out(a: np.ndarray, batch_last: bool) -> np.ndarray:
    return np.moveaxis(np.ascontiguousarray(np.moveaxis(a, 0, -1)), -1, 0) if batch_last \
        else a


def bench_layer(torch: Any, label: str, c: int, o: int, n: int, batch: int,
                repeats: int, last: bool) -> None:
    """One layer: both sides checked to agree, then timed forward and backward."""
    op = OPS["conv_bias"]
    assert op.vjp is not None and op.unfold is not None
    vjp = op.vjp
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, c, n, n)).astype(np.float32)
    w = (rng.normal(size=(o, c, 3, 3)) / (3 * np.sqrt(c))).astype(np.float32)
    b = rng.normal(size=o).astype(np.float32)
    out = _laid_out(np.empty((batch, o, n, n), np.float32), last)
    g = rng.normal(size=out.shape).astype(np.float32)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    x, g = _laid_out(x, last), _laid_out(g, last)
    bound = op.unfold(w, x, b, out=out, **ATTRS)
    gt = torch.tensor(g)
    y = torch.nn.functional.conv2d(xt, wt, bt, padding=1)  # recorded outside the timing

    def forward_torch() -> Any:
        with torch.no_grad():
            return torch.nn.functional.conv2d(xt, wt, bt, padding=1)

    def backward_torch() -> Any:
        return torch.autograd.grad(y, (wt, xt, bt), gt, retain_graph=True)

    def forward_nnre() -> Any:
        if not last:
            return op.kernel(w, x, b, out=out, **ATTRS)
        for call in bound:
            call()
        return out

    def backward_nnre() -> Any:
        return [vjp(g, out, [w, x, b], ATTRS, i) for i in range(3)]

    np.testing.assert_allclose(forward_nnre(), y.detach().numpy(), rtol=1e-4, atol=1e-4)
    for got, want in zip(backward_nnre(), backward_torch(), strict=True):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-3, atol=1e-3)
    for name, ref, ours in (("forward", forward_torch, forward_nnre),
                            ("backward", backward_torch, backward_nnre)):
        t_ref, t_ours = best_of(ref, repeats), best_of(ours, repeats)
        print(f"{label:>12} {name:>8} {t_ref * 1e3:>9.2f} {t_ours * 1e3:>8.2f} "
              f"{t_ours / t_ref:>10.2f}")


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, for a smoke run")
    parser.add_argument("--rows-first", action="store_true",
                        help="plain (rows, C, H, W) arrays instead of the VM's batch-last ones")
    args = parser.parse_args()
    repeats = 2 if args.quick else args.repeats
    torch.set_num_threads(1)
    if not set_blas_threads(1):
        print("(could not set the BLAS thread count; using the default)")
    order = "rows first" if args.rows_first else "batch last, bound calls"
    print(f"conv 3×3 pad 1 + bias, batch {args.batch}, float32, 1 thread, best of {repeats}; "
          f"nnre: {order}")
    print(f"{'layer':>12} {'pass':>8} {'torch ms':>9} {'nnre ms':>8} {'nnre/torch':>10}")
    for label, c, o, n in LAYERS:
        bench_layer(torch, label, c, o, n, args.batch, repeats, not args.rows_first)


if __name__ == "__main__":
    main()
