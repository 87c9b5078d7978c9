"""Load time and memory of .bundle files against np.load of an .npz holding the same arrays.

    PYTHONPATH=. python benchmarks/bench_load.py [--sizes 1,100,1000] [--dir /tmp] [--repeat 3]

For each size (MB) it writes an LSTM's weights (float32) as a bundle and as an uncompressed
.npz (and safetensors if installed), then measures, each in a fresh subprocess so peak RSS is
honest: ``decode`` (nnre's reader: validate + mmap views), ``load`` (reader + equations
checked + Model compiled), ``verify`` (everything, including every tensor's sha256, so it
reads the whole file), and ``np.load`` materialising every array. RSS growth is measured
right after loading, before first use; files are deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LSTM = (
    "iₜ = σ(W_i·xₜ + U_i·hₜ₋₁ + b_i)\nfₜ = σ(W_f·xₜ + U_f·hₜ₋₁ + b_f)\n"
    "oₜ = σ(W_o·xₜ + U_o·hₜ₋₁ + b_o)\nc̃ₜ = tanh(W_c·xₜ + U_c·hₜ₋₁ + b_c)\n"
    "cₜ = fₜ ⊙ cₜ₋₁ + iₜ ⊙ c̃ₜ\nhₜ = oₜ ⊙ tanh(cₜ)\nyₜ = softmax(W_y·hₜ + b_y)\n"
)

# Runs in a fresh interpreter: prints {"seconds", "rss_growth", "peak"} as JSON.
PROBE = r"""
import json, sys, time
sys.path.insert(0, {root!r})
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
def rss():
    return status("VmRSS")
import numpy as np, nnre, nnre.bundle, nnre.loader  # imports before the clock starts
kind, path = sys.argv[1], sys.argv[2]
before = rss()
t0 = time.perf_counter()
if kind == "decode":
    got = nnre.bundle.decode(path).tensors
elif kind == "load":
    got = nnre.load(path)
elif kind == "verify":
    got = nnre.verify(path)
elif kind == "npz":
    with np.load(path, allow_pickle=False) as f:
        got = {{k: f[k] for k in f.files}}
else:
    from safetensors.numpy import load_file
    got = load_file(path)
seconds = time.perf_counter() - t0
grow = rss() - before
peak = status("VmHWM")  # not ru_maxrss: that survives exec and counts the parent
print(json.dumps({{"seconds": seconds, "rss_growth": grow, "peak": peak}}))
"""


def weights_for(megabytes: float) -> dict[str, np.ndarray]:
    """An LSTM with V = H whose float32 weights total about ``megabytes``."""
    h = max(2, int(math.sqrt(megabytes * 1e6 / 4 / 9)))
    rng = np.random.default_rng(0)
    out = {}
    for g in "ifoc":
        out[f"W_{g}"] = rng.standard_normal((h, h), dtype=np.float32)
        out[f"U_{g}"] = rng.standard_normal((h, h), dtype=np.float32)
        out[f"b_{g}"] = rng.standard_normal(h, dtype=np.float32)
    out["W_y"] = rng.standard_normal((h, h), dtype=np.float32)
    out["b_y"] = rng.standard_normal(h, dtype=np.float32)
    return out


def write_files(megabytes: float, folder: Path) -> dict[str, Path]:
    from nndk.pack import build_content
    from nnre.bundle.write import write

    w = weights_for(megabytes)
    paths = {"bundle": folder / f"m{megabytes:g}.bundle", "npz": folder / f"m{megabytes:g}.npz"}
    write(paths["bundle"], build_content(LSTM, w, {"name": "bench", "version": "1.0.0"}))
    np.savez(paths["npz"], **w)
    try:
        from safetensors.numpy import save_file
    except ImportError:
        return paths
    paths["safetensors"] = folder / f"m{megabytes:g}.safetensors"
    save_file(w, str(paths["safetensors"]))
    return paths


def probe(kind: str, path: Path, repeat: int) -> dict[str, float]:
    """Best time of ``repeat`` fresh processes; memory from the same best run."""
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", PROBE.format(root=str(ROOT)), kind,
                              str(path)], capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout))
    return min(runs, key=lambda r: r["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1,100,1000", help="MB, comma separated")
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{'size':>8} {'file MB':>8} {'method':<12} {'time ms':>10} {'RSS +MB':>9} "
          f"{'RSS+/file':>9} {'peak MB':>8} {'time vs npz':>11}")
    for mb in (float(s) for s in args.sizes.split(",")):
        folder = Path(tempfile.mkdtemp(dir=args.dir, prefix="bench_load_"))
        try:
            paths = write_files(mb, folder)
            size = paths["bundle"].stat().st_size
            kinds = [("decode", "bundle"), ("load", "bundle"), ("verify", "bundle"),
                     ("npz", "npz")]
            if "safetensors" in paths:
                kinds.append(("safetensors", "safetensors"))
            rows = {k: probe(k, paths[f], args.repeat) for k, f in kinds}
            for kind, r in rows.items():
                ratio = r["seconds"] / rows["npz"]["seconds"]
                print(f"{mb:>6g}MB {size / 1e6:>8.1f} {kind:<12} {r['seconds'] * 1e3:>10.2f} "
                      f"{r['rss_growth'] / 1e6:>9.1f} {r['rss_growth'] / size:>9.1%} "
                      f"{r['peak'] / 1e6:>8.0f} {ratio:>10.3f}x")
        finally:
            for p in folder.iterdir():
                p.unlink()
            folder.rmdir()
        sys.stdout.flush()


if __name__ == "__main__":
    main()
