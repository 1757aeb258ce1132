"""Compaction of the core tables (``runs_d``, ``artifacts_f``, ``rejections_f``): their small
data files rewritten as one.

Every poll that registers or rejects runs commits one small data file to each core table, so a
daemon that runs for months leaves tens of thousands of them, and every full scan of a table
(the CLI's views, a new ledger, the deletions' look-ups) opens each one. :func:`compact` reads
up to :data:`MAX_FILES` data files of fewer than half :data:`ROWS_PER_FILE` rows and commits one
snapshot that removes them and adds their rows again, sorted by ``run_id``, in files of
:data:`ROWS_PER_FILE` rows (an ``overwrite`` snapshot naming no key, so it changes no key's
presence: :func:`~quantbot_bus.iceberg.tables.key_changes`). It starts only once there are
:data:`MIN_FILES` such files, and reads at most :data:`MAX_BYTES` of them (their Parquet size)
per call. Files stay that small because a deletion rewrites each file that
holds one of its runs (copy-on-write), and the sorted ``run_id`` bounds of each file let it
skip the others: a deletion's cost is bounded by the file size, not by the catalog's. A commit another daemon made meanwhile (an append, a delete)
fails this one (the commit asserts the branch's snapshot): its new files are deleted and it tries
once more on the new snapshot, then gives up until the next maintenance (logged
``iceberg.compaction_lost``), so a busy table costs two attempts an hour, never a long retry
loop; no row is lost or brought back. The
removed files stay until snapshot expiry and orphan cleanup drop them
(:mod:`quantbot_bus.iceberg.maintenance`, which calls this first).

Artifact tables are not compacted: they are partitioned by ``run_id`` (one file per run and
table, most registered in place in the producer's prefix).
"""

from __future__ import annotations

import contextlib
from typing import Any

import structlog

from .tables import identifier

log = structlog.get_logger("quantbot_bus.iceberg")

#: Rows per file a compaction writes (at most).
ROWS_PER_FILE = 10_000
#: A table is compacted once it holds this many small data files.
MIN_FILES = 32
#: Small files rewritten per compaction at most (the next maintenance takes the rest).
MAX_FILES = 5000
#: Parquet bytes one compaction reads at most (its rows are held in memory, sorted).
MAX_BYTES = 64 * 2**20
#: Commits one compaction tries: a lost one is staged again once on the new snapshot.
ATTEMPTS = 2
#: The snapshot property a compaction's commit carries: how many files it rewrote.
COMPACTED_PROPERTY = "quantbot.compacted-files"


def compact(
    catalog: Any,
    table_name: str,
    *,
    min_files: int = MIN_FILES,
    max_files: int = MAX_FILES,
    rows_per_file: int = ROWS_PER_FILE,
    max_bytes: int = MAX_BYTES,
) -> int:
    """Rewrite the small data files of ``table_name`` as few (see the module doc) once there are
    ``min_files`` of them; returns how many were rewritten (0: none, too few, or the commit was
    lost twice)."""
    from pyiceberg.exceptions import CommitFailedException

    for attempt in range(1, ATTEMPTS + 1):
        table = catalog.load_table(identifier(table_name))
        staged = _stage(table, min_files, max_files, rows_per_file, max_bytes)
        if staged is None:
            return 0
        tx, rewritten, written = staged
        try:
            tx.commit_transaction()
        except CommitFailedException as exc:
            for path in written:  # never referenced: not left for the orphan cleanup
                with contextlib.suppress(Exception):
                    table.io.delete(path)
            log.info(
                "iceberg.compaction_lost", table=table_name, attempt=attempt, error=str(exc)[:200]
            )
            continue
        log.info("iceberg.compacted", table=table_name, files=rewritten)
        return rewritten
    return 0


def _stage(
    table: Any, min_files: int, max_files: int, rows_per_file: int, max_bytes: int
) -> tuple[Any, int, list[str]] | None:
    """The compaction's transaction on ``table`` as loaded, how many files it rewrites and the
    files it wrote; None when there are too few small files."""
    import itertools

    from pyiceberg.expressions import AlwaysTrue
    from pyiceberg.io.pyarrow import ArrowScan, _dataframe_to_data_files

    small = sorted(
        (
            t
            for t in table.scan().plan_files()
            if not t.delete_files and t.file.record_count < rows_per_file // 2
        ),
        key=lambda t: t.file.file_path,
    )
    if len(small) < max(min_files, 2):
        return None
    tasks: list[Any] = []
    size = 0
    for task in small[:max_files]:
        size += task.file.file_size_in_bytes
        if tasks and size > max_bytes:
            break
        tasks.append(task)
    if len(tasks) < 2:
        return None
    rows = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue()).to_table(tasks)
    if "run_id" in rows.column_names:
        rows = rows.sort_by("run_id")
    tx = table.transaction()
    counter = itertools.count(0)  # file names unique across the slices of one commit
    written: list[str] = []
    props = {COMPACTED_PROPERTY: str(len(tasks))}
    with tx.update_snapshot(snapshot_properties=props).overwrite() as rewrite:
        for task in tasks:
            rewrite.delete_data_file(task.file)
        for start in range(0, rows.num_rows, rows_per_file):
            for data_file in _dataframe_to_data_files(
                table_metadata=tx.table_metadata,
                write_uuid=rewrite.commit_uuid,
                df=rows.slice(start, rows_per_file),
                io=table.io,
                counter=counter,
            ):
                written.append(data_file.file_path)
                rewrite.append_data_file(data_file)
    return tx, len(tasks), written
