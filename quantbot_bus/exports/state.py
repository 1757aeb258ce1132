"""The export state: schema ``exports_state`` of the working catalog, its meta, its version.

Core tables: ``meta`` (key/value: the state version, segment sequence, file generations, view
keys, summary shape signatures), ``runs`` (run_id, fingerprint, a BOOLEAN per plug-in feed flag:
what is exported), ``segments`` and ``run_segments`` (run → segment per artifact table),
``run_kv`` (the params/metrics keys and types of each run). Plug-in summaries add their own
tables (:mod:`quantbot_bus.exports.plugins`); the catalog summaries add ``runs_flat``,
``artifacts_x`` and ``latest_x`` (:mod:`quantbot_bus.exports.summaries`).

The state has a :data:`STATE_VERSION`; a state of another version is dropped and the exports
rebuilt (a bounded catch-up). A transaction on the state goes through one :class:`StateTx`: the
meta and the state's table names are read once at BEGIN, meta writes are kept there and written
in one statement before COMMIT.
"""

# ruff: noqa: S608 - SQL from this package's constants (quantbot_bus.exports.sql)

from __future__ import annotations

import re

import duckdb

from ..log import get_logger
from . import plugins

log = get_logger("quantbot_bus.exports")

#: Bumped when the state tables change incompatibly: an older state is dropped and rebuilt
#: (a bounded catch-up, :func:`quantbot_bus.exports.refresh` ``max_runs`` at a time).
STATE_VERSION = "7"

_SCHEMAS = """
CREATE SCHEMA IF NOT EXISTS exports_state;
CREATE SCHEMA IF NOT EXISTS exports;
CREATE TABLE IF NOT EXISTS exports_state.meta (key VARCHAR PRIMARY KEY, value VARCHAR);
"""
_RUNS_DDL = """
CREATE TABLE IF NOT EXISTS exports_state.runs (
    run_id VARCHAR PRIMARY KEY, fingerprint VARCHAR, run_type VARCHAR, created_at VARCHAR,
    {flags}exported_at TIMESTAMP);
"""
_SEGMENTS_DDL = """
CREATE TABLE IF NOT EXISTS exports_state.segments (
    table_name VARCHAR, segment VARCHAR, rows BIGINT, bytes BIGINT, created_at TIMESTAMP,
    PRIMARY KEY (table_name, segment));
CREATE TABLE IF NOT EXISTS exports_state.run_segments (
    table_name VARCHAR, run_id VARCHAR, segment VARCHAR, rows BIGINT,
    PRIMARY KEY (table_name, run_id));
"""
_RUN_KV_DDL = """
CREATE TABLE IF NOT EXISTS exports_state.run_kv (
    run_id VARCHAR, source VARCHAR, key VARCHAR, kind VARCHAR, sample VARCHAR);
"""


def state_ddl() -> str:
    """The DDL of the whole state: the core tables and the plug-ins' (one flag column each)."""
    flags = "".join(f"{flag.column} BOOLEAN, " for flag in plugins.flags())
    return "".join(
        (
            _SCHEMAS,
            _RUNS_DDL.format(flags=flags),
            _SEGMENTS_DDL,
            *(s.state_ddl for s in plugins.summaries()),
            _RUN_KV_DDL,
        )
    )


#: The tables a state DDL creates.
_STATE_TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS exports_state\.(\w+)")


def ensure_state(con: duckdb.DuckDBPyConnection) -> None:
    """Create the state schema once (a cheap check on later refreshes); a state of another
    :data:`STATE_VERSION` is dropped (its segment files become orphans, removed next) and the
    exports are rebuilt from the catalog."""
    present = {
        name
        for (name,) in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
            "AND schema_name = 'exports_state'"
        ).fetchall()
    }
    if present:
        version = None
        if con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
            "AND schema_name = 'exports_state' AND table_name = 'meta'"
        ).fetchone() != (0,):
            got = con.execute(
                "SELECT value FROM exports_state.meta WHERE key = 'state_version'"
            ).fetchone()
            version = got[0] if got else None
        if version != STATE_VERSION:
            log.warning("export.state_reset", found=version, expected=STATE_VERSION)
            con.execute("DROP SCHEMA exports_state CASCADE")
            con.execute("DROP SCHEMA IF EXISTS exports CASCADE")
            present = set()
    ddl = state_ddl()
    # every table by name (a plug-in added or renamed one keeps the count): the DDL only
    # creates what is missing
    if not set(_STATE_TABLE.findall(ddl)) <= present:
        con.execute(ddl)
        con.execute(
            "INSERT OR REPLACE INTO exports_state.meta VALUES ('state_version', $v)",
            {"v": STATE_VERSION},
        )


def state_table_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether table ``exports_state.<name>`` exists (outside a :class:`StateTx`)."""
    row = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'exports_state' AND table_name = $n",
        {"n": name},
    ).fetchone()
    return bool(row and row[0])


class StateTx:
    """One transaction on the export state: ``exports_state.meta`` and the state's table names,
    read once at BEGIN (:meth:`begin`); meta writes are kept here and :meth:`flush` writes them
    in one statement before COMMIT (a refresh reads and writes a dozen keys: one statement each
    would be a fifth of its fixed cost). Made by the function that owns the transaction and passed
    to each step that reads or writes the meta."""

    def __init__(self, meta: dict[str, str], tables: set[str]) -> None:
        self.meta = meta
        self.tables = tables
        self.dirty: set[str] = set()

    @classmethod
    def begin(cls, con: duckdb.DuckDBPyConnection) -> StateTx:
        """Read the meta and the table names (``con`` is inside its transaction)."""
        meta = dict(con.execute("SELECT key, value FROM exports_state.meta").fetchall())
        tables = {
            r[0]
            for r in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
                "AND schema_name = 'exports_state'"
            ).fetchall()
        }
        return cls(meta, tables)

    def get(self, key: str) -> str | None:
        return self.meta.get(key)

    def set(self, key: str, value: str | None) -> None:
        """Set (or, with ``None``, delete) a meta key."""
        if value is None:
            self.meta.pop(key, None)
        else:
            self.meta[key] = value
        self.dirty.add(key)

    def has_table(self, name: str) -> bool:
        """Whether ``exports_state.<name>`` existed at BEGIN."""
        return name in self.tables

    def next_seq(self) -> int:
        """The next segment sequence number (never reused)."""
        seq = int(self.get("segment_seq") or 0) + 1
        self.set("segment_seq", str(seq))
        return seq

    def flush(self, con: duckdb.DuckDBPyConnection) -> None:
        """Write the changed meta keys (before COMMIT)."""
        gone = [k for k in self.dirty if k not in self.meta]
        kept = sorted(k for k in self.dirty if k in self.meta)
        if gone:
            con.execute(
                "DELETE FROM exports_state.meta WHERE key IN (SELECT unnest($k::VARCHAR[]))",
                {"k": gone},
            )
        if kept:
            con.execute(
                "INSERT OR REPLACE INTO exports_state.meta "
                "SELECT unnest($k::VARCHAR[]), unnest($v::VARCHAR[])",
                {"k": kept, "v": [self.meta[k] for k in kept]},
            )
        self.dirty = set()
