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
skip the others: a deletion's cost is bounded by the file size, not by the catalog's.

A commit made meanwhile (a poll's append, of this daemon's poll thread or another daemon's)
fails this one, which asserts the branch's snapshot. When every file it rewrites is still in the
new snapshot, the same files are committed again on it (up to :data:`RECOMMITS` times: no
read, no write); when one changed (a deletion rewrote it), its new files are deleted and it is
staged once more on the new snapshot, then gives up until the next maintenance (logged
``iceberg.compaction_lost``). No row is lost or brought back. The
removed files stay until snapshot expiry and orphan cleanup drop them
(:mod:`quantbot_bus.iceberg.maintenance`, which calls this first).

Artifact tables are not compacted: they are partitioned by ``run_id`` (one file per run and
table, most registered in place in the producer's prefix).
"""

from __future__ import annotations

import contextlib
import time
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
#: Stagings one compaction tries: one lost to a commit that changed a file it rewrites (a
#: deletion) is staged again once on the new snapshot.
ATTEMPTS = 2
#: Commits of one staging: one lost to a commit that left its files alone (a poll's append,
#: this daemon's own poll thread included) is made again on the new snapshot, with the files
#: already written.
RECOMMITS = 5
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
    lost every time)."""
    from pyiceberg.exceptions import CommitFailedException

    for attempt in range(1, ATTEMPTS + 1):
        table = catalog.load_table(identifier(table_name))
        staged = _stage(table, min_files, max_files, rows_per_file, max_bytes)
        if staged is None:
            return 0
        tasks, written = staged
        for commit in range(1, RECOMMITS + 1):
            try:
                _commit(table, tasks, written)
            except CommitFailedException as exc:
                log.info(
                    "iceberg.compaction_lost",
                    table=table_name,
                    attempt=attempt,
                    commit=commit,
                    error=str(exc)[:200],
                )
                time.sleep(0.1 * commit)  # then the newest snapshot
                table = catalog.load_table(identifier(table_name))
                if _all_live(table, tasks) and commit < RECOMMITS:
                    continue  # an append, or a compaction of other files
            else:
                log.info("iceberg.compacted", table=table_name, files=len(tasks))
                return len(tasks)
            break  # a file it rewrites changed (a deletion): staged again, or given up
        for data_file in written:  # never referenced: not left for the orphan cleanup
            with contextlib.suppress(Exception):
                table.io.delete(data_file.file_path)
    return 0


def _all_live(table: Any, tasks: list[Any]) -> bool:
    """Whether every file the compaction rewrites is still in ``table``'s current snapshot: its
    written files then still hold exactly their rows, whatever else was committed."""
    live = {t.file.file_path for t in table.scan().plan_files() if not t.delete_files}
    return all(t.file.file_path in live for t in tasks)


def _commit(table: Any, tasks: list[Any], written: list[Any]) -> None:
    """One ``overwrite`` snapshot on ``table`` as loaded: ``tasks``' files out, ``written`` in."""
    tx = table.transaction()
    props = {COMPACTED_PROPERTY: str(len(tasks))}
    with tx.update_snapshot(snapshot_properties=props).overwrite() as rewrite:
        for task in tasks:
            rewrite.delete_data_file(task.file)
        for data_file in written:
            rewrite.append_data_file(data_file)
    tx.commit_transaction()


def _stage(
    table: Any, min_files: int, max_files: int, rows_per_file: int, max_bytes: int
) -> tuple[list[Any], list[Any]] | None:
    """The small files of ``table`` (as loaded) one compaction rewrites, and the data files it
    wrote with their rows; None when there are too few small files."""
    import itertools
    import uuid

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
    counter = itertools.count(0)  # file names unique across the slices of one compaction
    write_uuid = uuid.uuid4()
    written: list[Any] = []
    for start in range(0, rows.num_rows, rows_per_file):
        written.extend(
            _dataframe_to_data_files(
                table_metadata=table.metadata,
                write_uuid=write_uuid,
                df=rows.slice(start, rows_per_file),
                io=table.io,
                counter=counter,
            )
        )
    return tasks, written
