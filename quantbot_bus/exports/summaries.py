"""The catalog summaries: ``runs``, ``artifacts`` and ``latest_artifacts``, kept as state tables.

Whole-catalog summaries without whole-catalog work: ``runs_flat`` (the rows of
``runs.parquet``: runs_d with a ``param_<key>``/``metric_<key>`` column per params/metrics key),
``artifacts_x`` (``artifacts.parquet``) and ``latest_x`` (``latest_artifacts.parquet``, without
the Arrow schema JSON: it is in ``catalog.artifacts_f``) are updated with each refresh's runs
(delete the runs that left, insert those that came in), so writing a file only COPYs one out: no
JSON flattening, join or window over the history each time. ``run_kv`` keeps each run's
params/metrics keys and types, merged with ``json_group_structure``.

A table is rebuilt from the catalog when its shape changes (a params/metrics key appears,
disappears or widens its type; a catalog column is added): the signature of its shape is kept in
the meta. ``latest_x`` takes the incoming runs' artifacts against the current newest per
(run_type, name) and recomputes from ``catalog.latest_artifacts_v`` only the groups whose newest
run left.
"""

# ruff: noqa: S608 - SQL from this package's constants (quantbot_bus.exports.sql)

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from ..catalog import SEQ_COLUMNS
from ..log import get_logger
from .sql import columns, q

if TYPE_CHECKING:
    import duckdb

    from .state import StateTx

log = get_logger("quantbot_bus.exports")

#: The catalog summaries' SELECTs over the state (views ``exports.<name>``, ``<name>.parquet``).
CATALOG_SQL: dict[str, str] = {
    "runs": "SELECT * FROM exports_state.runs_flat ORDER BY created_at, run_id",
    "artifacts": "SELECT * FROM exports_state.artifacts_x ORDER BY run_id, name",
    "latest_artifacts": """
        SELECT * EXCLUDE (_qb_k) FROM exports_state.latest_x ORDER BY run_type, name""",
}
#: The meta keys of the state tables' shape signatures (a view over one is bound to its shape).
SHAPE_KEYS = ("runs_flat_sig", "artifacts_x_sig", "latest_x_sig")

_LATEST_COLS = (
    "run_type", "name", "run_id", "path", "format", "rows", "bytes", "sha256",
    "arrow_schema", "created_at", "registered_at",
)  # fmt: skip


def update_summary_state(
    con: duckdb.DuckDBPyConnection, tx: StateTx, *, changed: bool, gone: bool
) -> bool:
    """Bring ``runs_flat``, ``artifacts_x`` and ``latest_x`` up to date (caller's transaction;
    ``changed``: runs came in or left, ``gone``: runs left). Returns whether ``latest_x``
    changed."""
    same_kinds = False  # every incoming params/metrics key and type is known already
    if changed:
        if gone:
            con.execute(
                "DELETE FROM exports_state.run_kv WHERE run_id IN (SELECT run_id FROM _qb_gone)"
            )
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _qb_kv AS "
            + " UNION ALL ".join(
                f"""
                SELECT r.run_id, '{source}' AS source, j.key,
                       CAST(json_structure(j.value) AS VARCHAR) AS kind,
                       CAST(j.value AS VARCHAR) AS sample
                FROM (SELECT run_id, CAST({source} AS JSON) AS doc FROM catalog.runs_d
                      WHERE run_id IN (SELECT run_id FROM _qb_new)) r, json_each(r.doc) j
                WHERE json_type(r.doc) = 'OBJECT'"""
                for source in ("params", "metrics")
            )
        )
        con.execute("INSERT INTO exports_state.run_kv SELECT * FROM _qb_kv")
        incoming = {
            tuple(r)
            for r in con.execute("SELECT DISTINCT source, key, kind FROM _qb_kv").fetchall()
        }
        known = {tuple(k) for k in json.loads(tx.get("run_kv_kinds") or "[]")}
        same_kinds = not gone and incoming <= known
    _update_runs_flat(con, tx, changed, same_kinds, gone)
    _update_artifacts_x(con, tx, changed, gone)
    return _update_latest_x(con, tx, changed, gone)


