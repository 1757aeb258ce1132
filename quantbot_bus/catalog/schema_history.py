"""The schema history of artifact tables across runs, read from the publication.

Every registered artifact carries its Arrow schema (``catalog.artifacts_f.arrow_schema``). The
runs of one artifact table, in ``created_at`` order (else registration time; ties by run_id),
fall into **versions**: consecutive runs with the same columns and types (order and nullability
aside) are one version, with its first and last run and their count. Each version after the
first lists its **changes** against the last version the exports took in, in the terms of
:mod:`quantbot_bus.exports.evolution` (whose rule this replays; they agree whenever runs arrive
in ``created_at`` order):

- ``added`` / ``dropped``: a column appears / disappears (older runs read NULL in a new column);
- ``widened``: the table's type of a column widens safely (int32 → int64 → double...);
- ``narrowed``: the version writes a narrower type than the table's (its values are widened);
- ``conflict``: the version's type does not widen into the table's (a string where earlier runs
  have numbers): its runs are left out of ``exports.<table>``.

``flagged`` lists the runs of a version the exports did leave out, with their reason (from the
published ``exports.schema_conflicts``). A file's own ``run_id`` column is left out: the export
tables have their own. Cost: one query over ``catalog.artifacts_f`` (collapsing runs into
versions in SQL) and one over ``exports.schema_conflicts``; fine at 100,000 runs.
"""

# ruff: noqa: S608 - SQL from this module's constants; values are bound parameters

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import duckdb

from ..errors import NotFoundError
from .coltypes import duck_type, parse_schema, widen

_IGNORED = ("run_id", "__qb_file")
CONFLICTS_VIEW = "exports.schema_conflicts"

# Runs of each artifact table in order, collapsed into groups of consecutive equal schemas.
_GROUPS_SQL = """
WITH a AS (
    SELECT a.name, a.run_id, coalesce(r.created_at, r.registered_at) AS k, r.created_at,
           CAST(a.arrow_schema AS VARCHAR) AS s
    FROM catalog.artifacts_f a JOIN catalog.runs_d r USING (run_id)
    WHERE r.deleted_at IS NULL {where}
), c AS (
    SELECT *, CASE WHEN s IS NOT DISTINCT FROM lag(s) OVER w THEN 0 ELSE 1 END AS chg
    FROM a WINDOW w AS (PARTITION BY name ORDER BY k, run_id)
), g AS (
    SELECT *, sum(chg) OVER (PARTITION BY name ORDER BY k, run_id ROWS UNBOUNDED PRECEDING) AS grp
    FROM c
)
SELECT name, grp, any_value(s), count(*),
       first(run_id ORDER BY k, run_id), last(run_id ORDER BY k, run_id), min(k), max(k),
       first(created_at ORDER BY k, run_id), last(created_at ORDER BY k, run_id)
FROM g GROUP BY name, grp ORDER BY name, grp
"""


@dataclass
class Change:
    """One change of a version: ``kind`` of column ``column`` from type ``before`` to
    ``after`` (DuckDB type names; None where it does not apply)."""

    kind: str
    column: str
    before: str | None = None
    after: str | None = None
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "column": self.column,
            "from": self.before,
            "to": self.after,
            "reason": self.reason,
        }

    def text(self) -> str:
        if self.kind == "added":
            return f"added {self.column} {self.after}"
        if self.kind == "dropped":
            return f"dropped {self.column}"
        if self.kind == "conflict":
            return f"conflict {self.column} {self.after} (table has {self.before})"
        return f"{self.kind} {self.column} {self.before}->{self.after}"


@dataclass
class Version:
    """Consecutive runs of one artifact table with the same schema."""

    version: int
    first_run_id: str
    last_run_id: str
    first_created_at: dt.datetime | None
    last_created_at: dt.datetime | None
    runs: int
    columns: list[tuple[str, str]]  # (name, Arrow type), in the first run's order
    changes: list[Change] = field(default_factory=list)
    flagged: list[dict[str, Any]] = field(default_factory=list)
    first_key: tuple[Any, str] = (None, "")
    last_key: tuple[Any, str] = (None, "")

    @property
    def conflicting(self) -> bool:
        return any(c.kind == "conflict" for c in self.changes)

    def typed_columns(self) -> list[tuple[str, str]]:
        """``(name, DuckDB type)`` of each column."""
        return [(c, duck_type(t)) for c, t in self.columns]

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "first_run_id": self.first_run_id,
            "last_run_id": self.last_run_id,
            "first_created_at": self.first_created_at,
            "last_created_at": self.last_created_at,
            "runs": self.runs,
            "columns": [{"name": c, "type": t} for c, t in self.typed_columns()],
            "changes": [c.as_dict() for c in self.changes],
            "flagged": self.flagged,
        }


@dataclass
class TableHistory:
    """The schema history of artifact table ``table`` (``view``: its export view, None when
    not exported yet)."""

    table: str
    view: str | None
    versions: list[Version]

    def summary(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "view": self.view,
            "runs": sum(v.runs for v in self.versions),
            "versions": len(self.versions),
            "first_created_at": self.versions[0].first_created_at if self.versions else None,
            "last_created_at": self.versions[-1].last_created_at if self.versions else None,
            "conflicts": sum(v.runs for v in self.versions if v.conflicting),
            "flagged": sum(len({f["run_id"] for f in v.flagged}) for v in self.versions),
        }


