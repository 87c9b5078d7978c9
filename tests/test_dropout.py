"""dropout(x): the identity when a model runs, a fresh Bernoulli mask per batch in training.

Oracles: the same equations written with an explicit mask input (``… ⊙ mₜ``) run by
``Model.run`` for central differences; the model without dropout() for P = 0, evaluation,
packing and ``nnre run``; the law of large numbers for the masks' expectation.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from text_helpers import word_corpus

import nnre
from nndk import checkpoint
from nndk.dropout import DropoutError, fill, generator, with_masks
from nndk.gradcheck import gradcheck, make_problem
from nndk.learner import Learner
from nndk.models import read_model
from nndk.pack import PackRequest, pack
from nndk.train import TrainConfig, resume, start
from nnre.compiler import compile_checked
from nnre.equations import check
from nnre.model import Model
from nnre.optimize import optimize

LSTM = read_model("lstm")[0]
# where a dropout goes: (text with dropout, the same with an explicit mask input m)
PLACES = {
    "read-out": (LSTM.replace("W_y hₜ", "W_y dropout(hₜ)"),
                 LSTM.replace("W_y hₜ", "W_y (hₜ ∘ mₜ)") + "mₜ ∈ ℝ^H\n"),
    "state": (LSTM.replace("hₜ = oₜ ∘ σ_h(cₜ)", "hₜ = dropout(oₜ ∘ σ_h(cₜ))"),
              LSTM.replace("hₜ = oₜ ∘ σ_h(cₜ)", "hₜ = oₜ ∘ σ_h(cₜ) ∘ mₜ") + "mₜ ∈ ℝ^H\n"),
    "input": (LSTM.replace("W_c xₜ", "W_c dropout(xₜ)"),
              LSTM.replace("W_c xₜ", "W_c (xₜ ∘ mₜ)") + "mₜ ∈ ℝ^V\n"),
    "tensor": ("input X\nX ∈ ℝ^(4×3)\nW ∈ ℝ^(5×4)\nV ∈ ℝ^(2×15)\nY = dropout(tanh(W X))\n"
               "y = softmax(V flatten(Y) + b)\n",
               "input X, m\nX ∈ ℝ^(4×3)\nm ∈ ℝ^(5×3)\nW ∈ ℝ^(5×4)\nV ∈ ℝ^(2×15)\n"
               "Y = tanh(W X) ⊙ m\ny = softmax(V flatten(Y) + b)\n"),
}
DIMS = {"H": 4, "V": 3}


def quiet(_: object) -> None:
    return None


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return word_corpus(tmp_path_factory.mktemp("data"))


def eqn(tmp_path: Path, text: str, name: str = "m.eqn") -> str:
    (tmp_path / name).write_text(text, encoding="utf-8")
    return str(tmp_path / name)


def small(**over: object) -> TrainConfig:
    base = dict(dims={"H": 16}, seq_length=10, batch_size=4, steps=12, eval_every=6,
                sample_length=0, lr=1e-2)
    return TrainConfig(**(base | over))  # type: ignore[arg-type]


@pytest.mark.parametrize("place", sorted(PLACES))
def test_the_gradient_with_a_fixed_mask_equals_central_differences(place: str) -> None:
    """The trainer's rewritten program (mul by a mask input), backpropagated, against
    central differences of Model.run on the equations with the mask written out."""
    text, oracle = PLACES[place]
    dims = {} if place == "tensor" else DIMS
    problem = make_problem(oracle, dims, steps=3, batch=2)
    masked, masks = with_masks(compile_checked(check(text, dims), "float64", optimize=False),
                               "t")
    assert len(masks) == 1
    masked = optimize(masked)
    masked.inputs["m"] = masked.inputs.pop(next(iter(masks)))  # the oracle's name for it
    problem.prog = masked
    rng = np.random.default_rng(5)
    mask = problem.feeds["m"]
    problem.feeds["m"] = (rng.random(mask.shape) >= 0.4) / 0.6  # a real mask, held fixed
    errors = gradcheck(problem)
    assert errors and max(errors.values()) < 1e-6, errors
    assert "param W" in errors or "param W_c" in errors


def test_masks_keep_the_expectation_and_drop_with_probability_p() -> None:
    masks = [np.empty((1000, 1000), np.float32)]
    fill(masks, 0.3, np.random.default_rng(0))
    dropped = float(np.mean(masks[0] == 0))
    assert abs(dropped - 0.3) < 0.003  # 6 standard deviations of a mean of 10⁶ draws
    assert set(np.unique(masks[0])) == {0.0, np.float32(1 / 0.7)}
    assert abs(float(masks[0].mean(dtype=np.float64)) - 1) < 0.005
    fill(masks, 0.3, None)  # evaluation
    assert np.all(masks[0] == 1)


def test_the_mean_of_outputs_is_preserved_in_expectation() -> None:
    """y = W dropout(x) + b through the trainer's forward pass with 2000 fresh masks: the
    average output is the output without dropout, to within 5 standard errors."""
    text = "input x\nx ∈ ℝ^6\ny = W dropout(x) + b\n"
    p, draws = 0.5, 2000
    learner = Learner(check(text, known={"y": (3,)}), text, "adam", 0, "auto", dropout=p)
    x = np.random.default_rng(1).normal(size=(4, 6)).astype(np.float32)
    out = learner.prog.outputs["y"]
    plain = np.array(learner.forward({"x": x}, 1, 4, None).full[out], np.float64)
    weights = learner.params["W"].reshape(3, 6).astype(np.float64)
    runs = [np.array(learner.forward({"x": x}, 1, 4, None, dropout=generator(0, k)).full[out],
                     np.float64) for k in range(draws)]
    mean = np.mean(runs, axis=0)
    # each output is Σⱼ Wᵢⱼ xⱼ mⱼ: variance Σⱼ (Wᵢⱼ xⱼ)² p / (1 − p)
    sd = np.sqrt(((x[:, None, :] * weights[None]) ** 2).sum(axis=2) * p / (1 - p) / draws)
    assert np.all(np.abs(mean - plain) < 5 * sd), (mean - plain) / sd
    assert np.std(runs, axis=0).min() > 0  # the masks did change the outputs
    model = Model.from_equations(text.replace("dropout(x)", "x"),
                                 {"W": weights, "b": learner.params["b"].reshape(3)})
    np.testing.assert_allclose(plain, model.step({"x": x})[0]["y"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("place", ["read-out", "state"])
@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_dropout_zero_trains_bit_identically_to_no_dropout(corpus: Path, tmp_path: Path,
                                                           place: str, optimizer: str) -> None:
    text = PLACES[place][0]
    plain = start(small(model=eqn(tmp_path, LSTM, "plain.eqn"), optimizer=optimizer), corpus)
    plain.fit(tmp_path / "a", quiet)
    dropped = start(small(model=eqn(tmp_path, text), optimizer=optimizer, dropout=0.0),
                    corpus)
    dropped.fit(tmp_path / "b", quiet)
    assert dropped.history == plain.history
    for name, value in plain.params.items():
        np.testing.assert_array_equal(dropped.params[name], value, err_msg=name)


def test_dropout_changes_training_and_resume_is_bit_identical(corpus: Path,
                                                              tmp_path: Path) -> None:
    """Dropout with AdamW, warm-up and cosine decay: a run cut in two and resumed ends
    exactly where the straight run does (the masks come from the seed and the step)."""
    model = eqn(tmp_path, PLACES["state"][0])
    options = dict(model=model, dropout=0.3, optimizer="adamw", beta2=0.99, warmup=3,
                   lr_schedule="cosine", lr_decay_steps=12)
    straight = start(small(**options), corpus)
    straight.fit(tmp_path / "a", quiet)
    first = start(small(**(options | {"steps": 5})), corpus)
    first.fit(tmp_path / "b", quiet)
    second = resume(tmp_path / "b", steps=12)
    second.fit(tmp_path / "b", quiet)
    for name, value in straight.params.items():
        np.testing.assert_array_equal(second.params[name], value, err_msg=name)
    for key, value in straight.opt.state.items():
        np.testing.assert_array_equal(second.opt.state[key], value, err_msg=key)
    without = start(small(**(options | {"dropout": 0.0})), corpus)
    without.fit(tmp_path / "c", quiet)
    assert without.history["train_loss"] != straight.history["train_loss"]
    _, record = checkpoint.load(tmp_path / "b")
    assert record["config"]["dropout"] == 0.3 and record["config"]["weight_decay"] == 0.1


def test_evaluation_and_samples_run_without_dropout(corpus: Path, tmp_path: Path) -> None:
    """At the same weights, a run with --dropout 0.5 evaluates and samples exactly as the
    model without dropout() does."""
    text = PLACES["read-out"][0]
    dropped = start(small(model=eqn(tmp_path, text), dropout=0.5), corpus)
    plain = start(small(model=eqn(tmp_path, LSTM, "plain.eqn")), corpus)
    for name, value in plain.params.items():
        np.testing.assert_array_equal(dropped.params[name], value, err_msg=name)
    assert dropped.evaluate() == pytest.approx(plain.evaluate(), rel=1e-6)
    assert dropped.sample(80) == plain.sample(80)
    loss = dropped.train_step()
    assert loss != pytest.approx(plain.train_step(), rel=1e-6)  # training does drop


def test_a_packed_model_with_dropout_runs_as_the_model_without_it(corpus: Path,
                                                                  tmp_path: Path) -> None:
    """Trained with --dropout 0.3 and packed: Model.run and `nnre run` give what the same
    weights give in the equations without dropout()."""
    text = PLACES["state"][0]
    start(small(model=eqn(tmp_path, text), dropout=0.3, steps=6), corpus).fit(tmp_path / "ck",
                                                                              quiet)
    meta = {"created": "2026-01-01T00:00:00Z"}
    pack(PackRequest(tmp_path / "ck", None, tmp_path / "d.bundle", "d", "1.0.0", **meta))
    model = nnre.load(tmp_path / "d.bundle")
    assert model.metadata["provenance"]["hyperparameters"]["dropout"] == 0.3
    weights = dict(model.weights())
    np.savez(tmp_path / "w.npz", **weights)
    (tmp_path / "plain.eqn").write_text(LSTM, encoding="utf-8")
    pack(PackRequest(tmp_path / "plain.eqn", tmp_path / "w.npz", tmp_path / "p.bundle", "p",
                     "1.0.0", codecs=model.metadata["codecs"], **meta))
    other = nnre.load(tmp_path / "p.bundle")
    xs = np.eye(len(weights["b_y"]), dtype=np.float32)[np.arange(30) % len(weights["b_y"])]
    np.testing.assert_array_equal(model.run({"x": xs})[0]["y"], other.run({"x": xs})[0]["y"])
    texts = [subprocess.run([sys.executable, "-m", "nnre", "run", str(tmp_path / name), "-p",
                             "the ", "-n", "60", "--seed", "3", "--temp", "0.8"],
                            capture_output=True, text=True, check=True).stdout
             for name in ("d.bundle", "p.bundle")]
    assert texts[0] == texts[1] and len(texts[0]) >= 60


def test_dropout_of_a_weight_or_of_nothing_is_refused(corpus: Path, tmp_path: Path) -> None:
    weight = LSTM.replace("W_y hₜ", "dropout(W_y) hₜ")
    with pytest.raises(DropoutError, match="dropout of W_y.*parameters alone"):
        start(small(model=eqn(tmp_path, weight), dropout=0.2), corpus)
    start(small(model=eqn(tmp_path, weight), dropout=0.0, steps=1), corpus)  # P = 0: fine
    proc = subprocess.run([sys.executable, "-m", "nndk", "train", str(corpus), "--dropout",
                           "0.2", "--steps", "1", "--checkpoint-dir", str(tmp_path / "ck")],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: --dropout 0.2: lstm.eqn has no dropout(…)"), \
        proc.stderr
    assert "Traceback" not in proc.stderr


def test_arrays_train_with_dropout_and_evaluate_without(tmp_path: Path) -> None:
    """An MLP classifier with dropout on its hidden layer: it learns, resumes exactly, and
    its validation loss is the cross-entropy of the equations without dropout()."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    target = (x @ rng.normal(size=(4, 3))).argmax(axis=1)
    np.savez(tmp_path / "cls.npz", x=x, target=target)
    text = "input x\nx ∈ ℝ^4\nh ∈ ℝ^H\nh = relu(W₁ x + b₁)\ny = softmax(W₂ dropout(h) + b₂)\n"
    options = dict(model=eqn(tmp_path, text), dims={"H": 16}, batch_size=16, lr=1e-2,
                   eval_every=40, sample_length=0, dropout=0.3)
    trainer = start(TrainConfig(**options, steps=80), tmp_path / "cls.npz")
    before = trainer.evaluate()
    trainer.fit(tmp_path / "a", quiet)
    after = trainer.evaluate()
    assert before is not None and after is not None and after < 0.6 * before
    weights = {k: v.reshape(trainer.learner.shapes[k]) for k, v in trainer.params.items()}
    model = Model.from_equations(text.replace("dropout(h)", "h"), weights, {"H": 16},
                                 dtype="float64")
    rows = trainer.val_rows
    probs = model.step({"x": x[rows]})[0]["y"]
    assert after == pytest.approx(-np.mean(np.log(probs[np.arange(len(rows)),
                                                        target[rows]])), rel=1e-5)
    first = start(TrainConfig(**options, steps=40), tmp_path / "cls.npz")
    first.fit(tmp_path / "b", quiet)
    second = resume(tmp_path / "b", steps=80)
    second.fit(tmp_path / "b", quiet)
    for name, value in trainer.params.items():
        np.testing.assert_array_equal(second.params[name], value, err_msg=name)


