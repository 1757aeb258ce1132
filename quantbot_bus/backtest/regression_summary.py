"""The ``regressions`` summary export, a plug-in of :mod:`quantbot_bus.exports.plugins`: every
new successful run with per-call results (``backtest_call_results``, in the seed layout
``policy/backtest_call_results``) compared with its baseline runs, one row per configured
metric, by :func:`quantbot_bus.regress.compare`.

A run's baseline (``[regressions]`` in the config, :mod:`quantbot_bus.regress.settings`): the
most recent earlier successful runs of the same run type whose params match once the ignored
ones (``seed``) are left out, on the reference branch. Each run's verdicts are computed once,
when the run comes into the exports, from the baseline runs live at that moment; they are kept
in the export state (``regressions_p``) like the other summaries' partials and leave with the
run. A run that arrives late (created before runs already checked) does not change their
verdicts; one created more than ``max_age_days`` ago is not checked (a catch-up of history), only
kept as a baseline. The match key of every such run is kept in ``regress_keys`` (its ``key``, ``ts``,
whether it is on the reference branch), so finding a chunk's baselines is one join over that
table, never a scan of the runs' params.

The per-call series of the incoming runs come from their staged rows; those of baseline runs
outside the chunk from the runs' own Parquet files (artifacts_f), read with PyArrow: a file that
cannot be read leaves that baseline run out (the verdict's reason names it), never the refresh.
"""

# ruff: noqa: S608 - SQL from this module's constants and identifiers quoted by exports.sql

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..exports.plugins import Flag, Staged, Summary
from ..exports.sql import col
from ..log import get_logger
from ..regress.settings import RegressionSettings
from ..sqltext import q
from ..timeutil import utc_naive
from .sources import CALL_RESULTS

if TYPE_CHECKING:
    import duckdb
    import numpy as np

    from ..config import Config

log = get_logger("quantbot_bus.regress")

#: The export tables holding per-call results, either layout (:mod:`.sources`).
CALL_RESULTS_TABLES = CALL_RESULTS.tables
_ORDER = ("entry_ts_ms", "call_id")

_STATE_DDL = """
CREATE TABLE IF NOT EXISTS exports_state.regress_keys (
    run_id VARCHAR, key VARCHAR, ts TIMESTAMP, on_reference BOOLEAN);
CREATE TABLE IF NOT EXISTS exports_state.regressions_p (
    run_id VARCHAR, metric VARCHAR, verdict VARCHAR, method VARCHAR, baseline_runs VARCHAR[],
    baseline_value DOUBLE, new_value DOUBLE, change DOUBLE, low DOUBLE, high DOUBLE,
    threshold DOUBLE, direction VARCHAR, confidence DOUBLE, p_value DOUBLE, probability DOUBLE,
    n_new BIGINT, n_baseline BIGINT, reason VARCHAR, checked_at TIMESTAMP);
"""

_SQL = """
    SELECT p.run_id, r.run_type, json_extract_string(r.params, '$.strategy') AS strategy,
           r.git_branch, r.git_commit, r.created_at, p.metric, p.verdict, p.method,
           p.baseline_runs, p.baseline_value, p.new_value, p.change, p.low, p.high, p.threshold,
           p.direction, p.confidence, p.p_value, p.probability, p.n_new, p.n_baseline, p.reason,
           p.checked_at
    FROM exports_state.regressions_p p JOIN catalog.runs_d r USING (run_id)
    ORDER BY r.created_at DESC NULLS LAST, p.run_id, p.metric"""