def schema_history(con: duckdb.DuckDBPyConnection, table: str) -> TableHistory:
    """The schema history of artifact table ``table`` on the publication ``con``; a
    :class:`NotFoundError` when no live run has it."""
    found = _histories(con, table)
    if not found:
        raise NotFoundError(
            f"no live run has an artifact table named {table!r} "
            "(`quantbot-bus schema` lists the artifact tables)"
        )
    return found[0]


def schema_overview(con: duckdb.DuckDBPyConnection) -> list[TableHistory]:
    """The schema history of every artifact table of a live run, by name."""
    return _histories(con, None)


def _histories(con: duckdb.DuckDBPyConnection, table: str | None) -> list[TableHistory]:
    params: dict[str, Any] = {}
    where = ""
    if table is not None:
        where, params = "AND a.name = $t", {"t": table}
    rows = con.execute(_GROUPS_SQL.format(where=where), params).fetchall()
    groups: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        groups.setdefault(row[0], []).append(row)
    relations = _relations(con)
    flags = _flags(con, table) if CONFLICTS_VIEW in relations else {}
    out = []
    for name, grp in groups.items():
        versions = _versions(grp)
        _place_flags(versions, flags.get(name, []))
        if f"exports.table_{name}" in relations:
            view: str | None = f"exports.table_{name}"
        else:
            view = f"exports.{name}" if f"exports.{name}" in relations else None
        out.append(TableHistory(name, view, versions))
    return out


def _versions(groups: list[tuple[Any, ...]]) -> list[Version]:
    """Versions from the SQL groups (merging neighbours that differ only in column order or
    nullability), each with its changes."""
    versions: list[Version] = []
    for _name, _grp, schema, n, first, last, k0, k1, c0, c1 in groups:
        cols = [(c, t) for c, t in parse_schema(schema) if c not in _IGNORED]
        if versions and dict(versions[-1].columns) == dict(cols):
            v = versions[-1]
            v.last_run_id, v.last_created_at, v.last_key = last, c1, (k1, last)
            v.runs += n
            continue
        versions.append(
            Version(
                len(versions) + 1, first, last, c0, c1, n, cols, [], [], (k0, first), (k1, last)
            )
        )
    est: dict[str, str] = {}  # the table's established types so far
    prev: dict[str, str] | None = None  # the last version taken in
    for v in versions:
        types = dict(v.columns)
        if prev is not None:
            v.changes = _changes(v, types, prev, est)
        if not v.conflicting:
            for c, t in v.columns:
                est[c] = (widen(est[c], t) or est[c]) if c in est else t
            prev = types
    return versions


def _changes(
    v: Version, cols: dict[str, str], prev: dict[str, str], est: dict[str, str]
) -> list[Change]:
    out: list[Change] = []
    for c, t in v.columns:
        if c in est and widen(est[c], t) is None:
            before, after = duck_type(est[c]), duck_type(t)
            reason = (
                f"run {v.first_run_id}"
                + (f" (and {v.runs - 1} more to {v.last_run_id})" if v.runs > 1 else "")
                + f": column {c} is {after}, earlier runs have {before}"
            )
            out.append(Change("conflict", c, before, after, reason))
        elif c not in prev:
            out.append(Change("added", c, None, duck_type(t)))
        elif prev[c] != t:
            wide = widen(est[c], t) or est[c]
            if wide != est[c]:
                out.append(Change("widened", c, duck_type(est[c]), duck_type(wide)))
            else:
                out.append(Change("narrowed", c, duck_type(prev[c]), duck_type(t)))
    out += [Change("dropped", c, duck_type(t), None) for c, t in prev.items() if c not in cols]
    return out


def _relations(con: duckdb.DuckDBPyConnection) -> set[str]:
    """``exports.<name>`` of every export view and table the publication has."""
    rows = con.execute(
        """
        SELECT 'exports.' || name FROM (
            SELECT database_name, schema_name, table_name AS name FROM duckdb_tables()
            UNION ALL
            SELECT database_name, schema_name, view_name FROM duckdb_views() WHERE NOT internal)
        WHERE (database_name = current_database() AND schema_name = 'exports')
           OR database_name = 'exports'
        """
    ).fetchall()
    return {r[0] for r in rows}


def _flags(con: duckdb.DuckDBPyConnection, table: str | None) -> dict[str, list[dict[str, Any]]]:
    """The runs the exports left out, per table, with their sort key (published)."""
    where, params = ("WHERE f.table_name = $t", {"t": table}) if table is not None else ("", {})
    rows = con.execute(
        "SELECT f.table_name, f.run_id, f.column_name, f.type, f.expected, f.reason, "
        f"coalesce(r.created_at, r.registered_at) FROM {CONFLICTS_VIEW} f "
        f"JOIN catalog.runs_d r USING (run_id) {where} ORDER BY ALL",
        params,
    ).fetchall()
    out: dict[str, list[dict[str, Any]]] = {}
    for name, run_id, column, type_, expected, reason, k in rows:
        out.setdefault(name, []).append(
            {
                "run_id": run_id,
                "column": column,
                "type": type_,
                "expected": expected,
                "reason": reason,
                "_key": (k, run_id),
            }
        )
    return out


def _place_flags(versions: list[Version], flags: list[dict[str, Any]]) -> None:
    """Attach each flagged run to the version its place in the order falls in."""
    for f in flags:
        key = f.pop("_key")
        for v in versions:
            if v.first_key <= key <= v.last_key:
                v.flagged.append(f)
                break
