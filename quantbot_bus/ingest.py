"""Scanning: turning directories on disk into catalog batches (what the Bus examines).

- ``ScanOutcome``: ``batch`` (a catalog.Batch: valid runs, gone run dirs, rejections) and
  ``pending`` (run_dir -> reason, for Incomplete runs that must be looked at again later;
  ``pending_ids``: their run_ids where metadata.json names one).
- A registered run one of whose registered files is missing is not being written: it is rejected
  at once (``artifact missing: <file>``; the batch then soft-deletes the run), not pending.
- ``examine(config, catalog, dirs) -> ScanOutcome``: look at candidate directories (from events):
  each is a run dir, a directory that contains run dirs (renamed-in subtree), or a path that is gone.
  Skips dirs whose quick_fingerprint equals the registered (or rejected) one; validates the rest.
  A known live run whose directory is gone goes to ``batch.gone``.
- ``full_scan(config, catalog) -> ScanOutcome``: the whole root against the whole catalog.

Details:

- Cheap on an unchanged tree: a known run (or an open rejection) whose stat-only
  ``quick_fingerprint`` is unchanged is not validated again; ``ScanOutcome.skipped`` counts them.
  ``full_scan`` does not even parse metadata.json for that: it loads every live run's artifact
  files from the catalog in one query (:func:`known_files`) and compares
  ``contract.fingerprint_of(run_dir, files)`` (stats only) with the stored fingerprint; only a
  run whose stats differ is looked at with ``quick_fingerprint`` (and validated if that differs).
- ``known_files(catalog) -> {run_dir: [file, ...]}``: the artifact files of each live run,
  relative to its run dir, from ``catalog.artifacts_f``.
- Both layouts (:mod:`quantbot_bus.contract.layout`) go through the same steps: "holds a
  metadata.json" below means "is a run directory" (a seed ``YYYY-MM/run_id=<id>`` directory:
  holds run.json or _SUCCESS).
- ``gone`` holds live run dirs and open-rejection dirs that no longer hold a ``metadata.json``
  (deleted, renamed away, or renamed to a hidden name); apply_batch soft-deletes the runs and
  closes the rejections. A valid run whose run_id is registered from another directory that no
  longer holds a run is a move: that directory goes to ``gone`` in the same batch.
- ``examine``/``full_scan`` do not log; :class:`quantbot_bus.pipeline.Bus` logs and applies.
"""

from __future__ import annotations

import bisect
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .catalog import Batch, Catalog, KnownRun, Rejection, fs_text
from .config import Config
from .contract import (
    Incomplete,
    Invalid,
    Valid,
    fingerprint_of,
    iter_run_dirs,
    quick_fingerprint,
    validate_run_dir,
    walk_run_dirs,
)
from .contract.artifacts import MISSING_PREFIX, missing_name
from .contract.layout import is_run_dir
from .errors import ConfigError
from .ignore import is_ignored


@dataclass
class ScanOutcome:
    batch: Batch = field(default_factory=Batch)
    pending: dict[str, str] = field(default_factory=dict)
    pending_ids: dict[str, str] = field(default_factory=dict)  # run_dir -> run_id, when known
    # How many run dirs were looked at, how many were skipped as unchanged (registered
    # or rejected with the same fingerprint), and the run_ids of the registered ones skipped.
    seen: int = 0
    skipped: int = 0
    unchanged: list[str] = field(default_factory=list)


def _has_metadata(run_dir: str) -> bool:
    """True if ``run_dir`` holds a run, in either layout (:func:`contract.layout.is_run_dir`)."""
    return is_run_dir(run_dir)


def _root(config: Config) -> str:
    return os.path.abspath(os.fspath(config.root))


# Each live run's artifact paths relative to its run dir (stored as <run_dir>/<file>), in one
# query; a path not below its run dir (never written so) yields NULL and is handled by the caller.
_KNOWN_FILES_SQL = """
SELECT r.run_dir,
    list(CASE WHEN starts_with(a.path, r.run_dir || '/')
              THEN substr(a.path, length(r.run_dir) + 2) END)
        FILTER (WHERE a.path IS NOT NULL)
FROM catalog.runs_d AS r LEFT JOIN catalog.artifacts_f AS a USING (run_id)
WHERE r.deleted_at IS NULL
GROUP BY r.run_dir
"""


def registered_files(catalog: Catalog, run_id: str, run_dir: str) -> list[str]:
    """The artifact files registered with live run ``run_id``, relative to ``run_dir``."""
    cursor = catalog.cursor()
    try:
        rows = cursor.execute(
            "SELECT path FROM catalog.artifacts_f WHERE run_id = ?", [run_id]
        ).fetchall()
    finally:
        cursor.close()
    prefix = run_dir + "/"
    return [p[len(prefix) :] for p in (fs_text(row[0]) for row in rows) if p.startswith(prefix)]