def match_key(run_type: str, params: Any, ignore: tuple[str, ...]) -> str:
    """The baseline match key of a run: its run type and its params without ``ignore``."""
    if isinstance(params, str):
        try:
            params = json.loads(params)
        except ValueError:
            pass
    if isinstance(params, dict):
        params = {k: v for k, v in params.items() if k not in ignore}
    text = json.dumps([run_type, params], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _record_keys(
    con: duckdb.DuckDBPyConnection, rows: Staged, settings: RegressionSettings
) -> list[tuple[str, str, Any]]:
    """Insert the incoming successful runs' keys; return them as (run_id, key, ts) in time
    order."""
    runs = con.execute(
        f"""SELECT run_id, run_type, CAST(params AS VARCHAR), git_branch,
                   coalesce(created_at, registered_at) AS ts
            FROM catalog.runs_d
            WHERE run_id IN (SELECT DISTINCT run_id FROM {rows.relation})
              AND status = 'success' AND deleted_at IS NULL
            ORDER BY ts, run_id"""
    ).fetchall()
    keyed = [
        (run_id, match_key(run_type, params, settings.ignore_params), ts, branch)
        for run_id, run_type, params, branch, ts in runs
    ]
    if keyed:
        con.executemany(
            "INSERT INTO exports_state.regress_keys VALUES (?, ?, ?, ?)",
            [(r, k, ts, b is None or b == settings.reference_branch) for r, k, ts, b in keyed],
        )
    return [(r, k, ts) for r, k, ts, _ in keyed]


def _baselines(
    con: duckdb.DuckDBPyConnection, new: list[tuple[str, str, Any]], limit: int
) -> dict[str, list[str]]:
    """Per incoming run, its baseline run ids (newest first): one join over ``regress_keys``."""
    con.execute("CREATE OR REPLACE TEMP TABLE _qb_rnew (run_id VARCHAR, key VARCHAR, ts TIMESTAMP)")
    con.executemany("INSERT INTO _qb_rnew VALUES (?, ?, ?)", new)
    pairs = con.execute(
        """SELECT n.run_id, b.run_id
           FROM _qb_rnew n JOIN exports_state.regress_keys b
             ON b.key = n.key AND b.on_reference AND b.run_id <> n.run_id
            AND (b.ts < n.ts OR (b.ts = n.ts AND b.run_id < n.run_id))
           QUALIFY row_number() OVER (PARTITION BY n.run_id ORDER BY b.ts DESC, b.run_id DESC)
                   <= $limit
           ORDER BY n.run_id, b.ts DESC, b.run_id DESC""",
        {"limit": limit},
    ).fetchall()
    con.execute("DROP TABLE _qb_rnew")
    out: dict[str, list[str]] = {r: [] for r, _, _ in new}
    for run_id, base in pairs:
        out[run_id].append(base)
    return out


def _split(table: Any, columns: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """Arrow rows ``run_id, <columns>`` in (run_id, time) order → per run, per column, the
    floats without its nulls (each column on its own, as :func:`_file_series` does)."""
    import numpy as np

    ids = table.column("run_id").to_numpy(zero_copy_only=False)
    out: dict[str, dict[str, np.ndarray]] = {}
    if len(ids) == 0:
        return out
    cuts = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    starts = np.concatenate(([0], cuts))
    ends = np.concatenate((cuts, [len(ids)]))
    values = {
        c: np.asarray(table.column(c).to_numpy(zero_copy_only=False), dtype=np.float64)
        for c in columns
    }
    for s, e in zip(starts, ends, strict=True):
        run = {c: values[c][s:e] for c in columns}
        out[str(ids[s])] = {c: v[~np.isnan(v)] for c, v in run.items()}
    return out


#: Column types a metric can be read from (anything else: the run has no such series).
_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
            "UINTEGER", "UBIGINT", "FLOAT", "DOUBLE", "BOOLEAN", "DECIMAL")  # fmt: skip


def _staged_series(
    con: duckdb.DuckDBPyConnection, rows: Staged, columns: list[str]
) -> dict[str, dict[str, np.ndarray]]:
    """The incoming runs' series from their staged rows, in time order (``entry_ts_ms``, then
    ``call_id``). Only numeric or boolean columns are read (a cast that cannot fail: an error
    here would abort the whole refresh transaction); another type reads as no series."""
    types = {r[0]: str(r[1]) for r in con.execute(f"DESCRIBE {rows.relation}").fetchall()}
    picks = ", ".join(
        f"CAST({q(name)} AS DOUBLE) AS {q(name)}"
        if types.get(name, "").split("(")[0] in _NUMERIC
        else f"CAST(NULL AS DOUBLE) AS {q(name)}"
        for name in columns
    )
    c = rows.columns
    order = f"{col(c, 'entry_ts_ms', 'BIGINT')}, {col(c, 'call_id', 'VARCHAR')}"
    table = con.sql(
        f"SELECT run_id, {picks} FROM {rows.relation} ORDER BY run_id, {order}"
    ).to_arrow_table()
    return _split(table, columns)


def _file_series(
    con: duckdb.DuckDBPyConnection, run_ids: set[str], columns: list[str]
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, str]]:
    """Baseline runs' series read from their own Parquet files; unreadable ones → reasons."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if not run_ids:
        return {}, {}
    paths = con.execute(
        """SELECT a.run_id,
                  CASE WHEN a.path LIKE '/%' THEN a.path ELSE r.run_dir || '/' || a.path END
           FROM catalog.artifacts_f a JOIN catalog.runs_d r USING (run_id)
           WHERE replace(a.name, '/', '__') IN (SELECT unnest($t::VARCHAR[]))
             AND a.run_id IN (SELECT unnest($ids::VARCHAR[]))""",
        {"t": list(CALL_RESULTS_TABLES), "ids": sorted(run_ids)},
    ).fetchall()
    out: dict[str, dict[str, np.ndarray]] = {}
    bad: dict[str, str] = {}
    for run_id, path in paths:
        try:
            names = pq.read_schema(path).names
            wanted = [n for n in (*columns, *_ORDER) if n in names]
            tab = pq.read_table(path, columns=wanted)
            order = [(n, "ascending") for n in _ORDER if n in names]
            if order:
                tab = tab.sort_by(order)
            series = {}
            for name in columns:
                if name not in names:
                    raise ValueError(f"no column {name!r}")
                column = pc.drop_null(tab.column(name)).cast("float64")
                series[name] = np.asarray(column.to_numpy(), dtype=np.float64)
            out[run_id] = series
        except Exception as exc:  # noqa: BLE001 - a bad baseline file leaves that run out
            bad[run_id] = f"{type(exc).__name__}: {exc}"
    return out, bad


def _incoming(staged: Mapping[str, Staged]) -> Staged | None:
    """The incoming per-call results, of every table that holds them, as they are."""
    parts = [staged[t] for t in CALL_RESULTS_TABLES if t in staged]
    if len(parts) < 2:
        return parts[0] if parts else None
    union = " UNION ALL BY NAME ".join(f"SELECT * FROM {p.relation}" for p in parts)
    return Staged(f"({union})", list(dict.fromkeys(c for p in parts for c in p.columns)))


def _compute(con: duckdb.DuckDBPyConnection, staged: Mapping[str, Staged], config: Config) -> None:
    rows = _incoming(staged)
    if rows is None:
        return
    settings = config.regressions
    keyed = _record_keys(con, rows, settings)  # kept even when off: baselines for later checks
    checked_at = utc_naive()
    oldest = checked_at - dt.timedelta(days=settings.max_age_days)
    new = [k for k in keyed if not settings.max_age_days or k[2] is None or k[2] >= oldest]
    if not settings.enabled or not new:
        return
    from ..regress.detect import compare

    t0 = time.perf_counter()
    metrics = settings.metric_list()
    columns = sorted({m.column for m in metrics})
    baselines = _baselines(con, new, settings.baseline_runs)
    series = _staged_series(con, rows, columns)
    outside = {b for bs in baselines.values() for b in bs} - set(series)
    from_files, unreadable = _file_series(con, outside, columns)
    series.update(from_files)
    out: list[tuple[Any, ...]] = []
    flagged = 0
    for run_id, _, _ in new:
        base_ids = [b for b in baselines[run_id] if b in series]
        left_out = [b for b in baselines[run_id] if b not in series]
        note = ""
        if left_out:
            why = unreadable.get(left_out[0], "its per-call results are not readable")
            note = f" (baseline runs left out: {', '.join(left_out)}: {why})"
        for metric in metrics:
            mine = series.get(run_id, {}).get(metric.column)
            if mine is None:
                continue
            try:
                v = compare(
                    mine,
                    [series[b][metric.column] for b in base_ids],
                    metric,
                    confidence=settings.confidence,
                    min_baseline_runs=settings.min_baseline_runs,
                )
            except ValueError as exc:
                log.warning("regress.failed", run_id=run_id, metric=metric.name, error=str(exc))
                continue
            flagged += v.verdict == "regression"
            out.append(
                (run_id, v.metric, v.verdict, v.method, base_ids, v.baseline_value,
                 v.new_value, v.change, v.low, v.high, v.threshold, v.direction, v.confidence,
                 v.p_value, v.probability, v.n_new, v.n_baseline, v.reason + note, checked_at)
            )  # fmt: skip
            if v.verdict == "regression":
                log.warning("run.regressed", run_id=run_id, metric=v.metric, reason=v.reason)
    if out:
        con.executemany(
            f"INSERT INTO exports_state.regressions_p VALUES ({', '.join(['?'] * 19)})", out
        )
    log.info(
        "regress.checked",
        runs=len(new),
        verdicts=len(out),
        regressions=flagged,
        ms=round((time.perf_counter() - t0) * 1000, 1),
    )


REGRESSIONS = Summary(
    name="regressions",
    sql=_SQL,
    tables=CALL_RESULTS_TABLES,
    feed=Flag("has_call_results", CALL_RESULTS.holds(), CALL_RESULTS.params()),
    state_ddl=_STATE_DDL,
    run_tables=("regress_keys", "regressions_p"),
    compute=_compute,
)
