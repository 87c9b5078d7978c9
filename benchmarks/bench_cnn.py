"""The digits CNN: inference vs onnxruntime and PyTorch, training vs PyTorch, in one process.

Inference: a batch of 256 8×8 digit images through ``samples/digits/digits.bundle`` (the
``cnn`` template: two 3×3 conv + ReLU + 2×2 max pool, a linear read-out), by nnre's
``Model.step``, by onnxruntime on nnre's ONNX export of the same bundle, and by the same
network written in PyTorch with the same weights, at 1 and 2 threads. Training: images per
second of ``nndk train``'s step (forward, cross-entropy, backward, clip, Adam) at batch 32
vs the same step in PyTorch. Ratios are best-of-N times, nnre / reference (< 1: nnre is
faster); targets (issue #12): inference ≤ 1.5 × onnxruntime, training ≥ 0.5 × PyTorch's
images/s. onnxruntime and PyTorch are optional.

Inference times are taken in turns (``timing.best_of_each``), so a ratio compares the same
minutes of a shared machine.

Run: python benchmarks/bench_cnn.py [--repeats 20] [--quick]

It prints which BLAS kernels numpy runs. Where the machine forces older ones
(OPENBLAS_CORETYPE, with OPENBLAS_L2_SIZE), unset both in the benchmark command alone to
measure a current numpy: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_cnn.py
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from timing import best_of, best_of_each, blas_kernel

import nnre
from nndk.train import TrainConfig, start
from nnre.threads import set_blas_threads

DIGITS = Path(__file__).resolve().parent.parent / "samples" / "digits"


def data(folder: Path) -> Path:
    spec = importlib.util.spec_from_file_location("make_digits", DIGITS / "make_digits.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(folder)
    return folder


def torch_net(model: nnre.Model) -> object | None:
    try:
        import torch
    except ImportError:
        return None
    F = torch.nn.functional

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for k, v in model.weights().items():
                self.register_parameter(k, torch.nn.Parameter(torch.from_numpy(np.array(v))))

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # logits
            h = F.max_pool2d(F.relu(F.conv2d(x, self.W_1, self.b_1, padding=1)), 2)
            h = F.max_pool2d(F.relu(F.conv2d(h, self.W_2, self.b_2, padding=1)), 2)
            return h.flatten(1) @ self.W_3.T + self.b_3

    return Net()


def ort_call(proto: bytes, x: np.ndarray, threads: int) -> Callable[[], object]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(proto, opts, providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, {"x": x})


def torch_call(net: object, x: np.ndarray, threads: int) -> Callable[[], object]:
    import torch

    torch.set_num_threads(threads)
    t = torch.from_numpy(x)

    def run() -> object:
        with torch.no_grad():
            return torch.softmax(net(t), 1)  # type: ignore[operator]

    return run


def inference(model: nnre.Model, x: np.ndarray, repeats: int) -> None:
    print(f"inference, batch {len(x)} (ms; ratio = nnre / reference)")
    try:
        from nndk.onnx.export import export_model
        proto: bytes | None = export_model(model).SerializeToString()
        import onnxruntime  # noqa: F401
    except ImportError:
        proto = None
    net = torch_net(model)
    for threads in (1, 2):
        set_blas_threads(threads)
        names, calls = ["nnre"], [lambda: model.step({"x": x})]
        if proto is not None:
            names.append("onnxruntime")
            calls.append(ort_call(proto, x, threads))
        if net is not None:
            names.append("PyTorch")
            calls.append(torch_call(net, x, threads))
        times = best_of_each(calls, repeats)  # in turns: the same minutes for each
        line = f"  threads {threads}: nnre {times[0] * 1e3:.2f}"
        for name, theirs in zip(names[1:], times[1:], strict=True):
            line += f", {name} {theirs * 1e3:.2f} (ratio {times[0] / theirs:.2f})"
        print(line)


def torch_train_step(x: np.ndarray, y: np.ndarray, threads: int) -> Callable[[], object]:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(128, 10))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def step() -> None:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(tx), ty)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()

    return step


def training(folder: Path, repeats: int) -> None:
    print("training, batch 32 (images/s; ratio = nndk / PyTorch)")
    trainer = start(TrainConfig(model="cnn", steps=10**6, seed=0, sample_length=0),
                    folder / "train.npz")
    d = np.load(folder / "train.npz")
    for threads in (1, 2):
        set_blas_threads(threads)
        ours = 32 / best_of(trainer.train_step, repeats)
        line = f"  threads {threads}: nndk {ours:,.0f}"
        try:
            step = torch_train_step(d["x"][:32], d["target"][:32], threads)
        except ImportError:
            print(line)
            continue
        theirs = 32 / best_of(step, repeats)
        print(line + f", PyTorch {theirs:,.0f} (ratio {ours / theirs:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="3 repeats")
    args = parser.parse_args()
    repeats = 3 if args.quick else args.repeats
    print(blas_kernel())
    with tempfile.TemporaryDirectory() as tmp:
        folder = data(Path(tmp))
        model = nnre.load(DIGITS / "digits.bundle")
        x = np.load(folder / "test.npz")["x"]
        x = np.concatenate([x, x])[:256]
        inference(model, x, repeats)
        training(folder, repeats)


if __name__ == "__main__":
    main()
