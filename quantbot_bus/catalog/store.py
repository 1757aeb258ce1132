"""The working catalog (:class:`Catalog`): the one read-write connection to ``bus.duckdb``.

Only the process holding the state-dir lock opens it (:class:`quantbot_bus.pipeline.Bus`), once.
:meth:`Catalog.open` creates the parent dir, attaches the file and migrates it; the reads here
are what the scans compare the disk with (:meth:`~Catalog.known_runs`,
:meth:`~Catalog.known_rejections`, :meth:`~Catalog.live_run_dirs`), optionally only for the
rows at, below or above some paths, so a small batch never loads a catalog of 100,000 runs.
Batches go through :meth:`~Catalog.apply_batch` (:mod:`.batch`); :attr:`Catalog.seq` is the
sequence of the last committed one.
"""

# ruff: noqa: S608 - SQL text here is built from this module's constants; every value is bound.

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import duckdb

from ..errors import CatalogError
from ..fsutil import lock_holder
from ..log import get_logger
from ..sqltext import lit
from .batch import Batch, BatchResult, KnownRun, apply_batch
from .schema import DB_ALIAS, max_seq, migrate, schema_version
from .text import db_text, fs_text

log = get_logger("quantbot_bus.catalog")

_INLINE_PATHS = 512  #: up to this many run_dir values are inlined (the index needs literals)


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
            migrate(con, path)
            catalog.seq = max_seq(con)
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

    def schema_version(self) -> int:
        """The catalog's schema version (0 for an empty file)."""
        return schema_version(self.con, self.path)

    def catalog_id(self) -> str:
        """This catalog's identity (a UUID made when it was created): a publication made from
        another catalog (after ``rebuild``) is not continued but replaced."""
        row = self.con.execute("SELECT value FROM catalog.meta WHERE key = 'catalog_id'").fetchone()
        return str(row[0]) if row else ""

    # --- writes ------------------------------------------------------------------------------

    def apply_batch(self, batch: Batch) -> BatchResult:
        """Apply ``batch`` in one transaction and advance :attr:`seq`; see
        :func:`quantbot_bus.catalog.batch.apply_batch` for the rules."""
        return apply_batch(self, batch)

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
            match = "r.run_dir IN (" + ", ".join(lit(v) for v in sorted(exact)) + ")"
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


def move_aside(path: Path) -> None:
    """``rebuild``: the old catalog (and its WAL) becomes ``<name>.bak``."""
    if not path.exists():
        return
    holder = lock_holder(path)
    if holder is not None:
        raise CatalogError(
            f"the catalog {path} is in use by another process (pid {holder}); close whatever "
            "holds it open (a DuckDB shell, a script) before `rebuild`"
        )
    backup = path.with_name(path.name + ".bak")
    try:
        os.replace(path, backup)
        wal = path.with_name(path.name + ".wal")
        if wal.exists():
            os.replace(wal, backup.with_name(backup.name + ".wal"))
        else:
            backup.with_name(backup.name + ".wal").unlink(missing_ok=True)
    except OSError as exc:
        raise CatalogError(f"cannot move the old catalog {path} aside: {exc}") from exc
    log.info("catalog.backup", path=str(path), backup=str(backup))
