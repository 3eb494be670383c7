"""The one valuation: equity, exposure and drawdown mean the same everywhere."""

from __future__ import annotations

import pytest

from levibot import valuation
from levibot.messages import RiskStatus, TradingState
from sidecars.telegram.readmodel import ReadModel


def test_equity_and_exposure_of_a_long_and_a_short_book() -> None:
    book = [valuation.Marked(2.0, 100.0), valuation.Marked(-1.0, 50.0)]
    assert valuation.equity(1_000.0, book) == 1_150.0
    assert valuation.gross_exposure(book) == 250.0
    assert valuation.net_exposure(book) == 150.0


def test_a_position_without_a_last_price_is_marked_at_its_entry() -> None:
    assert valuation.mark(0.0, 42.0) == 42.0 and valuation.mark(43.0, 42.0) == 43.0


@pytest.mark.parametrize(
    ("peak", "now", "expected"),
    [(100.0, 90.0, 0.1), (100.0, 120.0, 0.0), (0.0, -5.0, 0.0), (-10.0, -20.0, 0.0)],
)
def test_drawdown_is_a_fall_from_a_positive_peak(peak: float, now: float, expected: float) -> None:
    assert valuation.drawdown(peak, now) == pytest.approx(expected)


def test_max_drawdown_follows_the_running_peak() -> None:
    assert valuation.max_drawdown([100, 120, 90, 130, 117]) == pytest.approx(0.25)
    assert valuation.max_drawdown([]) == 0.0


def test_the_bot_reports_the_risk_engines_drawdown_once_it_has_spoken() -> None:
    rm = ReadModel()
    assert rm.drawdown == 0.0  # nothing heard yet
    status = RiskStatus(
        ts_event=1,
        ts_init=1,
        kill_switch=False,
        trading_state=TradingState.ACTIVE,
        policy="normal",
        equity=9_000.0,
        peak_equity=12_000.0,
        drawdown=0.25,
        day_trades=0,
        day_realized_pnl=0.0,
    )
    rm.apply(status)
    assert rm.drawdown == 0.25 and rm.peak == 12_000.0
