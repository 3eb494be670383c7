"""The feature actor: closed bars in, one ``Features`` vector per bar out, per symbol.

It keeps one ``FeatureState`` per owned symbol, at one timeframe per symbol: the configured
``timeframe``, or else the first timeframe it sees for that symbol. Rules for bad input, each
counted in ``feature_bars_dropped_total{reason=...}`` and never raised:

- ``rejected``: a bar ``FeatureState`` refuses (non-finite or non-positive prices,
  ``low <= open, close <= high`` violated, negative or non-finite volume); state unchanged;
- ``out_of_order``: a bar whose ``ts_event`` is not after the last accepted bar of its symbol
  (an older bar or a repeat); state unchanged;
- ``timeframe``: a bar of another timeframe than the symbol's; ``not_owned``: another
  replica's symbol;
- ``non_finite``: a vector with a non-finite value after warm-up; nothing is published. The
  kernel's input bounds make this unreachable; the check is a last line of defence.

A rejected bar is logged (``feature.bar_rejected``) the 1st, 2nd, 4th, 8th... time per symbol.

Quotes only feed ``spread_bps``: the last finite, non-negative quoted spread of the symbol (a
crossed or broken quote is ignored and counted), 0.0 until the first good quote.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from msgspec import Meta

from levibot.config import Config
from levibot.features import SCHEMA, FeatureState
from levibot.messages import Bar, Features, Quote
from levibot.runtime.actor import Actor, ActorContext, Policy, Supervision
from levibot.runtime.metrics import Counter

_isfinite = math.isfinite


class FeatureConfig(Config, frozen=True, kw_only=True):
    """The ``[feature]`` section."""

    #: Bars of this timeframe only ("1m", "1h", ...); "" = the first timeframe seen per symbol.
    timeframe: str = ""
    #: Publish only after this many bars of a symbol (at least the schema's warm-up). EMAs
    #: remember their seed for several spans: a longer wait brings live values closer to
    #: those of a model trained on a long history.
    min_bars: Annotated[int, Meta(ge=0)] = 0


class _Symbol:
    """What the actor keeps per symbol."""

    __slots__ = ("last_ts", "spread_bps", "state", "timeframe")

    def __init__(self, timeframe: str) -> None:
        self.state = FeatureState()
        self.timeframe = timeframe  # "" until the first bar binds it
        self.last_ts = -1
        self.spread_bps = 0.0


class FeatureActor(Actor[FeatureConfig]):
    """Compute the feature vector of every owned symbol on each closed bar."""

    name = "feature"
    consumes = (Bar, Quote)
    emits = (Features,)
    config_type = FeatureConfig
    supervision = Supervision(policy=Policy.SKIP)
    partitioned = True

    def __init__(self, ctx: ActorContext, config: FeatureConfig) -> None:
        super().__init__(ctx, config)
        self._symbols: dict[str, _Symbol] = {}
        self._hash = SCHEMA.hash
        self._min_bars = max(config.min_bars, SCHEMA.warmup)
        metrics = ctx.metrics
        self._bars = metrics.counter("feature_bars_total", "Bars folded into feature state")
        self._vectors = metrics.counter("feature_vectors_total", "Features messages published")
        self._dropped: dict[str, Counter] = {
            reason: metrics.counter(
                "feature_bars_dropped_total", "Bars not folded in, by reason", reason=reason
            )
            for reason in ("rejected", "out_of_order", "timeframe", "not_owned", "non_finite")
        }
        self._bad_quotes = metrics.counter(
            "feature_quotes_ignored_total", "Quotes with a crossed or non-finite spread"
        )

    def state(self, symbol: str) -> FeatureState | None:
        """Return the feature state of ``symbol``, None if no bar of it was seen."""
        entry = self._symbols.get(symbol)
        return entry.state if entry is not None else None

    def health(self) -> dict[str, Any]:
        """Return the schema this actor computes and how many symbols are warm."""
        warm = sum(1 for e in self._symbols.values() if e.state.bars >= self._min_bars)
        return {"schema_hash": self._hash, "symbols": len(self._symbols), "warm": warm}

    def dropped(self, reason: str) -> int:
        """Return how many bars were dropped for ``reason`` (see the module docstring)."""
        return int(self._dropped[reason].value)

    async def handle(self, msg: Bar | Quote) -> None:
        if isinstance(msg, Bar):
            await self._on_bar(msg)
        elif isinstance(msg, Quote):
            self._on_quote(msg)

    def _entry(self, symbol: str) -> _Symbol | None:
        entry = self._symbols.get(symbol)
        if entry is None:
            if not self.ctx.owns(symbol):
                return None
            entry = self._symbols[symbol] = _Symbol(self.config.timeframe)
            self.ctx.log.info("feature.symbol_added", symbol=symbol, schema_hash=self._hash)
        return entry

    async def _on_bar(self, bar: Bar) -> None:
        if self.config.timeframe and bar.timeframe != self.config.timeframe:
            self._dropped["timeframe"].inc()
            return
        entry = self._entry(bar.symbol)
        if entry is None:
            self._dropped["not_owned"].inc()
            return
        if not entry.timeframe:
            entry.timeframe = bar.timeframe  # the first bar's timeframe is the symbol's
        elif bar.timeframe != entry.timeframe:
            self._dropped["timeframe"].inc()
            return
        if bar.ts_event <= entry.last_ts:
            self._dropped["out_of_order"].inc()
            return
        state = entry.state
        before = state.rejected
        values = state.update(bar.open, bar.high, bar.low, bar.close, bar.volume)
        if state.rejected != before:
            self._dropped["rejected"].inc()
            count = state.rejected
            if count & (count - 1) == 0:  # the 1st, 2nd, 4th, 8th...: a garbage feed cannot flood
                self.ctx.log.warning(
                    "feature.bar_rejected", symbol=bar.symbol, ts_event=bar.ts_event, rejected=count
                )
            return
        entry.last_ts = bar.ts_event
        self._bars.inc()
        if state.bars < self._min_bars:
            return
        if not _isfinite(sum(values)):
            self._dropped["non_finite"].inc()
            return
        await self.ctx.publish(
            Features(
                symbol=bar.symbol,
                schema_hash=self._hash,
                values=values,
                price=bar.close,
                timeframe=entry.timeframe,
                spread_bps=entry.spread_bps,
                ts_event=bar.ts_event,
                ts_init=self.ctx.clock.now_ns(),
                ts_ingress=bar.ts_ingress,
            )
        )
        self._vectors.inc()

    def _on_quote(self, quote: Quote) -> None:
        spread = quote.spread_bps
        if not (0.0 <= spread < math.inf):
            self._bad_quotes.inc()
            return
        # Quotes may come before the first bar: the entry keeps the spread for it.
        entry = self._entry(quote.symbol)
        if entry is not None:
            entry.spread_bps = spread
