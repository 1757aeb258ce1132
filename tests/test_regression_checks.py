"""Regression checks as the bus runs them: every new policy run compared with its baseline runs
when it comes into the exports (``exports.regressions``), and the ``regressions`` command.

The history is written by the real policy producer over several syncs (batches): five runs with
the same inputs and seeds 1..5 on ``main``, then a harmless rerun (seed 6) and a run whose
producer was made to pick its worst grid policy (a real regression) on a feature branch.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from builders import snapshot_query, sync
from click.testing import CliRunner

from quantbot_bus.backtest import policy as pol
from quantbot_bus.backtest.runner import run_backtest
from quantbot_bus.catalog.queries import REGRESSION_COLUMNS
from quantbot_bus.cli import main
from quantbot_bus.config import Config, load_config
from quantbot_bus.errors import ConfigError
from quantbot_bus.regress.settings import RegressionSettings, parse_regression_settings

# one worker builds the module's `history` once (make test runs --dist loadgroup)
pytestmark = pytest.mark.xdist_group("test_regression_checks")

D_FROM, D_TO = dt.date(2026, 1, 2), dt.date(2026, 1, 8)
CALLS = 200


@dataclass(frozen=True)
class History:
    config: Config
    baseline: Sequence[str]  # seeds 1..5 on main, oldest first
    rerun: str  # seed 6 on main: harmless
    regressed: str  # seed 7 on feature-x, worst grid policy
    other_params: str  # seed 1 with 150 calls: no run shares its params


def _produce(
    root: Path, seed: int, branch: str, calls: int = CALLS, created_at: str | None = None
) -> str:
    run_dir = run_backtest(
        "policy", "5m", D_FROM, D_TO, calls, seed, root, horizon_minutes=240
    ).run_dir
    meta_path = run_dir / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["git"] = {"commit": f"{seed:040x}", "branch": branch, "dirty": False}
    if created_at is not None:
        meta["created_at"] = meta["started_at"] = created_at
    meta_path.write_text(json.dumps(meta))
    return str(meta["run_id"])


def _worst_policy(results: Sequence[pol.CallTrades], policies: Sequence[pol.Policy]) -> int:
    return min(
        range(len(policies)), key=lambda k: sum(r.trades[k].realized_return_bps for r in results)
    )


def _config(base: Path, root: Path, name: str, toml: str = "") -> Config:
    path = base / f"{name}.toml"
    path.write_text(toml)
    return load_config(
        path,
        overrides={
            "root": str(root),
            "exports_dir": str(base / name / "exports"),
            "state_dir": str(base / name / "state"),
        },
        cwd=base,
    )


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    base = tmp_path_factory.mktemp("checks")
    root = base / "artifacts"
    cfg = _config(base, root, "bus")
    baseline = [_produce(root, seed, "main") for seed in range(1, 6)]
    sync(cfg)  # batch 1: the baseline runs check each other as they come
    rerun = _produce(root, 6, "main")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pol, "best_policy_index", _worst_policy)
        regressed = _produce(root, 7, "feature-x")
    sync(cfg)  # batch 2
    other = _produce(root, 1, "main", calls=150)
    sync(cfg)  # batch 3
    return History(cfg, baseline, rerun, regressed, other)


def _verdicts(cfg: Config, run_id: str) -> dict[str, tuple[str, list[str], str]]:
    rows = snapshot_query(
        cfg,
        "SELECT metric, verdict, baseline_runs, reason FROM exports.regressions WHERE run_id = ?",
        [run_id],
    )
    return {m: (v, list(b), r) for m, v, b, r in rows}


def test_a_regression_is_flagged_and_a_harmless_rerun_is_not(history: History) -> None:
    cfg = history.config
    newest_first = list(reversed(history.baseline))
    rerun = _verdicts(cfg, history.rerun)
    assert set(rerun) == {"mean_return_bps", "sharpe_per_call"}
    for verdict, baseline, reason in rerun.values():
        assert verdict == "no change", reason
        assert baseline == newest_first  # the five most recent earlier matching runs
    regressed = _verdicts(cfg, history.regressed)
    for verdict, baseline, reason in regressed.values():
        assert verdict == "regression", reason
        assert baseline == [history.rerun, *newest_first[:4]]
        assert "a regression" in reason


@pytest.mark.parametrize("metric", ["mean_return_bps", "sharpe_per_call"])
def test_the_bus_verdict_is_the_librarys_on_time_ordered_series(
    history: History, metric: str
) -> None:
    """The in-bus check reads both sides in time order (the producer writes calls in call
    order, at random times): its interval is exactly the library's on run_series, which sorts
    by entry_ts_ms."""
    from quantbot_bus.regress import compare, run_series
    from quantbot_bus.regress.settings import METRICS

    cfg, run_dir = history.config, history.config.root / "backtest"
    [(low, high, base_value, baseline)] = snapshot_query(
        cfg,
        "SELECT low, high, baseline_value, baseline_runs FROM exports.regressions "
        "WHERE run_id = ? AND metric = ?",
        [history.regressed, metric],
    )
    m = METRICS[metric]
    direct = compare(
        run_series(run_dir / history.regressed, m.column),
        [run_series(run_dir / b, m.column) for b in baseline],
        m,
    )
    assert (low, high, base_value) == (direct.low, direct.high, direct.baseline_value)
    calls = pq.read_table(run_dir / history.regressed / "backtest_call_results.parquet")
    times = calls.column("entry_ts_ms").to_pylist()
    assert times != sorted(times)  # written out of time order: the sort matters


def test_baselines_are_earlier_runs_with_the_same_params_on_the_reference_branch(
    history: History,
) -> None:
    cfg = history.config
    first, second, third, fourth, _ = history.baseline
    assert {v for v, _, _ in _verdicts(cfg, first).values()} == {"insufficient data"}
    assert _verdicts(cfg, second)["mean_return_bps"][1] == [first]
    assert _verdicts(cfg, third)["mean_return_bps"][1] == [second, first]
    verdict, baseline, _ = _verdicts(cfg, fourth)["mean_return_bps"]
    assert baseline == [third, second, first] and verdict != "insufficient data"
    # other params (150 calls, same seed as a baseline run): no baseline at all
    verdict, baseline, reason = _verdicts(cfg, history.other_params)["mean_return_bps"]
    assert (verdict, baseline) == ("insufficient data", [])
    assert "0 usable baseline run(s)" in reason


def test_a_feature_branch_run_is_never_a_baseline(history: History, tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    shutil.copytree(history.config.root, root, copy_function=os.link)
    cfg = _config(tmp_path, root, "bus")
    sync(cfg)
    later = _produce(root, 8, "main")
    sync(cfg)  # a batch after the feature-branch run
    for _, baseline, _ in _verdicts(cfg, later).values():
        assert history.regressed not in baseline
        assert baseline == [history.rerun, *reversed(history.baseline[1:])]


def test_settings_choose_the_reference_branch_and_can_switch_checks_off(
    history: History, tmp_path: Path
) -> None:
    release = _config(
        tmp_path, history.config.root, "release", '[regressions]\nreference_branch = "release"\n'
    )
    sync(release)
    rows = snapshot_query(
        release, "SELECT DISTINCT verdict, len(baseline_runs) FROM exports.regressions"
    )
    assert rows == [("insufficient data", 0)]  # no run was made on release
    off = _config(tmp_path, history.config.root, "off", "[regressions]\nenabled = false\n")
    sync(off)
    assert snapshot_query(off, "SELECT count(*) FROM exports.regressions") == [(0,)]
    assert snapshot_query(off, "SELECT count(*) FROM exports.runs") == [(8,)]


def test_old_runs_are_baselines_but_not_checked(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    cfg = _config(tmp_path, root, "bus")  # max_age_days = 30
    old = [_produce(root, s, "main", 60, f"2026-0{s}-01T00:00:00Z") for s in (1, 2, 3)]
    sync(cfg)  # a catch-up of history: nothing is checked
    assert snapshot_query(cfg, "SELECT count(*) FROM exports.regressions") == [(0,)]
    new = _produce(root, 4, "main", 60)
    sync(cfg)
    [(baseline,)] = snapshot_query(
        cfg, "SELECT DISTINCT baseline_runs FROM exports.regressions WHERE run_id = ?", [new]
    )
    assert list(baseline) == list(reversed(old))


def test_a_deleted_run_takes_its_verdicts_and_an_unreadable_baseline_is_named(
    history: History, tmp_path: Path
) -> None:
    root = tmp_path / "artifacts"
    shutil.copytree(history.config.root, root, copy_function=os.link)
    cfg = _config(tmp_path, root, "bus")
    sync(cfg)
    assert _verdicts(cfg, history.regressed)
    shutil.rmtree(root / "backtest" / history.regressed)
    sync(cfg)
    assert _verdicts(cfg, history.regressed) == {}
    # a baseline run's file goes bad on disk after it was exported: the next run's check
    # leaves that run out and says why, and the refresh goes on
    bad = root / "backtest" / history.rerun / "backtest_call_results.parquet"
    bad.unlink()
    bad.write_bytes(b"not parquet")
    later = _produce(root, 8, "main")
    sync(cfg)
    checks = _verdicts(cfg, later)
    for _, baseline, reason in checks.values():
        assert history.rerun not in baseline and len(baseline) == 4
        assert f"baseline runs left out: {history.rerun}" in reason


def _cli(cfg: Config, *args: str) -> tuple[int, str]:
    paths = ["--root", str(cfg.root), "--exports-dir", str(cfg.exports_dir)]
    result = CliRunner().invoke(
        main, ["regressions", *paths, "--state-dir", str(cfg.state_dir), *args]
    )
    return result.exit_code, result.output


def test_cli_lists_regressions_by_default_and_any_verdict_on_request(history: History) -> None:
    cfg = history.config
    code, out = _cli(cfg, "--format", "json")
    assert code == 0, out
    rows = json.loads(out)
    assert [(r["run_id"], r["metric"], r["verdict"]) for r in rows] == [
        (history.regressed, "mean_return_bps", "regression"),
        (history.regressed, "sharpe_per_call", "regression"),
    ]
    assert all(list(r) == list(REGRESSION_COLUMNS) for r in rows)
    assert rows[0]["git_branch"] == "feature-x" and rows[0]["strategy"] == "policy"
    assert rows[0]["baseline_runs"] == [history.rerun, *reversed(history.baseline[1:])]
    assert rows[0]["change"] == pytest.approx(rows[0]["new_value"] - rows[0]["baseline_value"])

    code, out = _cli(cfg, "--format", "csv", "--run-id", history.rerun)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == ",".join(REGRESSION_COLUMNS)
    assert [line.split(",")[6:8] for line in lines[1:]] == [
        ["mean_return_bps", "no change"],
        ["sharpe_per_call", "no change"],
    ]
    code, out = _cli(cfg, "--format", "json", "--verdict", "insufficient", "--limit", "0")
    assert code == 0, out
    assert {r["run_id"] for r in json.loads(out)} == {
        history.baseline[0],
        history.baseline[1],
        history.baseline[2],
        history.other_params,
    }
    code, out = _cli(cfg, "--format", "json", "--since", "2999-01-01")
    assert (code, out) == (0, "[]\n")


def test_cli_since_keeps_the_runs_created_at_or_after_it(history: History) -> None:
    code, out = _cli(history.config, "--format", "json", "--verdict", "all", "--limit", "0")
    assert code == 0, out
    # compared as times: the strings are not (a whole second has no fraction, "…27Z", which
    # sorts after "…27.5Z"; docs/cli-json.md)
    created = sorted(
        {(_utc(r["created_at"]), r["created_at"], r["run_id"]) for r in json.loads(out)}
    )
    assert len(created) >= 3 and len({c for c, _, _ in created}) == len(created)
    for cut, text, _ in created[1:]:
        code, out = _cli(
            history.config, "--format", "json", "--verdict", "all", "--limit", "0", "--since", text
        )
        assert code == 0, out
        assert {r["run_id"] for r in json.loads(out)} == {i for c, _, i in created if c >= cut}


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_cli_before_any_check_is_published(bus: Config) -> None:
    sync(bus)  # an empty bus: a publication without a regressions file yet
    code, out = _cli(bus, "--format", "json")
    assert (code, out) == (0, "[]\n")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"baseline_runs": 0}, "config field 'regressions.baseline_runs' must be an integer >= 1"),
        ({"metrics": ["sortino"]}, "config field 'regressions.metrics' names 'sortino'"),
        (
            {"min_baseline_runs": 6},
            "config field 'regressions.min_baseline_runs' (6) must not exceed",
        ),
        ({"confidence": 1.5}, "config field 'regressions.confidence' must be a number in [0.5, 1)"),
        ({"thresholds": {"win_rate": -1}}, "config field 'regressions.thresholds.win_rate'"),
        ({"reference": "main"}, "unknown config field 'regressions.reference' (did you mean"),
        ("main", "config field 'regressions' must be a table"),
    ],
)
def test_settings_name_the_bad_field(raw: object, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_regression_settings(raw)
    assert message in str(err.value)


def test_settings_defaults_and_thresholds() -> None:
    assert parse_regression_settings(None) == RegressionSettings()
    s = parse_regression_settings(
        {"thresholds": {"mean_return_bps": 250}, "metrics": ["mean_return_bps"]}
    )
    assert [(m.name, m.threshold) for m in s.metric_list()] == [("mean_return_bps", 250.0)]
    assert replace(s, metrics=("win_rate",)).metric_list()[0].threshold == 0.05
