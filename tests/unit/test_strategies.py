"""Rule strategies emit on a change of side only; probabilities map to sides by threshold."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
import talib

from levibot.errors import ConfigError
from levibot.messages import SignalSide
from levibot.strategies import (
    Decision,
    EmaCross,
    EmaCrossParams,
    RsiMacd,
    RsiMacdParams,
    RuleStrategy,
    crossed,
    make_rule,
    side_for,
)


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


def walk(n: int = 3000, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))


def emitted(rule: RuleStrategy, closes: np.ndarray, symbol: str = "BTC") -> list[tuple[int, Any]]:
    out = []
    for i, c in enumerate(closes):
        d = rule.update(symbol, float(c), float(c), float(c))
        if d is not None:
            out.append((i, d.side))
    return out


def crossings(diff: np.ndarray, up: Any, down: Any) -> list[tuple[int, Any]]:
    """The reference: every strict change of sign of ``diff``, as a change of side."""
    out: list[tuple[int, Any]] = []
    for i in range(1, len(diff)):
        side = {1: up, -1: down}.get(crossed(diff[i - 1], diff[i]))
        if side is not None and (not out or out[-1][1] != side):
            out.append((i, side))
    return out


@pytest.mark.parametrize(("fast", "slow"), [(12, 26), (10, 30), (3, 7), (50, 200)])
def test_ema_cross_at_any_spans_trades_the_talib_crossings_from_its_own_warmup(
    fast: int, slow: int
) -> None:
    closes = walk()
    rule = EmaCross(EmaCrossParams(fast=fast, slow=slow), probability=0.8)
    diff = talib.EMA(closes, fast) - talib.EMA(closes, slow)
    got = emitted(rule, closes)
    assert got == crossings(diff, SignalSide.LONG, SignalSide.FLAT)
    assert got[0][0] >= rule.warmup - 1 == slow  # no decision before the indicators exist
    assert got[0][0] < 200 or slow >= 200  # ...and none held back for the feature schema


def test_a_rule_emits_only_on_a_change_of_side_per_symbol_with_its_probability() -> None:
    rule = EmaCross(EmaCrossParams(fast=2, slow=3), probability=0.8)
    closes = walk(400)
    got = [rule.update("BTC", c, c, c) for c in closes]
    sides = [d for d in got if d is not None]
    assert len(sides) > 5
    assert all(a.side != b.side for a, b in itertools.pairwise(sides))
    assert sorted({round(d.probability, 12) for d in sides}) == [0.2, 0.8]
    assert rule.update("ETH", 1.0, 1.0, 1.0) is None  # its own state: no history yet


def test_ema_cross_goes_short_on_a_down_cross_when_configured_and_reset_forgets() -> None:
    rule = EmaCross(EmaCrossParams(fast=2, slow=3), allow_short=True)
    sides = {side for _, side in emitted(rule, walk(400))}
    assert sides == {SignalSide.LONG, SignalSide.SHORT}
    rule.reset()
    assert emitted(rule, walk(3)) == []  # warming up again


@pytest.mark.parametrize(("rsi", "fast", "slow", "signal"), [(14, 12, 26, 9), (7, 5, 35, 5)])
def test_rsi_macd_trades_the_talib_histogram_crossings_filtered_by_rsi(
    rsi: int, fast: int, slow: int, signal: int
) -> None:
    closes = walk(4000, seed=9)
    params = RsiMacdParams(rsi=rsi, fast=fast, slow=slow, signal=signal)
    rule = RsiMacd(params)
    hist = talib.MACD(closes, fast, slow, signal)[2]
    level = talib.RSI(closes, rsi)
    want: list[tuple[int, Any]] = []
    for i in range(1, len(closes)):
        cross = crossed(hist[i - 1], hist[i])
        side = None
        if cross == 1 and level[i] < 70:
            side = SignalSide.LONG
        elif cross == -1 and level[i] > 30:
            side = SignalSide.FLAT
        if side is not None and (not want or want[-1][1] != side):
            want.append((i, side))
    got = emitted(rule, closes)
    assert got == want and len(got) > 20
    assert got[0][0] >= rule.warmup - 1


@pytest.mark.parametrize(
    ("name", "params", "path"),
    [
        ("ema_cross", {"fast": 30, "slow": 10}, "$.ema_cross"),
        ("ema_cross", {"fats": 3}, "$.ema_cross"),
        ("ema_cross", {"fast": 0}, "$.ema_cross.fast"),
        ("rsi_macd", {"rsi": "x"}, "$.rsi_macd.rsi"),
        ("rsi_macd", {"oversold": 80, "overbought": 70}, "$.rsi_macd"),
    ],
)
def test_bad_parameters_are_a_clear_config_error(
    name: str, params: dict[str, Any], path: str
) -> None:
    with pytest.raises(ConfigError) as err:
        make_rule(name, params)
    assert err.value.path == path


def test_make_rule_takes_any_spans() -> None:
    rule = make_rule("ema_cross", {"fast": 10, "slow": 30})
    assert isinstance(rule, EmaCross) and rule.params == EmaCrossParams(fast=10, slow=30)
    assert rule.warmup == 31
    assert make_rule("rsi_macd").warmup == 26 + 9
