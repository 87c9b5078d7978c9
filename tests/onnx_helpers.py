"""Shared helpers for the ONNX tests: template models with random weights, oracles' runners."""

from __future__ import annotations

from typing import Any

import numpy as np

from nndk.models import read_model
from nnre.equations import check, param_shapes
from nnre.model import Model


def template_model(name: str, dims: dict[str, int], seed: int = 0,
                   dtype: str = "float32") -> Model:
    text, _ = read_model(name)
    shapes = param_shapes(check(text, dims))
    rng = np.random.default_rng(seed)
    weights = {k: (rng.standard_normal(s) * 0.5).astype(dtype) for k, s in shapes.items()}
    return Model.from_equations(text, weights, dims, dtype)


def run_step_graph(run: Any, model: Model, xs: dict[str, np.ndarray]
                   ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Feed a sequence through an exported step graph step by step: (outputs[T], final state).

    ``run(feeds) -> dict`` is an onnxruntime session or a ReferenceEvaluator, wrapped.
    """
    steps, batch = next(iter(xs.values())).shape[:2]
    state = {k: np.zeros((batch, *s.shape), model.dtype) for k, s in model.state.items()}
    outs: dict[str, list[np.ndarray]] = {k: [] for k in model.outputs}
    for t in range(steps):
        feeds = {k: v[t] for k, v in xs.items()} | {f"{k}_prev": v for k, v in state.items()}
        got = run(feeds)
        state = {k: got[f"{k}_next"] for k in state}
        for k in outs:
            outs[k].append(got[k])
    return {k: np.stack(v) for k, v in outs.items()}, state


def ort_runner(proto: Any) -> Any:
    import onnxruntime as ort

    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return lambda feeds: dict(zip(names, sess.run(None, feeds), strict=True))


def ref_runner(proto: Any) -> Any:
    from onnx.reference import ReferenceEvaluator

    ref = ReferenceEvaluator(proto)
    names = list(ref.output_names)
    return lambda feeds: dict(zip(names, ref.run(None, feeds), strict=True))


def const(name: str, value: object, dtype: object = np.float32) -> Any:
    """An initializer named ``name`` holding ``value``."""
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(value, dtype), name)


def float_model(nodes: list, inits: list, inputs: dict, outputs: list[str], opset: int = 18
                ) -> Any:
    """A one-graph model: float inputs of the given shapes, float outputs of any shape."""
    from onnx import helper

    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(k, 1, v) for k, v in inputs.items()],
        [helper.make_tensor_value_info(k, 1, None) for k in outputs], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
