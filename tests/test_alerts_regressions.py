"""The regression rule over a real DuckDB view of regressions: the latest verdict per run type,
params and metric, the view ``sync`` publishes, and a view without its columns."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import duckdb
from alerts_inputs import T0, at, only
from builders import add_policy_run, sync
from structlog.testing import capture_logs

from quantbot_bus.alerts import evaluate, gather_facts
from quantbot_bus.config import Config


def make_regressions_db(
    path: Path, rows: list[tuple[Any, ...]], *, params: bool = False
) -> duckdb.DuckDBPyConnection:
    """A real DuckDB file with a view ``exports.regressions`` of the lead's columns."""
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA exports")
    extra = ", params VARCHAR" if params else ""
    con.execute(
        "CREATE TABLE exports.verdicts (run_id VARCHAR, run_type VARCHAR, metric VARCHAR, "
        "verdict VARCHAR, baseline_value DOUBLE, new_value DOUBLE, change DOUBLE, "
        f"reason VARCHAR, created_at TIMESTAMP{extra})"
    )
    con.executemany(
        "INSERT INTO exports.verdicts VALUES (" + ", ".join("?" * len(rows[0])) + ")",  # noqa: S608
        rows,
    )
    con.execute("CREATE VIEW exports.regressions AS SELECT * FROM exports.verdicts")
    return con


def test_regressions_from_a_view(tmp_path: Path, bus: Config) -> None:
    t = T0.replace(tzinfo=None)
    h = dt.timedelta(hours=1)
    rows = [
        # mean_return: regressed, then a later run is fine -> cleared
        ("r1", "policy", "mean_return_bps", "regression", 4000, 3000, -1000, "CI below", t),
        ("r2", "policy", "mean_return_bps", "no change", 4000, 3900, -100, "CI spans 0", t + h),
        # sharpe: regressed, then only insufficient data -> still standing
        ("r1", "policy", "sharpe_per_call", "regression", 0.3, 0.1, -0.2, "CI below", t),
        ("r3", "policy", "sharpe_per_call", "insufficient data", None, None, None, "n<30", t + h),
        # another run type: its latest verdict is a regression
        ("p1", "path-only", "mean_return_bps", "improvement", 10, 20, 10, "", t),
        ("p2", "path-only", "mean_return_bps", "regression", 20, 5, -15, "worse", t + 2 * h),
        # too old for the window
        ("o1", "old", "mean_return_bps", "regression", 1, 0, -1, "", t - dt.timedelta(days=30)),
    ]
    con = make_regressions_db(tmp_path / "view.duckdb", rows)
    settings = only("regression")
    facts = gather_facts(bus, settings, None, now=at(3 * 3600), con=con)
    keys = [c.key for c in evaluate(facts, settings).active]
    assert keys == ["regression:p2:mean_return_bps", "regression:r1:sharpe_per_call"]
    assert facts.incomplete == frozenset()
    message = evaluate(facts, settings).active[0].message
    assert "path-only run p2 regressed on mean_return_bps" in message and "worse" in message
    con.close()


def test_regressions_keep_apart_runs_of_other_params(tmp_path: Path, bus: Config) -> None:
    t = T0.replace(tzinfo=None)
    rows = [
        ("a", "policy", "m", "regression", 1, 0, -1, "", t, '{"seed": 1}'),
        ("b", "policy", "m", "no change", 1, 1, 0, "", t + dt.timedelta(hours=1), '{"seed": 2}'),
    ]
    con = make_regressions_db(tmp_path / "view.duckdb", rows, params=True)
    facts = gather_facts(bus, only("regression"), None, now=at(7200), con=con)
    assert [r["run_id"] for r in facts.regressions] == ["a"]  # b's params differ: a stands
    con.close()


def test_the_real_regressions_view_is_read(bus: Config) -> None:
    """The publication ``sync`` makes has ``exports.regressions`` with the columns the rule
    reads: read without error (one run has no baseline: no regression)."""
    add_policy_run(bus, "p1")
    sync(bus)
    settings = only("regression")
    facts = gather_facts(bus, settings, None)
    assert facts.incomplete == frozenset() and facts.regressions == ()
    from quantbot_bus.alerts.facts import REGRESSION_COLUMNS, regression_columns
    from quantbot_bus.exports.query import open_query_connection

    with open_query_connection(bus) as con:
        columns = regression_columns(con)
    assert columns is not None and set(REGRESSION_COLUMNS) <= set(columns)


def test_a_regressions_view_without_its_columns_is_incomplete(tmp_path: Path, bus: Config) -> None:
    con = duckdb.connect(str(tmp_path / "v.duckdb"))
    con.execute("CREATE SCHEMA exports")
    con.execute("CREATE VIEW exports.regressions AS SELECT 'x' AS run_id")
    with capture_logs() as logs:
        facts = gather_facts(bus, only("regression"), None, con=con)
    assert facts.incomplete == {"regression"}
    assert any("lacks the column" in e.get("error", "") for e in logs)
    con.close()
