"""The ignore rule: which names under the artifacts root the bus never reads.

A name starting with ``.`` (hidden, and every temp file the bus writes) or ending in ``.tmp`` or
``.partial`` (a producer's unfinished file) is ignored, and so is everything below it. The scanner,
the watcher, the validator and :class:`~quantbot_bus.writer.RunWriter` all ask here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

IGNORED_SUFFIXES = (".tmp", ".partial")


def is_ignored_name(name: str) -> bool:
    """True for a single path component the bus never reads."""
    return name.startswith(".") or name.endswith(IGNORED_SUFFIXES)


def any_ignored(parts: Iterable[str]) -> bool:
    """True if any of the path components ``parts`` is ignored."""
    return any(is_ignored_name(part) for part in parts)


def is_within(path: str, root: str) -> bool:
    """True if ``path`` is ``root`` or below it (both absolute and normalised)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def is_ignored(root: Path, path: Path) -> bool:
    """True if any component of ``path`` below ``root`` is ignored, or if ``path`` is not below
    ``root`` at all. ``root`` itself is not ignored. Compared lexically first, then with symlinks
    resolved."""
    root_s = os.path.abspath(os.fspath(root))
    path_s = os.path.abspath(os.fspath(path))
    if not is_within(path_s, root_s):
        root_s = os.path.realpath(root_s)
        path_s = os.path.realpath(path_s)
        if not is_within(path_s, root_s):
            return True
    rel = os.path.relpath(path_s, root_s)
    if rel == ".":
        return False
    return any_ignored(rel.split(os.sep))
