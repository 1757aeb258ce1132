"""The working DuckDB catalog: schema, migrations, batch registration, reader-side queries.

Only one process ever opens the working catalog (``Config.catalog_path``): the process holding
the state-dir lock (:class:`quantbot_bus.pipeline.Bus`: the daemon, or a one-shot
``sync``/``rebuild``). Readers never open it; they open the publication
(:mod:`quantbot_bus.publication`), whose views have the same ``catalog.*`` tables.

- ``Catalog.open(path) -> Catalog`` creates the parent dir, connects, migrates to
  :data:`SCHEMA_VERSION`; ``close()``; context manager; ``cursor()`` is a new cursor with
  ``catalog.*`` resolvable.
- ``known_runs(paths=None)`` / ``known_rejections(paths=None)`` / ``live_run_dirs(run_ids)``:
  what the scans compare the disk with (optionally only rows at, below or above ``paths``).
- ``apply_batch(batch) -> BatchResult``: ONE transaction that inserts/updates the valid runs
  (Arrow inserts), soft-deletes ``gone`` run dirs, upserts rejections and resolves rejections of
  runs that became valid. Idempotent: an unchanged run (same fingerprint, not deleted) is a no-op;
  a run_id already registered from another live run_dir is a conflict (a rejection with a clear
  reason, never an overwrite). After COMMIT it logs ``run.registered`` (run_id, run_type,
  latency_ms from the metadata.json mtime), ``run.updated``, ``run.deleted``, ``run.rejected``
  and ``batch.committed``.
- Every batch has a sequence number (``Catalog.seq`` after it commits); each row it writes
  carries it in ``_seq`` (a run also in ``_aseq``: the batch that wrote its artifact rows), so
  the publication copies exactly the rows newer than what it published, in O(batch).
- ``counts()``; reader-side queries for the CLI (:func:`list_runs`, :func:`get_run`,
  :func:`list_artifacts`, :func:`run_stats`, :func:`list_rejections`) over a connection from
  :func:`open_reader`.
- :func:`db_text`/:func:`fs_text`: a path whose name is not UTF-8 (surrogate escapes in Python)
  is stored with its bad bytes as ``\\xNN`` text and mapped back on read, so such a directory
  is rejected like any other instead of failing the whole batch.

Registration rules beyond the interface: a deleted run that reappears (same or another dir) is
undeleted and counted as registered; a run whose id leaves one dir (in ``gone``) and appears in
another in the same batch is a move, counted as updated; a live run whose dir is rejected (or now
holds another run id) is soft-deleted; an open rejection whose dir is in ``gone`` is resolved.
Within one batch, a dir listed as valid wins over the same dir in ``gone``/``rejected``.

Why files are *attached* rather than connected to: a DuckDB database opened by path is named after
the file's stem; a file called ``catalog.duckdb`` would make ``catalog.runs_d`` ambiguous (a
Binder Error), which is why the default files are called ``bus.duckdb``, and attaching under the
alias :data:`DB_ALIAS` keeps any other name working too. Attaching also bypasses
DuckDB's per-process instance cache, which would otherwise hand a second ``connect(path)`` in the
same process the *old* snapshot after it was replaced. Views are written with unqualified table
names, which DuckDB resolves inside the view's own schema whatever the database is called.

All timestamps are ``TIMESTAMP`` values in UTC (no time zone type: fetching TIMESTAMPTZ into
Python needs pytz).
"""

# ruff: noqa: S608 - SQL text here is built from this module's constants; every value is bound.

from __future__ import annotations

import datetime as dt
import json
import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import duckdb
import pyarrow as pa

from .contract import RunInfo
from .errors import CatalogError, CatalogMissingError, NotFoundError
from .log import get_logger
from .timeutil import parse_utc, utc_naive

SCHEMA_VERSION = 3
DB_ALIAS = "bus"  # the alias the working catalog / snapshot is attached under