def known_files(catalog: Catalog) -> dict[str, list[str]]:
    """run_dir -> the artifact files of that live run, relative to the run dir (as metadata.json
    lists them). A run whose stored paths cannot be mapped back is left out (the caller then
    reads its metadata.json instead)."""
    cursor = catalog.cursor()
    try:
        rows = cursor.execute(_KNOWN_FILES_SQL).fetchall()
    finally:
        cursor.close()
    out: dict[str, list[str]] = {}
    for run_dir, files in rows:
        if not files:  # a run without artifacts (a failed run) aggregates to NULL
            out[fs_text(run_dir)] = []
        elif all(f is not None for f in files):
            # interned: 100,000 runs share a handful of file names
            out[fs_text(run_dir)] = [
                fs_text(f) if "\\x" in f else f for f in map(sys.intern, files)
            ]
    return out


class _Scan:
    """One examination: the catalog's view (loaded once) against candidate directories."""

    def __init__(self, config: Config, catalog: Catalog, paths: list[str] | None = None) -> None:
        self.config = config
        self.catalog = catalog
        self.root = _root(config)
        # Only what the catalog knows at, below or above ``paths`` (everything when None).
        # Below a path only when it is not a run dir (a tree renamed in or away, a deleted dir).
        below = None if paths is None else [p for p in paths if not _has_metadata(p)]
        self.known: dict[str, KnownRun] = catalog.known_runs(paths, below=below)
        self.rejected: dict[str, str | None] = catalog.known_rejections(paths, below=below)
        # Directories the catalog tracks (live runs and open rejections), sorted for prefix search.
        self.tracked = sorted(
            {d for d, k in self.known.items() if not k.deleted} | set(self.rejected)
        )
        self.outcome = ScanOutcome()
        self._gone: dict[str, None] = {}
        # run_dir -> artifact files, for the stat-only check of known runs (full scans only).
        self.files: dict[str, list[str]] = {}

    def tracked_under(self, path: str) -> list[str]:
        """Tracked directories equal to ``path`` or below it."""
        out = []
        i = bisect.bisect_left(self.tracked, path)
        prefix = path.rstrip(os.sep) + os.sep
        while i < len(self.tracked):
            d = self.tracked[i]
            if d == path or d.startswith(prefix):
                out.append(d)
            elif d > prefix:
                break
            i += 1
        return out

    def mark_gone(self, run_dir: str) -> None:
        if run_dir in self.rejected or (run_dir in self.known and not self.known[run_dir].deleted):
            self._gone[run_dir] = None

    def candidates_for(self, path: str) -> list[str]:
        """Map one event path to the run directories to look at (and note what is gone)."""
        if path != self.root and is_ignored(Path(self.root), Path(path)):
            return []
        try:
            is_dir = os.path.isdir(path) and not os.path.islink(path)
        except OSError:
            is_dir = False
        if is_dir:
            if path != self.root and _has_metadata(path):
                return [path]
            owner = self._run_dir_above(path)
            if owner is not None:  # a directory inside a run dir: that run changed
                return [owner]
            found = [str(p) for p in iter_run_dirs(Path(path))]
            present = set(found)
            for d in self.tracked_under(path):
                if d not in present and not _has_metadata(d):
                    self.mark_gone(d)
            return found
        # A file, or a path that no longer exists: whatever was tracked there is gone, and the
        # nearest existing ancestor may be a run dir whose contents changed.
        for d in self.tracked_under(path):
            if not _has_metadata(d):
                self.mark_gone(d)
        parent = os.path.dirname(path)
        while parent != self.root and parent.startswith(self.root + os.sep):
            if os.path.isdir(parent):
                if _has_metadata(parent):
                    return [parent]
                self.mark_gone(parent)  # e.g. its metadata.json was just deleted
                return []
            parent = os.path.dirname(parent)
        return []

    def _run_dir_above(self, path: str) -> str | None:
        """The nearest ancestor of ``path`` below the root that is a run dir, if any."""
        parent = os.path.dirname(path)
        while parent != self.root and parent.startswith(self.root + os.sep):
            if _has_metadata(parent):
                return parent
            parent = os.path.dirname(parent)
        return None

    def look_at(self, run_dir: str, metadata_lstat: os.stat_result | None = None) -> None:
        """Validate ``run_dir`` unless its fingerprint says nothing changed."""
        self.outcome.seen += 1
        known = self.known.get(run_dir)
        files = self.files.get(run_dir)
        if known is not None and not known.deleted and files is not None:
            # Stats only: metadata.json's own stat is part of it, so a rewritten metadata.json
            # (and with it a changed file list) never matches.
            fingerprint = fingerprint_of(run_dir, files, metadata_lstat=metadata_lstat)
            if fingerprint == known.fingerprint:
                self.outcome.skipped += 1
                self.outcome.unchanged.append(known.run_id)
                return
        fingerprint = quick_fingerprint(Path(run_dir))
        if fingerprint is None:  # metadata.json vanished meanwhile
            self.mark_gone(run_dir)
            return
        if known is not None and not known.deleted and known.fingerprint == fingerprint:
            self.outcome.skipped += 1
            self.outcome.unchanged.append(known.run_id)
            return
        if run_dir in self.rejected and self.rejected[run_dir] == fingerprint:
            self.outcome.skipped += 1
            return
        result = validate_run_dir(
            Path(run_dir), Path(self.root), verify_hashes=self.config.verify_hashes
        )
        if isinstance(result, Valid):
            self.outcome.batch.valid.append(result.run)
        elif isinstance(result, Incomplete):
            deleted = self.deleted_files(known, run_dir, result.missing)
            if deleted:
                self.outcome.batch.rejected.append(
                    Rejection(run_dir, known.run_id if known else None, deleted, fingerprint)
                )
                return
            self.outcome.pending[run_dir] = result.reason
            if result.run_id is not None:
                self.outcome.pending_ids[run_dir] = result.run_id
        elif isinstance(result, Invalid):
            self.outcome.batch.rejected.append(
                Rejection(run_dir, result.run_id, result.reason, fingerprint)
            )

    def deleted_files(self, known: KnownRun | None, run_dir: str, missing: tuple[str, ...]) -> str:
        """The rejection reason when files ``missing`` from a registered run were registered
        with it (deleted since: nothing is being written), else ``""``."""
        if not missing or known is None or known.deleted:
            return ""
        files = self.files.get(run_dir)
        if files is None:
            files = registered_files(self.catalog, known.run_id, run_dir)
        registered = set(files)
        gone = [f for f in missing if f in registered]
        if not gone:
            return ""
        names = ", ".join(missing_name(f) for f in gone)
        return (
            f"{MISSING_PREFIX}{names} (registered with run {known.run_id!r}, deleted since; "
            "restore the file, or remove the run directory)"
        )

    def finish(self) -> ScanOutcome:
        # Moves: a valid run whose id is registered from a directory that no longer holds a run.
        live_dir_by_id = self.catalog.live_run_dirs(r.run_id for r in self.outcome.batch.valid)
        for run in self.outcome.batch.valid:
            old = live_dir_by_id.get(run.run_id)
            if old is not None and old != str(run.run_dir) and not _has_metadata(old):
                self._gone[old] = None  # live (just looked up), maybe outside the loaded paths
        valid_dirs = {str(r.run_dir) for r in self.outcome.batch.valid}
        self.outcome.batch.gone = [d for d in self._gone if d not in valid_dirs]
        return self.outcome


