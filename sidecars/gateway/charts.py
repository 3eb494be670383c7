"""What the Mini App's charts draw: recent bars per symbol, fills and the equity curve.

Built from bus messages like the other read models (``ReadModels.charts``); every container is
bounded and every update O(1). ``GET /charts`` answers with a ``ChartView``: the candles of one
symbol and timeframe, that symbol's signals and fills to mark on them, and the equity history.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

import msgspec

from levibot.messages import Bar, Fill, PortfolioSnapshot, Signal


class EquityPoint(msgspec.Struct, frozen=True):
    """The portfolio's equity at ``ts`` (a snapshot's ``ts_event``, ns since the epoch)."""

    ts: int
    equity: float


class ChartView(msgspec.Struct, frozen=True, kw_only=True):
    """One symbol's candles, the signals and fills on them, and the equity curve.

    Bars are oldest first; ``start`` and ``ts_event`` (the close) are nanoseconds since the
    epoch. ``equity`` holds one point per portfolio snapshot, oldest first.
    """

    symbol: str | None  # None: no bar seen yet
    timeframe: str | None
    symbols: list[str]  # every symbol with bars, for the chart's picker
    bars: list[dict[str, Any]]
    signals: list[dict[str, Any]]
    fills: list[dict[str, Any]]
    equity: list[EquityPoint]


class ChartHistory:
    """Bounded history for charts: the last ``max_bars`` bars per (symbol, timeframe), the last
    ``max_fills`` fills and the last ``max_equity`` equity points."""

    def __init__(
        self, *, max_bars: int = 500, max_fills: int = 500, max_equity: int = 5000
    ) -> None:
        self.max_bars = max_bars
        self.bars: dict[tuple[str, str], deque[Bar]] = {}
        self.latest: dict[str, Bar] = {}  # per symbol, across timeframes: the default timeframe
        self.fills: deque[Fill] = deque(maxlen=max_fills)
        self.equity: deque[EquityPoint] = deque(maxlen=max_equity)

    def bar(self, bar: Bar) -> None:
        """Record a bar; a bar with the same start as the last one replaces it (a correction)."""
        ring = self.bars.get((bar.symbol, bar.timeframe))
        if ring is None:
            ring = self.bars[(bar.symbol, bar.timeframe)] = deque(maxlen=self.max_bars)
        if ring and ring[-1].start == bar.start:
            ring[-1] = bar
        elif ring and bar.start < ring[-1].start:
            return  # late or replayed out of order: the chart's time axis only goes forward
        else:
            ring.append(bar)
        self.latest[bar.symbol] = bar

    def fill(self, fill: Fill) -> None:
        """Record a fill."""
        self.fills.append(fill)

    def portfolio(self, snap: PortfolioSnapshot) -> None:
        """Record an equity point; a snapshot at the same instant replaces the last point."""
        point = EquityPoint(snap.ts_event, snap.equity)
        if self.equity and self.equity[-1].ts == snap.ts_event:
            self.equity[-1] = point
        elif not self.equity or snap.ts_event > self.equity[-1].ts:
            self.equity.append(point)

    def view(
        self,
        symbol: str | None,
        signals: Iterable[Signal],
        *,
        timeframe: str | None = None,
        limit: int = 300,
    ) -> ChartView:
        """Return the chart of ``symbol`` (None: the one with the latest bar) at ``timeframe``
        (None: that of its latest bar), with its last ``limit`` bars and what happened on them."""
        if symbol is None and self.latest:
            symbol = max(self.latest.values(), key=lambda b: b.ts_event).symbol
        last = self.latest.get(symbol) if symbol is not None else None
        if timeframe is None and last is not None:
            timeframe = last.timeframe
        bars = list(self.bars.get((symbol or "", timeframe or ""), ()))[-limit:] if limit else []
        since = bars[0].start if bars else 0  # what happened at its close belongs to the bar before
        return ChartView(
            symbol=symbol,
            timeframe=timeframe,
            symbols=sorted(self.latest),
            bars=[msgspec.to_builtins(b) for b in bars],
            signals=[
                msgspec.to_builtins(s) for s in signals if s.symbol == symbol and s.ts_event > since
            ],
            fills=[
                msgspec.to_builtins(f)
                for f in self.fills
                if f.symbol == symbol and f.ts_event > since
            ],
            equity=list(self.equity),
        )
