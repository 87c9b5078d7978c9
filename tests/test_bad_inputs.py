"""Bad input to ``nndk`` never crashes: one ``error:`` line saying what and where, exit ≠ 0.

A table of cases (files to make, arguments, the fragment the error line must hold) is run
through the real command-line funnel (``nndk.cli.main``): any exception escaping it (a
traceback), any warning, more than one stderr line, or exit status 0 fails the case.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from nndk.cli import main
from nndk.train import TrainConfig, start

Maker = Callable[[Path], None]

WORDS = "the quick brown fox jumps over a lazy dog".split()
TEXT = " ".join(random.Random(0).choices(WORDS, k=600))
FAST = ["--set", "H=8", "--seq-length", "8", "--batch-size", "4", "--sample-length", "0"]


def text(name: str, data: str | bytes = TEXT) -> Maker:
    def make(d: Path) -> None:
        raw = data.encode("utf-8") if isinstance(data, str) else data
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(raw)
    return make


def npz(name: str, **arrays: object) -> Maker:
    def make(d: Path) -> None:
        np.savez(d / name, **arrays)  # type: ignore[arg-type]
    return make


def truncated(name: str, maker: Maker) -> Maker:
    def make(d: Path) -> None:
        maker(d)
        raw = (d / name).read_bytes()
        (d / name).write_bytes(raw[: len(raw) * 2 // 3])
    return make


def object_npz(d: Path) -> None:
    np.save(d / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(d / "obj.npz", "w") as z:
        z.write(d / "obj.npy", "x.npy")
        np.save(d / "t.npy", np.zeros(2, np.int64))
        z.write(d / "t.npy", "target.npy")


def trained(d: Path) -> None:
    """A small text run's checkpoint in d/ck (and its corpus in d/c.txt)."""
    text("c.txt")(d)
    config = TrainConfig(dims={"H": 8}, seq_length=8, batch_size=4, steps=2, eval_every=2,
                         sample_length=0)
    start(config, d / "c.txt").fit(d / "ck", lambda _: None)


