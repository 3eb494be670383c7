"""Market-data building blocks shared by the feed and its tools: timeframes and tick→bar bars."""

from __future__ import annotations

from levibot.marketdata.bars import BarAggregator, BarBuilder
from levibot.marketdata.timeframe import bucket_start, format_timeframe, parse_timeframe

__all__ = [
    "BarAggregator",
    "BarBuilder",
    "bucket_start",
    "format_timeframe",
    "parse_timeframe",
]
