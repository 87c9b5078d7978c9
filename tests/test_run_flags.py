"""``nnre run``'s sampling flags (issue #15): aliases people already type, --prompt-file,
--num-samples as one batch, --min-p, --repeat-penalty, --temperature 0, the seed said on
stderr, --stop escapes; each checked against the hand-written oracle of text_helpers, through
the same one-error-line wrapper as the installed command (click's CliRunner isolation)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from bundle_helpers import lstm_weights
from click.testing import CliRunner
from text_helpers import VOCAB, oracle_text, text_bundle

from nnre.cli import cli, run_cli


def nnre(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    """Exit code, stdout, stderr of ``nnre ARGS`` run in this process by ``run_cli``."""
    with CliRunner().isolation(input=stdin) as (out, err, _):
        argv, sys.argv = sys.argv, ["nnre", *args]
        try:
            run_cli(cli, "nnre")
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        finally:
            sys.argv = argv
        return code, out.getvalue().decode(), err.getvalue().decode()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    path = text_bundle(tmp_path_factory.mktemp("flags") / "t.bundle", seed=4)
    return str(path)


WEIGHTS = lstm_weights(6, len(VOCAB), 4, "float64")


def text(prime: str, length: int, seed: int | None, **settings) -> str:
    return prime + oracle_text(WEIGHTS, VOCAB, prime, length, seed, **settings) + "\n"


def test_prompt_and_temp_aliases(model) -> None:
    want = text("ab", 50, 3, temperature=0.6)
    for flags in (["-p", "ab", "--temp", "0.6"], ["--prompt", "ab", "--temperature", "0.6"],
                  ["--prime", "ab", "--temp", "0.6"]):
        code, out, err = nnre("run", model, *flags, "-n", "50", "--seed", "3")
        assert (code, out, err) == (0, want, "")


@pytest.mark.parametrize("settings", [
    {"min_p": 0.2},
    {"min_p": 0.05, "temperature": 1.4},
    {"repeat_penalty": 1.5},
    {"repeat_penalty": 1.3, "repeat_last_n": 3, "top_k": 5},
])
def test_min_p_and_repeat_penalty_match_the_oracle(model, settings) -> None:
    flags = [x for k, v in settings.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    code, out, err = nnre("run", model, "-p", "a c", "-n", "80", "--seed", "9", *flags)
    assert code == 0, err
    assert out == text("a c", 80, 9, **settings)
    assert out != text("a c", 80, 9)  # the flag changed something


def test_temperature_0_is_greedy_the_argmax(model) -> None:
    want = text("h", 40, None, greedy=True)
    assert nnre("run", model, "-p", "h", "-n", "40", "--temp", "0") == (0, want, "")
    assert nnre("run", model, "-p", "h", "-n", "40", "--greedy") == (0, want, "")


def test_without_a_seed_the_seed_is_said_and_makes_the_text_again(model) -> None:
    code, out, err = nnre("run", model, "-p", "a", "-n", "60")
    assert code == 0
    seed = re.fullmatch(r"note: --seed (\d+) makes this text again\n", err)
    assert seed, err
    assert nnre("run", model, "-p", "a", "-n", "60", "--seed", seed[1])[1] == out
    assert out == text("a", 60, int(seed[1]))


def test_num_samples_is_one_batch_and_each_is_its_seed_alone(model) -> None:
    code, out, err = nnre("run", model, "-p", "ab", "-n", "30", "--num-samples", "3",
                          "--seed", "11", "--min-p", "0.1")
    assert code == 0 and err == "", err
    want = "".join(f"--- sample {i + 1} of 3, --seed {11 + i} ---\n"
                   + text("ab", 30, 11 + i, min_p=0.1) for i in range(3))
    assert out == want
    for i in range(3):  # what the header says: that seed alone
        alone = nnre("run", model, "-p", "ab", "-n", "30", "--seed", str(11 + i), "--min-p",
                     "0.1")[1]
        assert alone in out


def test_num_samples_without_a_seed_says_the_first(model) -> None:
    code, out, err = nnre("run", model, "-p", "a", "-n", "10", "--num-samples", "2")
    seed = int(re.fullmatch(r"note: --seed (\d+) makes these texts again\n", err)[1])
    assert f"--- sample 2 of 2, --seed {seed + 1} ---\n" in out


def test_prompt_file_is_read_as_is(model, tmp_path) -> None:
    (tmp_path / "p.txt").write_text("ab c\n", encoding="utf-8")
    code, out, err = nnre("run", model, "--prompt-file", str(tmp_path / "p.txt"), "-n", "20",
                          "--seed", "2")
    assert (code, out) == (0, text("ab c\n", 20, 2)), err
    from test_run_cli import nnre_run  # stdin needs a real file descriptor: a process

    code, out, err = nnre_run(model, "--prompt-file", "-", "-n", "20", "--seed", "2",
                              stdin="ab c\n")
    assert (code, out) == (0, text("ab c\n", 20, 2)), err


def test_stop_takes_escapes(model) -> None:
    """The README's `--stop "\\n\\n"` reaches nnre as backslash, n: it is an escape now."""
    full = text("a", 400, 1)[1:-1]
    line = full.index("\n")
    stop = full[line - 1:line + 1]  # the character before the first newline, and it
    code, out, err = nnre("run", model, "-p", "a", "-n", "400", "--seed", "1", "--stop",
                          stop[0] + "\\n")
    assert code == 0, err
    assert out == "a" + full[:line + 1] + "\n"
    code, out, _ = nnre("run", model, "-p", "a", "-n", "400", "--seed", "1", "--stop", "\\x0a")
    assert out == "a" + full[:line + 1] + "\n"
    code, out, _ = nnre("run", model, "-p", "a", "-n", "400", "--seed", "1", "--stop",
                        stop[0] + "\\u000a")
    assert out == "a" + full[:line + 1] + "\n"