def examine(
    config: Config, catalog: Catalog, dirs: Iterable[str | os.PathLike[str]]
) -> ScanOutcome:
    """Look at candidate directories from filesystem events; see the module docstring."""
    root = _root(config)
    if not os.path.isdir(root):
        return ScanOutcome()  # never read a vanished root as "all runs deleted"; full_scan says why
    paths = list(
        dict.fromkeys(
            p
            for p in (os.path.abspath(os.fspath(raw)) for raw in dirs)
            if p == root or p.startswith(root + os.sep)  # ignore paths outside the root
        )
    )
    scan = _Scan(config, catalog, paths)
    todo: dict[str, None] = {}
    for path in paths:
        for run_dir in scan.candidates_for(path):
            todo[run_dir] = None
    for run_dir in todo:
        scan.look_at(run_dir)
    return scan.finish()


def full_scan(config: Config, catalog: Catalog) -> ScanOutcome:
    """The whole artifacts root against the whole catalog."""
    scan = _Scan(config, catalog)
    if not os.path.isdir(scan.root):
        # Never read a missing root as "every run was deleted" (an unmounted disk, a typo).
        raise ConfigError(
            f"the artifacts root {scan.root} does not exist or is not a directory; create it "
            "or set 'root' (QUANTBOT_BUS_ROOT, --root)"
        )
    scan.files = known_files(catalog)
    present: set[str] = set()
    for run_dir, metadata_lstat in walk_run_dirs(scan.root):
        present.add(run_dir)
        scan.look_at(run_dir, metadata_lstat)
    for run_dir in scan.tracked:
        if run_dir not in present:
            scan.mark_gone(run_dir)
    return scan.finish()
