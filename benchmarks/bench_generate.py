"""µs per generated character at batch 1: nnre vs a hand-written NumPy LSTM step, onnxruntime
(the same cell, one ``session.run`` per step) and PyTorch ``LSTMCell`` (both optional).

Every column does the same work per character: one LSTM step from a one-hot input, the
softmax read-out, and one draw (cumulative sum + one uniform number + binary search; the
same NumPy code for the three references). nnre is measured through ``model.generate`` (the
product path) and through ``model.step`` (the embedding API, copies included).

Run: python benchmarks/bench_generate.py [--chars 2000] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from bench_step import FusedLSTM, make_weights

import nnre
from nnre.bundle.write import BundleContent, write
from nnre.threads import set_blas_threads

TEMPLATE = Path(__file__).resolve().parent.parent / "nndk" / "templates" / "lstm.eqn"


def draw(probs: np.ndarray, rng: np.random.Generator) -> int:
    cdf = np.cumsum(probs, dtype=np.float64)
    return int(cdf.searchsorted(rng.random() * cdf[-1], side="right"))


def bundle_model(w: dict[str, np.ndarray], vocab: list[str], tmp: Path) -> nnre.Model:
    """Through a real bundle and the cache, as `nnre run` gets it."""
    model = nnre.Model.from_equations(TEMPLATE.read_text(encoding="utf-8"), w)
    sig = {"inputs": model.inputs, "outputs": model.outputs, "state": model.state}
    meta = {"name": "bench", "version": "1.0.0",
            "codecs": {"x": {"id": "char", "vocab": vocab}, "y": {"id": "sample", "vocab": vocab}}}
    path = tmp / f"h{w['U_i'].shape[0]}.bundle"
    write(path, BundleContent(model.equations, "float32", model.dims, sig, meta,
                              model.weights()))
    return nnre.load(path)


def numpy_gen(w: dict[str, np.ndarray]) -> Callable[[int], None]:
    """The hand-written step (bench_step.FusedLSTM's loop body) with a one-hot matmul."""
    f = FusedLSTM(w)
    n, v = f.hidden, f.wy.shape[1]
    x, h, c = np.zeros((1, v), np.float32), np.zeros((1, n), np.float32), np.zeros((1, n),
                                                                                  np.float32)
    z, xz, tc = (np.empty((1, 4 * n), np.float32), np.empty((1, 4 * n), np.float32),
                 np.empty((1, n), np.float32))
    y = np.empty((1, v), np.float32)

    def run(chars: int) -> None:
        rng, code = np.random.default_rng(0), 0
        for _ in range(chars):
            x[0] = 0
            x[0, code] = 1
            np.matmul(x, f.wx, out=xz)
            np.matmul(h, f.uh, out=z)
            np.add(z, xz, out=z)
            np.add(z, f.b, out=z)
            s = z[:, :3 * n]
            np.multiply(s, 0.5, out=s)
            np.tanh(s, out=s)
            np.multiply(s, 0.5, out=s)
            np.add(s, 0.5, out=s)
            g = z[:, 3 * n:]
            np.tanh(g, out=g)
            np.multiply(c, z[:, n:2 * n], out=c)
            np.multiply(g, z[:, :n], out=g)
            np.add(c, g, out=c)
            np.tanh(c, out=tc)
            np.multiply(z[:, 2 * n:3 * n], tc, out=h)
            np.matmul(h, f.wy, out=y)
            np.add(y, f.by, out=y)
            np.subtract(y, y.max(axis=1, keepdims=True), out=y)
            np.exp(y, out=y)
            np.divide(y, np.add.reduce(y, axis=1, keepdims=True), out=y)
            code = draw(y[0], rng)
    return run


def nnre_gen(model: nnre.Model) -> Callable[[int], None]:
    def run(chars: int) -> None:
        for _ in model.generate("a", chars, seed=0):
            pass
    return run


def nnre_step(model: nnre.Model, v: int) -> Callable[[int], None]:
    eye = np.eye(v, dtype=np.float32)

    def run(chars: int) -> None:
        rng, code, state = np.random.default_rng(0), 0, None
        for _ in range(chars):
            out, state = model.step({"x": eye[code]}, state)
            code = draw(out["y"], rng)
    return run


def onnx_gen(w: dict[str, np.ndarray]) -> Callable[[int], None] | None:
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    f = FusedLSTM(w)
    n, v = f.hidden, f.wy.shape[1]
    inits = [numpy_helper.from_array(a, name) for name, a in (
        ("Wx", f.wx), ("Uh", f.uh), ("b", f.b), ("Wy", f.wy), ("by", f.by))]
    for name, val in (("s0", 0), ("s1", n), ("s2", 2 * n), ("s3", 3 * n), ("s4", 4 * n),
                      ("ax", 1)):
        inits.append(numpy_helper.from_array(np.array([val], np.int64), name))
    node = helper.make_node
    nodes = [
        node("MatMul", ["x", "Wx"], ["xw"]), node("MatMul", ["h", "Uh"], ["hu"]),
        node("Add", ["xw", "hu"], ["z0"]), node("Add", ["z0", "b"], ["z"]),
        *[node("Slice", ["z", f"s{k}", f"s{k + 1}", "ax"], [g]) for k, g in
          enumerate(("zi", "zf", "zo", "zc"))],
        node("Sigmoid", ["zi"], ["i"]), node("Sigmoid", ["zf"], ["f"]),
        node("Sigmoid", ["zo"], ["o"]), node("Tanh", ["zc"], ["g"]),
        node("Mul", ["f", "c"], ["fc"]), node("Mul", ["i", "g"], ["ig"]),
        node("Add", ["fc", "ig"], ["c_next"]), node("Tanh", ["c_next"], ["tc"]),
        node("Mul", ["o", "tc"], ["h_next"]), node("MatMul", ["h_next", "Wy"], ["yl"]),
        node("Add", ["yl", "by"], ["yz"]), node("Softmax", ["yz"], ["y"], axis=1),
    ]
    io = [helper.make_tensor_value_info(k, TensorProto.FLOAT, [1, d])
          for k, d in (("x", v), ("h", n), ("c", n))]
    outs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, [1, d])
            for k, d in (("y", v), ("h_next", n), ("c_next", n))]
    graph = helper.make_graph(nodes, "lstm_cell", io, outs, inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(proto.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    eye = np.eye(v, dtype=np.float32)

    def run(chars: int) -> None:
        rng, code = np.random.default_rng(0), 0
        h, c = np.zeros((1, n), np.float32), np.zeros((1, n), np.float32)
        for _ in range(chars):
            y, h, c = sess.run(None, {"x": eye[code:code + 1], "h": h, "c": c})
            code = draw(y[0], rng)
    return run


def torch_gen(w: dict[str, np.ndarray]) -> Callable[[int], None] | None:
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    n, v = w["U_i"].shape[0], w["W_y"].shape[0]
    cell, out = torch.nn.LSTMCell(v, n), torch.nn.Linear(n, v)
    with torch.no_grad():  # PyTorch's gate order is i, f, g(c), o
        cell.weight_ih.copy_(torch.from_numpy(np.concatenate([w[f"W_{g}"] for g in "ifco"])))
        cell.weight_hh.copy_(torch.from_numpy(np.concatenate([w[f"U_{g}"] for g in "ifco"])))
        cell.bias_ih.copy_(torch.from_numpy(np.concatenate([w[f"b_{g}"] for g in "ifco"])))
        cell.bias_hh.zero_()
        out.weight.copy_(torch.from_numpy(w["W_y"]))
        out.bias.copy_(torch.from_numpy(w["b_y"]))
    eye = torch.eye(v)

    def run(chars: int) -> None:
        rng, code = np.random.default_rng(0), 0
        h, c = torch.zeros(1, n), torch.zeros(1, n)
        with torch.inference_mode():
            for _ in range(chars):
                h, c = cell(eye[code:code + 1], (h, c))
                y = torch.softmax(out(h), dim=1)
                code = draw(y[0].numpy(), rng)
    return run


def best_of(fn: Callable[[int], None], chars: int, repeats: int) -> float:
    fn(50)  # warm up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(chars)
        best = min(best, time.perf_counter() - start)
    return best / chars * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--vocab", type=int, default=65)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if not set_blas_threads(args.threads):
        print("(could not set the BLAS thread count; using the default)")
    vocab = [chr(0x21 + i) for i in range(args.vocab)]
    print(f"µs per generated character, batch 1, V={args.vocab}, float32, "
          f"{args.threads} BLAS thread(s), best of {args.repeats} × {args.chars} chars")
    cols = ["numpy", "nnre gen", "nnre step", "onnxrt", "torch"]
    print(f"{'H':>5} " + " ".join(f"{c:>10}" for c in cols)
          + f" {'gen/numpy':>10} {'step/numpy':>10} {'onnx/gen':>9} {'torch/gen':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for hidden in (128, 512):
            w = make_weights(hidden, args.vocab)
            model = bundle_model(w, vocab, Path(tmp))
            runs = [numpy_gen(w), nnre_gen(model), nnre_step(model, args.vocab),
                    onnx_gen(w), torch_gen(w)]
            t = [best_of(r, args.chars, args.repeats) if r else float("nan") for r in runs]
            print(f"{hidden:>5} " + " ".join(f"{x:>10.1f}" for x in t)
                  + f" {t[1] / t[0]:>10.2f} {t[2] / t[0]:>10.2f} {t[3] / t[1]:>9.2f}"
                  f" {t[4] / t[1]:>9.2f}")


if __name__ == "__main__":
    main()
