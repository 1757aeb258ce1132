"""The views of schema ``exports`` in the working catalog: what the publication shows readers.

``exports.<summary>`` is a SELECT over the state tables; ``exports.<table>`` reads the artifact
table's committed segments through their pinned links (a table named like a summary gets the view
``exports.table_<name>``). Each view's definition is kept in the meta (``view:<name>``) with the
shape signatures of the state tables behind it, so a view is re-created only when it changed:
a view keeps the column list it was bound with.
"""

# ruff: noqa: S608 - SQL from this package's constants (quantbot_bus.exports.sql)

from __future__ import annotations

from pathlib import Path

import duckdb

from . import plugins
from .sql import lit, q
from .state import StateTx
from .store import PIN_DIR, TABLE_NAME, TABLES_DIR
from .summaries import SHAPE_KEYS


def sync_views(con: duckdb.DuckDBPyConnection, tx: StateTx, exports_dir: Path) -> bool:
    """Bring the views of schema ``exports`` up to date (``tx``'s transaction): the summaries
    over the state tables, the artifact tables over their segment files. Returns whether a view
    was created, replaced or dropped."""
    # A summary view is re-created when the state table behind it was rebuilt with another
    # shape (a view keeps the column list it was bound with): its key carries the signatures.
    shape = "|".join(str(tx.get(k)) for k in SHAPE_KEYS)
    summary = plugins.summary_sql()
    wanted = {name: f"{sql}\n-- {shape}" for name, sql in summary.items()}
    # The artifact tables: their committed segments, listed (a glob would also match a segment
    # being written, or a retired one not yet removed).
    segments: dict[str, list[str]] = {}
    for table, segment in con.execute(
        "SELECT table_name, segment FROM exports_state.segments ORDER BY ALL"
    ).fetchall():
        segments.setdefault(table, []).append(segment)
    base = exports_dir.resolve() / TABLES_DIR
    for table, segs in segments.items():
        if TABLE_NAME.fullmatch(table):
            files = ", ".join(lit(str(base / table / PIN_DIR / seg)) for seg in segs)
            view = table if table not in wanted else f"table_{table}"  # summaries first
            wanted[view] = f"SELECT * FROM read_parquet([{files}], union_by_name = true)"
    existing = {k[5:]: v for k, v in tx.meta.items() if k.startswith("view:")}
    changed = False
    for name, key in wanted.items():
        if existing.get(name) != key:
            changed = True
            sql = summary.get(name, key)
            con.execute(f"CREATE OR REPLACE VIEW exports.{q(name)} AS {sql}")
            tx.set("view:" + name, key)
    for name in set(existing) - set(wanted):
        changed = True
        con.execute(f"DROP VIEW IF EXISTS exports.{q(name)}")
        tx.set("view:" + name, None)
    return changed