def _update_runs_flat(
    con: duckdb.DuckDBPyConnection, tx: StateTx, changed: bool, same_kinds: bool, gone: bool
) -> None:
    """runs_flat: the rows of runs.parquet (runs_d flattened; a params/metrics key -> a column).

    ``same_kinds``: no run left and the incoming runs bring no params/metrics key or type that is
    not known: the flattening SELECT of the last refresh is reused (kept in the meta), without
    merging the key structures of the whole history again."""
    exists = tx.has_table("runs_flat")
    if exists and not changed:
        return
    cached = json.loads(tx.get("runs_flat_select") or "null")
    base = columns(con, "catalog.runs_d")
    if same_kinds and cached and cached["base"] == base:
        select, params, signature = cached["select"], cached["params"], cached["sig"]
    else:
        select, params, signature = _runs_flat_select(con)
        cache = {"base": base, "select": select, "params": params, "sig": signature}
        tx.set("runs_flat_select", json.dumps(cache))
        kinds = con.execute("SELECT DISTINCT source, key, kind FROM exports_state.run_kv")
        tx.set("run_kv_kinds", json.dumps(sorted(kinds.fetchall(), key=str)))
    if exists and tx.get("runs_flat_sig") == signature:
        if gone:
            con.execute(
                "DELETE FROM exports_state.runs_flat WHERE run_id IN (SELECT run_id FROM _qb_gone)"
            )
        con.execute(
            f"INSERT INTO exports_state.runs_flat SELECT {select} FROM catalog.runs_d r "
            "WHERE r.run_id IN (SELECT run_id FROM _qb_new)",
            params,
        )
        return
    con.execute(
        f"CREATE OR REPLACE TABLE exports_state.runs_flat AS SELECT {select} "
        "FROM catalog.runs_d r WHERE r.run_id IN (SELECT run_id FROM exports_state.runs)",
        params,
    )
    tx.set("runs_flat_sig", signature)
    log.debug("export.summary_state_rebuilt", table="runs_flat")


#: JSON structure type -> column type (HUGEINT: positive and negative integers merged).
_SQL_TYPES = {
    "UBIGINT": "BIGINT",
    "BIGINT": "BIGINT",
    "HUGEINT": "BIGINT",
    "DOUBLE": "DOUBLE",
    "BOOLEAN": "BOOLEAN",
}


def _runs_flat_select(con: duckdb.DuckDBPyConnection) -> tuple[str, dict[str, Any], str]:
    """The SELECT list over ``catalog.runs_d r`` that flattens a run, its bound parameters and a
    signature of the resulting columns. Key types are merged over every exported run by
    ``json_group_structure`` over one sample value per distinct per-run type (``run_kv``)."""
    base = [
        c
        for c in columns(con, "catalog.runs_d")
        if c not in ("params", "metrics", "metadata", "deleted_at", *SEQ_COLUMNS)
    ]
    structures: dict[str, dict[str, Any]] = {"params": {}, "metrics": {}}
    for source, key, structure in con.execute(
        """
        SELECT source, key, CAST(json_group_structure(CAST(sample AS JSON)) AS VARCHAR)
        FROM (SELECT source, key, kind, any_value(sample) AS sample
              FROM exports_state.run_kv GROUP BY source, key, kind)
        GROUP BY source, key
        """
    ).fetchall():
        try:
            structures[source][key] = json.loads(structure)
        except (ValueError, TypeError, KeyError):
            structures.setdefault(source, {})[key] = "JSON"
    select = [f"r.{q(c)}" for c in base]
    params: dict[str, Any] = {}
    shape: list[Any] = [base]
    used = set(base)
    for source, prefix in (("params", "param_"), ("metrics", "metric_")):
        structure = structures[source]
        for i, key in enumerate(sorted(structure)):
            kind = structure[key]
            sql_type = _SQL_TYPES.get(kind if isinstance(kind, str) else "", "VARCHAR")
            name = prefix + (re.sub(r"[^A-Za-z0-9_]", "_", key) or "_")
            while name in used:
                name += "_"
            used.add(name)
            p = f"k_{source}_{i}"
            params[p] = "$." + json.dumps(key)
            extract = f"json_extract_string(CAST(r.{source} AS JSON), ${p})"
            if sql_type == "VARCHAR":
                expr = (
                    extract
                    if isinstance(kind, str)
                    else f"CAST(json_extract(CAST(r.{source} AS JSON), ${p}) AS VARCHAR)"
                )
            else:
                expr = f"TRY_CAST({extract} AS {sql_type})"
            select.append(f"{expr} AS {q(name)}")
            shape.append([name, key, sql_type, isinstance(kind, str)])
        select.append(f"CAST(r.{source} AS VARCHAR) AS {source}")
        shape.append(source)
    return ", ".join(select), params, json.dumps(shape)


_ARTIFACTS_X_SELECT = """
    SELECT a.* EXCLUDE (arrow_schema, _seq), r.run_type
    FROM catalog.artifacts_f a JOIN catalog.runs_d r USING (run_id)"""


