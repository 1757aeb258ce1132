"""Fingerprints: a cheap, stat-only digest of a run directory (metadata.json and the files it
lists, by name, size, mtime_ns and file type; contents are never read). Equal fingerprints mean
"unchanged, no need to validate again"."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .files import _NotRegular, _open_regular
from .layout import (
    is_seed_dir,
    seed_listed_file,
    seed_parquet_files,
    seed_watched_files,
)
from .model import MAX_METADATA_BYTES, METADATA_NAME


def _files_in(doc: Any) -> list[str]:
    """The file names a parsed metadata.json lists, read loosely (anything odd: none)."""
    if not isinstance(doc, dict):
        return []
    files: list[str] = []
    artifacts = doc.get("artifacts")
    if isinstance(artifacts, list):
        for item in artifacts:
            if isinstance(item, dict) and isinstance(item.get("file"), str):
                files.append(item["file"])
    elif isinstance(doc.get("parquet_file"), str):
        files.append(doc["parquet_file"])
    return files


def _load_loosely(path: str) -> Any:
    """A JSON file parsed loosely (any problem: None)."""
    try:
        fd = _open_regular(path)
    except (OSError, _NotRegular):
        return None
    try:
        raw = os.read(fd, MAX_METADATA_BYTES + 1)
    finally:
        os.close(fd)
    if len(raw) > MAX_METADATA_BYTES:
        return None
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except (ValueError, RecursionError):
        return None


def _listed_files(path: str) -> list[str]:
    """The file names metadata.json lists, parsed loosely (any problem: none)."""
    return _files_in(_load_loosely(path))


def _fingerprint_line(name: str, s: os.stat_result | None) -> bytes:
    if s is None:
        text = f"{name}\x00missing"
    else:
        text = f"{name}\x00{s.st_size}\x00{s.st_mtime_ns}\x00{s.st_mode & _S_IFMT}"
    return text.encode("utf-8", "surrogatepass") + b"\n"


_S_IFMT = 0o170000  # stat.S_IFMT(mode) == mode & _S_IFMT, without a function call per file


def _fingerprint(base: str, meta_st: os.stat_result, files: Iterable[str]) -> str:
    """blake2b over (name, size, mtime_ns, file type) of metadata.json (``meta_st``, symlink
    already followed) and of each listed file, in sorted order (stat only)."""
    parts = [_fingerprint_line(METADATA_NAME, meta_st)]
    prefix = base if base.endswith("/") else base + "/"
    try:
        for name in sorted(set(files)):
            # os.path.join(base, name), without its cost: an absolute name replaces the base
            path = name if name.startswith("/") else prefix + name
            try:
                fst: os.stat_result | None = os.stat(path)
            except (OSError, ValueError):
                fst = None
            parts.append(_fingerprint_line(name, fst))
    except Exception:  # a hostile listing must not break the scan; stat-only fallback
        parts = parts[:1]
    return hashlib.blake2b(b"".join(parts), digest_size=16).hexdigest()


def _metadata_stat(base: str, lst: os.stat_result | None = None) -> os.stat_result | None:
    """The stat of ``base/metadata.json`` (a symlink followed when it resolves), None if absent.
    ``lst``: its lstat, when the caller just took it."""
    meta = (base if base.endswith("/") else base + "/") + METADATA_NAME
    if lst is not None:
        st = lst
    else:
        try:
            st = os.lstat(meta)
        except (OSError, ValueError):
            return None
    if stat.S_ISLNK(st.st_mode):
        try:
            st = os.stat(meta)
        except (OSError, ValueError):
            pass
    return st


def fingerprint_of(
    run_dir: str | os.PathLike[str],
    files: Iterable[str],
    *,
    metadata_lstat: os.stat_result | None = None,
) -> str | None:
    """:func:`quick_fingerprint` of ``run_dir`` for a file list the caller already knows (names
    relative to the run directory, as metadata.json lists them; any order): metadata.json's own
    stat and each file's stat, no parsing. Equal to ``quick_fingerprint(run_dir)`` when ``files``
    are the files its metadata.json lists. ``None`` if there is no metadata.json. Never raises.

    ``metadata_lstat``: ``os.lstat`` of the run's metadata.json if the caller just took it (as
    :func:`walk_run_dirs` does), saving one system call per run."""
    base = os.fspath(run_dir)
    if is_seed_dir(base):
        return _seed_fingerprint(base, files)
    st = _metadata_stat(base, metadata_lstat)
    if st is None:
        return None
    return _fingerprint(base, st, files)


def quick_fingerprint(run_dir: Path) -> str | None:
    """Cheap fingerprint of a run directory: blake2b over (name, size, mtime_ns) of
    metadata.json and of each file it lists (stat only, contents are never hashed).
    ``None`` if there is no metadata.json. Never raises."""
    base = os.fspath(run_dir)
    if is_seed_dir(base):
        try:
            return _seed_fingerprint(base, seed_files(base))
        except Exception:  # never raise
            return _seed_fingerprint(base, ())
    meta = os.path.join(base, METADATA_NAME)
    try:
        lst = os.lstat(meta)
    except (OSError, ValueError):
        return None
    st = _metadata_stat(base, lst)
    if st is None:  # pragma: no cover - _metadata_stat never fails once given the lstat
        return None
    try:
        readable = stat.S_ISREG(st.st_mode) and st.st_size <= MAX_METADATA_BYTES
        # a symlinked metadata.json is listed from its target, as the validator reads it
        path = os.path.realpath(meta) if stat.S_ISLNK(lst.st_mode) else meta
        files = _listed_files(path) if readable else []
    except Exception:  # never raise: an odd listing counts as none
        files = []
    return _fingerprint(base, st, files)


def seed_files(run_dir: str) -> list[str]:
    """The artifact files of a seed run directory, relative to it: the Parquet files in its
    folders and the files its run.json lists (read loosely), sorted, without duplicates."""
    files = set(seed_parquet_files(run_dir))
    doc = _load_loosely(os.path.join(run_dir, "run.json"))
    artifacts = doc.get("artifacts") if isinstance(doc, dict) else None
    if isinstance(artifacts, dict):
        for entry in artifacts.values():
            raw = entry.get("path") if isinstance(entry, dict) else None
            if isinstance(raw, str) and "\x00" not in raw:
                rel = seed_listed_file(raw, run_dir)
                if rel is not None:
                    files.add(rel)
    return sorted(files)


def _seed_fingerprint(base: str, files: Iterable[str]) -> str | None:
    """A seed run directory's fingerprint: run.json, _SUCCESS, logs/stderr.txt, the artifact
    folders and ``files`` (stat only). None when it holds neither run.json nor _SUCCESS."""
    prefix = base if base.endswith("/") else base + "/"
    if not (os.path.lexists(prefix + "run.json") or os.path.lexists(prefix + "_SUCCESS")):
        return None
    parts = []
    for name in (*seed_watched_files(), *sorted(set(files) - set(seed_watched_files()))):
        try:
            fst: os.stat_result | None = os.stat(name if name.startswith("/") else prefix + name)
        except (OSError, ValueError):
            fst = None
        parts.append(_fingerprint_line(name, fst))
    return hashlib.blake2b(b"".join(parts), digest_size=16).hexdigest()
