"""The two run-directory layouts below one artifacts root, and the one place that tells them apart.

- **v1** (``<run_type>/<run_id>/``): a directory holding ``metadata.json`` is a run; that file
  is written last, so its appearance completes the run.
- **seed** (``YYYY-MM/run_id=<id>/``, the layout of the system quantbot-bus replaces): a
  directory named ``run_id=<id>`` inside a directory named like ``2026-03`` is a seed run
  directory, whatever it holds. It is a run once it holds ``run.json`` (its manifest) or
  ``_SUCCESS`` (its completion marker, written last); Parquet files live in the folders
  :data:`SEED_FOLDERS`, logs in ``logs/``.

The names alone decide: no setting, no probing of contents. Every part of the bus that maps a path
to a run directory or asks whether a directory is a run (the scan, the daemon's examination, the
pending rule, the fingerprints, the validator) asks here.
"""

from __future__ import annotations

import os
import re

from ..ignore import is_ignored_name
from .model import METADATA_NAME

V1 = "v1"
SEED = "seed"
LAYOUTS = (V1, SEED)

#: The seed layout's manifest, completion marker and log files (relative to the run directory).
RUN_JSON = "run.json"
SUCCESS_NAME = "_SUCCESS"
STDOUT_FILE = "logs/stdout.txt"
STDERR_FILE = "logs/stderr.txt"
#: The folders whose Parquet files are a seed run's artifacts (named ``<folder>/<stem>``).
SEED_FOLDERS = ("inputs", "truth", "features", "policy", "results", "errors")
#: The prefix of a seed run directory's name; the rest is the run_id.
SEED_PREFIX = "run_id="
#: The name of a seed month directory: the month the run started.
MONTH_RE = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$")
#: The shape (``runs_d.shape``) and default producer of runs registered from a run.json.
SEED_SHAPE = "seed-run-json"


def is_seed_dir(path: str) -> bool:
    """True if ``path`` names a seed run directory: ``.../YYYY-MM/run_id=<id>``."""
    path = path.rstrip("/")
    name = os.path.basename(path)
    if not name.startswith(SEED_PREFIX) or len(name) == len(SEED_PREFIX):
        return False
    return MONTH_RE.fullmatch(os.path.basename(os.path.dirname(path))) is not None


def layout_of(path: str) -> str:
    """The layout a (candidate) run directory belongs to: :data:`SEED` or :data:`V1`."""
    return SEED if is_seed_dir(path) else V1


def marker_path(run_dir: str) -> str:
    """The file whose appearance makes ``run_dir`` a run and whose mtime starts the pending
    clock: ``metadata.json``, for a seed run ``run.json``."""
    return os.path.join(run_dir, RUN_JSON if is_seed_dir(run_dir) else METADATA_NAME)


def marker_lstat(run_dir: str) -> os.stat_result | None:
    """``os.lstat`` of the file that makes ``run_dir`` a run, or None: a v1 directory's
    ``metadata.json``; a seed directory's ``run.json``, else its ``_SUCCESS``."""
    names = (RUN_JSON, SUCCESS_NAME) if is_seed_dir(run_dir) else (METADATA_NAME,)
    prefix = run_dir if run_dir.endswith("/") else run_dir + "/"
    for name in names:
        try:
            return os.lstat(prefix + name)
        except (OSError, ValueError):
            continue
    return None


def is_run_dir(path: str) -> bool:
    """True if ``path`` holds a run (complete or not): see :func:`marker_lstat`."""
    return marker_lstat(path) is not None


def run_id_of(run_dir: str) -> str:
    """The run_id a directory's name gives: ``run_id=<id>`` → ``<id>``; a v1 run directory is
    named after its run_id."""
    name = os.path.basename(run_dir.rstrip("/"))
    return name[len(SEED_PREFIX) :] if is_seed_dir(run_dir) else name


def seed_artifact_name(file: str) -> str:
    """A seed artifact's name: its path relative to the run directory without the extension
    (``truth/paths.parquet`` → ``truth/paths``)."""
    head, _, leaf = file.rpartition("/")
    stem = leaf[: -len(".parquet")] if leaf.endswith(".parquet") else leaf.rsplit(".", 1)[0]
    return f"{head}/{stem}" if head else stem


def seed_parquet_files(run_dir: str) -> list[str]:
    """The Parquet files of a seed run directory (``<folder>/<name>.parquet`` for each folder of
    :data:`SEED_FOLDERS`, directly inside it; ignored names skipped), relative and sorted.
    Never raises: an unreadable folder counts as empty."""
    files: list[str] = []
    prefix = run_dir if run_dir.endswith("/") else run_dir + "/"
    for folder in SEED_FOLDERS:
        try:
            with os.scandir(prefix + folder) as it:
                names = [
                    e.name
                    for e in it
                    if e.name.endswith(".parquet") and not is_ignored_name(e.name)
                ]
        except (OSError, ValueError):
            continue
        files.extend(f"{folder}/{n}" for n in sorted(names))
    return files


def seed_watched_files() -> tuple[str, ...]:
    """The paths (relative to a seed run directory) whose stat is part of its fingerprint besides
    its Parquet files: the manifest, the marker, the stderr log and the artifact folders (a
    folder's mtime changes when a file is added or removed)."""
    return (RUN_JSON, SUCCESS_NAME, STDERR_FILE, *SEED_FOLDERS)


def seed_listed_file(raw: str, run_dir: str) -> str | None:
    """The file a seed run.json's ``artifacts.<type>.path`` names, relative to the run directory:
    a relative path as is; an absolute path below the run directory made relative; an absolute
    path elsewhere that passes through a ``run_id=<id>`` directory of this run's name (the tree
    was moved or copied from another host) taken after it. None if it cannot be mapped."""
    if not raw.startswith("/"):
        return raw
    base = run_dir.rstrip("/") + "/"
    if raw.startswith(base):
        return raw[len(base) :]
    marker = "/" + os.path.basename(run_dir.rstrip("/")) + "/"
    if marker in raw:
        return raw.rsplit(marker, 1)[1]
    return None
