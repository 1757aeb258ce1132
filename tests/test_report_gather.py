"""The dashboard's distributions (count and both quantiles in one scan, then the bins, the tails
added to the outermost bins) match their definition computed with numpy from the same exported
rows, on a real synced bus; and on a real Parquet column with huge outliers. Their quantiles,
read from the tails alone, are DuckDB's ``quantile_cont`` bit for bit (what is drawn is what the
full ``quantile_cont`` drew)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from builders import add_path_run, add_policy_run, snapshot_query, sync

from quantbot_bus.config import Config
from quantbot_bus.report import histogram as hg
from quantbot_bus.report.data import gather
from quantbot_bus.report.histogram import HIST_BINS, histogram


@pytest.fixture
def exported(bus: Config) -> Config:
    for i in range(3):
        add_path_run(bus, f"path-{i}", n=200, seed=i)
        add_policy_run(bus, f"policy-{i}", n=100, seed=10 + i)
    sync(bus)
    return bus


def expected(values: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """The histogram by its definition: 40 equal bins between the 0.5 and 99.5 % quantiles
    (linear interpolation, as ``quantile_cont``), the tails in the outermost bins."""
    lo, hi = np.quantile(values, [0.005, 0.995])
    width = (hi - lo) / HIST_BINS
    with np.errstate(over="ignore"):  # a huge value's bin is inf: clipped to the last one
        index = np.clip(np.floor((values - lo) / width), 0, HIST_BINS - 1).astype(int)
    return lo + width * np.arange(HIST_BINS + 1), np.bincount(index, minlength=HIST_BINS).tolist()


def assert_matches(hist: object, values: np.ndarray) -> None:
    values = values[np.isfinite(values)]
    assert hist is not None
    edges, counts = expected(values)
    assert hist.n == len(values) > 0  # type: ignore[attr-defined]
    assert hist.counts == counts  # type: ignore[attr-defined]
    assert np.allclose(hist.edges, edges, rtol=1e-12, atol=0)  # type: ignore[attr-defined]


def test_the_distributions_match_their_definition(exported: Config) -> None:
    data = gather(exported)
    for hist, sql in (
        (data.dd_hist, "SELECT dd_bps FROM exports.backtest_call_path_metrics"),
        (data.mae_hist, "SELECT max_adverse_excursion_bps FROM exports.backtest_policy_results"),
    ):
        values = np.array([r[0] for r in snapshot_query(exported, sql)], dtype=float)
        assert_matches(hist, values)


def test_huge_outliers_and_non_finite_values_land_in_the_outer_bins(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    # narrow bins (width ~1e-4): (1.7e308 - lo) / width overflows to inf in the bin query
    values = np.concatenate(
        [rng.normal(-0.5, 0.001, 5000), [1.7e308, -1.7e308, 1e12, -3e9, np.inf, -np.inf, np.nan]]
    )
    path = tmp_path / "values.parquet"
    pq.write_table(pa.table({"v": values}), path)
    con = duckdb.connect()
    try:
        hist = histogram(con, f"read_parquet('{path}')", "v")
    finally:
        con.close()
    assert_matches(hist, values)
    assert hist is not None and hist.counts[0] >= 27 and hist.counts[-1] >= 27  # the tails


@pytest.mark.parametrize("n", [1, 2, 3, 199, 200, 201, 1_000, 20_001])
@pytest.mark.parametrize("kind", ["normal", "ties", "heavy", "with-non-finite"])
def test_the_bins_edges_are_quantile_cont_bit_for_bit(tmp_path: Path, n: int, kind: str) -> None:
    rng = np.random.default_rng(n)
    values = {
        "normal": lambda: rng.normal(-300.0, 1_000.0, n),
        "ties": lambda: rng.integers(-5, 5, n).astype(float),
        "heavy": lambda: rng.standard_cauchy(n) * 1e6,
        "with-non-finite": lambda: np.where(
            rng.uniform(size=n) < 0.2, np.inf, -np.round(rng.exponential(30.0, n), 2)
        ),
    }[kind]()
    path = tmp_path / "values.parquet"
    pq.write_table(pa.table({"v": values}), path)
    con = duckdb.connect()
    try:
        hist = histogram(con, f"read_parquet('{path}')", "v")
        [(count, (lo, hi))] = con.execute(
            "SELECT count(v), quantile_cont(v, [0.005, 0.995]) FROM read_parquet(?) "
            "WHERE isfinite(v)",
            [str(path)],
        ).fetchall()
    finally:
        con.close()
    if count == 0:
        assert hist is None
        return
    assert hist is not None and hist.n == count
    hi = hi if hi > lo else lo + 1.0
    width = (hi - lo) / HIST_BINS
    assert hist.edges == [lo + i * width for i in range(HIST_BINS + 1)]  # exactly, not approx
    assert sum(hist.counts) == count


def _quantile_cont(con: duckdb.DuckDBPyConnection, path: Path) -> tuple[int, float, float]:
    [(count, (lo, hi))] = con.execute(
        "SELECT count(v), quantile_cont(v, [0.005, 0.995]) FROM read_parquet(?) WHERE isfinite(v)",
        [str(path)],
    ).fetchall()
    return count, lo, hi


@pytest.fixture
def million(tmp_path: Path) -> Path:
    """A million values in random order, a heavy left tail: enough rows for the sampled cut."""
    rng = np.random.default_rng(11)
    values = np.concatenate(
        [rng.normal(-2_000.0, 800.0, 990_000), -rng.pareto(1.5, 10_000) * 5_000.0]
    )
    rng.shuffle(values)
    path = tmp_path / "million.parquet"
    pq.write_table(pa.table({"v": values}), path)
    return path


def test_a_large_column_reads_only_its_tails_and_gets_the_same_quantiles(million: Path) -> None:
    relation, value = f"read_parquet('{million}')", "CAST(v AS DOUBLE)"
    con = duckdb.connect()
    try:
        cut = hg._thresholds(con, relation, value)
        assert cut is not None  # the sampled path, not the one over every row
        k = 5_000 + 2  # ceil(999,999 * 0.005) + 2
        tails = hg._tails(con, relation, value, k, cut)
        assert tails is not None and tails.n == 1_000_000
        assert len(tails.low) == k and len(tails.high) == k  # the cut kept more than k a side
        assert hg._exact(con, tails) is not None  # ... and the ranks needed
        assert hg.quantiles(con, relation, value) == _quantile_cont(con, million)
    finally:
        con.close()


def test_a_misleading_sample_falls_back_to_every_row(
    million: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cut at the sample's 0.01 % and 99.99 % keeps fewer rows than the 0.5 % ranks: the tails
    are read again over every row, and the quantiles are still exact."""
    monkeypatch.setattr(hg, "SAMPLE_QUANTILES", (0.0001, 0.9999))
    relation, value = f"read_parquet('{million}')", "CAST(v AS DOUBLE)"
    con = duckdb.connect()
    try:
        cut = hg._thresholds(con, relation, value)
        assert cut is not None
        tails = hg._tails(con, relation, value, 5_000 + 2, cut)
        assert tails is not None and hg._exact(con, tails) is None  # the ranks are not there
        assert hg.quantiles(con, relation, value) == _quantile_cont(con, million)
    finally:
        con.close()
