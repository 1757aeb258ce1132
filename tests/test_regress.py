"""Regression detection (quantbot_bus.regress): each statistic against known values, the decision
rule, and the end-to-end check on a history written by the real policy producer."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from quantbot_bus.backtest import policy as pol
from quantbot_bus.backtest.runner import run_backtest
from quantbot_bus.regress import (
    MEAN_RETURN_BPS,
    SHARPE_PER_CALL,
    WIN_RATE,
    Metric,
    Trials,
    compare,
    decide,
    policy_series,
    run_series,
    stats,
    trial_sharpes,
)
from quantbot_bus.regress.detect import between_runs_variance

# one worker builds the module's `history` once (make test runs --dist loadgroup)
pytestmark = pytest.mark.xdist_group("test_regress")

PHI = NormalDist().cdf


def ar1(rng: np.random.Generator, n: int, phi: float, mean: float) -> np.ndarray:
    """A stationary AR(1) series with unit innovations around ``mean``."""
    e = rng.normal(size=n + 100)
    x = np.empty(n + 100)
    x[0] = e[0] / math.sqrt(1 - phi**2)
    for t in range(1, n + 100):
        x[t] = phi * x[t - 1] + e[t]
    return mean + x[100:]


# -- (c) probabilistic Sharpe ratio ---------------------------------------------------------------


def test_psr_closed_form_values() -> None:
    # SR 0.1 over 101 observations, normal (skew 0, kurtosis 3): z = 0.1·√100 / √(1 + 2/4·0.01)
    assert stats.psr_from_moments(0.1, 0.0, 101) == pytest.approx(PHI(1 / math.sqrt(1.005)))
    # negative skew and fat tails widen the error: √(1 + 1·0.1 + (6 − 1)/4·0.01) = √1.1125
    got = stats.psr_from_moments(0.1, 0.0, 101, skew=-1.0, kurtosis=6.0)
    assert got == pytest.approx(PHI(1 / math.sqrt(1.1125)))
    assert stats.psr_from_moments(0.2, 0.2, 50) == pytest.approx(0.5)


def test_psr_of_a_normal_sample_matches_the_normal_formula() -> None:
    x = np.random.default_rng(7).normal(0.05, 1.0, 20_000)
    m = stats.moments(x)
    assert abs(m.skew) < 0.1 and abs(m.kurtosis - 3) < 0.15
    # Lo (2002): under normality se(SR) = √((1 + SR²/2) / (n − 1))
    lo = PHI((m.sharpe - 0.03) * math.sqrt(len(x) - 1) / math.sqrt(1 + m.sharpe**2 / 2))
    assert stats.probabilistic_sharpe_ratio(x, 0.03) == pytest.approx(lo, abs=0.005)


def test_psr_is_calibrated_when_the_true_sharpe_equals_the_benchmark() -> None:
    # true SR 0.1 = benchmark: PSR is ~uniform, so it exceeds 0.95 in ~5 % of samples
    psr = [
        stats.probabilistic_sharpe_ratio(np.random.default_rng(s).normal(0.1, 1.0, 250), 0.1)
        for s in range(400)
    ]
    assert 0.02 <= np.mean(np.array(psr) > 0.95) <= 0.09


# -- (d) deflated Sharpe ratio --------------------------------------------------------------------


def test_dsr_numerical_example_of_bailey_lopez_de_prado_2014() -> None:
    # N = 100 trials, V[SR] = 0.5 annualized (/250 daily), T = 1250 days, γ3 = −3, γ4 = 10,
    # annualized SR 2.5: the paper finds SR0* ≈ 0.1132 and DSR ≈ 0.9004
    sr0 = stats.expected_max_sharpe(100, 0.5 / 250)
    assert sr0 == pytest.approx(0.1132, abs=5e-4)
    dsr = stats.psr_from_moments(2.5 / math.sqrt(250), sr0, 1250, skew=-3.0, kurtosis=10.0)
    assert dsr == pytest.approx(0.9004, abs=2e-3)


def test_dsr_decreases_with_the_number_of_trials() -> None:
    x = np.random.default_rng(3).normal(0.15, 1.0, 500)
    dsr = [stats.deflated_sharpe_ratio(x, n, 0.004) for n in (1, 2, 5, 10, 100, 1000)]
    assert dsr[0] == pytest.approx(stats.probabilistic_sharpe_ratio(x, 0.0))
    assert all(a > b for a, b in zip(dsr, dsr[1:], strict=False))
    assert stats.deflated_sharpe_ratio(x, 100, 0.0) == pytest.approx(dsr[0])  # no spread, no bias


def test_expected_max_sharpe_matches_simulated_maxima() -> None:
    rng = np.random.default_rng(11)
    for n in (10, 100, 1000):
        simulated = rng.normal(size=(4000, n)).max(axis=1).mean()
        assert stats.expected_max_sharpe(n, 1.0) == pytest.approx(simulated, rel=0.03)
    with pytest.raises(ValueError, match="n_trials"):
        stats.expected_max_sharpe(0, 1.0)


# -- (a), (b) block bootstrap intervals -----------------------------------------------------------


def test_block_length_follows_the_dependence() -> None:
    rng = np.random.default_rng(5)
    assert stats.optimal_block_length(rng.normal(size=1000)) <= 3
    assert stats.optimal_block_length(ar1(rng, 1000, 0.8, 0.0)) >= 8
    assert stats.optimal_block_length(np.ones(500)) == 1
    assert stats.optimal_block_length(np.arange(30.0)) <= 10  # capped at n/3


@pytest.mark.parametrize(
    ("interval", "true_difference"),
    [
        (stats.mean_difference_interval, 0.3),
        # the Sharpe ratio of AR(1) with unit innovations: mean·√(1 − φ²)
        (stats.sharpe_difference_interval, 0.3 * math.sqrt(1 - 0.5**2)),
    ],
)
def test_interval_covers_the_true_difference_on_ar1_data(
    interval: Callable[..., stats.Interval], true_difference: float
) -> None:
    covered = 0
    for trial in range(200):
        rng = np.random.default_rng(1000 + trial)
        new, base = ar1(rng, 250, 0.5, 0.3), ar1(rng, 250, 0.5, 0.0)
        iv = interval(new, base, n_boot=299, seed=trial)
        covered += iv.low <= true_difference <= iv.high
    assert 0.90 <= covered / 200 <= 0.99


def test_ignoring_the_dependence_undercovers() -> None:
    # the same AR(1) data with blocks of 1 (an iid bootstrap): variance understated ~3×
    covered = 0
    for trial in range(100):
        rng = np.random.default_rng(1000 + trial)
        new, base = ar1(rng, 250, 0.5, 0.3), ar1(rng, 250, 0.5, 0.0)
        iv = stats.mean_difference_interval(new, base, n_boot=199, seed=trial, block_length=1)
        covered += iv.low <= 0.3 <= iv.high
    assert covered / 100 < 0.85


def test_paired_interval_uses_the_common_noise() -> None:
    rng = np.random.default_rng(2)
    base = ar1(rng, 300, 0.3, 0.0)
    new = base + 0.2 + rng.normal(0, 0.05, 300)  # the same periods, a small edge
    paired = stats.mean_difference_interval(new, base, paired=True, seed=1)
    unpaired = stats.mean_difference_interval(new, base, seed=1)
    assert paired.low <= 0.2 <= paired.high
    assert paired.high - paired.low < (unpaired.high - unpaired.low) / 5
    assert paired.low > 0 and unpaired.low < 0.2
    with pytest.raises(ValueError, match="same length"):
        stats.mean_difference_interval(new, base[:-1], paired=True)


def test_interval_is_reproducible_and_reads_arrow_and_run_lists() -> None:
    rng = np.random.default_rng(4)
    new = rng.normal(1.0, 1.0, 120)
    runs = [rng.normal(0.0, 1.0, 100) for _ in range(3)]
    a = stats.mean_difference_interval(new, runs, seed=9)
    b = stats.mean_difference_interval(pa.array(new), [pa.chunked_array([r]) for r in runs], seed=9)
    assert a == b
    assert a.estimate == pytest.approx(new.mean() - np.concatenate(runs).mean())
    assert len(a.block_lengths) == 4 and 0 < a.p_value <= 1
    with pytest.raises(ValueError, match="null"):
        stats.mean_difference_interval(pa.array([1.0, None, 2.0]), runs)
    with pytest.raises(ValueError, match="no variation"):
        stats.mean_difference_interval(np.ones(50), [np.ones(50)])


# -- detect: the decision rule ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("low", "high", "direction", "outcome"),
    [
        (-9.0, -5.1, "higher", "regression"),  # the whole interval is worse than −5
        (-9.0, -5.0, "higher", "no change"),  # touching the threshold is not beyond it
        (-9.0, 1.0, "higher", "no change"),
        (5.5, 9.0, "higher", "improvement"),
        (5.5, 9.0, "lower", "regression"),  # a rise is a loss for lower-is-better
        (-9.0, -5.1, "lower", "improvement"),
        (-1.0, 1.0, "lower", "no change"),
    ],
)
def test_decision_rule(low: float, high: float, direction: str, outcome: str) -> None:
    assert decide(low, high, direction, 5.0) == outcome  # type: ignore[arg-type]


def test_insufficient_data_is_its_own_verdict() -> None:
    rng = np.random.default_rng(0)
    runs = [rng.normal(size=100) for _ in range(2)]
    v = compare(rng.normal(size=100), runs, MEAN_RETURN_BPS)
    assert v.verdict == "insufficient data" and v.low is None
    assert "2 usable baseline run(s)" in v.reason and "at least 3" in v.reason
    v = compare(rng.normal(size=10), [*runs, rng.normal(size=100)], MEAN_RETURN_BPS)
    assert v.verdict == "insufficient data" and "10 observations" in v.reason
    # a run too short to count is not a baseline run
    v = compare(rng.normal(size=100), [*runs, rng.normal(size=5)], MEAN_RETURN_BPS)
    assert v.verdict == "insufficient data" and v.baseline_runs == 2
    v = compare(np.zeros(100), [*runs, rng.normal(size=100)], SHARPE_PER_CALL)
    assert v.verdict == "insufficient data" and "constant" in v.reason
    v = compare(np.zeros(100), [np.zeros(100)] * 3, MEAN_RETURN_BPS)
    assert v.verdict == "insufficient data" and "constant" in v.reason


def test_a_constant_run_still_has_a_mean_to_compare() -> None:
    # a run that lost every call has no variation, but the baseline's noise is enough to judge it
    wins = [np.random.default_rng(s).binomial(1, 0.4, 200).astype(float) for s in range(4)]
    v = compare(np.zeros(200), [*wins, np.ones(5)], WIN_RATE)
    assert v.verdict == "regression", v.reason
    assert v.baseline_runs == 4 and "1 baseline run(s) with fewer than 30" in v.reason


def test_lower_is_better_metric() -> None:
    rng = np.random.default_rng(1)
    drawdown = Metric("time_in_trade_min", "lower", threshold=5.0)
    base = [rng.normal(60, 20, 200) for _ in range(4)]
    worse = compare(rng.normal(80, 20, 200), base, drawdown)
    assert worse.verdict == "regression" and worse.low is not None and worse.low > 5.0
    better = compare(rng.normal(40, 20, 200), base, drawdown)
    assert better.verdict == "improvement"
    same = compare(rng.normal(60, 20, 200), base, drawdown)
    assert same.verdict == "no change"


def test_between_run_variance() -> None:
    assert between_runs_variance([(0.0, 1.0)] * 3) == 0.0
    # Q = 200 on 2 degrees of freedom, Σw − Σw²/Σw = 2: τ² = 99
    assert between_runs_variance([(-10.0, 1.0), (0.0, 1.0), (10.0, 1.0)]) == pytest.approx(99.0)
    rng = np.random.default_rng(8)
    spread = [rng.normal(level, 1.0, 200) for level in (-1.0, 0.0, 1.0, 0.5)]
    v = compare(rng.normal(0.1, 1.0, 200), spread, Metric("m", "higher", 0.1))
    assert v.between_runs_sd is not None and v.between_runs_sd > 0.4
    assert "between-run sd" in v.reason and v.verdict == "no change"


def test_dsr_method_deflates_the_winner_of_a_sweep_of_luck() -> None:
    # 27 trials with no edge over a fixed baseline (true SR 0.1 each): the best one looks better
    psr_improved = dsr_improved = 0
    metric = replace(SHARPE_PER_CALL, threshold=0.0)
    for seed in range(40):
        rng = np.random.default_rng(seed)
        trials = rng.normal(0.1, 1.0, (27, 250))
        sharpes = trials.mean(axis=1) / trials.std(axis=1)
        best = trials[int(np.argmax(sharpes))]
        base = [rng.normal(0.1, 1.0, 1000) for _ in range(3)]
        sweep = Trials(27, stats.trials_variance(list(sharpes)))
        psr_improved += compare(best, base, metric, method="psr").verdict == "improvement"
        v = compare(best, base, metric, trials=sweep)
        assert v.method == "dsr" and v.probability is not None
        dsr_improved += v.verdict == "improvement"
    assert psr_improved >= 15 and dsr_improved <= 2


def test_metric_and_method_validation() -> None:
    with pytest.raises(ValueError, match="direction"):
        Metric("x", "up", 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threshold"):
        Metric("x", "higher", -1.0)
    runs = [np.arange(50.0)] * 3
    with pytest.raises(ValueError, match="Sharpe"):
        compare(np.arange(50.0), runs, MEAN_RETURN_BPS, method="psr")
    with pytest.raises(ValueError, match="trials"):
        compare(np.arange(50.0), runs, SHARPE_PER_CALL, method="dsr")


# -- end to end: a history written by the real policy producer --------------------------------------

D_FROM, D_TO = dt.date(2026, 1, 2), dt.date(2026, 1, 8)
CALLS = 200


@dataclass(frozen=True)
class History:
    baseline: Sequence[Path]  # seeds 1..5, identical inputs
    rerun: Path  # seed 6, the same inputs: a harmless rerun
    regressed: Path  # seed 7 with a bug: the producer picks the worst policy of its grid


def _produce(root: Path, seed: int) -> Path:
    # the function `quantbot-bus backtest run --strategy policy` calls; 5-minute candles and a
    # 4-hour horizon keep a 200-call run near a second
    return run_backtest(
        "policy", "5m", D_FROM, D_TO, CALLS, seed, root, horizon_minutes=240
    ).run_dir


def _worst_policy(results: Sequence[pol.CallTrades], policies: Sequence[pol.Policy]) -> int:
    return min(
        range(len(policies)), key=lambda k: sum(r.trades[k].realized_return_bps for r in results)
    )


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    root = tmp_path_factory.mktemp("regress") / "artifacts"
    baseline = [_produce(root, seed) for seed in range(1, 6)]
    rerun = _produce(root, 6)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pol, "best_policy_index", _worst_policy)
        regressed = _produce(root, 7)
    return History(baseline, rerun, regressed)


@pytest.mark.parametrize("metric", [MEAN_RETURN_BPS, SHARPE_PER_CALL, WIN_RATE])
def test_harmless_rerun_is_not_flagged(history: History, metric: Metric) -> None:
    base = [run_series(d, metric.column) for d in history.baseline]
    v = compare(run_series(history.rerun, metric.column), base, metric)
    assert v.verdict == "no change", v.reason
    assert v.baseline_runs == 5 and v.n_new == CALLS and v.n_baseline == 5 * CALLS
    assert v.low is not None and v.high is not None and v.low < 0 < v.high


@pytest.mark.parametrize("metric", [MEAN_RETURN_BPS, SHARPE_PER_CALL])
def test_injected_regression_is_flagged(history: History, metric: Metric) -> None:
    base = [run_series(d, metric.column) for d in history.baseline]
    v = compare(run_series(history.regressed, metric.column), base, metric)
    assert v.verdict == "regression", v.reason
    assert v.high is not None and v.high < -metric.threshold
    assert v.p_value is not None and v.p_value < 0.01
    assert "a regression" in v.reason and metric.name in v.reason


def test_shift_beyond_the_noise_is_flagged_and_one_within_it_is_not(history: History) -> None:
    base = [run_series(d) for d in history.baseline]
    rerun = run_series(history.rerun)
    small = compare(rerun - 300.0, base, MEAN_RETURN_BPS)  # under the 500 bps threshold
    assert small.verdict == "no change", small.reason
    large = compare(rerun - 6000.0, base, MEAN_RETURN_BPS)
    assert large.verdict == "regression", large.reason


def test_run_series_reads_the_call_results_in_time_order(history: History) -> None:
    run = history.rerun
    table = pq.read_table(run / "backtest_call_results.parquet")
    returns = run_series(run)
    assert len(returns) == CALLS
    rows = sorted(
        zip(
            *(table.column(c).to_pylist() for c in ("entry_ts_ms", "call_id", "return_bps")),
            strict=True,
        )
    )
    assert returns.tolist() == [r[2] for r in rows]
    assert returns.tolist() != table.column("return_bps").to_pylist()  # written in call order
    assert set(np.unique(run_series(run, "win"))) <= {0.0, 1.0}
    sharpes = trial_sharpes(run)
    assert len(sharpes) == 27
    selected = table.column("policy_id")[0].as_py()
    assert np.array_equal(policy_series(run, selected), returns)


def test_run_series_refuses_other_runs(history: History, tmp_path: Path) -> None:
    path_only = run_backtest("path-only", "5m", D_FROM, D_TO, 5, 1, tmp_path, horizon_minutes=60)
    with pytest.raises(ValueError, match="no 'backtest_call_results' table"):
        run_series(path_only.run_dir)
    failed = tmp_path / "failed"
    failed.mkdir()
    (failed / "metadata.json").write_text(json.dumps({"status": "failed", "artifacts": []}))
    with pytest.raises(ValueError, match="'failed'"):
        run_series(failed)
    with pytest.raises(FileNotFoundError, match="metadata.json"):
        run_series(tmp_path)
    with pytest.raises(ValueError, match="no policy"):
        policy_series(history.rerun, "sl99-nope")
