"""A character model fed ids (x ∈ ℕ, E[xₜ]) equals the one-hot model it spells differently."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nnre
from nndk.pack import PackRequest, pack
from nndk.train import TrainConfig, start
from nnre.bundle.write import BundleContent, encode
from nnre.errors import BundleError
from nnre.model import Model

IDS = """
xₜ ∈ ℕ
hₜ ∈ ℝ^H
yₜ ∈ ℝ^V
E ∈ ℝ^(V×H)
hₜ = tanh(E[xₜ]ᵀ + U hₜ₋₁ + b)
yₜ = softmax(W hₜ + c)
"""
ONE_HOT = IDS.replace("xₜ ∈ ℕ", "xₜ ∈ ℝ^V").replace("E[xₜ]ᵀ", "Eᵀ xₜ")
VOCAB = list("abcde\n")


def _pair() -> tuple[Model, Model]:
    rng = np.random.default_rng(0)
    w = {"E": rng.normal(size=(6, 4)), "U": rng.normal(size=(4, 4)) * 0.5,
         "b": rng.normal(size=4), "W": rng.normal(size=(6, 4)), "c": rng.normal(size=6)}
    codecs = {"x": {"id": "char", "vocab": VOCAB}, "y": {"id": "sample", "vocab": VOCAB}}
    return tuple(Model.from_equations(text, w, dtype="float64", metadata={"codecs": codecs})
                 for text in (IDS, ONE_HOT))  # type: ignore[return-value]


def test_generation_and_scores_equal_the_one_hot_model() -> None:
    ids, hot = _pair()
    assert ids.inputs["x"].shape == (1,) and hot.inputs["x"].shape == (6,)
    texts = ["".join(c[0] for c in m.generate(["ab", "e\nd"], 40, seed=3)) for m in (ids, hot)]
    assert texts[0] == texts[1]
    text = "abcab\ncde\nbad\n"
    np.testing.assert_allclose(ids.score(text).bits, hot.score(text).bits, rtol=1e-12)


def test_a_vocabulary_that_does_not_fit_the_table_is_refused(tmp_path: Path) -> None:
    ids, _ = _pair()
    from nnre.bundle.schema import Spec

    sig = {side: {n: Spec(s.shape, "float64") for n, s in getattr(ids, side).items()}
           for side in ("inputs", "outputs", "state")}
    bad = {"codecs": {"x": {"id": "char", "vocab": VOCAB[:5]},
                      "y": {"id": "sample", "vocab": VOCAB}}, "name": "m", "version": "0.1.0"}
    path = tmp_path / "bad.bundle"
    path.write_bytes(encode(BundleContent(IDS, "float64", ids.dims, sig, bad, ids.weights(),
                                          requires=("equations/2",))))
    with pytest.raises(BundleError, match="5 entries, but the ids input 'x' indexes 6 rows"):
        nnre.load(path, cache=False)


def test_nndk_trains_a_model_fed_ids(tmp_path: Path) -> None:
    corpus = tmp_path / "t.txt"
    corpus.write_text("the lamp burned all night.\n" * 200, encoding="utf-8")
    (tmp_path / "ids.eqn").write_text(IDS, encoding="utf-8")
    config = TrainConfig(model=str(tmp_path / "ids.eqn"), dims={"H": 16}, steps=150,
                         seq_length=20, batch_size=8, lr=1e-2, eval_every=150, sample_length=0)
    trainer = start(config, corpus)
    before = trainer.evaluate()
    trainer.fit(tmp_path / "ck", lambda _: None)
    assert before is not None and (after := trainer.evaluate()) is not None
    assert after < 0.5 * before
    pack(PackRequest(tmp_path / "ck", None, tmp_path / "m.bundle", "m", "0.1.0"))
    model = nnre.load(tmp_path / "m.bundle")
    text = "".join(c[0] for c in model.generate(["the "], 30, temperature=0.0))
    assert text.startswith("lamp")
