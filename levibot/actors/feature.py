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

Warm start: the first live bar of a symbol first folds in up to ``warm_bars`` earlier bars of
it (``levibot.marketdata.history``): the bars the store persisted in PostgreSQL, else the
exchange's REST klines; so after a restart that bar already yields features. Never in replay
(a backtest reads only its data). A failed fetch is logged and counted, and the symbol starts
cold. ``warm_bars`` bounds the start-up work; the EMAs' seed still weighs
``(1 - 2/201)^n`` after ``n`` bars (about 2e-9 for ema_200 after 2,000), so a warm state
equals one that saw the whole history to about that.
"""

from __future__ import annotations

import math
import time
from typing import Annotated, Any, Literal

from msgspec import Meta

from levibot.config import Config
from levibot.features import SCHEMA, FeatureState
from levibot.marketdata.history import (
    BarHistory,
    BinanceKlines,
    FallbackHistory,
    HistoryError,
    PgBarHistory,
)
from levibot.messages import Bar, Features, Quote
from levibot.metrics import Counter
from levibot.runtime.actor import Actor, ActorContext, Policy, Supervision

_isfinite = math.isfinite


class FeatureConfig(Config, frozen=True, kw_only=True):
    """The ``[feature]`` section."""

    #: Bars of this timeframe only ("1m", "1h", ...); "" = the first timeframe seen per symbol.
    timeframe: str = ""
    #: Publish only after this many bars of a symbol (at least the schema's warm-up). EMAs
    #: remember their seed for several spans: a longer wait brings live values closer to
    #: those of a model trained on a long history.
    min_bars: Annotated[int, Meta(ge=0)] = 0
    #: Where a symbol's first live bar gets its past: auto (PostgreSQL when [storage]
    #: postgres_dsn is set, then Binance when binance_rest_url is), or one of them, or off.
    warm_start: Literal["auto", "postgres", "binance", "off"] = "auto"
    warm_bars: Annotated[int, Meta(ge=1, le=100_000)] = 2_000
    #: Binance spot REST base (https://api.binance.com); "" = not used.
    binance_rest_url: str = ""


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
        self._warm_bars = metrics.counter("feature_warm_bars_total", "Past bars folded in")
        self._warm_failed = metrics.counter(
            "feature_warm_failures_total", "Symbols that started cold: their past was unreadable"
        )
        self._history: FallbackHistory | None = None
        self._last: tuple[_Symbol, Bar] | None = None  # the last accepted bar (``warm``)

    async def on_start(self) -> None:
        """Choose where past bars come from (see the module docstring)."""
        self._history = self._choose_history()

    def _choose_history(self) -> FallbackHistory | None:
        cfg, storage = self.config, self.ctx.storage
        if cfg.warm_start == "off" or self.ctx.clock.is_replay:
            return None
        dsn = storage.postgres_dsn if storage is not None else ""
        sources: list[BarHistory] = []
        if cfg.warm_start in ("auto", "postgres") and dsn:
            sources.append(PgBarHistory(dsn))
        if cfg.warm_start in ("auto", "binance") and cfg.binance_rest_url:
            sources.append(BinanceKlines(cfg.binance_rest_url))
        if not sources and cfg.warm_start != "auto":
            self.ctx.log.warning("feature.warm_start_unconfigured", warm_start=cfg.warm_start)
        return FallbackHistory(sources) if sources else None

    async def on_stop(self) -> None:
        if self._history is not None:
            await self._history.close()

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

    async def _warm(self, entry: _Symbol, first: Bar) -> None:
        """Fold the bars before ``first`` into the symbol's state, publishing nothing."""
        assert self._history is not None
        started = time.perf_counter()
        try:
            past = await self._history.recent(
                first.symbol, first.venue, first.timeframe, first.start, self.config.warm_bars
            )
        except HistoryError as exc:
            self._warm_failed.inc()
            self.ctx.log.warning("feature.warm_failed", symbol=first.symbol, error=str(exc))
            return
        state, folded = entry.state, 0
        for b in past:
            if b.ts_event <= entry.last_ts or b.ts_event > first.start:
                continue
            before = state.rejected
            state.update(b.open, b.high, b.low, b.close, b.volume)
            if state.rejected == before:
                entry.last_ts, folded = b.ts_event, folded + 1
        self._warm_bars.inc(folded)
        source = self._history.used
        self.ctx.log.info(
            "feature.warmed", symbol=first.symbol, bars=folded, source=source,
            seconds=round(time.perf_counter() - started, 4), ready=state.ready,
        )  # fmt: skip

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
            if self._history is not None and entry.state.bars == 0:
                await self._warm(entry, bar)
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
        self._last = (entry, bar)
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

    def warm(self) -> None:
        """Fold the last accepted bar into a copy of its symbol's state (idle spin): the
        state, the vectors and the counters stay as they were."""
        if self._last is not None:
            entry, bar = self._last
            entry.state.copy().update(bar.open, bar.high, bar.low, bar.close, bar.volume)

    def _on_quote(self, quote: Quote) -> None:
        spread = quote.spread_bps
        if not (0.0 <= spread < math.inf):
            self._bad_quotes.inc()
            return
        # Quotes may come before the first bar: the entry keeps the spread for it.
        entry = self._entry(quote.symbol)
        if entry is not None:
            entry.spread_bps = spread
