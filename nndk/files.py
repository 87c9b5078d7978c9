"""Files nndk writes: atomically, through temporaries anyone can recognise and clean up.

Every file is written to ``.nndk-tmp-<name>.<random>`` beside its target, flushed to disk and
renamed over the target, so a crash never leaves a half-written file under the real name.
A process killed mid-write (SIGKILL, power loss) leaves its temporary behind; the next run
writing to the same directory removes those, and only those that match the prefix and are
older than its own start, so it never removes another live process's work in progress nor
any file nndk did not make.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from nnre.files import atomic_write as nnre_atomic_write
from nnre.files import fsync_dir

TMP_PREFIX = ".nndk-tmp-"
_IMPORTED = time.time()


def process_start() -> float:
    """This process's start as a Unix time (Linux /proc), else when nndk was imported.

    /proc/stat's boot time has one-second resolution, so the earlier of the two is used:
    cleaning may leave a just-killed run's temporary for the next run, never more.
    """
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of stat(5): starttime, after pid and comm
        boot = next(float(line.split()[1]) for line in
                    Path("/proc/stat").read_text().splitlines() if line.startswith("btime "))
        return min(_IMPORTED, boot + ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED


def clean_stale(directory: str | Path) -> list[Path]:
    """Remove nndk temporaries in ``directory`` left by earlier processes; returns them."""
    folder = Path(directory)
    if not folder.is_dir():
        return []
    started, removed = process_start(), []
    for path in folder.glob(TMP_PREFIX + "*"):
        try:
            info = path.lstat()
            if path.is_symlink() or not path.is_file() or info.st_mtime >= started:
                continue
            path.unlink()
            removed.append(path)
        except FileNotFoundError:  # another process cleaned it first
            continue
    return removed


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """The runtime's atomic write, through a temporary :func:`clean_stale` recognises."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nnre_atomic_write(path, write, prefix=f"{TMP_PREFIX}{path.name}.", suffix="")


def atomic_link(source: Path, target: Path) -> None:
    """Make ``target`` name the same bytes as ``source``, atomically: a hard link renamed
    into place (no copy, no extra disk), or an atomic copy where links are not supported."""
    tmp = target.parent / f"{TMP_PREFIX}{target.name}.{os.getpid()}.link"
    try:
        tmp.unlink(missing_ok=True)
        os.link(source, tmp)
        os.replace(tmp, target)
    except OSError:
        tmp.unlink(missing_ok=True)
        with source.open("rb") as f:
            atomic_write(target, lambda out: shutil.copyfileobj(f, out))
        return
    fsync_dir(target.parent)
