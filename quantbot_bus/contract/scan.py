"""Finding run directories: a walk of the artifacts root that yields every run directory of
either layout (:mod:`.layout`: a directory holding a metadata.json; a ``YYYY-MM/run_id=<id>``
directory holding run.json or _SUCCESS) without descending into it, skipping what
:mod:`quantbot_bus.ignore` ignores."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from ..ignore import is_ignored_name
from .layout import is_seed_dir, marker_lstat
from .model import METADATA_NAME


def iter_run_dirs(root: Path) -> Iterator[Path]:
    """Every run directory below ``root`` (absolute paths, sorted per directory).

    See :func:`iter_run_dir_paths` (the same walk, yielding strings).
    """
    for path in iter_run_dir_paths(root):
        yield Path(path)


def iter_run_dir_paths(root: str | os.PathLike[str]) -> Iterator[str]:
    """Every run directory below ``root`` (absolute paths as strings, sorted per directory);
    see :func:`walk_run_dirs`."""
    for path, _ in walk_run_dirs(root):
        yield path


def walk_run_dirs(root: str | os.PathLike[str]) -> Iterator[tuple[str, os.stat_result]]:
    """Every run directory below ``root`` with the ``os.lstat`` of its metadata.json (a seed
    run's: of its run.json, else its _SUCCESS) (absolute paths as strings, sorted per directory).

    A directory holding ``metadata.json`` (of any file type: the validator reports broken ones)
    is a run directory and is not descended into. A seed directory (``YYYY-MM/run_id=<id>``) is
    never descended into: it is a run directory once it holds run.json or _SUCCESS. Hidden names and names ending in
    ``.tmp``/``.partial`` are skipped; symlinked directories are never followed. The root itself
    is never a run directory. Directories that cannot be listed are skipped (logged as
    ``scan.dir_unreadable``). One ``lstat`` per candidate plus one ``scandir`` per plain directory.
    """
    top = os.path.abspath(os.fspath(root))
    stack: list[str] = [top]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as it:
                subdirs = []
                for entry in it:
                    if is_ignored_name(entry.name):
                        continue
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            subdirs.append(entry.name)
                    except OSError:
                        continue
        except FileNotFoundError:
            continue
        except OSError as exc:
            from ..log import get_logger

            get_logger(__name__).warning(
                "scan.dir_unreadable", path=current, error=exc.strerror or str(exc)
            )
            continue
        subdirs.sort()
        descend: list[str] = []
        prefix = current if current.endswith("/") else current + "/"  # os.path.join, cheaper
        for name in subdirs:
            path = prefix + name
            if is_seed_dir(path):
                seed_st = marker_lstat(path)
                if seed_st is not None:
                    yield path, seed_st
                continue
            try:
                meta_st = os.lstat(path + "/" + METADATA_NAME)
            except OSError:  # no metadata.json (or unreadable): a plain directory
                descend.append(path)
                continue
            yield path, meta_st
        stack.extend(reversed(descend))
