"""Rule strategies: EMA crossover and RSI + MACD, each with its own parameters."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from msgspec import Meta

from levibot.config import convert
from levibot.errors import ConfigError
from levibot.features.indicators import Ema, Macd, Rsi
from levibot.messages import SignalSide
from levibot.strategies.base import RuleParams, RuleStrategy

Period = Annotated[int, Meta(ge=1, le=10_000)]
Level = Annotated[float, Meta(ge=0, le=100)]


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


class EmaCrossParams(RuleParams, frozen=True, kw_only=True):
    """``ema_cross``: the spans of the fast and the slow EMA of the close."""

    fast: Period = 12
    slow: Period = 26

    def __post_init__(self) -> None:
        if self.fast >= self.slow:
            raise ValueError(f"fast span {self.fast} must be below the slow span {self.slow}")


@dataclass(slots=True)
class _Cross:
    fast: Ema
    slow: Ema
    prev: float | None = None


class EmaCross(RuleStrategy):
    """Long when the fast EMA crosses above the slow one; flat (or short) when it crosses below.

    The difference is defined from bar ``slow - 1``; the first crossing can be seen at bar
    ``slow``, so the rule warms up for ``slow + 1`` bars.
    """

    name = "ema_cross"
    params_type = EmaCrossParams
    params: EmaCrossParams

    @property
    def warmup(self) -> int:
        return self.params.slow + 1

    def _indicators(self) -> _Cross:
        return _Cross(Ema(self.params.fast), Ema(self.params.slow))

    def _decide(self, state: _Cross, high: float, low: float, close: float) -> SignalSide | None:
        diff = state.fast.update(close) - state.slow.update(close)
        prev, state.prev = state.prev, diff
        match crossed(prev, diff):
            case 1:
                return SignalSide.LONG
            case -1:
                return self._down()
        return None


class RsiMacdParams(RuleParams, frozen=True, kw_only=True):
    """``rsi_macd``: the RSI period and levels, and the MACD periods."""

    rsi: Period = 14
    fast: Period = 12
    slow: Period = 26
    signal: Period = 9
    overbought: Level = 70.0
    oversold: Level = 30.0

    def __post_init__(self) -> None:
        if self.fast >= self.slow:
            raise ValueError(f"MACD fast period {self.fast} must be below slow {self.slow}")
        if self.oversold >= self.overbought:
            raise ValueError(f"oversold {self.oversold} must be below overbought {self.overbought}")


@dataclass(slots=True)
class _RsiMacd:
    rsi: Rsi
    macd: Macd
    prev: float | None = None


class RsiMacd(RuleStrategy):
    """Long when the MACD histogram crosses above zero while RSI is not overbought; flat (or
    short) when it crosses below zero while RSI is not oversold.

    The histogram is defined from bar ``slow + signal - 2``, the RSI from bar ``rsi``; the
    first crossing needs one more bar.
    """

    name = "rsi_macd"
    params_type = RsiMacdParams
    params: RsiMacdParams

    @property
    def warmup(self) -> int:
        p = self.params
        return max(p.slow + p.signal, p.rsi + 1)

    def _indicators(self) -> _RsiMacd:
        p = self.params
        return _RsiMacd(Rsi(p.rsi), Macd(p.fast, p.slow, p.signal))

    def _decide(self, state: _RsiMacd, high: float, low: float, close: float) -> SignalSide | None:
        rsi = state.rsi.update(close)
        hist = state.macd.update(close)[2]
        prev, state.prev = state.prev, hist
        cross = crossed(prev, hist)
        if math.isnan(rsi):
            return None
        if cross == 1 and rsi < self.params.overbought:
            return SignalSide.LONG
        if cross == -1 and rsi > self.params.oversold:
            return self._down()
        return None


#: The rule strategies by name.
RULES: dict[str, type[RuleStrategy]] = {EmaCross.name: EmaCross, RsiMacd.name: RsiMacd}


def rule_params(name: str, raw: Mapping[str, Any] | RuleParams | None = None) -> RuleParams:
    """Return the validated parameters of rule ``name``; a bad one is a ``ConfigError``."""
    try:
        kind = RULES[name]
    except KeyError:
        raise ConfigError(f"unknown rule strategy {name!r}; one of {sorted(RULES)}") from None
    if isinstance(raw, RuleParams):
        return raw
    return convert(dict(raw or {}), kind.params_type, prefix=f"$.{name}")


def make_rule(
    name: str,
    params: Mapping[str, Any] | RuleParams | None = None,
    *,
    probability: float = 0.8,
    allow_short: bool = False,
) -> RuleStrategy:
    """Build rule ``name`` with ``params`` (validated: a bad one is a ``ConfigError``)."""
    return RULES[name](rule_params(name, params), probability=probability, allow_short=allow_short)
