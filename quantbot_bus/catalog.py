"""The DuckDB catalog: schema, migrations, batch registration, and the reader-side snapshot.

INTERFACE (used by watch, cli, exports — keep signatures):

Only one process ever opens the working catalog (``Config.catalog_path``) read-write: the daemon
or a one-shot ``sync``/``rebuild``. Readers never open it; they open the snapshot that
:meth:`Catalog.publish_snapshot` writes atomically to ``Config.snapshot_path``.

- ``Catalog.open(path) -> Catalog`` (creates parent dir, connects, migrates to SCHEMA_VERSION)
- ``Catalog.close()``; context manager.
- ``Catalog.known_runs() -> dict[str, KnownRun]`` keyed by run_dir (str, absolute): run_id,
  fingerprint, deleted (bool). Used by the reconcile scan.
- ``Catalog.apply_batch(batch: Batch) -> BatchResult``: ONE transaction that
  inserts/updates the valid runs (Arrow inserts, not row by row), soft-deletes ``gone`` run dirs,
  upserts rejections, resolves rejections of runs that became valid. Idempotent: an unchanged
  run (same fingerprint, not deleted) is a no-op; a run_id already registered from another
  live run_dir is a conflict (recorded as a rejection with a clear reason, never overwrites).
- ``Catalog.publish_snapshot(dest: Path) -> float`` writes a consistent read-only copy of the
  catalog (schema ``catalog`` tables + views) to a temp file next to ``dest``, fsyncs it and
  ``os.replace``s it over ``dest``; returns milliseconds taken.
- ``Catalog.known_rejections() -> dict[str, str | None]``: open rejections, run_dir -> fingerprint.
- ``Catalog.counts() -> dict[str, int]``: runs (live), deleted, artifacts, rejections (open).
- ``open_reader(snapshot_path) -> duckdb.DuckDBPyConnection``: read-only connection to the snapshot
  (raises CatalogMissingError with advice when it does not exist yet).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .contract import RunInfo

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class KnownRun:
    run_id: str
    run_dir: str
    fingerprint: str
    deleted: bool


@dataclass(frozen=True)
class Rejection:
    run_dir: str
    run_id: str | None
    reason: str
    fingerprint: str | None = None  # quick_fingerprint at rejection; unchanged => not retried


@dataclass
class Batch:
    valid: list[RunInfo] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)  # run_dirs that no longer exist
    rejected: list[Rejection] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.valid) + len(self.gone) + len(self.rejected)


@dataclass
class BatchResult:
    registered: list[str] = field(default_factory=list)  # run_ids new (or undeleted)
    updated: list[str] = field(default_factory=list)  # run_ids whose fingerprint changed
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)  # run_ids soft-deleted
    rejected: list[Rejection] = field(default_factory=list)  # incl. run_id conflicts
    ms: float = 0.0