log = get_logger("quantbot_bus.catalog")


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
    # Added: Incomplete run dirs left for later (run_dir -> reason); filled by ingest.sync.
    pending: dict[str, str] = field(default_factory=dict)


# --- schema and migrations -------------------------------------------------------------------

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

_RUN_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
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
_ARTIFACT_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
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
_REJECTION_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("run_dir", pa.string()),
    ("run_id", pa.string()),
    ("reason", pa.string()),
    ("fingerprint", pa.string()),
)
# Arrow in, one INSERT ... SELECT per table; the JSON columns are cast from their text.
_INSERT_RUNS = """
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
_INSERT_ARTIFACTS = """
INSERT INTO catalog.artifacts_f (run_id, name, path, format, rows, bytes, sha256, arrow_schema,
    registered_at, _seq)
SELECT run_id, name, path, format, rows, bytes, sha256, arrow_schema::JSON, registered_at, _seq
FROM _qb_artifacts
"""
# A rejection is one row per run_dir: seen again -> attempts + 1; reopened after being resolved
# -> first_seen_at restarts.
_UPSERT_REJECTIONS = """
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


# Paths are stored as UTF-8 text. A name that is not UTF-8 reaches Python with surrogate escapes
# ('\udcff' for the byte 0xff), which DuckDB cannot store; such a byte is stored as the text
# ``\xff`` instead and mapped back when read, so the row still matches the directory on disk.
# (A UTF-8 name that literally contains ``\x8`` .. ``\xff`` text would be mapped too: accepted.)
_ESCAPED_BYTE = re.compile(r"\\x([89a-f][0-9a-f])")


_INLINE_PATHS = 512  #: up to this many run_dir values are inlined (the index needs literals)


def _sql_text(value: str) -> str:
    """A SQL string literal (a run_dir value: see :meth:`Catalog._query_with_paths`)."""
    return "'" + value.replace("'", "''") + "'"


