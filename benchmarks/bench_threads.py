"""nnre ``Model.run`` under three BLAS thread policies, on an idle machine and beside a busy one.

Policies: ``auto`` (a Model used as a library with no count set: each product on one thread
between two setter calls, the host's count restored; see ``nnre.threads``), ``1`` and ``2``
(``--threads``; the CLIs' default is 1). Each policy runs in a fresh
process (the policy is process-wide); "busy" starts a process spinning on one core first.
Prints µs per step of an LSTM over T steps and each policy's time divided by the best
policy's for that row (1.00 = best; the default should never be far from it).

Run: python benchmarks/bench_threads.py [--steps 200] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

SIZES = [(128, 1), (128, 32), (512, 1), (512, 32)]
POLICIES = ["auto", "1", "2"]


def measure(policy: str, steps: int, repeats: int) -> dict[str, float]:
    """µs per step for every size, in this process, under ``policy``."""
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_step import TEMPLATE, best_of, make_weights

    from nnre import Model
    from nnre.threads import set_blas_threads

    if policy != "auto":
        set_blas_threads(int(policy))
    text = TEMPLATE.read_text(encoding="utf-8")
    out = {}
    for hidden, batch in SIZES:
        model = Model.from_equations(text, make_weights(hidden, 65))
        xs = np.random.default_rng(0).random((steps, batch, 65), dtype=np.float32)
        seconds = best_of(lambda m=model, x=xs: m.run({"x": x}), repeats)
        out[f"{hidden},{batch}"] = seconds / steps * 1e6
    return out


def run_policy(policy: str, steps: int, repeats: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", policy, "--steps", str(steps),
           "--repeats", str(repeats)]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.steps, args.repeats)))
        return
    print(f"LSTM Model.run, V=65, T={args.steps}, float32, best of {args.repeats}; "
          "µs per step (ratio to the best policy of the row)")
    for load in ("idle", "busy"):
        spinner = None
        if load == "busy":
            spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(0.5)
        try:
            results = {p: run_policy(p, args.steps, args.repeats) for p in POLICIES}
        finally:
            if spinner is not None:
                spinner.kill()
        print(f"\n{load}: " + ("a process spins on one core" if spinner else "nothing else"))
        print(f"{'H':>5} {'B':>4} " + " ".join(f"{p:>16}" for p in POLICIES))
        for hidden, batch in SIZES:
            key = f"{hidden},{batch}"
            best = min(results[p][key] for p in POLICIES)
            cells = " ".join(f"{results[p][key]:9.1f} ({results[p][key] / best:4.2f})"
                             for p in POLICIES)
            print(f"{hidden:>5} {batch:>4} {cells}")


if __name__ == "__main__":
    main()
