"""Log-scale histograms kept as exact running totals: cross-run quantiles at a bounded cost.

A value ``v`` falls in bin ``k`` when ``|v|`` is in ``[1.01^k, 1.01^(k+1))`` (a sign, and an
exact zero bin); the value a quantile reports is the geometric middle of the bin holding the
element DuckDB's ``quantile_disc`` picks (the ``ceil(n·q)``-th smallest value). Relative error
≤ ``sqrt(1.01) - 1`` ≈ 0.499 %, and the cost does not grow with history (a key has at most a
few thousand bins whatever the number of runs).

A :class:`Histograms` holds the bins of some columns of one artifact table per key, summed over
the runs that fed them, as integers: an exported run's bins are added, a removed run's
subtracted (exact). Per-run histograms are not stored (as many rows as the raw data: 47 of the
67 MB of a 10,000-run catalog, copied by every publication); a leaving run's bins are computed
again from its rows in the segments.
"""

# ruff: noqa: S608 - SQL from this package's constants (quantbot_bus.exports.sql)

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import duckdb

from ..log import get_logger
from .sql import col
from .store import TABLES_DIR

log = get_logger("quantbot_bus.exports")

BIN_BASE = 1.01  #: histogram bin width factor (relative error ≤ sqrt(BIN_BASE) - 1)
_BIN_OFFSET = 100_000  # keeps bins of positive values > 0 and of negative values < 0


def bin_sql(expr: str) -> str:
    """The bin of the value ``expr`` (NULL for NULL and non-finite values)."""
    v = f"CAST({expr} AS DOUBLE)"
    k = f"CAST(floor(ln(abs({v})) / ln({BIN_BASE})) AS INTEGER)"
    return (
        f"CASE WHEN {v} IS NULL OR NOT isfinite({v}) THEN NULL WHEN {v} = 0 THEN 0 "
        f"WHEN {v} > 0 THEN {k} + {_BIN_OFFSET} ELSE -({k} + {_BIN_OFFSET}) END"
    )


def bin_value_sql(b: str) -> str:
    """The value reported for bin ``b``: its geometric middle."""
    return (
        f"CASE WHEN {b} IS NULL THEN NULL WHEN {b} = 0 THEN 0.0 "
        f"WHEN {b} > 0 THEN pow({BIN_BASE}, {b} - {_BIN_OFFSET} + 0.5) "
        f"ELSE -pow({BIN_BASE}, -({b}) - {_BIN_OFFSET} + 0.5) END"
    )


def bin_value(value: float) -> float:
    """The value a quantile from the histograms reports for ``value`` (for tests and docs)."""
    if value == 0:
        return 0.0
    k = math.floor(math.log(abs(value)) / math.log(BIN_BASE))
    return math.copysign(BIN_BASE ** (k + 0.5), value)


@dataclass(frozen=True)
class Histograms:
    """The bins of columns ``metrics`` of artifact table ``table`` per ``key`` (a column), as
    ``(key, metric, bin, n)`` rows of state table ``totals``, summed over the runs that are in
    state table ``fed``."""

    table: str
    totals: str
    fed: str
    key: str
    metrics: tuple[str, ...]

    def sql(self, rel: str, cols: Iterable[str], where: str) -> str:
        """(key, metric, bin, n) of the rows of ``rel`` (columns ``cols``) matching ``where``,
        summed over the runs in it."""
        key = f"CAST({col(cols, self.key, 'VARCHAR')} AS VARCHAR)"
        union = " UNION ALL ".join(
            f"SELECT {key} AS {self.key}, '{m}' AS metric, "
            f"{bin_sql(col(cols, m, 'DOUBLE'))} AS bin FROM {rel} "
            f"WHERE ({where}) AND {key} IS NOT NULL"
            for m in self.metrics
        )
        return (
            f"SELECT {self.key}, metric, bin, count(*) AS n FROM ({union}) "
            "WHERE bin IS NOT NULL GROUP BY ALL"
        )

    def segment_sql(self, con: duckdb.DuckDBPyConnection, segs: list[str], where: str) -> str:
        """:meth:`sql` over the segment files ``segs`` (bound as ``$segs``)."""
        rel = "read_parquet($segs, union_by_name = true)"
        cur = con.execute(f"SELECT * FROM {rel} LIMIT 0", {"segs": segs})
        return self.sql(rel, [d[0] for d in cur.description or ()], where)

    def remove_leaving(self, con: duckdb.DuckDBPyConnection, exports_dir: Path) -> None:
        """Subtract the leaving runs' (``_qb_gone``) bins from the totals, computed again from
        their rows in the segments (still on disk: retired files go after the commit). If a
        leaving run's rows are not in the segments (a segment file went missing), the totals
        are rebuilt from every segment."""
        fed = (  # the leaving runs that fed the totals
            f"run_id IN (SELECT run_id FROM {self.fed} "
            "WHERE run_id IN (SELECT run_id FROM _qb_gone))"
        )
        row = con.execute(f"SELECT count(DISTINCT run_id) FROM {self.fed} WHERE {fed}").fetchone()
        n_fed = int(row[0]) if row else 0
        if not n_fed:
            return
        table_dir = exports_dir.resolve() / TABLES_DIR / self.table
        placed = con.execute(
            "SELECT run_id, segment FROM exports_state.run_segments "
            f"WHERE table_name = $t AND rows > 0 AND {fed}",
            {"t": self.table},
        ).fetchall()
        segs = sorted({str(table_dir / seg) for _run, seg in placed})
        if len({run for run, _seg in placed}) == n_fed and all(os.path.exists(p) for p in segs):
            con.execute(
                f"""
                UPDATE {self.totals} AS t SET n = t.n - d.n
                FROM ({self.segment_sql(con, segs, fed)}) AS d
                WHERE t.{self.key} IS NOT DISTINCT FROM d.{self.key} AND t.metric = d.metric
                  AND t.bin = d.bin
                """,
                {"segs": segs},
            )
            con.execute(f"DELETE FROM {self.totals} WHERE n <= 0")
            return
        log.warning(
            "export.histograms_rebuilt", reason="a leaving run's rows are not in the segments"
        )
        con.execute(f"DELETE FROM {self.totals}")
        live = [
            str(table_dir / r[0])
            for r in con.execute(
                "SELECT segment FROM exports_state.segments WHERE table_name = $t",
                {"t": self.table},
            ).fetchall()
            if os.path.exists(table_dir / r[0])
        ]
        if live:
            kept = (
                f"run_id IN (SELECT run_id FROM {self.fed}) "
                "AND run_id NOT IN (SELECT run_id FROM _qb_gone)"
            )
            con.execute(
                f"INSERT INTO {self.totals} {self.segment_sql(con, live, kept)}", {"segs": live}
            )
