"""The dashboard's distributions: a column's histogram computed in DuckDB, only the bins (and a
few tail values) leaving it.

:func:`histogram` bins a column into :data:`HIST_BINS` equal bins between its 0.5 % and 99.5 %
quantiles, the values beyond them counted in the outermost bins. The quantiles are exactly
``quantile_cont(v, [0.005, 0.995])``, bit for bit, but are not computed by it: ``quantile_cont``
gathers every value (80 MB at 10 M rows) and selects in them, the larger part of the cost. A
quantile q of n values lies between the ranks around ``(n - 1) * q``, and for q = 0.5 % those are
among the n / 200 smallest; so the tails are read instead: ``min(v, k)`` and ``max(v, k)`` (a heap
of the k smallest and of the k largest) over only the rows beyond a threshold that a 1 % sample
of the column puts safely outside the quantiles (its 2 % and 98 % quantiles). The counts beyond
the thresholds, read in the same scan, prove the ranks needed are in the heaps; if the sample
was unlucky, the heaps are read again over every row. The interpolation between the two ranks is
DuckDB's own (``quantile_cont`` of the pair at the fraction between them), so the result is the
same double. Then one more scan counts the bins.
"""

# ruff: noqa: S608 - SQL from this module's constants and the caller's relation/column names

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import duckdb

from ..errors import QueryError

#: Bins per histogram, and the quantiles they span.
HIST_BINS = 40
QUANTILES = (0.005, 0.995)
#: Rows from which the tails are read beyond a sampled threshold (below, a heap over every row
#: costs a few ms); the sample (share of the row groups' vectors, its quantiles).
SAMPLED_FROM = 200_000
SAMPLE_PERCENT = 1
SAMPLE_QUANTILES = (0.02, 0.98)
#: A sample smaller than this gives no threshold.
MIN_SAMPLE = 1_000


@dataclass
class Histogram:
    """Bin edges (``len(counts) + 1``) and counts of one metric; values outside the 0.5–99.5 %
    quantiles are counted in the outermost bins."""

    edges: list[float]
    counts: list[int]
    n: int


@dataclass
class _Tails:
    """The count of the finite values, their smallest few ascending and largest few
    descending."""

    n: int
    low: list[float]
    high: list[float]

    def rank(self, r: int) -> float | None:
        """The ``r``-th smallest value (from 0); None when neither tail holds it."""
        if r < len(self.low):
            return float(self.low[r])
        i = self.n - 1 - r
        return float(self.high[i]) if 0 <= i < len(self.high) else None


