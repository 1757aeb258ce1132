"""Files: durable atomic replacement (the one way every module publishes a file), lock probes.

A reader that opens ``dest`` sees either the old content or the new, never a half-written file:
the new content goes to a hidden temp file in the same directory (same filesystem, so the rename
is atomic), is fsynced, ``os.replace``d over ``dest``, and the directory is fsynced so the rename
itself survives a crash.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import struct
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """fsync a directory so that renames and creations inside it are durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path_for(dest: Path) -> Path:
    """A fresh hidden ``.tmp`` name next to ``dest`` (never read by the bus or its readers)."""
    return dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp")


def fsync_file(path: Path) -> None:
    """fsync one file by path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def install(tmp: Path, dest: Path) -> None:
    """fsync ``tmp``, rename it over ``dest`` and fsync the directory."""
    fsync_file(tmp)
    os.replace(tmp, dest)
    fsync_dir(dest.parent)


def replaceable(dest: Path) -> bool:
    """Whether ``dest`` is a file the bus may replace by rename: absent or a regular file, and
    not a symlink. A symlink (``/dev/stdout``, a link a user made) or a device or pipe is written
    through instead: a rename would replace the link itself, not what it points to."""
    return not dest.is_symlink() and (not dest.exists() or dest.is_file())


def write_atomic(dest: Path, text: str, *, mode: int | None = None) -> None:
    """Replace ``dest`` with ``text`` (UTF-8) atomically and durably; ``mode`` sets permissions."""
    tmp = temp_path_for(dest)
    try:
        with open(tmp, "x", encoding="utf-8") as fh:
            fh.write(text)
        if mode is not None:
            os.chmod(tmp, mode)
        install(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def lock_holder(path: Path) -> int | None:
    """The pid of another process holding a POSIX (fcntl) lock on ``path`` — DuckDB locks its
    database files so — or None; -1 when the kernel cannot tell. Asked with F_GETLK, which takes
    no lock, so asking never drops a lock this process holds (any close of a file would)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        query = struct.pack("@hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        try:
            answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOLCK):
                return -1
            raise
        l_type, _whence, _start, _len, pid = struct.unpack("@hhqqi4x", answer)
        return None if l_type == fcntl.F_UNLCK else pid
    finally:
        os.close(fd)
