"""The seed system's catalog as the baseline keeps it: the schema DDL (run rows, artifact rows,
the latest-artifacts view), the export jobs re-run in full after every run, and the catalog's
timestamp form."""

from __future__ import annotations

import datetime as dt
from typing import Any

SCHEMA_DDL = (
    "CREATE SCHEMA IF NOT EXISTS catalog",
    """
    CREATE TABLE IF NOT EXISTS catalog.runs_d (
      run_id           VARCHAR PRIMARY KEY,
      producer         VARCHAR,
      created_at_utc   TIMESTAMP,
      meta_json        VARCHAR,
      first_seen_at    TIMESTAMP DEFAULT now(),
      last_seen_at     TIMESTAMP DEFAULT now()
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS catalog.artifacts_f (
      artifact_key     VARCHAR PRIMARY KEY,
      run_id           VARCHAR,
      artifact_id      VARCHAR,
      producer         VARCHAR,
      kind             VARCHAR,
      format           VARCHAR,
      canonical_path   VARCHAR,
      rows             BIGINT,
      schema_hint      VARCHAR,
      created_at_utc   TIMESTAMP,
      ingested_at      TIMESTAMP DEFAULT now(),
      meta_json        VARCHAR
    )
    """,
    """
    CREATE VIEW IF NOT EXISTS catalog.latest_artifacts_v AS
    WITH ranked AS (
      SELECT *, row_number() OVER (
        PARTITION BY producer, kind, artifact_id ORDER BY created_at_utc DESC, ingested_at DESC
      ) AS rn
      FROM catalog.artifacts_f
    ) SELECT * FROM ranked WHERE rn = 1
    """,
)

#: The export jobs, each re-run in full after every run (the seed's ``export.jobs``).
EXPORT_JOBS: tuple[tuple[str, str], ...] = (
    (
        "runs",
        """
        SELECT run_id, producer, created_at_utc, first_seen_at, last_seen_at,
               json_extract_string(meta_json, '$.status') AS status
        FROM catalog.runs_d
        ORDER BY created_at_utc DESC
        """,
    ),
    (
        "artifacts",
        "SELECT * EXCLUDE (meta_json) FROM catalog.artifacts_f ORDER BY run_id, artifact_id",
    ),
    ("latest_artifacts", "SELECT * FROM catalog.latest_artifacts_v"),
    (
        "run_summaries",
        """
        SELECT r.run_id, r.producer, r.created_at_utc,
               count(a.artifact_key) AS artifact_count, sum(a.rows) AS total_rows
        FROM catalog.runs_d r LEFT JOIN catalog.artifacts_f a USING (run_id)
        GROUP BY ALL
        ORDER BY r.created_at_utc DESC
        """,
    ),
    (
        "producer_totals",
        """
        SELECT producer, kind, artifact_id, count(*) AS artifacts, sum(rows) AS rows,
               min(created_at_utc) AS first_at, max(created_at_utc) AS last_at
        FROM catalog.artifacts_f GROUP BY ALL ORDER BY ALL
        """,
    ),
)


def utc_now_iso() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def catalog_timestamp(value: Any) -> dt.datetime | None:
    """An ISO-8601 time stamp as the seed catalog stores it (naive UTC), or None when it is
    missing or unparsable."""
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(dt.UTC).replace(tzinfo=None)
