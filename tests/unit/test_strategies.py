"""Rule strategies emit on a change of side only; probabilities map to sides by threshold."""

from __future__ import annotations

import math

import pytest

from levibot.messages import SignalSide
from levibot.strategies import Decision, EmaCross, RsiMacd, crossed, side_for


@pytest.mark.parametrize(
    "prev,cur,want",
    [
        (None, 1.0, 0),
        (-1.0, 1.0, 1),
        (1.0, -1.0, -1),
        (0.0, 1.0, 0),
        (-1.0, 0.0, 0),
        (1.0, 2.0, 0),
        (math.nan, 1.0, 0),
        (-1.0, math.nan, 0),
    ],
)
def test_a_crossing_is_a_strict_change_of_sign(prev: float | None, cur: float, want: int) -> None:
    assert crossed(prev, cur) == want


def test_side_for_uses_both_thresholds() -> None:
    assert side_for(0.55, 0.55, 0.45, False) is SignalSide.LONG
    assert side_for(0.5, 0.55, 0.45, True) is SignalSide.FLAT
    assert side_for(0.45, 0.55, 0.45, True) is SignalSide.SHORT
    assert side_for(0.1, 0.55, 0.45, False) is SignalSide.FLAT
    assert Decision(SignalSide.LONG, 0.8).confidence == pytest.approx(0.6)


def _ema(fast: float, slow: float) -> tuple[float, ...]:
    return (fast, slow)


def test_ema_cross_emits_only_on_crossings_per_symbol() -> None:
    s = EmaCross(0, 1, probability=0.8)
    diffs = [-2, -1, 1, 2, 3, -1, -2, 1]
    out = [s.update("BTC", _ema(d, 0.0)) for d in diffs]
    sides = [(i, d.side) for i, d in enumerate(out) if d is not None]
    assert sides == [(2, SignalSide.LONG), (5, SignalSide.FLAT), (7, SignalSide.LONG)]
    assert out[2] is not None and out[2].probability == 0.8
    assert out[5] is not None and out[5].probability == pytest.approx(0.2)
    assert s.update("ETH", _ema(1.0, 0.0)) is None  # its own state: no history yet


def test_ema_cross_goes_short_on_a_down_cross_when_configured() -> None:
    s = EmaCross(0, 1, allow_short=True)
    s.update("BTC", _ema(1.0, 0.0))
    d = s.update("BTC", _ema(-1.0, 0.0))
    assert d is not None and d.side is SignalSide.SHORT
    s.reset()
    assert s.update("BTC", _ema(1.0, 0.0)) is None


def test_rsi_macd_needs_a_histogram_cross_and_a_non_extreme_rsi() -> None:
    s = RsiMacd(0, 1, overbought=70, oversold=30)
    assert s.update("X", (50.0, -1.0)) is None
    assert s.update("X", (75.0, 1.0)) is None  # crossed up but overbought
    first = s.update("X", (50.0, -1.0))  # crossed down: the strategy's first view
    assert first is not None and first.side is SignalSide.FLAT
    d = s.update("X", (60.0, 1.0))
    assert d is not None and d.side is SignalSide.LONG
    assert s.update("X", (20.0, -1.0)) is None  # crossed down while oversold
    assert s.update("X", (40.0, 1.0)) is None  # crossed up again: already long, no change
    d = s.update("X", (40.0, -1.0))
    assert d is not None and d.side is SignalSide.FLAT