def db_text(value: str) -> str:
    """A path (or any str from the filesystem) as storable UTF-8 text."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(value).decode("utf-8", "backslashreplace")
    return value


def fs_text(value: str) -> str:
    """The inverse of :func:`db_text` for text read back from the catalog."""
    if "\\x" not in value:
        return value
    return _ESCAPED_BYTE.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)), value)


def _arrow(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, pa.DataType]]) -> pa.Table:
    schema = pa.schema([pa.field(name, kind) for name, kind in columns])
    return pa.Table.from_pylist(list(rows), schema=schema)


def _lock_message(path: Path, exc: Exception) -> str:
    return (
        f"the catalog {path} is in use by another process ({exc}); only one process may open it: "
        "if the daemon is running it already keeps the catalog in sync, otherwise wait for the "
        "other `sync`/`rebuild` to finish"
    )


class Catalog:
    """The daemon's private read-write catalog. Use :meth:`open`; one process at a time."""

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path) -> None:
        self.con = con
        self.path = path
        self._closed = False
        self._registered: list[str] = []
        #: The sequence number of the last committed batch (every row carries the one that
        #: last wrote it; publication copies the rows newer than what it published).
        self.seq = 0

    # --- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, memory_limit: str | None = None) -> Catalog:
        """Open (creating if needed) the working catalog at ``path`` and migrate it.

        ``memory_limit`` (e.g. ``"1GB"``) caps DuckDB's memory (its default is 80% of RAM);
        beyond it DuckDB spills to a temp directory next to the catalog.
        """
        path = Path(path).absolute()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CatalogError(f"cannot create the catalog directory {path.parent}: {exc}") from exc
        settings: dict[str, str | bool | int | float | list[str]] = (
            {} if memory_limit is None else {"memory_limit": memory_limit}
        )
        con = duckdb.connect(config=settings)
        try:
            if memory_limit is not None:
                con.execute("SET temp_directory = ?", [str(path.parent / ".duckdb-spill")])
            con.execute(f"ATTACH ? AS {DB_ALIAS}", [str(path)])
            con.execute(f"USE {DB_ALIAS}")
        except duckdb.IOException as exc:
            con.close()
            if "lock" in str(exc).lower():
                raise CatalogError(_lock_message(path, exc)) from exc
            raise CatalogError(f"cannot open the catalog {path}: {exc}") from exc
        except duckdb.Error as exc:
            con.close()
            raise CatalogError(
                f"cannot open the catalog {path}: {exc}; if the file is damaged, move it aside "
                "and run `quantbot-bus rebuild`"
            ) from exc
        catalog = cls(con, path)
        try:
            catalog._migrate()
            catalog.seq = catalog._max_seq()
        except BaseException:
            catalog.close()
            raise
        return catalog

    def close(self) -> None:
        """Checkpoint and close (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.con.execute("CHECKPOINT")
        except duckdb.Error:
            pass
        self.con.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new cursor on the working catalog, with ``catalog.*`` resolvable."""
        cur = self.con.cursor()
        cur.execute(f"USE {DB_ALIAS}")
        return cur

    # --- migrations --------------------------------------------------------------------------

    def schema_version(self) -> int:
        """The catalog's schema version (0 for an empty file)."""
        has_table = self.con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? "
            "AND schema_name = 'catalog' AND table_name = 'schema_version'",
            [DB_ALIAS],
        ).fetchall()[0]
        if has_table[0] == 0:
            others = self.con.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE database_name = ?", [DB_ALIAS]
            ).fetchall()[0]
            if others[0]:
                raise CatalogError(
                    f"{self.path} is a DuckDB file but not a quantbot-bus catalog (it has tables "
                    "but no catalog.schema_version); point state_dir elsewhere or move the file aside"
                )
            return 0
        (version,) = self.con.execute("SELECT max(version) FROM catalog.schema_version").fetchall()[
            0
        ]
        return int(version) if version is not None else 0

    def _migrate(self) -> None:
        current = self.schema_version()
        if current > SCHEMA_VERSION:
            raise CatalogError(
                f"the catalog {self.path} has schema version {current}, newer than this "
                f"quantbot-bus understands ({SCHEMA_VERSION}): upgrade quantbot-bus, or move the "
                "file aside and run `quantbot-bus rebuild`"
            )
        for version in range(current, SCHEMA_VERSION):
            try:
                self.con.execute("BEGIN")
                for statement in MIGRATIONS[version]:
                    self.con.execute(statement)
                self.con.execute(
                    "INSERT INTO catalog.schema_version VALUES (?, ?)", [version + 1, utc_naive()]
                )
                self.con.execute("COMMIT")
            except duckdb.Error as exc:
                self.con.execute("ROLLBACK")
                raise CatalogError(
                    f"cannot migrate the catalog {self.path} from schema version {version} to "
                    f"{version + 1}: {exc}; move the file aside and run `quantbot-bus rebuild`"
                ) from exc
            log.info("catalog.migrated", path=str(self.path), version=version + 1)

    def _max_seq(self) -> int:
        row = self.con.execute(
            "SELECT greatest((SELECT max(_seq) FROM catalog.runs_d), "
            "(SELECT max(_seq) FROM catalog.artifacts_f), "
            "(SELECT max(_seq) FROM catalog.rejections_f))"
        ).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    # --- reads -------------------------------------------------------------------------------

    def known_runs(
        self, paths: Iterable[str] | None = None, *, below: Iterable[str] | None = None
    ) -> dict[str, KnownRun]:
        """Cataloged runs keyed by run_dir; a live row wins over a deleted one.

        ``paths`` (optional): only runs whose run_dir is one of these paths, below one, or above
        one (an event path inside a run dir) — so the daemon's small batches need not load a
        catalog of 100,000 runs each time (see :meth:`_query_with_paths`; ``below``: the paths
        to look below, when not all of them).
        """
        rows = self._query_with_paths(
            "run_id, run_dir, fingerprint, deleted_at IS NOT NULL",
            "catalog.runs_d",
            "TRUE",
            paths,
            below,
        )
        rows.sort(key=lambda r: not r[3])  # deleted first, so live rows overwrite them below
        return {
            fs_text(run_dir): KnownRun(
                run_id=run_id, run_dir=fs_text(run_dir), fingerprint=fp, deleted=bool(deleted)
            )
            for run_id, run_dir, fp, deleted in rows
        }

    def known_rejections(
        self, paths: Iterable[str] | None = None, *, below: Iterable[str] | None = None
    ) -> dict[str, str | None]:
        """Open rejections: run_dir -> the fingerprint the directory had when rejected.

        ``paths`` and ``below`` filter as in :meth:`known_runs`.
        """
        rows = self._query_with_paths(
            "run_dir, fingerprint", "catalog.rejections_f", "resolved_at IS NULL", paths, below
        )
        return {fs_text(run_dir): fp for run_dir, fp in rows}

    def live_run_dirs(self, run_ids: Iterable[str]) -> dict[str, str]:
        """run_id -> run_dir of the live runs among ``run_ids``."""
        ids = list(dict.fromkeys(run_ids))
        if not ids:
            return {}
        rows = self.con.execute(
            "SELECT run_id, run_dir FROM catalog.runs_d WHERE deleted_at IS NULL "
            "AND run_id IN (SELECT unnest(?::VARCHAR[]))",
            [ids],
        ).fetchall()
        return {run_id: fs_text(run_dir) for run_id, run_dir in rows}

    def _query_with_paths(
        self,
        columns: str,
        table: str,
        where: str,
        paths: Iterable[str] | None,
        below: Iterable[str] | None = None,
    ) -> list[tuple[Any, ...]]:
        """``SELECT columns FROM table AS r WHERE where``, and with ``paths`` only the rows
        whose run_dir is a path or an ancestor of one (an event inside a run dir), or lies below
        one of ``below`` (default: every path; a renamed or deleted tree). At 100,000 runs: the
        exact matches by index, ≈ 1 ms (a small batch's values inlined as literals, which the
        index needs; a scan of every run_dir cost 8.6 ms), each "below" a range scan, ≈ 5 ms."""
        if paths is None:
            return self.con.execute(f"SELECT {columns} FROM {table} AS r WHERE {where}").fetchall()
        paths = [db_text(raw.rstrip("/") or "/") for raw in paths]
        below = paths if below is None else [db_text(b.rstrip("/") or "/") for b in below]
        exact: set[str] = set()
        for p in paths:
            while True:
                exact.add(p)
                parent = os.path.dirname(p)
                if parent == p:
                    break
                p = parent
        values: dict[str, Any] = {}
        if len(exact) <= _INLINE_PATHS:
            match = "r.run_dir IN (" + ", ".join(_sql_text(v) for v in sorted(exact)) + ")"
        else:
            match = "r.run_dir IN (SELECT unnest($exact::VARCHAR[]))"
            values["exact"] = sorted(exact)
        sql = f"SELECT {columns} FROM {table} AS r WHERE ({where}) AND {match}"
        if below:
            lows = [p.rstrip("/") + "/" for p in below]
            values["lo"], values["hi"] = lows, [lo[:-1] + "0" for lo in lows]  # '0' follows '/'
            sql += (
                f" UNION ALL SELECT {columns} FROM {table} AS r "
                "JOIN (SELECT unnest($lo::VARCHAR[]) AS lo, unnest($hi::VARCHAR[]) AS hi) AS g "
                f"ON r.run_dir >= g.lo AND r.run_dir < g.hi WHERE ({where})"
            )
        return self.con.execute(sql, values).fetchall()

    def counts(self, *, artifacts: bool = True) -> dict[str, int]:
        """runs (live), deleted, artifacts (of live runs; a join over the whole catalog: left
        out with ``artifacts=False``, as the daemon does after each batch), rejections (open)."""
        art = (
            "(SELECT count(*) FROM catalog.artifacts_f a JOIN catalog.runs_d r USING (run_id) "
            "WHERE r.deleted_at IS NULL)"
            if artifacts
            else "NULL"
        )
        row = self.con.execute(
            f"""SELECT
                (SELECT count(*) FROM catalog.runs_d WHERE deleted_at IS NULL),
                (SELECT count(*) FROM catalog.runs_d WHERE deleted_at IS NOT NULL),
                {art},
                (SELECT count(*) FROM catalog.rejections_f WHERE resolved_at IS NULL)"""
        ).fetchall()[0]  # fetchall: leave no unfinished result on the connection
        out = {"runs": int(row[0]), "deleted": int(row[1])}
        if artifacts:
            out["artifacts"] = int(row[2])
        out["rejections"] = int(row[3])
        return out

    # --- the batch ---------------------------------------------------------------------------

    def _register(self, name: str, table: pa.Table) -> None:
        """Expose an Arrow table to SQL under a fixed ``_qb_*`` name for this batch."""
        self.con.complete()  # duckdb 2: register() refuses while a result is left unread
        self.con.register(name, table)
        self._registered.append(name)

    def _register_column(self, name: str, column: str, values: Sequence[str]) -> None:
        self._register(name, pa.table({column: pa.array(list(values), pa.string())}))

    def apply_batch(self, batch: Batch) -> BatchResult:
        """Apply ``batch`` in one transaction; see the module docstring for the rules.

        Order inside the transaction: soft-delete ``gone`` dirs (and close their rejections);
        classify each valid run against the catalog (new, unchanged, changed, undeleted, moved,
        or a run_id conflict); soft-delete live runs whose dir is now rejected or holds another
        run id; replace changed runs and their artifacts (Arrow inserts); resolve rejections of
        dirs that are valid now; upsert the rejections. Any error rolls everything back and
        raises :class:`CatalogError`.
        """
        t0 = time.perf_counter()
        result = BatchResult()
        if len(batch) == 0:
            return result
        now = utc_naive()
        seq = self.seq + 1  # every row this batch writes carries it (see SEQ_COLUMNS)
        self._registered = []

        valid_by_dir: dict[str, RunInfo] = {}
        for run in batch.valid:
            valid_by_dir[str(run.run_dir)] = run
        gone = [d for d in dict.fromkeys(str(g) for g in batch.gone) if d not in valid_by_dir]
        rejections: dict[str, Rejection] = {}
        for rej in batch.rejected:
            if rej.run_dir not in valid_by_dir:
                rejections[rej.run_dir] = rej
        # Valid runs never have such names (the contract rejects them); gone dirs and
        # rejections may: they are stored as db_text.
        gone_db = [db_text(d) for d in gone]

        registered_runs: list[RunInfo] = []
        updated_runs: list[RunInfo] = []
        deleted_now: list[str] = []
        try:
            self.con.execute("BEGIN")
            # 1. run dirs that are gone: soft-delete their runs, close their rejections.
            if gone:
                self._register_column("_qb_gone", "run_dir", gone_db)
                deleted_now += [
                    r[0]
                    for r in self.con.execute(
                        "UPDATE catalog.runs_d SET deleted_at = ?, _seq = ? WHERE deleted_at IS NULL "
                        "AND run_dir IN (SELECT run_dir FROM _qb_gone) RETURNING run_id",
                        [now, seq],
                    ).fetchall()
                ]
                self.con.execute(
                    "UPDATE catalog.rejections_f SET resolved_at = ?, _seq = ? WHERE resolved_at IS NULL "
                    "AND run_dir IN (SELECT run_dir FROM _qb_gone)",
                    [now, seq],
                )

            # 2. classify the valid runs against what the catalog knows of their ids and dirs.
            run_rows: list[dict[str, Any]] = []
            artifact_rows: list[dict[str, Any]] = []
            replace_ids: list[str] = []
            displaced: list[str] = []
            ok_dirs: list[str] = []
            if valid_by_dir:
                self._register(
                    "_qb_keys",
                    pa.table(
                        {
                            "run_id": pa.array(
                                [r.run_id for r in valid_by_dir.values()], pa.string()
                            ),
                            "run_dir": pa.array(list(valid_by_dir), pa.string()),
                        }
                    ),
                )
                # two semi joins, not one OR of them (a scan of the whole table each batch)
                cols = "run_id, run_dir, fingerprint, deleted_at IS NOT NULL, first_registered_at"
                existing = self.con.execute(
                    f"SELECT {cols} FROM catalog.runs_d "
                    "WHERE run_id IN (SELECT run_id FROM _qb_keys) UNION "
                    f"SELECT {cols} FROM catalog.runs_d "
                    "WHERE run_dir IN (SELECT run_dir FROM _qb_keys)"
                ).fetchall()
                by_id = {row[0]: row for row in existing}
                live_id_by_dir = {row[1]: row[0] for row in existing if not row[3]}
                claimed: dict[str, str] = {}  # run_id -> run_dir, within this batch

                for run_dir, run in valid_by_dir.items():
                    prior = by_id.get(run.run_id)
                    owner_dir = claimed.get(run.run_id)
                    if owner_dir is None and prior is not None and not prior[3]:
                        owner_dir = prior[1] if prior[1] != run_dir else None
                    if owner_dir is not None:
                        rejections[run_dir] = Rejection(
                            run_dir=run_dir,
                            run_id=run.run_id,
                            reason=(
                                f"run_id {run.run_id} is already registered from {owner_dir}; "
                                "run ids must be unique across run types"
                            ),
                            fingerprint=run.fingerprint,
                        )
                        continue
                    claimed[run.run_id] = run_dir
                    ok_dirs.append(run_dir)
                    if prior is not None and not prior[3] and prior[2] == run.fingerprint:
                        result.unchanged.append(run.run_id)
                        continue
                    first_registered = now
                    if prior is not None:
                        replace_ids.append(run.run_id)
                        first_registered = prior[4]
                        if not prior[3] or run.run_id in deleted_now:
                            updated_runs.append(run)  # changed in place, or moved this batch
                        else:
                            registered_runs.append(run)  # came back after a soft delete
                    else:
                        registered_runs.append(run)
                    other = live_id_by_dir.get(run_dir)
                    if other is not None and other != run.run_id:
                        displaced.append(other)  # this dir now holds a different run id
                    run_rows.append(_run_row(run, first_registered, now, seq))
                    artifact_rows.extend(_artifact_rows(run, now, seq))

            # 3. a live run whose dir is now rejected, or holds another run id, is not live.
            if rejections:
                self._register_column("_qb_rejdirs", "run_dir", [db_text(d) for d in rejections])
                deleted_now += [
                    r[0]
                    for r in self.con.execute(
                        "UPDATE catalog.runs_d SET deleted_at = ?, _seq = ? WHERE deleted_at IS NULL "
                        "AND run_dir IN (SELECT run_dir FROM _qb_rejdirs) RETURNING run_id",
                        [now, seq],
                    ).fetchall()
                ]
            if displaced:
                self._register_column("_qb_displaced", "run_id", displaced)
                self.con.execute(
                    "UPDATE catalog.runs_d SET deleted_at = ?, _seq = ? WHERE deleted_at IS NULL "
                    "AND run_id IN (SELECT run_id FROM _qb_displaced)",
                    [now, seq],
                )
                deleted_now += displaced

            # 4. write the new and changed runs and their artifacts: Arrow in, one statement each.
            if replace_ids:
                self._register_column("_qb_replace", "run_id", replace_ids)
                self.con.execute(
                    "DELETE FROM catalog.artifacts_f "
                    "WHERE run_id IN (SELECT run_id FROM _qb_replace)"
                )
                self.con.execute(
                    "DELETE FROM catalog.runs_d WHERE run_id IN (SELECT run_id FROM _qb_replace)"
                )
            if run_rows:
                self._register("_qb_runs", _arrow(run_rows, _RUN_COLUMNS))
                self.con.execute(_INSERT_RUNS)
            if artifact_rows:
                self._register("_qb_artifacts", _arrow(artifact_rows, _ARTIFACT_COLUMNS))
                self.con.execute(_INSERT_ARTIFACTS)

            # 5. rejections: resolve those whose dir is valid now, upsert the new ones.
            if ok_dirs:
                self._register_column("_qb_ok", "run_dir", ok_dirs)
                self.con.execute(
                    "UPDATE catalog.rejections_f SET resolved_at = ?, _seq = ? WHERE resolved_at IS NULL "
                    "AND run_dir IN (SELECT run_dir FROM _qb_ok)",
                    [now, seq],
                )
            if rejections:
                self._register(
                    "_qb_rejections",
                    _arrow(
                        [
                            {
                                "run_dir": db_text(r.run_dir),
                                "run_id": None if r.run_id is None else db_text(r.run_id),
                                "reason": db_text(r.reason),
                                "fingerprint": r.fingerprint,
                            }
                            for r in rejections.values()
                        ],
                        _REJECTION_COLUMNS,
                    ),
                )
                self.con.execute(_UPSERT_REJECTIONS, [now, now, seq])
            self.con.execute("COMMIT")
            self.seq = seq
        except BaseException as exc:
            try:
                self.con.execute("ROLLBACK")
            except duckdb.Error:
                pass
            if not isinstance(exc, Exception):
                raise
            raise CatalogError(
                f"could not apply a batch of {len(batch)} changes to the catalog {self.path} "
                f"(nothing was written): {exc}"
            ) from exc
        finally:
            for name in self._registered:
                try:
                    self.con.unregister(name)
                except duckdb.Error:
                    pass
            self._registered = []

        # Outcome + stable log events, only after COMMIT succeeded.
        moved = {r.run_id for r in updated_runs}
        result.deleted = [rid for rid in dict.fromkeys(deleted_now) if rid not in moved]
        result.registered = [r.run_id for r in registered_runs]
        result.updated = [r.run_id for r in updated_runs]
        result.rejected = list(rejections.values())
        result.ms = (time.perf_counter() - t0) * 1000.0
        commit_ns = time.time_ns()
        for run in registered_runs:
            log.info(
                "run.registered",
                run_id=run.run_id,
                run_type=run.run_type,
                latency_ms=round(max(0, commit_ns - run.metadata_mtime_ns) / 1e6, 1),
            )
        for run in updated_runs:
            log.info("run.updated", run_id=run.run_id, run_type=run.run_type)
        for run_id in result.deleted:
            log.info("run.deleted", run_id=run_id)
        for rej in result.rejected:
            log.warning("run.rejected", run_dir=rej.run_dir, run_id=rej.run_id, reason=rej.reason)
        log.info(
            "batch.committed",
            n=len(batch),
            ms=round(result.ms, 1),
            registered=len(result.registered),
            updated=len(result.updated),
            unchanged=len(result.unchanged),
            deleted=len(result.deleted),
            rejected=len(result.rejected),
        )
        return result

    # --- publication ----------------------------------------------------------------------

    def catalog_id(self) -> str:
        """This catalog's identity (a UUID made when it was created): a publication made from
        another catalog (after ``rebuild``) is not continued but replaced."""
        row = self.con.execute("SELECT value FROM catalog.meta WHERE key = 'catalog_id'").fetchone()
        return str(row[0]) if row else ""


def _ident(name: str) -> str:
    """A name read from the catalog itself, quoted as an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _run_row(
    run: RunInfo, first_registered: dt.datetime, now: dt.datetime, seq: int
) -> dict[str, Any]:
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


def _artifact_rows(run: RunInfo, now: dt.datetime, seq: int) -> Iterator[dict[str, Any]]:
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


# --- the reader side ---------------------------------------------------------------------------


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
        raise NotFoundError(f"no run with id {run_id}")
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
    """Artifacts of live runs (newest run first, then name), optionally for one run / table."""
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
