"""Schema evolution of the export tables: each table's established column types, which incoming
runs they admit, and the runs flagged for a conflicting column.

``exports.<table>`` unions its runs by column name. Each table keeps its **established** column
types in the meta (``schema:<table>``: ``[[column, Arrow type], ...]``, in order of first
appearance). Each refresh chunk takes the incoming runs of a table in ``created_at`` order
(:func:`admit`): a run whose every column type widens safely into the established one
(:func:`quantbot_bus.catalog.coltypes.widen`) is admitted and widens it (a new column is added;
older runs read NULL in it); its staged rows are CAST to the established types, so the segment
it goes into holds the widest type so far and a reader's union of the segments has exactly the
established types. A run with a column whose type conflicts (a string where earlier runs have
numbers) is **not** cast: its rows of that table are left out of ``exports.<table>`` — every
exported row holds the values its run wrote — and it is flagged with a reason (state table
``exports_state.schema_conflicts``, published as ``exports.schema_conflicts``; logged
``export.schema_conflict``). Its other tables are exported as usual.

Established types only widen: they are set by the first run exported with a column and kept
until the export state is rebuilt. A flagged run is examined again when it changes (a rewritten
run is a new version). The cost is that of the chunk: the incoming runs' schemas (from the
catalog rows the chunk reads anyway) and one meta key per table.
"""

# ruff: noqa: S608 - SQL from this package's constants (quantbot_bus.exports.sql)

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb

from ..catalog.coltypes import castable, duck_type, parse_schema, widen
from ..log import get_logger
from ..timeutil import utc_naive
from . import plugins
from .state import StateTx

log = get_logger("quantbot_bus.exports")

SUMMARY = "schema_conflicts"  #: the summary export listing the flagged runs
_META_PREFIX = "schema:"
_IGNORED = ("run_id", "__qb_file")  # the export's own run_id column replaces a file's

# The exports core's own summary, registered like a plug-in's: its state table comes with the
# state DDL and a leaving run's rows are deleted with it (``run_tables``).
plugins.register(
    plugins.Summary(
        name=SUMMARY,
        sql=(
            "SELECT table_name, run_id, column_name, type, expected, reason, flagged_at "
            "FROM exports_state.schema_conflicts ORDER BY table_name, run_id, column_name"
        ),
        state_ddl="""
CREATE TABLE IF NOT EXISTS exports_state.schema_conflicts (
    table_name VARCHAR, run_id VARCHAR, column_name VARCHAR, type VARCHAR, expected VARCHAR,
    reason VARCHAR, flagged_at TIMESTAMP);
""",
        run_tables=("schema_conflicts",),
    )
)


@dataclass(frozen=True)
class Conflict:
    """Run ``run_id``'s column ``column`` is ``type``; the table has established ``expected``
    (DuckDB type names)."""

    run_id: str
    column: str
    type: str
    expected: str

    def reason(self, view: str) -> str:
        return (
            f"run {self.run_id}: column {self.column} is {self.type}, earlier runs have "
            f"{self.expected}; its rows are not in {view} (write {self.column} as "
            f"{self.expected}, or under another column name, and the run is exported when it "
            "changes)"
        )


@dataclass
class Admission:
    """What :func:`admit` decided for one table's incoming runs: the runs left out, and the
    CAST of each staged column to its established type (``column -> DuckDB type``)."""

    rejected: set[str]
    casts: dict[str, str]


def view_name(table: str) -> str:
    """The reader-side view of artifact table ``table``."""
    return f"exports.table_{table}" if table in plugins.summary_names() else f"exports.{table}"


def established(tx: StateTx, table: str) -> list[tuple[str, str]]:
    """The established ``(column, Arrow type)`` pairs of ``table`` (empty before its first run)."""
    return [(str(c), str(t)) for c, t in json.loads(tx.get(_META_PREFIX + table) or "[]")]


def admit(
    con: duckdb.DuckDBPyConnection,
    tx: StateTx,
    table: str,
    runs: Sequence[tuple[str, str | None]],
) -> Admission:
    """Decide which incoming runs (``(run_id, arrow_schema JSON)``, in ``created_at`` order) of
    ``table`` are exported; widen the established types by those that are, flag the others
    (state row, ``export.schema_conflict``). Inside the refresh transaction."""
    est = dict(established(tx, table))
    order = list(est)
    before = dict(est)
    rejected: set[str] = set()
    conflicts: list[Conflict] = []
    seen: dict[str, set[str]] = {}  # column -> the types of the admitted runs
    for run_id, schema in runs:
        cols = [(c, t) for c, t in parse_schema(schema) if c not in _IGNORED]
        bad = [
            Conflict(run_id, c, duck_type(t), duck_type(est[c]))
            for c, t in cols
            if c in est and widen(est[c], t) is None
        ]
        if bad:
            rejected.add(run_id)
            conflicts += bad
            continue
        for c, t in cols:
            if c not in est:
                order.append(c)
                est[c] = t
            else:
                est[c] = widen(est[c], t) or est[c]
            seen.setdefault(c, set()).add(t)
    if est != before:
        for c in order:
            if c in before and before[c] != est[c]:
                log.info(
                    "export.schema_widened",
                    table=table,
                    column=c,
                    **{"from": duck_type(before[c]), "to": duck_type(est[c])},
                )
        tx.set(_META_PREFIX + table, json.dumps([[c, est[c]] for c in order]))
    if conflicts:
        _flag(con, table, conflicts)
    casts = {
        c: duck_type(est[c]) for c, types in seen.items() if castable(est[c]) and types != {est[c]}
    }
    return Admission(rejected, casts)


def _flag(con: duckdb.DuckDBPyConnection, table: str, conflicts: list[Conflict]) -> None:
    view = view_name(table)
    for c in conflicts:
        log.warning(
            "export.schema_conflict",
            table=table,
            run_id=c.run_id,
            column=c.column,
            type=c.type,
            expected=c.expected,
            reason=c.reason(view),
        )
    con.execute(
        "INSERT INTO exports_state.schema_conflicts SELECT $t, unnest($r::VARCHAR[]), "
        "unnest($c::VARCHAR[]), unnest($ty::VARCHAR[]), unnest($e::VARCHAR[]), "
        "unnest($why::VARCHAR[]), $at",
        {
            "t": table,
            "r": [c.run_id for c in conflicts],
            "c": [c.column for c in conflicts],
            "ty": [c.type for c in conflicts],
            "e": [c.expected for c in conflicts],
            "why": [c.reason(view) for c in conflicts],
            "at": utc_naive(),
        },
    )
