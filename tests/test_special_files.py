"""Special files never hang nnre: a FIFO, directory or device path is refused, not opened.

Each check runs in a subprocess with a timeout, so a regression fails the test instead of
hanging the suite (``open()`` on a FIFO with no writer blocks forever).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from bundle_helpers import lstm_content

from nnre.bundle.write import write

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")


def run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


@pytest.fixture()
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.bundle"
    os.mkfifo(path)
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("special") / "m.bundle"
    write(path, lstm_content())
    return path


def one_error(proc: subprocess.CompletedProcess[str], code: str) -> None:
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("error:") and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr and f"[{code}]" in proc.stderr


@pytest.mark.parametrize("command", [["inspect"], ["verify"], ["run"]])
def test_a_fifo_bundle_path_is_refused_by_every_command(fifo: Path, command: list[str]) -> None:
    proc = run(["-m", "nnre", *command, str(fifo)])
    one_error(proc, "not-a-file")
    assert "FIFO" in proc.stderr


def test_the_api_raises_a_bundle_error_for_a_fifo_and_a_directory(fifo: Path) -> None:
    code = ("import sys, nnre\nfrom nnre.errors import BundleError\n"
            "for p in sys.argv[1:]:\n"
            "    try:\n        nnre.load(p)\n"
            "    except BundleError as e:\n        print(e.code)\n")
    proc = run(["-c", code, str(fifo), str(fifo.parent)])
    assert proc.stdout.split() == ["not-a-file", "not-a-file"], proc.stderr


@pytest.mark.parametrize("option", ["--input", "--input-jsonl"])
def test_a_fifo_input_is_refused(model: Path, fifo: Path, option: str) -> None:
    one_error(run(["-m", "nnre", "run", str(model), option, str(fifo)]), "bad-feed")


def test_a_device_input_is_refused(model: Path) -> None:
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    one_error(run(["-m", "nnre", "run", str(model), "--input", "/dev/zero"]), "bad-feed")


def test_a_fifo_planted_in_the_compile_cache_is_ignored_and_replaced(model: Path,
                                                                      tmp_path: Path) -> None:
    code = ("import os, sys, nnre\nfrom nnre import cache\nfrom nnre.bundle import decode\n"
            "bid = decode(sys.argv[1]).bundle_id\npath, _ = cache.entry_path(bid)\n"
            "path.parent.mkdir(parents=True)\nos.mkfifo(path)\n"
            "print(cache.load(bid) is None)\nnnre.load(sys.argv[1])\n"
            "print(path.is_file(), cache.load(bid) is not None)\n")
    proc = run(["-c", code, str(model)], env={"XDG_CACHE_HOME": str(tmp_path / "c"),
                                               "NNRE_NO_CACHE": ""})
    assert proc.stdout.split() == ["True", "True", "True"], proc.stderr


def test_the_sdk_refuses_fifos_for_text_arrays_weights_and_equations(tmp_path: Path) -> None:
    for name in ("corpus.txt", "a.npz", "a.csv"):
        os.mkfifo(tmp_path / name)
    code = ("import sys\nfrom pathlib import Path\nfrom nnre.errors import NnreError\n"
            "from nndk.data import load_text, load_arrays\nfrom nndk.pack import read_weights\n"
            "d = Path(sys.argv[1])\n"
            "for f, p in ((load_text, 'corpus.txt'), (load_arrays, 'a.npz'),\n"
            "             (load_arrays, 'a.csv'), (read_weights, 'a.npz')):\n"
            "    try:\n        f(d / p)\n"
            "    except NnreError as e:\n        print(type(e).__name__, 'FIFO' in str(e))\n")
    proc = run(["-c", code, str(tmp_path)])
    assert proc.stdout.split() == ["DataError", "True"] * 3 + ["PackError", "True"], proc.stderr


def test_nndk_pack_refuses_a_fifo_equation_file(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "m.eqn")
    (tmp_path / "w.npz").write_bytes(b"")
    proc = run(["-m", "nndk", "pack", str(tmp_path / "m.eqn"), "--weights",
                str(tmp_path / "w.npz"), "--name", "m", "--version", "1.0.0",
                "-o", str(tmp_path / "o.bundle")])
    assert proc.returncode == 1 and "FIFO" in proc.stderr and "Traceback" not in proc.stderr
