"""The reader side: a read-only connection to a publication's views file, and the CLI's queries
over it (``runs``, ``show``, ``artifacts``, ``stats``, ``rejections``). The ``*_COLUMNS`` tuples
are the columns of their rows (the JSON contract, docs/cli-json.md)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import duckdb

from ..errors import CatalogError, CatalogMissingError, NotFoundError
from ..timeutil import iso_utc
from .schema import DB_ALIAS


def open_reader(snapshot_path: Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the reader-side snapshot, with ``catalog.*`` resolvable."""
    snapshot_path = Path(snapshot_path).absolute()
    if not snapshot_path.is_file():
        raise CatalogMissingError(
            f"no catalog snapshot at {snapshot_path} yet: start the daemon (make run) or run "
            "`quantbot-bus sync`"
        )
    con = duckdb.connect()
    try:
        con.execute(f"ATTACH ? AS {DB_ALIAS} (READ_ONLY)", [str(snapshot_path)])
        con.execute(f"USE {DB_ALIAS}")
    except duckdb.Error as exc:
        con.close()
        raise CatalogError(
            f"cannot open the catalog snapshot {snapshot_path}: {exc}; the daemon or "
            "`quantbot-bus sync` rewrites it"
        ) from exc
    return con


def _dicts(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _decode_json(rows: list[dict[str, Any]], *columns: str) -> list[dict[str, Any]]:
    for row in rows:
        for col in columns:
            if isinstance(row.get(col), str):
                row[col] = json.loads(row[col])
    return rows


#: The columns of ``runs`` rows (the JSON contract, docs/cli-json.md).
RUN_LIST_COLUMNS = (
    "run_id",
    "run_type",
    "status",
    "producer",
    "producer_version",
    "created_at",
    "finished_at",
    "git_branch",
    "git_commit",
    "git_dirty",
    "artifact_count",
    "total_rows",
    "total_bytes",
    "run_dir",
    "registered_at",
    "deleted_at",
)


def list_runs(
    con: duckdb.DuckDBPyConnection,
    *,
    run_type: str | None = None,
    status: str | None = None,
    producer: str | None = None,
    git_branch: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int | None = 50,
    include_deleted: bool = False,
) -> list[dict[str, Any]]:
    """Runs newest first (created_at, else registered_at), filtered; ``limit`` None/0 = all.

    ``since``/``until`` are naive UTC datetimes: inclusive/exclusive bounds on created_at (else
    registered_at). Deleted runs only with ``include_deleted``.
    """
    return _dicts(
        con.execute(
            """SELECT run_id, run_type, status, producer, producer_version, created_at,
                   finished_at, git_branch, git_commit, git_dirty, artifact_count, total_rows,
                   total_bytes, run_dir, registered_at, deleted_at
            FROM catalog.runs_d
            WHERE (?::VARCHAR IS NULL OR run_type = ?)
              AND (?::VARCHAR IS NULL OR status = ?)
              AND (?::VARCHAR IS NULL OR producer = ?)
              AND (?::VARCHAR IS NULL OR git_branch = ?)
              AND (?::TIMESTAMP IS NULL OR coalesce(created_at, registered_at) >= ?)
              AND (?::TIMESTAMP IS NULL OR coalesce(created_at, registered_at) < ?)
              AND (? OR deleted_at IS NULL)
            ORDER BY coalesce(created_at, registered_at) DESC, run_id DESC
            LIMIT ?""",
            [
                run_type,
                run_type,
                status,
                status,
                producer,
                producer,
                git_branch,
                git_branch,
                since,
                since,
                until,
                until,
                include_deleted,
                int(limit) if limit else None,
            ],
        )
    )


ARTIFACT_COLUMNS = (
    "run_id",
    "run_type",
    "name",
    "path",
    "format",
    "rows",
    "bytes",
    "sha256",
    "registered_at",
)


def _no_run(run_id: str) -> str:
    return f"no run with id {run_id}"


def require_live_run(con: duckdb.DuckDBPyConnection, run_id: str) -> None:
    """Raise :class:`NotFoundError` unless ``catalog.runs_d`` holds ``run_id``, not deleted: for
    the commands that filter by a run id, so an unknown or deleted one is an error, not an
    empty result."""
    row = con.execute("SELECT deleted_at FROM catalog.runs_d WHERE run_id = ?", [run_id]).fetchone()
    if row is None:
        raise NotFoundError(_no_run(run_id))
    if row[0] is not None:
        when = iso_utc(row[0]) if isinstance(row[0], dt.datetime) else row[0]
        raise NotFoundError(
            f"run {run_id} was deleted at {when} (its directory is gone); "
            f"`quantbot-bus show {run_id}` still shows it"
        )


def get_run(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, Any]:
    """One run (deleted ones too) with params/metrics decoded and its ``artifacts`` list."""
    rows = _dicts(
        con.execute(
            "SELECT run_id, run_type, status, producer, producer_version, created_at, started_at, "
            "finished_at, git_commit, git_branch, git_dirty, host, error, params, metrics, "
            "run_dir, artifact_count, total_rows, total_bytes, fingerprint, first_registered_at, "
            "registered_at, deleted_at FROM catalog.runs_d WHERE run_id = ?",
            [run_id],
        )
    )
    if not rows:
        raise NotFoundError(_no_run(run_id))
    run = _decode_json(rows, "params", "metrics")[0]
    artifacts = _decode_json(
        _dicts(
            con.execute(
                "SELECT name, path, format, rows, bytes, sha256, arrow_schema, registered_at "
                "FROM catalog.artifacts_f WHERE run_id = ? ORDER BY name",
                [run_id],
            )
        ),
        "arrow_schema",
    )
    run["artifacts"] = artifacts
    return run


def list_artifacts(
    con: duckdb.DuckDBPyConnection, *, run_id: str | None = None, name: str | None = None
) -> list[dict[str, Any]]:
    """Artifacts of live runs (newest run first, then name), optionally for one run / table;
    a ``run_id`` the catalog does not hold, or a deleted one, raises :class:`NotFoundError`."""
    if run_id is not None:
        require_live_run(con, run_id)
    return _dicts(
        con.execute(
            """SELECT a.run_id, r.run_type, a.name, a.path, a.format, a.rows, a.bytes, a.sha256,
                   a.registered_at
            FROM catalog.artifacts_f a JOIN catalog.runs_d r USING (run_id)
            WHERE r.deleted_at IS NULL
              AND (?::VARCHAR IS NULL OR a.run_id = ?)
              AND (?::VARCHAR IS NULL OR a.name = ?)
            ORDER BY coalesce(r.created_at, r.registered_at) DESC, a.run_id DESC, a.name""",
            [run_id, run_id, name, name],
        )
    )


STATS_COLUMNS = ("run_type", "status", "runs", "artifacts", "total_rows", "total_bytes", "newest")


def run_stats(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Live runs counted per (run_type, status), then one total row (run_type/status null)."""
    return _dicts(
        con.execute(
            """SELECT run_type, status, count(*) AS runs,
                   CAST(coalesce(sum(artifact_count), 0) AS BIGINT) AS artifacts,
                   CAST(coalesce(sum(total_rows), 0) AS BIGINT) AS total_rows,
                   CAST(coalesce(sum(total_bytes), 0) AS BIGINT) AS total_bytes,
                   max(coalesce(created_at, registered_at)) AS newest
            FROM catalog.runs_d WHERE deleted_at IS NULL
            GROUP BY GROUPING SETS ((run_type, status), ())
            ORDER BY grouping(run_type, status), run_type, status"""
        )
    )


REJECTION_COLUMNS = (
    "run_dir",
    "run_id",
    "reason",
    "attempts",
    "first_seen_at",
    "last_seen_at",
)


def list_rejections(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Open rejections, most recently seen first."""
    return _dicts(
        con.execute(
            "SELECT run_dir, run_id, reason, attempts, first_seen_at, last_seen_at "
            "FROM catalog.rejections_f WHERE resolved_at IS NULL "
            "ORDER BY last_seen_at DESC, run_dir"
        )
    )


#: The columns of ``regressions`` (the ``exports.regressions`` view; docs/cli-json.md).
REGRESSION_COLUMNS = (
    "run_id",
    "run_type",
    "strategy",
    "git_branch",
    "git_commit",
    "created_at",
    "metric",
    "verdict",
    "method",
    "baseline_runs",
    "baseline_value",
    "new_value",
    "change",
    "low",
    "high",
    "threshold",
    "direction",
    "confidence",
    "p_value",
    "probability",
    "n_new",
    "n_baseline",
    "reason",
    "checked_at",
)
VERDICTS = ("regression", "improvement", "no change", "insufficient data")


def list_regressions(
    con: duckdb.DuckDBPyConnection,
    *,
    verdicts: tuple[str, ...] = ("regression",),
    since: dt.datetime | None = None,
    run_id: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Regression-check results of live runs (``exports.regressions``), newest run first:
    only ``verdicts``, runs created at or after ``since``, one run; ``limit`` 0 = all. Empty
    when no check has been published yet; a ``run_id`` the catalog does not hold, or a deleted
    one, raises :class:`NotFoundError`."""
    if run_id is not None:
        require_live_run(con, run_id)
    has_view = con.execute(
        "SELECT count(*) FROM duckdb_views() WHERE view_name = 'regressions' "
        "AND 'exports' IN (database_name, schema_name)"
    ).fetchall()[0][0]
    if not has_view:
        return []
    clauses = ["verdict IN (SELECT unnest($v::VARCHAR[]))"]
    params: dict[str, Any] = {"v": list(verdicts)}
    if since is not None:
        clauses.append("created_at >= $since")
        params["since"] = since
    if run_id is not None:
        clauses.append("run_id = $run")
        params["run"] = run_id
    sql = (
        f"SELECT {', '.join(REGRESSION_COLUMNS)} FROM exports.regressions "  # noqa: S608
        f"WHERE {' AND '.join(clauses)} ORDER BY created_at DESC NULLS LAST, run_id, metric"
    )
    if limit:
        sql += f" LIMIT {int(limit)}"
    return _dicts(con.execute(sql, params))
