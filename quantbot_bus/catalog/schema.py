"""The working catalog's schema: its tables, the ordered migrations, the schema version.

:data:`MIGRATIONS` ``[i]`` takes a catalog from schema version ``i`` to ``i + 1``;
:func:`migrate` applies those a catalog is missing, each in its own transaction, and refuses a
catalog newer than this package or a DuckDB file that is not a catalog.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from ..errors import CatalogError
from ..log import get_logger
from ..timeutil import utc_naive

SCHEMA_VERSION = 3
DB_ALIAS = "bus"  # the alias the working catalog / snapshot is attached under

log = get_logger("quantbot_bus.catalog")

# The latest-artifact view: the newest artifact per (run_type, name) among live, successful runs;
# "newest" is the run's created_at (else its registration time), ties broken by run_id.
LATEST_VIEW = """
CREATE OR REPLACE VIEW catalog.latest_artifacts_v AS
SELECT r.run_type, a.name, a.run_id, a.path, a.format, a.rows, a.bytes, a.sha256,
       a.arrow_schema, r.created_at, a.registered_at
FROM artifacts_f AS a JOIN runs_d AS r USING (run_id)
WHERE r.deleted_at IS NULL AND r.status = 'success'
QUALIFY row_number() OVER (
    PARTITION BY r.run_type, a.name
    ORDER BY coalesce(r.created_at, r.registered_at) DESC, a.run_id DESC
) = 1
"""

#: Ordered migrations: ``MIGRATIONS[i]`` takes a catalog from schema version ``i`` to ``i + 1``.
#: Never edit a released entry; append a new one and bump :data:`SCHEMA_VERSION`.
MIGRATIONS: list[tuple[str, ...]] = [
    # 0 -> 1: the first release.
    (
        "CREATE SCHEMA catalog",
        """CREATE TABLE catalog.schema_version (
            version INTEGER NOT NULL PRIMARY KEY,
            applied_at TIMESTAMP NOT NULL
        )""",
        """CREATE TABLE catalog.runs_d (
            run_id VARCHAR NOT NULL PRIMARY KEY,
            run_type VARCHAR NOT NULL,
            producer VARCHAR,
            producer_version VARCHAR,
            status VARCHAR NOT NULL,
            created_at TIMESTAMP,
            started_at TIMESTAMP,
            finished_at TIMESTAMP,
            git_commit VARCHAR,
            git_branch VARCHAR,
            git_dirty BOOLEAN,
            params JSON,
            metrics JSON,
            metadata JSON,
            run_dir VARCHAR NOT NULL,
            artifact_count INTEGER NOT NULL,
            total_rows BIGINT NOT NULL,
            total_bytes BIGINT NOT NULL,
            fingerprint VARCHAR NOT NULL,
            first_registered_at TIMESTAMP NOT NULL,
            registered_at TIMESTAMP NOT NULL,
            deleted_at TIMESTAMP
        )""",
        """CREATE TABLE catalog.artifacts_f (
            run_id VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            path VARCHAR NOT NULL,
            format VARCHAR NOT NULL,
            rows BIGINT NOT NULL,
            bytes BIGINT NOT NULL,
            sha256 VARCHAR,
            arrow_schema JSON,
            registered_at TIMESTAMP NOT NULL,
            PRIMARY KEY (run_id, name)
        )""",
        """CREATE TABLE catalog.rejections_f (
            run_dir VARCHAR NOT NULL PRIMARY KEY,
            run_id VARCHAR,
            reason VARCHAR NOT NULL,
            first_seen_at TIMESTAMP NOT NULL,
            last_seen_at TIMESTAMP NOT NULL,
            attempts INTEGER NOT NULL,
            resolved_at TIMESTAMP
        )""",
        LATEST_VIEW,
    ),
    # 1 -> 2: rejections remember the fingerprint they were made at (unchanged => not retried);
    # runs keep host, error and the metadata shape they were normalised from.
    (
        "ALTER TABLE catalog.rejections_f ADD COLUMN fingerprint VARCHAR",
        "ALTER TABLE catalog.runs_d ADD COLUMN host VARCHAR",
        "ALTER TABLE catalog.runs_d ADD COLUMN error VARCHAR",
        "ALTER TABLE catalog.runs_d ADD COLUMN shape VARCHAR",
        LATEST_VIEW,
    ),
    # 2 -> 3: every row carries the batch sequence that last wrote it (``_seq``; a run also the
    # sequence of its artifact rows, ``_aseq``), so publication copies only rows newer than the
    # last published sequence; ``catalog.meta`` holds the catalog's identity.
    (
        "ALTER TABLE catalog.runs_d ADD COLUMN _seq BIGINT DEFAULT 0",
        "ALTER TABLE catalog.runs_d ADD COLUMN _aseq BIGINT DEFAULT 0",
        "ALTER TABLE catalog.artifacts_f ADD COLUMN _seq BIGINT DEFAULT 0",
        "ALTER TABLE catalog.rejections_f ADD COLUMN _seq BIGINT DEFAULT 0",
        "CREATE TABLE catalog.meta (key VARCHAR PRIMARY KEY, value VARCHAR)",
        # a batch looks its run dirs up by value: an index, not a scan of every path
        "CREATE INDEX runs_d_run_dir ON catalog.runs_d (run_dir)",
        "INSERT INTO catalog.meta VALUES ('catalog_id', CAST(uuid() AS VARCHAR))",
        LATEST_VIEW,
    ),
]
assert len(MIGRATIONS) == SCHEMA_VERSION
#: Bookkeeping columns of the working catalog that readers never see.
SEQ_COLUMNS = ("_seq", "_aseq")
#: The sequence of the newest batch any catalog row carries (NULL for an empty catalog).
MAX_SEQ_SQL = (
    "SELECT greatest((SELECT max(_seq) FROM catalog.runs_d), "
    "(SELECT max(_seq) FROM catalog.artifacts_f), "
    "(SELECT max(_seq) FROM catalog.rejections_f))"
)


def schema_version(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    """The schema version of the catalog attached as :data:`DB_ALIAS` (0 for an empty file)."""
    has_table = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? "
        "AND schema_name = 'catalog' AND table_name = 'schema_version'",
        [DB_ALIAS],
    ).fetchall()[0]
    if has_table[0] == 0:
        others = con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = ?", [DB_ALIAS]
        ).fetchall()[0]
        if others[0]:
            raise CatalogError(
                f"{path} is a DuckDB file but not a quantbot-bus catalog (it has tables "
                "but no catalog.schema_version); point state_dir elsewhere or move the file aside"
            )
        return 0
    (version,) = con.execute("SELECT max(version) FROM catalog.schema_version").fetchall()[0]
    return int(version) if version is not None else 0


def migrate(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Bring the catalog at ``path`` (attached on ``con``) to :data:`SCHEMA_VERSION`."""
    current = schema_version(con, path)
    if current > SCHEMA_VERSION:
        raise CatalogError(
            f"the catalog {path} has schema version {current}, newer than this "
            f"quantbot-bus understands ({SCHEMA_VERSION}): upgrade quantbot-bus, or move the "
            "file aside and run `quantbot-bus rebuild`"
        )
    for version in range(current, SCHEMA_VERSION):
        try:
            con.execute("BEGIN")
            for statement in MIGRATIONS[version]:
                con.execute(statement)
            con.execute(
                "INSERT INTO catalog.schema_version VALUES (?, ?)", [version + 1, utc_naive()]
            )
            con.execute("COMMIT")
        except duckdb.Error as exc:
            con.execute("ROLLBACK")
            raise CatalogError(
                f"cannot migrate the catalog {path} from schema version {version} to "
                f"{version + 1}: {exc}; move the file aside and run `quantbot-bus rebuild`"
            ) from exc
        log.info("catalog.migrated", path=str(path), version=version + 1)


def max_seq(con: duckdb.DuckDBPyConnection) -> int:
    """The sequence of the newest batch any row of the catalog carries (0 when empty)."""
    row = con.execute(MAX_SEQ_SQL).fetchone()
    return int(row[0]) if row and row[0] is not None else 0
