"""Build a Model from the shipped LSTM equations and random weights, and run a sequence.

Run: python samples/run_equations.py
"""

from __future__ import annotations

import numpy as np

from nndk.models import read_model
from nnre import Model

text, _ = read_model("lstm")
H, V = 32, 10
rng = np.random.default_rng(0)
weights = {}
for gate in "fioc":
    weights[f"W_{gate}"] = rng.normal(scale=0.3, size=(H, V))
    weights[f"U_{gate}"] = rng.normal(scale=0.3, size=(H, H))
    weights[f"b_{gate}"] = np.zeros(H)
weights["W_y"] = rng.normal(scale=0.3, size=(V, H))
weights["b_y"] = np.zeros(V)

model = Model.from_equations(text, weights)
print("inputs:", model.inputs)
print("outputs:", model.outputs)
print("state:", model.state)
xs = np.eye(V)[rng.integers(0, V, size=20)]  # 20 one-hot steps
ys, state = model.run({"x": xs})
print("predicted next symbol per step:", ys["y"].argmax(axis=-1).tolist())
print("final h[:4]:", np.round(state["h"][:4], 4).tolist())
