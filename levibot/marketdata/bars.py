"""Bars from ticks: OHLCV over epoch-aligned buckets, emitted when the bucket is over.

Semantics, one ``BarBuilder`` per (symbol, timeframe):

- A tick belongs to the bucket ``[start, start + interval)`` with ``start = ts - ts % interval``
  (PostgreSQL ``date_bin(interval, ts, '1970-01-01')``).
- open is the first tick of the bucket in arrival order, close the last, high the max, low the
  min, volume the sum of sizes, ``trades`` the number of ticks.
- The bar is emitted when the first tick of a *later* bucket arrives, on ``flush()``, or (live,
  a quiet market) by ``close_due(now)`` once the clock is a grace period past its end. Its
  ``ts_event`` is the bucket end, ``start`` the bucket start, and ``ts_ingress`` that of the tick
  that closed it (the message that caused the bar), so latency stamping stays honest.
- Buckets without ticks produce no bar: gaps stay gaps, nothing is invented.
- A tick older than the current bucket (``ts < start``) cannot be added without rewriting an
  emitted bar: it is dropped and counted in ``late``. Ticks out of order *within* the current
  bucket are kept (they still count towards high/low/volume, and open/close follow arrival order).
- A tick with a non-finite or non-positive price, or a non-finite or negative size, is dropped
  and counted in ``rejected``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from levibot.marketdata.timeframe import format_timeframe, parse_timeframe
from levibot.messages import Bar, Tick


class BarBuilder:
    """Aggregate one symbol's ticks into bars of one timeframe."""

    __slots__ = (
        "_close",
        "_emitted",
        "_end",
        "_high",
        "_ingress",
        "_low",
        "_open",
        "_start",
        "_trades",
        "_volume",
        "interval_ns",
        "late",
        "rejected",
        "symbol",
        "timeframe",
        "venue",
    )

    def __init__(self, symbol: str, venue: str, timeframe: str | int) -> None:
        if isinstance(timeframe, int):
            self.interval_ns = timeframe
            self.timeframe = format_timeframe(timeframe)
        else:
            self.interval_ns = parse_timeframe(timeframe)
            self.timeframe = timeframe
        self.symbol = symbol
        self.venue = venue
        self.late = 0
        self.rejected = 0
        self._emitted = False
        self._start = 0
        self._end = 0
        self._open = self._high = self._low = self._close = 0.0
        self._volume = 0.0
        self._trades = 0
        self._ingress = 0

    @property
    def has_open_bar(self) -> bool:
        """True while a bucket has ticks that were not yet emitted."""
        return self._trades > 0

    def add(
        self, ts_ns: int, price: float, size: float, ts_ingress: int, now_ns: int
    ) -> Bar | None:
        """Add one trade; return the finished bar when this trade opens a later bucket."""
        if not (math.isfinite(price) and price > 0.0 and math.isfinite(size) and size >= 0.0):
            self.rejected += 1
            return None
        done: Bar | None = None
        if self._trades:
            if ts_ns < self._end:
                if ts_ns < self._start:
                    self.late += 1
                    return None
                # Same bucket: the hot path.
                if price > self._high:
                    self._high = price
                elif price < self._low:
                    self._low = price
                self._close = price
                self._volume += size
                self._trades += 1
                self._ingress = ts_ingress
                return None
            done = self._emit(ts_ingress, now_ns)
        elif self._emitted and ts_ns < self._end:
            self.late += 1  # its bucket was already flushed
            return None
        start = ts_ns - ts_ns % self.interval_ns
        self._start = start
        self._end = start + self.interval_ns
        self._open = self._high = self._low = self._close = price
        self._volume = size
        self._trades = 1
        self._ingress = ts_ingress
        return done

    def add_tick(self, tick: Tick, now_ns: int) -> Bar | None:
        """Add a ``Tick``; return the finished bar when it opens a later bucket."""
        return self.add(tick.ts_event, tick.price, tick.size, tick.ts_ingress, now_ns)

    def close_due(self, now_ns: int, grace_ns: int = 0) -> Bar | None:
        """Emit the open bar once ``now_ns`` is ``grace_ns`` past its end (a quiet market).

        Live only: without it a symbol that stops trading would hold its last bar back until
        its next trade. A trade of that bucket arriving later is then counted as late.
        """
        if self._trades and now_ns >= self._end + grace_ns:
            return self.flush(now_ns)
        return None

    def flush(self, now_ns: int) -> Bar | None:
        """Emit the bar of the open bucket, if any (end of data, shutdown)."""
        if not self._trades:
            return None
        bar = self._emit(self._ingress, now_ns)
        self._trades = 0
        return bar

    def _emit(self, ts_ingress: int, now_ns: int) -> Bar:
        self._emitted = True
        return Bar(
            ts_event=self._end,
            ts_init=now_ns,
            ts_ingress=ts_ingress,
            symbol=self.symbol,
            venue=self.venue,
            timeframe=self.timeframe,
            start=self._start,
            open=self._open,
            high=self._high,
            low=self._low,
            close=self._close,
            volume=self._volume,
            trades=self._trades,
        )


class BarAggregator:
    """Aggregate ticks of many symbols into bars of several timeframes (one builder each)."""

    def __init__(self, timeframes: Iterable[str]) -> None:
        self.timeframes = tuple(timeframes)
        for tf in self.timeframes:
            parse_timeframe(tf)  # fail at construction, not on the first tick
        self._builders: dict[tuple[str, str], list[BarBuilder]] = {}

    def _for(self, symbol: str, venue: str) -> list[BarBuilder]:
        builders = self._builders.get((symbol, venue))
        if builders is None:
            builders = [BarBuilder(symbol, venue, tf) for tf in self.timeframes]
            self._builders[(symbol, venue)] = builders
        return builders

    def on_tick(self, tick: Tick, now_ns: int) -> list[Bar]:
        """Add ``tick`` to every timeframe of its symbol; return the bars it finished."""
        out: list[Bar] = []
        for builder in self._for(tick.symbol, tick.venue):
            bar = builder.add(tick.ts_event, tick.price, tick.size, tick.ts_ingress, now_ns)
            if bar is not None:
                out.append(bar)
        return out

    def close_due(self, now_ns: int, grace_ns: int = 0) -> list[Bar]:
        """Emit every open bar whose bucket ended ``grace_ns`` or more before ``now_ns``."""
        out: list[Bar] = []
        for builders in self._builders.values():
            for builder in builders:
                bar = builder.close_due(now_ns, grace_ns)
                if bar is not None:
                    out.append(bar)
        return out

    def flush(self, now_ns: int) -> list[Bar]:
        """Emit every open bar (end of data)."""
        out: list[Bar] = []
        for builders in self._builders.values():
            for builder in builders:
                bar = builder.flush(now_ns)
                if bar is not None:
                    out.append(bar)
        return out

    @property
    def late(self) -> int:
        """Return how many ticks were dropped for arriving after their bucket was emitted."""
        return sum(b.late for bs in self._builders.values() for b in bs)

    @property
    def rejected(self) -> int:
        """Return how many ticks were dropped for a bad price or size."""
        return sum(b.rejected for bs in self._builders.values() for b in bs)
