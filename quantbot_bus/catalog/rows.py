"""The rows a batch writes: catalog rows built from a validated run, as Arrow tables, and the
statements that insert them (one ``INSERT ... SELECT`` per table, the JSON columns cast from
their text)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ..contract import RunInfo
from ..timeutil import parse_utc
from .text import db_text

if TYPE_CHECKING:
    from .batch import Rejection

RUN_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    ("run_id", pa.string()),
    ("run_type", pa.string()),
    ("producer", pa.string()),
    ("producer_version", pa.string()),
    ("status", pa.string()),
    ("created_at", pa.timestamp("us")),
    ("started_at", pa.timestamp("us")),
    ("finished_at", pa.timestamp("us")),
    ("git_commit", pa.string()),
    ("git_branch", pa.string()),
    ("git_dirty", pa.bool_()),
    ("params", pa.string()),
    ("metrics", pa.string()),
    ("metadata", pa.string()),
    ("run_dir", pa.string()),
    ("artifact_count", pa.int32()),
    ("total_rows", pa.int64()),
    ("total_bytes", pa.int64()),
    ("fingerprint", pa.string()),
    ("first_registered_at", pa.timestamp("us")),
    ("registered_at", pa.timestamp("us")),
    ("deleted_at", pa.timestamp("us")),
    ("host", pa.string()),
    ("error", pa.string()),
    ("shape", pa.string()),
    ("_seq", pa.int64()),
    ("_aseq", pa.int64()),
)
ARTIFACT_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    ("run_id", pa.string()),
    ("name", pa.string()),
    ("path", pa.string()),
    ("format", pa.string()),
    ("rows", pa.int64()),
    ("bytes", pa.int64()),
    ("sha256", pa.string()),
    ("arrow_schema", pa.string()),
    ("registered_at", pa.timestamp("us")),
    ("_seq", pa.int64()),
)
REJECTION_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    ("run_dir", pa.string()),
    ("run_id", pa.string()),
    ("reason", pa.string()),
    ("fingerprint", pa.string()),
)
# Arrow in, one INSERT ... SELECT per table; the JSON columns are cast from their text.
INSERT_RUNS = """
INSERT INTO catalog.runs_d (run_id, run_type, producer, producer_version, status, created_at,
    started_at, finished_at, git_commit, git_branch, git_dirty, params, metrics, metadata, run_dir,
    artifact_count, total_rows, total_bytes, fingerprint, first_registered_at, registered_at,
    deleted_at, host, error, shape, _seq, _aseq)
SELECT run_id, run_type, producer, producer_version, status, created_at, started_at, finished_at,
    git_commit, git_branch, git_dirty, params::JSON, metrics::JSON, metadata::JSON, run_dir,
    artifact_count, total_rows, total_bytes, fingerprint, first_registered_at, registered_at,
    deleted_at, host, error, shape, _seq, _aseq
FROM _qb_runs
"""
INSERT_ARTIFACTS = """
INSERT INTO catalog.artifacts_f (run_id, name, path, format, rows, bytes, sha256, arrow_schema,
    registered_at, _seq)
SELECT run_id, name, path, format, rows, bytes, sha256, arrow_schema::JSON, registered_at, _seq
FROM _qb_artifacts
"""
# A rejection is one row per run_dir: seen again -> attempts + 1; reopened after being resolved
# -> first_seen_at restarts.
UPSERT_REJECTIONS = """
INSERT INTO catalog.rejections_f
    (run_dir, run_id, reason, fingerprint, first_seen_at, last_seen_at, attempts, resolved_at, _seq)
SELECT run_dir, run_id, reason, fingerprint, ?, ?, 1, NULL, ? FROM _qb_rejections
ON CONFLICT (run_dir) DO UPDATE SET
    _seq = excluded._seq,
    run_id = excluded.run_id,
    reason = excluded.reason,
    fingerprint = excluded.fingerprint,
    last_seen_at = excluded.last_seen_at,
    attempts = rejections_f.attempts + 1,
    first_seen_at = CASE WHEN rejections_f.resolved_at IS NULL
        THEN rejections_f.first_seen_at ELSE excluded.first_seen_at END,
    resolved_at = NULL
"""


def arrow_table(
    rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, pa.DataType]]
) -> pa.Table:
    """``rows`` as an Arrow table with exactly ``columns``."""
    schema = pa.schema([pa.field(name, kind) for name, kind in columns])
    return pa.Table.from_pylist(list(rows), schema=schema)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def run_row(
    run: RunInfo, first_registered: dt.datetime, now: dt.datetime, seq: int
) -> dict[str, Any]:
    """The ``runs_d`` row of ``run``, written by batch ``seq`` (its artifacts too)."""
    return {
        "run_id": run.run_id,
        "run_type": run.run_type,
        "producer": run.producer,
        "producer_version": run.producer_version,
        "status": run.status,
        "created_at": parse_utc(run.created_at),
        "started_at": parse_utc(run.started_at),
        "finished_at": parse_utc(run.finished_at),
        "git_commit": run.git_commit,
        "git_branch": run.git_branch,
        "git_dirty": run.git_dirty,
        "params": _json(run.params),
        "metrics": _json(run.metrics),
        "metadata": run.metadata_json,
        "run_dir": str(run.run_dir),
        "artifact_count": len(run.artifacts),
        "total_rows": run.total_rows,
        "total_bytes": run.total_bytes,
        "fingerprint": run.fingerprint,
        "first_registered_at": first_registered,
        "registered_at": now,
        "deleted_at": None,
        "host": run.host,
        "error": run.error,
        "shape": run.shape,
        "_seq": seq,
        "_aseq": seq,
    }


def artifact_rows(run: RunInfo, now: dt.datetime, seq: int) -> Iterator[dict[str, Any]]:
    """The ``artifacts_f`` rows of ``run``, written by batch ``seq``."""
    for art in run.artifacts:
        yield {
            "run_id": run.run_id,
            "name": art.name,
            "path": str(art.path),
            "format": art.format,
            "rows": art.rows,
            "bytes": art.bytes,
            "sha256": art.sha256,
            "arrow_schema": art.arrow_schema,
            "registered_at": now,
            "_seq": seq,
        }


def rejections_table(rejections: Iterable[Rejection]) -> pa.Table:
    """The rejections to upsert (their paths, ids and reasons as storable text)."""
    return arrow_table(
        [
            {
                "run_dir": db_text(r.run_dir),
                "run_id": None if r.run_id is None else db_text(r.run_id),
                "reason": db_text(r.reason),
                "fingerprint": r.fingerprint,
            }
            for r in rejections
        ],
        REJECTION_FIELDS,
    )
