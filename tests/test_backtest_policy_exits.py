"""The policy simulation (backtest.policy.simulate_policy) on hand-made paths: which exit, at
what price and time; policy validation and ids."""

from __future__ import annotations

import pytest
from backtest_inputs import C, M

from quantbot_bus.backtest.policy import Policy, default_grid, simulate_policy


def test_stop_loss_exit_by_hand() -> None:
    path = [C(0, 1.0, 1.1, 0.9, 1.0), C(M, 1.0, 1.05, 0.6, 0.65), C(2 * M, 0.65, 3.0, 0.6, 2.9)]
    t = simulate_policy(Policy(stop_loss=0.3), path, M)
    # Stop at 0.7 x 1.0 = 0.7. Candle 0's low 0.9 is above it; candle 1's low 0.6 touches it and
    # it opened above (1.0), so the exit is at the stop level 0.7: (0.7 - 1) * 10 000 = -3 000.
    assert (t.exit_reason, t.exit_px, t.stop_out) == ("stop_loss", pytest.approx(0.7), True)
    assert t.realized_return_bps == pytest.approx(-3_000)
    assert (t.entry_ts_ms, t.entry_px) == (0, 1.0)
    assert t.exit_ts_ms == 2 * M  # exit candle opens at 1m, known by its close at 2m
    assert t.time_exposed_ms == 2 * M
    # Lowest price held: 0.9 (candle 0), then the exit at 0.7 -> -3 000 bps.
    assert t.max_adverse_excursion_bps == pytest.approx(-3_000)
    # The whole path peaked at 3.0x (after the exit): captured -0.3 / (3.0 - 1) = -0.15.
    assert t.tail_capture == pytest.approx(-0.15)


def test_stop_loss_gap_exits_at_the_open() -> None:
    path = [C(0, 1.0, 1.1, 0.9, 1.0), C(M, 0.5, 0.55, 0.4, 0.45)]
    t = simulate_policy(Policy(stop_loss=0.3), path, M)
    # Candle 1 opens at 0.5, already below the 0.7 stop: filled at the open, -5 000 bps.
    assert (t.exit_reason, t.exit_px) == ("stop_loss", 0.5)
    assert t.realized_return_bps == pytest.approx(-5_000)


def test_take_profit_exit_by_hand() -> None:
    path = [
        C(0, 1.0, 1.3, 0.8, 1.2),
        C(M, 1.2, 2.4, 1.1, 2.2),
        C(2 * M, 2.2, 5.0, 2.0, 4.0),
    ]
    t = simulate_policy(Policy(stop_loss=0.5, take_profit=2.0), path, M)
    # Target 2.0: candle 1's high 2.4 reaches it after opening at 1.2 -> sold at 2.0, +10 000 bps.
    assert (t.exit_reason, t.exit_px, t.stop_out) == ("take_profit", 2.0, False)
    assert t.realized_return_bps == pytest.approx(10_000)
    assert t.exit_ts_ms == 2 * M and t.time_exposed_ms == 2 * M
    assert t.max_adverse_excursion_bps == pytest.approx(-2_000)  # low 0.8 in candle 0
    assert t.tail_capture == pytest.approx(0.25)  # +1.0 of a possible +4.0 (peak 5.0)


def test_take_profit_gap_exits_at_the_open() -> None:
    path = [C(0, 1.0, 1.3, 0.9, 1.2), C(M, 2.5, 2.6, 2.4, 2.5)]
    t = simulate_policy(Policy(take_profit=2.0), path, M)
    assert (t.exit_reason, t.exit_px) == ("take_profit", 2.5)  # opened above the target
    assert t.realized_return_bps == pytest.approx(15_000)


def test_trailing_stop_exit_by_hand() -> None:
    path = [
        C(0, 1.0, 1.2, 0.95, 1.15),
        C(M, 1.15, 1.8, 1.1, 1.7),
        C(2 * M, 1.7, 2.0, 1.6, 1.9),
        C(3 * M, 1.9, 1.95, 1.4, 1.45),
        C(4 * M, 1.45, 9.0, 1.4, 8.0),
    ]
    t = simulate_policy(Policy(trailing_stop=0.25, trail_activation=1.5), path, M)
    # Candle 1: peak so far 1.2 < 1.5, not armed. Candle 2: peak 1.8 arms it at
    # 1.8 x 0.75 = 1.35; low 1.6 stays above. Candle 3: peak 2.0 -> level 1.5; low 1.4 touches
    # it, open 1.9 is above -> exit at 1.5: +5 000 bps, exit known at 3m + 1m = 4m.
    assert (t.exit_reason, t.exit_px, t.stop_out) == ("trailing_stop", pytest.approx(1.5), False)
    assert t.realized_return_bps == pytest.approx(5_000)
    assert t.exit_ts_ms == 4 * M and t.time_exposed_ms == 4 * M
    assert t.max_adverse_excursion_bps == pytest.approx(-500)  # low 0.95 in candle 0
    assert t.tail_capture == pytest.approx(0.5 / 8.0)  # peak 9.0x came later


def test_stop_is_checked_before_take_profit_in_one_candle() -> None:
    path = [C(0, 1.0, 2.5, 0.7, 1.5)]
    t = simulate_policy(Policy(stop_loss=0.2, take_profit=2.0), path, M)
    # Both 0.8 and 2.0 are inside the candle; the order is unknown, so assume the worst.
    assert (t.exit_reason, t.exit_px) == ("stop_loss", pytest.approx(0.8))


def test_the_higher_of_stop_loss_and_trailing_stop_applies() -> None:
    path = [C(0, 1.0, 2.0, 1.0, 2.0), C(M, 2.0, 2.0, 1.0, 1.1)]
    t = simulate_policy(Policy(stop_loss=0.5, trailing_stop=0.3), path, M)
    # After candle 0 the peak is 2.0: trailing level 1.4 beats the stop-loss level 0.5.
    assert (t.exit_reason, t.exit_px) == ("trailing_stop", pytest.approx(1.4))


def test_timeout_and_end_of_path() -> None:
    path = [C(0, 1.0, 1.1, 0.9, 1.05), C(M, 1.05, 1.2, 1.0, 1.1), C(2 * M, 1.1, 1.3, 1.0, 1.2)]
    t = simulate_policy(Policy(stop_loss=0.5, max_hold_ms=2 * M), path, M)
    assert (t.exit_reason, t.exit_px, t.exit_ts_ms) == ("timeout", 1.1, 2 * M)
    t = simulate_policy(Policy(stop_loss=0.5, take_profit=10.0), path, M)
    assert (t.exit_reason, t.exit_px, t.exit_ts_ms) == ("end_of_path", 1.2, 3 * M)
    assert t.realized_return_bps == pytest.approx(2_000)


def test_policy_validation_and_ids() -> None:
    with pytest.raises(ValueError, match="stop_loss"):
        Policy(stop_loss=1.5)
    with pytest.raises(ValueError, match="take_profit"):
        Policy(take_profit=0.9)
    assert Policy(0.3, 3.0, 0.25, 1.5).policy_id == "sl30-tp3x-tr25@1.5x"
    grid = default_grid()
    assert len(grid) == 27 and len({p.policy_id for p in grid}) == 27