GPT = read_model("gpt")[0]
GPT_DROPPED = GPT  # the template marks nanoGPT's four places
GPT_PLAIN = (GPT.replace("dropout((E[xₜ] + P[t])ᵀ)", "(E[xₜ] + P[t])ᵀ")
             .replace("dropout(softmax(Q^{(l)}ₜ K^{(l)}ₜᵀ / √d_h))",
                      "softmax(Q^{(l)}ₜ K^{(l)}ₜᵀ / √d_h)")
             .replace("dropout(W^{(l)}_o o^{(l)}ₜ)", "W^{(l)}_o o^{(l)}ₜ")
             .replace("dropout(W^{(l)}_2 gelu(W^{(l)}_1 (γ^{(l)}_m ⊙ layer_norm(m^{(l)}ₜ))))",
                      "W^{(l)}_2 gelu(W^{(l)}_1 (γ^{(l)}_m ⊙ layer_norm(m^{(l)}ₜ)))"))
GPT_DIMS = {"L": 1, "heads": 2, "d": 8, "context": 8}


def test_the_sequence_form_with_a_fixed_mask_has_the_gradient_of_central_differences(
        ) -> None:
    """Attention trains in its sequence form (every step at once): the mask there is one
    entry per step of the context, and the gradient is still that of the mask written out."""
    from test_autodiff import CASES
    from test_autodiff import DIMS as CASE_DIMS

    from nndk.sequence import compile_sequence

    old = "yₜ = softmax(U (eₜ + oₜ)"
    text = CASES["attention"].replace(old, "yₜ = softmax(U dropout(eₜ + oₜ)")
    oracle = CASES["attention"].replace(old, "yₜ = softmax(U ((eₜ + oₜ) ⊙ zₜ)") + \
        "zₜ ∈ ℝ^4\n"
    problem = make_problem(oracle, CASE_DIMS, batch=2, sequence=True)
    masked, masks = with_masks(compile_sequence(check(text, CASE_DIMS), "float64", False), "t")
    masked = optimize(masked)
    masked.inputs["z"] = masked.inputs.pop(next(iter(masks)))
    assert masked.slots[masked.inputs["z"]].shape == (CASE_DIMS["D"], 4)  # a step per row
    problem.prog = masked
    problem.feeds["z"] = (np.random.default_rng(2).random(problem.feeds["z"].shape) >= 0.3) / 0.7
    errors = gradcheck(problem)
    assert any(k.startswith("param W_k") for k in errors)
    assert max(errors.values()) < 1e-6, errors


