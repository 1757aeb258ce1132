"""The dashboard's distributions (count and both quantiles in one scan, then the bins, the tails
added to the outermost bins) match their definition computed with numpy from the same exported
rows, on a real synced bus; and on a real Parquet column with huge outliers."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from builders import add_path_run, add_policy_run, snapshot_query, sync

from quantbot_bus.config import Config
from quantbot_bus.report.data import HIST_BINS, _histogram, gather


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
        hist = _histogram(con, f"read_parquet('{path}')", "v")
    finally:
        con.close()
    assert_matches(hist, values)
    assert hist is not None and hist.counts[0] >= 27 and hist.counts[-1] >= 27  # the tails
