"""Opening user paths for reading without ever blocking: regular files only.

``open()`` on a FIFO waits for a writer forever, and on a device it may never return either,
so a bundle path, an ``--input`` file or a planted cache entry could hang nnre. Every path
nnre reads is therefore checked with ``os.stat`` first, then opened ``O_NONBLOCK`` (which
returns at once even if the path was swapped for a FIFO in between) and checked again with
``fstat`` on the descriptor actually opened. Anything but a regular file is refused.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from typing import IO

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