def test_gpt_with_nanogpts_dropouts_trains_resumes_and_evaluates_without_them(
        corpus: Path, tmp_path: Path) -> None:
    """nanoGPT's four places (embeddings, attention weights, the attention's and the MLP's
    outputs): P = 0 trains bit for bit as the template without them; P = 0.2 changes
    training, resumes bit for bit, and evaluates (and samples) as the template at the same
    weights."""
    options = dict(dims=GPT_DIMS, batch_size=4, steps=6, eval_every=3, sample_length=0,
                   lr=1e-2, eval_iters=2, optimizer="adamw", beta2=0.99, warmup=2,
                   lr_schedule="cosine", clip=1.0)
    model, bare = "gpt", eqn(tmp_path, GPT_PLAIN)
    assert "dropout(" not in GPT_PLAIN.split("xₜ ∈ ℕ")[1]
    plain = start(TrainConfig(model=bare, **options), corpus)
    plain.fit(tmp_path / "a", quiet)
    zero = start(TrainConfig(model=model, dropout=0.0, **options), corpus)
    zero.fit(tmp_path / "b", quiet)
    assert zero.history == plain.history
    for name, value in plain.params.items():
        np.testing.assert_array_equal(zero.params[name], value, err_msg=name)

    dropped = start(TrainConfig(model=model, dropout=0.2, **options), corpus)
    assert len(dropped.learner.masks) == 4
    fresh = start(TrainConfig(model=bare, **options), corpus)
    assert dropped.evaluate() == pytest.approx(fresh.evaluate(), rel=1e-6)
    assert dropped.sample(20) == fresh.sample(20)
    dropped.fit(tmp_path / "c", quiet)
    assert dropped.history["train_loss"] != plain.history["train_loss"]
    first = start(TrainConfig(model=model, dropout=0.2, **(options | {"steps": 3})), corpus)
    first.fit(tmp_path / "d", quiet)
    second = resume(tmp_path / "d", steps=6)
    second.fit(tmp_path / "d", quiet)
    for name, value in dropped.params.items():
        np.testing.assert_array_equal(second.params[name], value, err_msg=name)