def _update_artifacts_x(
    con: duckdb.DuckDBPyConnection, tx: StateTx, changed: bool, gone: bool
) -> None:
    """artifacts_x: the rows of artifacts.parquet (artifacts of the exported runs)."""
    exists = tx.has_table("artifacts_x")
    if exists and not changed:
        return
    signature = json.dumps(columns(con, "catalog.artifacts_f"))
    if exists and tx.get("artifacts_x_sig") == signature:
        if gone:
            con.execute(
                "DELETE FROM exports_state.artifacts_x "
                "WHERE run_id IN (SELECT run_id FROM _qb_gone)"
            )
        con.execute(
            f"INSERT INTO exports_state.artifacts_x {_ARTIFACTS_X_SELECT} "
            "WHERE a.run_id IN (SELECT run_id FROM _qb_new)"
        )
        return
    con.execute(
        f"CREATE OR REPLACE TABLE exports_state.artifacts_x AS {_ARTIFACTS_X_SELECT} "
        "WHERE a.run_id IN (SELECT run_id FROM exports_state.runs)"
    )
    tx.set("artifacts_x_sig", signature)
    log.debug("export.summary_state_rebuilt", table="artifacts_x")


_LATEST_FROM_VIEW = """
    SELECT v.* EXCLUDE (arrow_schema), coalesce(r.created_at, r.registered_at) AS _qb_k
    FROM catalog.latest_artifacts_v v JOIN catalog.runs_d r USING (run_id)"""

# The incoming runs' artifacts against the current newest of the same groups (the view's rule:
# live, successful runs; newest created_at else registration; ties: run_id).
_LATEST_CANDIDATES = """
    CREATE OR REPLACE TEMP TABLE _qb_lc AS
    WITH cand AS (
        SELECT r.run_type, a.name, a.run_id, a.path, a.format, a.rows, a.bytes, a.sha256,
               r.created_at, a.registered_at, coalesce(r.created_at, r.registered_at) AS _qb_k
        FROM catalog.artifacts_f a JOIN catalog.runs_d r USING (run_id)
        WHERE a.run_id IN (SELECT run_id FROM _qb_new)
          AND r.deleted_at IS NULL AND r.status = 'success')
    SELECT * FROM (
        SELECT * FROM cand
        UNION ALL BY NAME
        SELECT l.* FROM exports_state.latest_x l
        SEMI JOIN cand c ON l.run_type = c.run_type AND l.name = c.name)
    QUALIFY row_number() OVER (
        PARTITION BY run_type, name ORDER BY _qb_k DESC, run_id DESC) = 1
    """


def _update_latest_x(
    con: duckdb.DuckDBPyConnection, tx: StateTx, changed: bool, gone: bool
) -> bool:
    """latest_x: the rows of ``catalog.latest_artifacts_v`` (the newest artifact per run_type and
    name), kept up to date by comparing the incoming runs' artifacts with the current newest; a
    group whose newest run left is recomputed from the view. Returns whether it changed."""
    exists = tx.has_table("latest_x")
    if exists and not changed:
        return False
    view_cols = tuple(columns(con, "catalog.latest_artifacts_v"))
    incremental = view_cols == _LATEST_COLS  # else: the view changed shape, rebuild each time
    if not exists or not incremental or tx.get("latest_x_sig") != json.dumps(view_cols):
        con.execute(f"CREATE OR REPLACE TABLE exports_state.latest_x AS {_LATEST_FROM_VIEW}")
        tx.set("latest_x_sig", json.dumps(view_cols))
        return True
    # 1. groups whose newest artifact belonged to a run that left: recompute them from the view.
    n_lost = 0
    if gone:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _qb_lg AS SELECT DISTINCT run_type, name "
            "FROM exports_state.latest_x WHERE run_id IN (SELECT run_id FROM _qb_gone)"
        )
        lost = con.execute("SELECT count(*) FROM _qb_lg").fetchone()
        n_lost = int(lost[0]) if lost else 0
        if n_lost:
            con.execute(
                "DELETE FROM exports_state.latest_x l USING _qb_lg g "
                "WHERE l.run_type = g.run_type AND l.name = g.name"
            )
            con.execute(
                f"INSERT INTO exports_state.latest_x SELECT x.* FROM ({_LATEST_FROM_VIEW}) x "
                "SEMI JOIN _qb_lg g ON x.run_type = g.run_type AND x.name = g.name"
            )
    # 2. incoming runs: their artifacts against the current newest of the same groups.
    con.execute(_LATEST_CANDIDATES)
    won = con.execute(
        "SELECT count(*) FROM _qb_lc WHERE run_id IN (SELECT run_id FROM _qb_new)"
    ).fetchone()
    n_won = int(won[0]) if won else 0
    if n_won:
        con.execute(
            "DELETE FROM exports_state.latest_x l USING _qb_lc c "
            "WHERE l.run_type = c.run_type AND l.name = c.name"
        )
        con.execute("INSERT INTO exports_state.latest_x SELECT * FROM _qb_lc")
    # (the small temp tables _qb_lc, _qb_lg, _qb_kv stay until replaced)
    return bool(n_lost or n_won)
