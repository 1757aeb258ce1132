"""Opening files safely: only regular files, never through a final symlink, never blocking
(a FIFO swapped in is refused, not waited on); and a file type in words for reasons."""

from __future__ import annotations

import os
import stat


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "not a regular file"


def _open_regular(path: str) -> int:
    """Open a regular file for reading without following a final symlink and without blocking
    (a FIFO swapped in after the lstat never hangs). Raises OSError, or _NotRegular."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    flags |= getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise _NotRegular(st.st_mode)
    return fd


class _NotRegular(Exception):
    def __init__(self, mode: int) -> None:
        super().__init__(_kind(mode))
        self.mode = mode
