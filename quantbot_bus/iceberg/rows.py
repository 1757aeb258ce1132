"""The rows a batch appends to the core tables (``runs_d``, ``artifacts_f``, ``rejections_f``),
as Arrow tables in the schemas of :mod:`quantbot_bus.iceberg.tables`."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass

import pyarrow as pa

from ..objectstore.validate import ObjectRun
from .tables import ARTIFACTS_SCHEMA, REJECTIONS_SCHEMA, RUNS_SCHEMA


@dataclass
class Rejected:
    """A rejected run; ``fingerprint`` digests the reason, so the same problem seen again (by
    a reconcile, by another daemon) is recorded once and a new problem is recorded anew."""

    run_dir: str
    run_id: str | None
    reason: str

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.reason.encode()).hexdigest()[:16]


def _ts(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(dt.UTC)
    except ValueError:
        return None


def runs_rows(runs: list[ObjectRun], daemon_id: str, now: dt.datetime) -> pa.Table:
    rows = []
    for r in runs:
        i = r.info
        rows.append(
            {
                "run_id": i.run_id,
                "run_type": i.run_type,
                "producer": i.producer,
                "producer_version": i.producer_version,
                "status": i.status,
                "created_at": _ts(i.created_at),
                "started_at": _ts(i.started_at),
                "finished_at": _ts(i.finished_at),
                "git_commit": i.git_commit,
                "git_branch": i.git_branch,
                "git_dirty": i.git_dirty,
                "params": json.dumps(i.params, sort_keys=True),
                "metrics": json.dumps(i.metrics, sort_keys=True),
                "metadata": i.metadata_json,
                "run_dir": r.uri,
                "artifact_count": len(i.artifacts),
                "total_rows": i.total_rows,
                "total_bytes": i.total_bytes,
                "fingerprint": i.fingerprint,
                "host": i.host,
                "error": i.error,
                "shape": i.shape,
                "registered_at": now,
                "registered_by": daemon_id,
            }
        )
    return pa.Table.from_pylist(rows, schema=RUNS_SCHEMA)


def artifact_rows(
    runs: list[ObjectRun], how: dict[tuple[str, str], str], now: dt.datetime
) -> pa.Table:
    rows = []
    for r in runs:
        for a, uri in zip(r.info.artifacts, r.artifact_uris, strict=True):
            rows.append(
                {
                    "run_id": r.info.run_id,
                    "name": a.name,
                    "path": uri,
                    "format": a.format,
                    "rows": a.rows,
                    "bytes": a.bytes,
                    "sha256": a.sha256,
                    "arrow_schema": a.arrow_schema,
                    "registered_how": how.get((r.info.run_id, a.name), "add_files"),
                    "registered_at": now,
                }
            )
    return pa.Table.from_pylist(rows, schema=ARTIFACTS_SCHEMA)


def rejection_rows(rejected: list[Rejected], daemon_id: str, now: dt.datetime) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "run_dir": r.run_dir,
                "run_id": r.run_id,
                "reason": r.reason,
                "fingerprint": r.fingerprint,
                "rejected_at": now,
                "rejected_by": daemon_id,
            }
            for r in rejected
        ],
        schema=REJECTIONS_SCHEMA,
    )