@pytest.mark.parametrize("args, message", [
    (["--min-p", "2"], "Invalid value for '--min-p': 2.0 is not in the range 0<=x<=1."),
    (["--min-p", "-0.5"], "Invalid value for '--min-p'"),
    (["--repeat-penalty", "0"], "Invalid value for '--repeat-penalty': 0.0 is not in the "
                                "range x>0."),
    (["--repeat-last-n", "-1"], "Invalid value for '--repeat-last-n'"),
    (["--num-samples", "0"], "Invalid value for '--num-samples': 0 is not in the range x>=1."),
    (["--temp", "-1"], "Invalid value for '--temperature' / '--temp': -1.0 is not in the "
                       "range x>=0."),
    (["--top-p", "0"], "Invalid value for '--top-p': 0.0 is not in the range 0<x<=1."),
    (["--temp", "nan"], "temperature must be a finite number ≥ 0 (0: greedy), got nan"),
    (["--stop", "a\\qb"], "Invalid value for '--stop': unknown escape '\\q' (known: \\n"),
    (["--stop", "ab\\"], "'--stop': ends with a lone backslash (write \\\\ for one)"),
    (["-p", "a", "--prompt-file", "x"], "give --prompt or --prompt-file, not both"),
    (["--prompt-file", "no-such-file"], "no-such-file: No such file or directory"),
])
def test_bad_flags_are_one_error_line(model, args, message) -> None:
    code, out, err = nnre("run", model, *args)
    assert code != 0 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err, err


def test_prompt_file_not_utf8(model, tmp_path) -> None:
    (tmp_path / "p.txt").write_bytes(b"ab\xff")
    code, _, err = nnre("run", model, "--prompt-file", str(tmp_path / "p.txt"))
    assert code == 1 and err == f"error: {tmp_path / 'p.txt'}: not UTF-8 text (byte 2) " \
                                "[bad-feed]\n"


def test_help_teaches_with_examples_and_names_the_bundle_defaults() -> None:
    out = CliRunner().invoke(cli, ["run", "--help"]).output
    assert "Examples:" in out and "--num-samples 4 --seed 1" in out
    assert "bundle's recommended settings" in out
    for flag in ("-p, --prompt, --prime", "--temperature, --temp", "--prompt-file",
                 "--num-samples", "--min-p", "--repeat-penalty", "--repeat-last-n"):
        assert flag in out


def test_the_readme_stop_example_is_escaped() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text("utf-8")
    assert '--stop "\\n\\n"' in readme


def test_num_samples_past_the_memory_budget_is_refused_before_allocating(model) -> None:
    """A list of 10⁹ primes alone would be 8 GB: the budget is checked first."""
    code, out, err = nnre("run", model, "--num-samples", "1000000000", "-n", "3")
    assert code == 1 and out == ""
    assert err.startswith("error: generating 1,000,000,000 texts as one batch: ")
    assert "past the memory budget" in err and err.count("\n") == 1
