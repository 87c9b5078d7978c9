"""Every shell command of README.md and samples/README.md runs as written.

Each ```sh block is split into commands (a line, with ``\\`` continuations joined), and the
commands of one document run in order, each in its own ``bash -c``, in a scratch copy of the
repository (its code first on PYTHONPATH) with ``.venv`` linked to the environment running
the tests (so ``. .venv/bin/activate`` works as written) and that environment's bin first on
PATH, as after activating it. Every command must exit 0 and pass the check its kind has in
``CHECKS``. A command added to either README is picked up with no change here.

What is not run as written is said here, in two tables, and each entry must still match a
command of its document, so the tables cannot outlive what they describe:

* ``NOT_RUN``: commands that set up the environment the test itself runs in.
* ``SHORTER``: long runs, with the text substituted (e.g. ``--steps 1500`` → ``--steps 3``).

``SLOW`` commands run in their own test, marked slow (``-m slow``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ["README.md", "samples/README.md"]

#: command as written → why it is not run.
NOT_RUN = {
    'python3 -m venv .venv && .venv/bin/pip install -e ".[dev]"':
        "creates and fills the environment this test runs in",
    ".venv/bin/python -m pytest": "runs this very test suite",
    'pip install -e ".[onnx]"': "installs a package the dev extra already has",
    'pip install -e ".[serve]"': "installs packages the dev extra already has",
}

#: (document, start of the command, text as written, text run): long runs made short.
SHORTER = [
    ("README.md", "nndk train samples/corpus.txt", "--steps 1500", "--steps 3"),
    ("samples/README.md", "nndk train samples/corpus.txt", "--steps 1500", "--steps 3"),
    ("samples/README.md", "nndk train py.txt", "--steps 5000", "--steps 3"),
    ("samples/README.md", "nndk train samples/digits/train.npz", "--steps 1500", "--steps 3"),
]

#: start of a command → why it only runs with -m slow.
SLOW = {
    "python -m nndk.onnx.conformance": "ONNX's node tests: about 7 s, and tested by "
                                       "tests/test_onnx_import.py already",
    "python samples/ray/score.py": "starts a local Ray instance (30-60 s here); "
                                   "tests/test_ray.py runs a Ray job too",
    "python samples/ray/serve.py": "starts a local Ray instance and two Serve replicas "
                                   "(about 30 s here); tests/test_ray_serve.py deploys "
                                   "them too",
}


@dataclass(frozen=True)
class Result:
    command: str
    code: int
    out: str
    err: str
    cwd: Path


def _json_lines(r: Result) -> str | None:
    """One JSON object per line, each with labels (every sample model has an argmax-label)."""
    rows = [json.loads(line) for line in r.out.splitlines()]
    labelled = rows and all(any(k.endswith(".label") for k in row) for row in rows)
    return None if labelled else "no labels in the JSON"


def _same_as_shipped(*names: str) -> Callable[[Result], str | None]:
    def check(r: Result) -> str | None:
        differ = [n for n in names if (r.cwd / "samples" / n).read_bytes()
                  != (ROOT / "samples" / n).read_bytes()]
        return f"not the shipped bytes: {differ}" if differ else None
    return check


#: (pattern a command matches, check of its result: None when fine, else what is wrong);
#: the first pattern that matches decides.
CHECKS: list[tuple[str, Callable[[Result], str | None]]] = [
    (r"^nnre serve ", lambda r: None if '"text_completion"' in r.out and '"y.label"' in r.out
     else "no completion and tensors answered"),
    (r"^nnre run .*--output ", lambda r: None if (r.cwd / "out.npz").stat().st_size else "empty"),
    (r"^nnre run .*--input(-jsonl)? ", _json_lines),
    (r"^nnre score ", lambda r: None if "bits per character" in r.out else "no score"),
    (r"^nnre run ", lambda r: None if r.out.strip() else "no text generated"),
    (r"^nnre verify ", lambda r: None if r.out.startswith("ok: ") else "no 'ok:'"),
    (r"^nnre inspect .*--json", lambda r: None if json.loads(r.out)["bundle_id"] else "no id"),
    (r"^nndk check ", lambda r: None if "parameters" in r.out else "no parameter count"),
    (r"^nndk train ", lambda r: None if "trained " in r.err else "no 'trained' line"),
    (r"^(SOURCE_DATE_EPOCH=\d+ )?nndk pack ",
     lambda r: None if r.out.startswith("packed ") else "no 'packed' line"),
    (r"^nndk export ", lambda r: None if r.out.startswith("exported ") else "no 'exported'"),
    (r"^nndk import ", lambda r: None if "imported " in r.out else "no 'imported' line"),
    (r"^python samples/make_weather\.py", _same_as_shipped(
        "weather.bundle", "weather.csv", "weather-feeds.npz", "weather-requests.jsonl")),
    (r"^cat .*> py\.txt", lambda r: None if (r.cwd / "py.txt").stat().st_size else "empty"),
    (r"^python samples/ray/score\.py ", lambda r: None if "2,000 rows" in r.out else "no rows"),
    (r"^(NNRE_MODEL=\S+ )?python samples/serverless/handler\.py ",
     lambda r: None if json.loads(r.out)["statusCode"] == 200 else "not answered"),
]


def commands(doc: str) -> list[str]:
    """The commands of every ```sh block, in order: continuations joined, comment lines
    and blank lines dropped."""
    text = (ROOT / doc).read_text(encoding="utf-8")
    out: list[str] = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, flags=re.M | re.S):
        joined = re.sub(r"\\\n\s*", "", block)
        out += [line.strip() for line in joined.splitlines()
                if line.strip() and not line.strip().startswith("#")]
    return out


def _bare(command: str) -> str:
    """The command without a trailing comment (two spaces or more, then #)."""
    return re.split(r"\s{2,}#", command, maxsplit=1)[0].strip()


def planned(doc: str) -> list[tuple[str, str | None]]:
    """(command to run, or the command as written and why it is skipped)."""
    out: list[tuple[str, str | None]] = []
    for command in commands(doc):
        bare = _bare(command)
        if bare in NOT_RUN:
            out.append((bare, f"not run: {NOT_RUN[bare]}"))
            continue
        for where, start, written, run in SHORTER:
            if where == doc and bare.startswith(start):
                assert command.count(written) == 1, (doc, command, written)
                command = command.replace(written, run)
        out.append((command, None))
    return out


def test_the_tables_match_commands_of_the_documents() -> None:
    every = {doc: [_bare(c) for c in commands(doc)] for doc in DOCS}
    assert every["README.md"] and every["samples/README.md"]
    for command in NOT_RUN:
        assert any(command in cmds for cmds in every.values()), command
    for doc, start, written, _ in SHORTER:
        assert [c for c in every[doc] if c.startswith(start) and written in c], (doc, start)
    for start in SLOW:
        assert any(c.startswith(start) for cmds in every.values() for c in cmds), start


def _scratch(tmp: Path) -> Path:
    """A copy of the repository (sources, documents, samples; no .git or caches) with .venv
    the running environment."""
    copy = tmp / "repo"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".*", "__pycache__"))
    (copy / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    return copy


def _run(command: str, cwd: Path) -> Result:
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
           "PYTHONPATH": str(cwd), "XDG_CACHE_HOME": str(cwd / ".cache")}
    env.pop("NNRE_MAX_BYTES", None)
    proc = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    return Result(command, proc.returncode, proc.stdout, proc.stderr, cwd)


def _is_slow(command: str) -> bool:
    return any(command.startswith(start) for start in SLOW)


@pytest.mark.parametrize("doc", DOCS)
def test_every_shell_command_runs(doc: str, tmp_path: Path) -> None:
    _run_all([c for c, skipped in planned(doc) if not skipped and not _is_slow(c)], tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("doc", DOCS)
def test_every_slow_shell_command_runs(doc: str, tmp_path: Path) -> None:
    """The SLOW commands (each stands alone: it reads nothing an earlier command made)."""
    _run_all([c for c, skipped in planned(doc) if not skipped and _is_slow(c)], tmp_path)


def _run_all(todo: list[str], tmp_path: Path) -> None:
    cwd = _scratch(tmp_path)
    problems: list[str] = []
    for command in todo:
        result = _run(command, cwd)
        if result.code != 0:
            problems.append(f"{command}\n  exit {result.code}: {result.err.strip()[-500:]}")
            continue
        check = next((c for pattern, c in CHECKS if re.search(pattern, command)), None)
        why = check(result) if check else None
        if why:
            problems.append(f"{command}\n  {why}; stdout: {result.out[:300]!r}")
    assert not problems, "\n".join(problems)
