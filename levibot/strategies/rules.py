"""Rule strategies: EMA crossover and RSI + MACD."""

from __future__ import annotations

import math
from collections.abc import Sequence

from levibot.messages import SignalSide
from levibot.strategies.base import RuleStrategy


def crossed(prev: float | None, cur: float) -> int:
    """Return +1 for an up-cross, −1 for a down-cross, 0 otherwise.

    A crossing is a strict change of sign between two consecutive bars: ``prev < 0 < cur`` or
    ``prev > 0 > cur``. Touching zero is not a crossing.
    """
    if prev is None or math.isnan(prev) or math.isnan(cur):
        return 0
    if prev < 0.0 < cur:
        return 1
    if prev > 0.0 > cur:
        return -1
    return 0


class EmaCross(RuleStrategy):
    """Long when the fast EMA crosses above the slow one; flat (or short) when it crosses below."""

    name = "ema_cross"

    def __init__(self, fast: int, slow: int, **kwargs: float | bool) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.fast, self.slow = fast, slow
        self._prev: dict[str, float] = {}

    def _decide(self, symbol: str, values: Sequence[float]) -> SignalSide | None:
        diff = values[self.fast] - values[self.slow]
        prev = self._prev.get(symbol)
        self._prev[symbol] = diff
        match crossed(prev, diff):
            case 1:
                return SignalSide.LONG
            case -1:
                return self._down()
        return None

    def reset(self) -> None:
        super().reset()
        self._prev.clear()


class RsiMacd(RuleStrategy):
    """Long when the MACD histogram crosses above zero while RSI is not overbought; flat (or
    short) when it crosses below zero while RSI is not oversold."""

    name = "rsi_macd"

    def __init__(
        self,
        rsi: int,
        macd_hist: int,
        *,
        overbought: float = 70.0,
        oversold: float = 30.0,
        **kwargs: float | bool,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.rsi, self.hist = rsi, macd_hist
        self.overbought, self.oversold = overbought, oversold
        self._prev: dict[str, float] = {}

    def _decide(self, symbol: str, values: Sequence[float]) -> SignalSide | None:
        hist, rsi = values[self.hist], values[self.rsi]
        prev = self._prev.get(symbol)
        self._prev[symbol] = hist
        cross = crossed(prev, hist)
        if cross == 1 and rsi < self.overbought:
            return SignalSide.LONG
        if cross == -1 and rsi > self.oversold:
            return self._down()
        return None

    def reset(self) -> None:
        super().reset()
        self._prev.clear()