def edited(record: Callable[[dict], None] | None = None,
           arrays: Callable[[dict], None] | None = None) -> Maker:
    """A trained checkpoint whose JSON record and/or arrays are then changed in place."""
    def make(d: Path) -> None:
        trained(d)
        path = d / "ck" / "checkpoint.npz"
        with np.load(path) as data:
            content = {k: data[k] for k in data.files}
        meta = json.loads(content["meta.json"].tobytes())
        if record:
            record(meta)
        if arrays:
            arrays(content)
        content["meta.json"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        np.savez(path, **content)
    return make


def huge_h(meta: dict) -> None:
    meta["config"]["dims"]["H"] = 2**31 - 1


X = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
Y = (X.sum(axis=1) > 0).astype(np.int64)
X_NAN = X.copy()
X_NAN[5, 2] = np.nan
MLP = ["--model", "mlp", "--set", "H=4", "--batch-size", "8", "--steps", "2"]

# (id, files to make, arguments after "nndk", fragment of the error line)
CASES: list[tuple[str, list[Maker], list[str], str]] = [
    ("check-unknown-dim", [], ["check", "lstm", "--set", "h=8"],
     "the model has no dimension 'h' (did you mean H?"),
    ("gradcheck-unknown-dim", [], ["gradcheck", "rnn", "--set", "Hidden=4"],
     "the model has no dimension 'Hidden'"),
    ("gradcheck-names-the-file", [text("m.eqn", "xₜ ∈ ℝ^3\nyₜ = tanh(W xₜ + q)\n")],
     ["gradcheck", "m.eqn"], "error: m.eqn:2:11: the shape of 'W' cannot be determined"),
    ("gradcheck-unclosed-paren", [text("m.eqn", "xₜ ∈ ℝ^3\nyₜ = tanh((W xₜ)\n")],
     ["gradcheck", "m.eqn"], "error: m.eqn:2:10: '(' is never closed"),
    ("pack-no-such-source", [],
     ["pack", "nonexist.eqn", "--name", "m", "--version", "1.0.0", "-o", "m.bundle"],
     "error: nonexist.eqn: no such file or directory (SOURCE is an .eqn file, a checkpoint "
     "of nndk train or a .bundle) [error]"),
    ("pack-into-missing-folder", [text("m.eqn", "y = W x + b\n"),
                                  npz("w.npz", W=np.ones((1, 2)), b=np.zeros(1))],
     ["pack", "m.eqn", "--weights", "w.npz", "--name", "m", "--version", "1.0.0", "-o",
      "no/such/m.bundle"], "error: no/such: no such directory, cannot write m.bundle in it"),
    ("pack-every-missing-weight", [text("m.eqn", "xₜ ∈ ℝ^2\nyₜ ∈ ℝ^1\nyₜ = W xₜ + U xₜ + b\n"),
                                   npz("w.npz", U=np.ones((1, 2)))],
     ["pack", "m.eqn", "--weights", "w.npz", "--name", "m", "--version", "1.0.0", "-o",
      "m.bundle"], "error: m.eqn: missing weights 'W' of shape (1, 2), 'b' of shape (1,) "
                   "[shape-error]"),
    ("pack-codec-not-json", [text("m.eqn", "y = W x + b\n"),
                             npz("w.npz", W=np.ones((1, 2)), b=np.zeros(1))],
     ["pack", "m.eqn", "--weights", "w.npz", "--name", "m", "--version", "1.0.0", "--codec",
      "y={id: char}", "-o", "m.bundle"],
     "error: --codec y: not JSON (Expecting property name enclosed in double quotes: line 1 "
     "column 2 (char 1)) [error]"),
    ("pack-codec-wrong-side", [text("m.eqn", "y = W x + b\n"),
                               npz("w.npz", W=np.ones((1, 2)), b=np.zeros(1))],
     ["pack", "m.eqn", "--weights", "w.npz", "--name", "m", "--version", "1.0.0", "--codec",
      'y={"id": "char", "vocab": ["a"]}', "-o", "m.bundle"],
     "error: header.metadata.codecs.y: codec 'char' applies to one of the signature's inputs, "
     "and 'y' is not one [bad-codec]"),
    ("pack-nan-weight", [text("m.eqn", "y = W x + b\n"),
                         npz("w.npz", W=np.array([[1.0, np.nan]]), b=np.zeros(1))],
     ["pack", "m.eqn", "--weights", "w.npz", "--name", "m", "--version", "1.0.0", "-o",
      "m.bundle"], "weight 'W' holds nan at index [0, 1]"),
    ("text-not-utf8", [text("c.txt", b"hello\nwor\xffld\n")],
     ["train", "c.txt", *FAST], "c.txt:2:4: the text is not UTF-8"),
    ("csv-not-utf8", [text("d.csv", b"x,target\n1,0\n\xe9,1\n")],
     ["train", "d.csv", *MLP], "d.csv:3:1: the CSV is not UTF-8"),
    ("csv-not-a-number", [text("d.csv", "x,target\n1,0\n2,abc\n")],
     ["train", "d.csv", *MLP], "d.csv:3: column 'target': 'abc' is not a number"),
    ("csv-nan", [text("d.csv", "x,target\n1,0\nnan,1\n")],
     ["train", "d.csv", *MLP], "d.csv:3: column 'x': 'nan' is not finite"),
    ("csv-ragged", [text("d.csv", "x,target\n1,0\n2\n")],
     ["train", "d.csv", *MLP], "d.csv:3: 1 values, the header has 2"),
    ("npz-nan", [npz("d.npz", x=X_NAN, target=Y)],
     ["train", "d.npz", *MLP], "array 'x' holds 1 NaN/Inf value(s), the first nan at index "
                               "[5, 2] (row 5)"),
    ("npz-inf-target", [npz("d.npz", x=X, target=np.full(64, np.inf))],
     ["train", "d.npz", *MLP], "array 'target' holds 64 NaN/Inf"),
    ("npz-object", [object_npz],
     ["train", "obj.npz", *MLP], "x.npy: holds object values"),
    ("npz-truncated", [truncated("d.npz", npz("d.npz", x=X, target=Y))],
     ["train", "d.npz", *MLP], "d.npz: not a readable .npz"),
    ("npz-strings", [npz("d.npz", x=np.array(["a", "b"]), target=Y)],
     ["train", "d.npz", *MLP], "x.npy: holds <U1 values"),
    ("npz-negative-class", [npz("d.npz", x=X, target=Y - 1)],
     ["train", "d.npz", *MLP], "array 'target' holds class -1 at index [1]"),
    ("npz-fraction-class", [npz("d.npz", x=X, target=np.full(64, 0.5))],
     ["train", "d.npz", *MLP, "--loss", "ce"], "holds 0.5 at index [0]; class indices"),
    ("npz-huge-class", [npz("d.npz", x=X, target=np.full(64, 2**40))],
     ["train", "d.npz", *MLP], "holds class 1099511627776; at most 2147483647 classes"),
    ("npz-no-rows", [npz("d.npz", x=X[:0], target=Y[:0])],
     ["train", "d.npz", *MLP], "array 'x' has no examples (shape (0, 3))"),
    ("npz-rows-differ", [npz("d.npz", x=X, target=Y[:60])],
     ["train", "d.npz", *MLP], "'x' has 64, 'target' has 60"),
    # checkpoints (item 2): on --resume and on pack
    *[(f"{what}-{name}", makers, args, fragment)
      for what, args in (("resume", ["train", "c.txt", "--resume", "ck"]),
                         ("pack", ["pack", "ck", "--name", "m", "--version", "1.0.0", "-o",
                                   "m.bundle"]))
      for name, makers, fragment in (
          ("ck-truncated", [truncated("ck/checkpoint.npz", trained)],
           "checkpoint.npz: not a readable checkpoint, truncated or damaged"),
          ("ck-not-npz", [trained, text("ck/checkpoint.npz", "hello")],
           "checkpoint.npz: not a readable checkpoint"),
          ("ck-missing-step", [edited(lambda m: m.pop("step"))],
           "checkpoint.npz: field step is missing (expected an integer ≥ 0"),
          ("ck-missing-config-seed", [edited(lambda m: m["config"].pop("seed"))],
           "checkpoint.npz: config.seed is missing"),
          ("ck-seq-length-str", [edited(lambda m: m["config"].update(seq_length="50"))],
           "config.seq_length must be an integer ≥ 1 and ≤ 1,000,000, got '50'"),
          ("ck-batch-negative", [edited(lambda m: m["config"].update(batch_size=-3))],
           "config.batch_size must be an integer ≥ 1"),
          ("ck-dims-negative", [edited(lambda m: m["config"]["dims"].update(H=-8))],
           "config.dims: H=-8 is not a size"),
          ("ck-record-list", [edited(lambda m: (m.clear(), m.update(format=[])))],
           "format [], expected 'nndk-checkpoint/1'"),
          ("ck-step-float", [edited(lambda m: m.update(step=1.5))],
           "field step must be an integer ≥ 0"),
          ("ck-optimizer-t", [edited(lambda m: m["optimizer"].update(t="x"))],
           "field optimizer.t must be an integer"),
          ("ck-sha", [edited(lambda m: m.update(data_sha256=7))],
           "field data_sha256 must be a string"),
      )],
    ("resume-ck-huge-H", [edited(huge_h)], ["train", "c.txt", "--resume", "ck"],
     "H=2147483647, V=27: training needs about"),
    ("resume-ck-no-weight", [edited(arrays=lambda a: a.pop("param/W_f"))],
     ["train", "c.txt", "--resume", "ck"], "checkpoint.npz: array 'param/W_f' is missing"),
    ("resume-ck-bad-shape", [edited(arrays=lambda a: a.update({"param/b_f": np.zeros(3)}))],
     ["train", "c.txt", "--resume", "ck"], "array 'param/b_f' is float64 (3,), expected (8,)"),
    ("resume-ck-bad-rng", [edited(lambda m: m.update(rng={"bit_generator": "MT"}))],
     ["train", "c.txt", "--resume", "ck"], "field rng is not a random state"),
    ("resume-ck-bad-carry", [edited(lambda m: m.update(carry=["zz@1"]))],
     ["train", "c.txt", "--resume", "ck"], "field carry names 'zz@1', not a state"),
    # --resume continues the run it names (item 4)
    *[(f"resume-{name}", [trained], ["train", "c.txt", "--resume", "ck", *extra], fragment)
      for name, extra, fragment in (
          ("other-model", ["--model", "gru", "--set", "H=16"],
           "--model gru is not the checkpoint's model (lstm.eqn)"),
          ("other-dims", ["--set", "H=16"], "--set H=16: the checkpoint has H=8"),
          ("unknown-dim", ["--set", "K=3"], "--set K=3: the checkpoint has no dimension K"),
          ("other-seq-length", ["--seq-length", "9"],
           "--seq-length 9 differs from the checkpoint's 8"),
          ("other-batch", ["--batch-size", "2"], "--batch-size 2 differs from the checkpoint's 4"),
          ("other-seed", ["--seed", "3"], "--seed 3 differs from the checkpoint's 0"),
          ("other-optimizer", ["--optimizer", "sgd"], "--optimizer sgd differs"),
          ("shorter", ["--steps", "1"], "the run is at step 2; --steps must make it longer"),
          ("init-from", ["--init-from", "x.bundle"], "--init-from with --resume"),
          ("overwrite", ["--overwrite"], "--overwrite with --resume"),
          ("elsewhere", ["--checkpoint-dir", "other"],
           "--checkpoint-dir other with --resume ck: a resumed run continues in its own "
           "directory"),
          ("steps-and-epochs", ["--steps", "9", "--epochs", "2"], "--steps and --epochs both"),
      )],
    ("resume-other-data", [trained, text("c.txt", TEXT[::-1])],
     ["train", "c.txt", "--resume", "ck"], "c.txt: not the data this checkpoint was trained on"),
    # another run's checkpoint (item 5)
    ("train-over-another-run", [trained],
     ["train", "c.txt", "--checkpoint-dir", "ck", *FAST, "--steps", "2"],
     "ck: holds another run's checkpoint (step 2, data "),
    ("train-over-unreadable", [text("c.txt"), text("ck/checkpoint.npz", "junk")],
     ["train", "c.txt", "--checkpoint-dir", "ck", *FAST, "--steps", "2"],
     "ck: holds an unreadable checkpoint; continue it with --resume ck, replace it with "
     "--overwrite"),
    ("keep-0", [text("c.txt")], ["train", "c.txt", "--keep", "0"],
     "Invalid value for '--keep': 0 is not in the range x>=1"),
    # flags (item 6)
    ("set-unknown-dim", [text("c.txt")], ["train", "c.txt", "--set", "h=64"],
     "the model has no dimension 'h' (did you mean H?"),
    ("seq-length-0", [text("c.txt")], ["train", "c.txt", "--seq-length", "0"],
     "--seq-length must be an integer ≥ 1"),
    ("batch-size-0", [text("c.txt")], ["train", "c.txt", "--batch-size", "0"],
     "--batch-size must be an integer ≥ 1"),
    ("lr-negative", [text("c.txt")], ["train", "c.txt", "--lr", "-1"],
     "--lr must be a number > 0"),
    ("lr-nan", [text("c.txt")], ["train", "c.txt", "--lr", "nan"], "--lr must be a number"),
    ("steps-and-epochs", [text("c.txt")], ["train", "c.txt", "--steps", "3", "--epochs", "1"],
     "--steps and --epochs both given"),
    ("reset-frac-above-1", [text("c.txt")], ["train", "c.txt", "--reset-frac", "1.5"],
     "--reset-frac must be a number ≥ 0 and ≤ 1, got 1.5"),
    ("eval-iters-negative", [text("c.txt")], ["train", "c.txt", "--eval-iters", "-1"],
     "--eval-iters must be an integer ≥ 0"),
    ("print-every-negative", [text("c.txt")], ["train", "c.txt", "--print-every", "-2"],
     "--print-every must be an integer ≥ 0"),
    ("min-count-0", [text("c.txt")], ["train", "c.txt", "--min-count", "0"],
     "--min-count must be an integer ≥ 1"),
    ("min-count-leaves-nothing", [text("c.txt")], ["train", "c.txt", "--min-count", "100000"],
     "--min-count 100000 leaves no character: the most frequent one appears"),
    ("huge-H", [text("c.txt")], ["train", "c.txt", "--set", "H=2147483647"],
     "H=2147483647, V=27: training needs about 295,148,761,801,991,062,336 bytes"),
    ("huge-H-arrays", [npz("d.npz", x=X, target=Y)],
     ["train", "d.npz", "--model", "mlp", "--set", "H=2147483647"],
     "the largest W_1 (2147483647, 3)"),
]


def run_nndk(args: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch,
             capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run ``nndk ARGS`` in ``cwd`` through the real CLI funnel; (exit status, stderr)."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["nndk", *args])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            main()  # an exception other than SystemExit is a traceback: the test errors
            code = 0
        except SystemExit as exited:
            code = int(exited.code or 0) if not isinstance(exited.code, str) else 1
    assert not caught, [str(w.message) for w in caught]
    return code, capsys.readouterr().err


@pytest.mark.parametrize("makers, args, fragment", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_gives_one_error_line(makers: list[Maker], args: list[str], fragment: str,
                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    for make in makers:
        make(tmp_path)
    code, err = run_nndk(args, tmp_path, monkeypatch, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment in lines[0], err
    assert "Traceback" not in err


PROCESS_CASES = ["npz-nan", "csv-not-utf8", "pack-ck-truncated", "resume-other-model",
                 "huge-H", "train-over-another-run"]


@pytest.mark.parametrize("case", PROCESS_CASES)
def test_bad_input_in_a_real_process(case: str, tmp_path: Path) -> None:
    """The same cases through ``python -m nndk``: what a user sees, warnings included."""
    _, makers, args, fragment = next(c for c in CASES if c[0] == case)
    for make in makers:
        make(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "PYTHONWARNINGS": "default"}
    proc = subprocess.run([sys.executable, "-m", "nndk", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0]


def test_pack_closes_a_truncated_weights_file(tmp_path: Path) -> None:
    (tmp_path / "m.eqn").write_text("y = W x + b\n", encoding="utf-8")
    truncated("w.npz", npz("w.npz", W=np.zeros((2, 3)), b=np.zeros(2)))(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "PYTHONWARNINGS": "default"}
    proc = subprocess.run([sys.executable, "-m", "nndk", "pack", "m.eqn", "--weights",
                           "w.npz", "--name", "m", "--version", "1.0.0", "-o", "m.bundle"],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "error: w.npz: not a readable .npz of numeric arrays (File is not a zip file) [error]"]