def _one(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> Any:
    """The first row of ``sql`` (a tuple), or None."""
    rows = con.execute(sql, params or []).fetchall()
    return rows[0] if rows else None


def _thresholds(
    con: duckdb.DuckDBPyConnection, relation: str, value: str
) -> tuple[float, float] | None:
    """Values of ``value`` below and above which lie (very likely) more than its 0.5 % tails:
    :data:`SAMPLE_QUANTILES` of a :data:`SAMPLE_PERCENT` sample of the vectors (deterministic);
    None when the sample is too small."""
    row = _one(
        con,
        f"SELECT count(x), quantile_disc(x, {list(SAMPLE_QUANTILES)}) FROM "
        f"(SELECT {value} AS x FROM {relation} "
        f"TABLESAMPLE SYSTEM ({SAMPLE_PERCENT}%) REPEATABLE (1)) WHERE isfinite(x)",
    )
    if row is None or row[0] < MIN_SAMPLE:
        return None
    return float(row[1][0]), float(row[1][1])


def _tails(
    con: duckdb.DuckDBPyConnection,
    relation: str,
    value: str,
    k: int,
    cut: tuple[float, float] | None,
) -> _Tails | None:
    """One scan: the count of the finite values and the ``k`` smallest and largest of them (only
    those beyond ``cut``, when given)."""
    low = high = ""
    if cut is not None:
        low, high = f" FILTER (WHERE {value} <= ?)", f" FILTER (WHERE {value} >= ?)"
    row = _one(
        con,
        f"SELECT count({value}), min({value}, {k}){low}, max({value}, {k}){high} "
        f"FROM {relation} WHERE isfinite({value})",
        list(cut) if cut is not None else [],
    )
    if row is None or not row[0]:
        return None
    return _Tails(int(row[0]), list(row[1] or []), list(row[2] or []))


def _exact(con: duckdb.DuckDBPyConnection, found: _Tails) -> tuple[float, float] | None:
    """The :data:`QUANTILES` of the values whose tails are ``found``; None when a rank needed is
    in neither tail. The two ranks around each are interpolated by DuckDB (``quantile_cont`` of
    the pair at the fraction between them): its formula, ``lo * (1 - d) + hi * d``, computed in
    Python differs from it in the last bit for some values (DuckDB's build fuses a
    multiply-add), and the point is the same double."""
    params: list[Any] = []
    for q in QUANTILES:
        at = (found.n - 1) * q  # as quantile_cont computes it
        below, above = math.floor(at), math.ceil(at)
        pair = [found.rank(below), found.rank(above)]
        if None in pair:
            return None
        params += [at - below, pair]
    one = "(SELECT quantile_cont(x, ?) FROM unnest(CAST(? AS DOUBLE[])) AS t(x))"
    lo, hi = _one(con, f"SELECT {one}, {one}", params)
    return float(lo), float(hi)


def quantiles(
    con: duckdb.DuckDBPyConnection, relation: str, value: str
) -> tuple[int, float, float] | None:
    """The count of the finite values of the SQL expression ``value`` over ``relation`` and their
    :data:`QUANTILES`, exactly as ``quantile_cont`` gives them (module docstring); None when
    there is no finite value."""
    total = _one(con, f"SELECT count(*) FROM {relation}")  # the Parquet footers: a bound of n
    if total is None or not total[0]:
        return None
    tail = max(min(q, 1.0 - q) for q in QUANTILES)
    # the heaps hold the ranks needed: a rank's neighbour above (+1), the rounding of (n - 1) * q
    k = math.ceil((int(total[0]) - 1) * tail) + 2
    cut = _thresholds(con, relation, value) if total[0] >= SAMPLED_FROM else None
    found = _tails(con, relation, value, k, cut)
    if found is None:
        return None
    exact = _exact(con, found)
    if exact is None and cut is not None:  # the sample misled the cut: every row this time
        found = _tails(con, relation, value, k, None)
        exact = None if found is None else _exact(con, found)
    if found is None or exact is None:
        raise QueryError(f"the quantiles of {value} over {relation}: a rank beyond the tails read")
    return found.n, *exact


def histogram(con: duckdb.DuckDBPyConnection, relation: str, column: str) -> Histogram | None:
    """:data:`HIST_BINS` equal bins of ``column`` over ``relation`` between its quantiles (those
    of :func:`quantiles`), the values outside them (at most 1 % of the rows, so a bounded number
    of groups) added to the outermost bins here rather than clamped row by row; None when the
    relation does not exist or has no finite value."""
    value = f"CAST({column} AS DOUBLE)"
    try:
        bounds = quantiles(con, relation, value)
        if bounds is None:
            return None
        n, lo, hi = bounds
        if hi <= lo:
            hi = lo + 1.0
        width = (hi - lo) / HIST_BINS
        rows = con.execute(
            f"SELECT floor(({value} - ?) / ?) AS b, count(*) AS n "
            f"FROM {relation} WHERE isfinite({value}) GROUP BY b",
            [lo, width],
        ).fetchall()
    except duckdb.CatalogException:  # no such relation (nothing of that kind exported yet)
        return None
    counts = [0] * HIST_BINS
    for b, count in rows:  # b may be any float outside [0, HIST_BINS), even inf
        counts[int(min(HIST_BINS - 1.0, max(0.0, float(b))))] += int(count)
    return Histogram([lo + i * width for i in range(HIST_BINS + 1)], counts, n)
