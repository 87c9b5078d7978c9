"""User paths: opened for reading without ever blocking (regular files only), and written
atomically.

``open()`` on a FIFO waits for a writer forever, and on a device it may never return either,
so a bundle path, an ``--input`` file or a planted cache entry could hang nnre. Every path
nnre reads is therefore checked with ``os.stat`` first, then opened ``O_NONBLOCK`` (which
returns at once even if the path was swapped for a FIFO in between) and checked again with
``fstat`` on the descriptor actually opened. Anything but a regular file is refused.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Callable
from typing import IO, TypeVar

T = TypeVar("T")

_FLAGS = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
          | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))

#: stat test → what to call the file in an error.
_KINDS: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def kind(mode: int) -> str | None:
    """None for a regular file, else what the file is, for an error message."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(path: str | os.PathLike[str], refuse: Callable[[str], Exception]
                 ) -> IO[bytes]:
    """``path`` opened for binary reading; ``refuse(message)`` is raised for anything that is
    not a regular file. OSError (missing file, no permission) propagates unchanged."""
    what = kind(os.stat(path).st_mode)
    if what is None:
        fd = os.open(path, _FLAGS)
        what = kind(os.fstat(fd).st_mode)
        if what is None:
            return os.fdopen(fd, "rb")
        os.close(fd)
    raise refuse(f"{os.fspath(path)} is {what}, not a regular file; nnre reads only "
                 "regular files (a pipe or device could block forever)")


def target_folder(path: str | os.PathLike[str]) -> str:
    """The existing directory ``path`` is to be written in (absolute). A missing one is an
    OSError naming that directory as the user wrote it, rather than the temporary file that
    could not be made in it."""
    target = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(folder):
        shown, name = os.path.dirname(target) or ".", os.path.basename(target)
        if os.path.exists(folder):
            raise NotADirectoryError(errno.ENOTDIR, f"not a directory, cannot write {name} "
                                     "in it", shown)
        raise FileNotFoundError(errno.ENOENT, f"no such directory, cannot write {name} in it",
                                shown)
    return folder


def atomic_write(path: str | os.PathLike[str], fill: Callable[[IO[bytes]], T],
                 prefix: str = ".", suffix: str = ".nnre.tmp") -> T:
    """Write ``path`` exactly as named, all or nothing: ``fill`` writes a fsynced temporary
    file in the same directory, which then replaces ``path`` in one ``os.replace``. If
    ``fill`` (or anything) fails, the temporary file is removed and a previous file at
    ``path`` is left untouched."""
    target = os.fspath(path)
    folder = target_folder(target)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            result = fill(f)
            f.flush()
            os.fsync(f.fileno())
        mask = os.umask(0)  # the mode a plain open() would give, not mkstemp's 0600
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(folder)
    return result


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make the rename durable too; some filesystems refuse fsync on a directory."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
