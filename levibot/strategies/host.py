"""``RuleHost``: the rule strategies of one scoring actor, fed closed bars per symbol.

It keeps each rule (with its parameters), and per symbol what the rules saw: the symbol's
timeframe (its first bar's), the last bar's time and the ATR of its bars (a rule's signal
carries it, for ATR exits). A bar of another timeframe, one not after the last, or a
malformed one (non-finite or non-positive prices, ``low <= open, close <= high`` violated) is
refused with a reason: it would poison an EMA for good. Pure: no bus, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import Any

from levibot.features.indicators import Atr
from levibot.messages import Bar
from levibot.strategies.base import Decision, RuleParams, RuleStrategy
from levibot.strategies.rules import make_rule

__all__ = ["RuleDecision", "RuleHost"]


@dataclass(frozen=True, slots=True)
class RuleDecision:
    """One rule's decision on a bar, with the bar's figures a signal carries."""

    strategy: str
    decision: Decision
    price: float
    atr: float
    spread_bps: float


class _Track:
    __slots__ = ("atr", "last_atr", "last_ts", "spread_bps", "timeframe")

    def __init__(self, timeframe: str, atr_period: int) -> None:
        self.timeframe = timeframe
        self.last_ts = -1
        self.atr = Atr(atr_period)
        self.last_atr = 0.0
        self.spread_bps = 0.0  # the last Features' spread (bars carry none)


class RuleHost:
    """Every rule strategy, configured; the running ones decide on each accepted bar."""

    def __init__(
        self,
        params: Mapping[str, RuleParams],
        *,
        probability: float = 0.8,
        allow_short: bool = False,
        atr_period: int = 14,
    ) -> None:
        self.probability = probability
        self.allow_short = allow_short
        self.atr_period = atr_period
        self.rules: dict[str, RuleStrategy] = {
            name: self._make(name, p) for name, p in params.items()
        }
        self._tracks: dict[str, _Track] = {}

    def _make(self, name: str, params: RuleParams | Mapping[str, Any]) -> RuleStrategy:
        return make_rule(name, params, probability=self.probability, allow_short=self.allow_short)

    def configure(self, name: str, params: Mapping[str, Any]) -> None:
        """Replace rule ``name`` by a fresh one with ``params`` (``ConfigError`` if bad)."""
        self.rules[name] = self._make(name, params)

    def reset(self, name: str) -> None:
        """Forget rule ``name``'s per-symbol state (a stopped rule starts fresh)."""
        if name in self.rules:
            self.rules[name].reset()

    def note_spread(self, symbol: str, spread_bps: float) -> None:
        """Remember the symbol's last quoted spread (from its feature vector)."""
        track = self._tracks.get(symbol)
        if track is not None:
            track.spread_bps = spread_bps

    def on_bar(self, bar: Bar, running: Container[str]) -> tuple[str, list[RuleDecision]]:
        """Feed ``bar`` to the running rules; return (refusal reason or "", decisions)."""
        track = self._tracks.get(bar.symbol)
        if track is None:
            track = self._tracks[bar.symbol] = _Track(bar.timeframe, self.atr_period)
        h, lo, c = bar.high, bar.low, bar.close
        if bar.timeframe != track.timeframe:
            return "timeframe", []
        if bar.ts_event <= track.last_ts:
            return "out_of_order", []
        if not (0.0 < lo <= c <= h < math.inf and lo <= bar.open <= h):
            return "malformed", []
        track.last_ts = bar.ts_event
        atr = track.atr.update(h, lo, c)
        track.last_atr = atr if atr == atr else 0.0
        out = []
        for name, rule in self.rules.items():  # a fixed order: replays repeat bit for bit
            if name in running:
                d = rule.update(bar.symbol, h, lo, c)
                if d is not None:
                    out.append(RuleDecision(name, d, c, track.last_atr, track.spread_bps))
        return "", out
