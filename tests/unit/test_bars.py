"""Tick → bar aggregation: OHLCV semantics, epoch alignment, gaps, late ticks, flush."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from levibot.marketdata.bars import BarAggregator, BarBuilder
from levibot.marketdata.timeframe import (
    TimeframeError,
    bucket_start,
    format_timeframe,
    parse_timeframe,
)
from levibot.messages import Bar, Tick

S = 1_000_000_000
T0 = 1_700_000_000 * S  # a multiple of 5 s and of 1 min (1_700_000_000 = 28_333_333 min + 20 s)


def tick(
    ts: int, price: float, size: float = 1.0, symbol: str = "BTCUSDT", ingress: int = 0
) -> Tick:
    return Tick(
        ts_event=ts, ts_init=ts, ts_ingress=ingress or ts, symbol=symbol, venue="TEST",
        price=price, size=size,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "ns"),
    [("1s", S), ("5s", 5 * S), ("1m", 60 * S), ("15m", 900 * S), ("1h", 3600 * S),
     ("1d", 86_400 * S), ("1w", 604_800 * S), ("250ms", 250_000_000)],
)  # fmt: skip
def test_parse_timeframe_reads_every_unit_and_formats_back(text: str, ns: int) -> None:
    assert parse_timeframe(text) == ns
    assert parse_timeframe(format_timeframe(ns)) == ns


@pytest.mark.parametrize("bad", ["", "1", "0s", "-1m", "1y", "m1", "1.5m"])
def test_parse_timeframe_rejects_garbage_with_a_clear_error(bad: str) -> None:
    with pytest.raises(TimeframeError, match="invalid timeframe"):
        parse_timeframe(bad)


def test_bucket_start_is_aligned_to_the_epoch_like_date_bin() -> None:
    assert bucket_start(T0 + 7 * S + 123, 5 * S) == T0 + 5 * S
    assert bucket_start(T0 + 5 * S, 5 * S) == T0 + 5 * S  # a boundary opens its own bucket
    assert bucket_start(-1, 60 * S) == -60 * S  # before 1970: floor, not truncation


def test_bar_has_ohlcv_of_its_bucket_and_is_emitted_by_the_next_bucket_tick() -> None:
    b = BarBuilder("BTCUSDT", "TEST", "5s")
    assert b.add_tick(tick(T0 + 1 * S, 100.0, 1.0), T0) is None
    assert b.add_tick(tick(T0 + 2 * S, 105.0, 2.0), T0) is None
    assert b.add_tick(tick(T0 + 3 * S, 95.0, 0.5), T0) is None
    assert b.add_tick(tick(T0 + 4 * S + 999, 101.0, 0.25), T0) is None
    closing = tick(T0 + 5 * S, 102.0, 1.0, ingress=42)
    bar = b.add_tick(closing, now_ns=T0 + 5 * S)
    assert bar == Bar(
        ts_event=T0 + 5 * S, ts_init=T0 + 5 * S, ts_ingress=42, symbol="BTCUSDT", venue="TEST",
        timeframe="5s", start=T0, open=100.0, high=105.0, low=95.0, close=101.0, volume=3.75,
        trades=4,
    )  # fmt: skip
    flushed = b.flush(now_ns=T0 + 6 * S)
    assert flushed is not None
    assert (flushed.start, flushed.open, flushed.close, flushed.trades) == (
        T0 + 5 * S,
        102.0,
        102.0,
        1,
    )
    assert b.flush(now_ns=T0 + 6 * S) is None  # nothing open any more


def test_empty_buckets_produce_no_bar_so_gaps_stay_gaps() -> None:
    b = BarBuilder("X", "TEST", "1s")
    bars = [b.add(T0 + s * S, 10.0 + s, 1.0, 0, 0) for s in (0, 1, 5, 6)]
    bars.append(b.flush(0))
    starts = [bar.start for bar in bars if bar is not None]
    assert starts == [T0, T0 + S, T0 + 5 * S, T0 + 6 * S]


def test_late_tick_older_than_the_open_bucket_is_dropped_and_counted() -> None:
    b = BarBuilder("X", "TEST", "1m")
    b.add(T0 + 60 * S, 10.0, 1.0, 0, 0)
    assert b.add(T0 + 30 * S, 99.0, 5.0, 0, 0) is None  # belongs to an emitted/older bucket
    assert b.late == 1
    bar = b.flush(0)
    assert bar is not None and (bar.high, bar.volume, bar.trades) == (10.0, 1.0, 1)
    b.add(T0 + 90 * S, 11.0, 1.0, 0, 0)  # after a flush: its bucket is gone too
    assert b.late == 2


def test_out_of_order_tick_inside_the_open_bucket_is_kept() -> None:
    b = BarBuilder("X", "TEST", "1m")
    b.add(T0 + 10 * S, 10.0, 1.0, 0, 0)
    b.add(T0 + 5 * S, 12.0, 1.0, 0, 0)  # earlier, same bucket: still that bucket's trade
    bar = b.flush(0)
    assert bar is not None
    assert (bar.open, bar.high, bar.close, bar.trades, b.late) == (10.0, 12.0, 12.0, 2, 0)


@pytest.mark.parametrize(
    ("price", "size"), [(math.nan, 1.0), (math.inf, 1.0), (0.0, 1.0), (-1.0, 1.0), (1.0, -1.0),
                        (1.0, math.nan)],
)  # fmt: skip
def test_tick_with_bad_price_or_size_is_rejected_not_aggregated(price: float, size: float) -> None:
    b = BarBuilder("X", "TEST", "1s")
    b.add(T0, 10.0, 1.0, 0, 0)
    assert b.add(T0 + 1, price, size, 0, 0) is None
    bar = b.flush(0)
    assert b.rejected == 1
    assert bar is not None and (bar.high, bar.low, bar.volume, bar.trades) == (10.0, 10.0, 1.0, 1)


def test_zero_size_trade_counts_as_a_trade() -> None:
    b = BarBuilder("X", "TEST", "1s")
    b.add(T0, 10.0, 0.0, 0, 0)
    bar = b.flush(0)
    assert bar is not None and (bar.volume, bar.trades) == (0.0, 1)


def running_sum(values: list[float]) -> float:
    """Left-to-right float addition, as the aggregator's ``volume += size`` does.

    Not ``sum()``: since Python 3.12 it compensates rounding (``sum([0.1] * 10)`` is 1.0, was
    0.9999999999999999), so it differs from a running total in the last bit.
    """
    total = values[0]
    for v in values[1:]:
        total += v
    return total


def reference_bars(ticks: list[tuple[int, float, float]], interval: int) -> list[tuple[Any, ...]]:
    """Group by date_bin, first/last by arrival: the obvious, slow way."""
    groups: dict[int, list[tuple[int, float, float]]] = {}
    for ts, price, size in ticks:
        groups.setdefault(ts - ts % interval, []).append((ts, price, size))
    return [
        (start, g[0][1], max(p for _, p, _ in g), min(p for _, p, _ in g), g[-1][1],
         running_sum([s for _, _, s in g]), len(g))
        for start, g in sorted(groups.items())
    ]  # fmt: skip


@pytest.mark.parametrize("timeframe", ["1s", "5s", "1m", "1h"])
def test_aggregator_equals_a_naive_group_by_on_random_ticks(timeframe: str) -> None:
    rng = random.Random(timeframe)
    ts, ticks = T0, []
    for _ in range(5_000):
        ts += int(rng.expovariate(1 / 0.7) * S) if rng.random() > 0.02 else 400 * S  # some gaps
        ticks.append((ts, round(rng.uniform(90, 110), 2), round(rng.expovariate(1.0), 4)))
    agg = BarAggregator([timeframe])
    bars = [b for t in ticks for b in agg.on_tick(tick(t[0], t[1], t[2]), 0)] + agg.flush(0)
    got = [(b.start, b.open, b.high, b.low, b.close, b.volume, b.trades) for b in bars]
    assert got == reference_bars(ticks, parse_timeframe(timeframe))
    assert all(b.ts_event == b.start + parse_timeframe(timeframe) for b in bars)


def test_aggregator_keeps_symbols_and_timeframes_apart() -> None:
    agg = BarAggregator(["1s", "5s"])
    out: list[Bar] = []
    for i in range(12):
        for sym in ("A", "B"):
            out += agg.on_tick(tick(T0 + i * S, 1.0 + i, symbol=sym), 0)
    out += agg.flush(0)
    for sym in ("A", "B"):
        assert len([b for b in out if b.symbol == sym and b.timeframe == "1s"]) == 12
        assert [b.trades for b in out if b.symbol == sym and b.timeframe == "5s"] == [5, 5, 2]


def test_aggregator_refuses_a_bad_timeframe_at_construction() -> None:
    with pytest.raises(TimeframeError):
        BarAggregator(["1m", "soon"])


def test_close_due_emits_after_the_grace_and_later_ticks_of_that_bucket_are_late() -> None:
    b = BarBuilder("X", "TEST", "1s")
    b.add(T0 + 100, 10.0, 1.0, 0, 0)
    assert b.close_due(T0 + S + 99, grace_ns=100) is None
    bar = b.close_due(T0 + S + 100, grace_ns=100)
    assert bar is not None and (bar.start, bar.ts_init, bar.trades) == (T0, T0 + S + 100, 1)
    assert b.add(T0 + 900, 11.0, 1.0, 0, 0) is None and b.late == 1
    assert b.add(T0 + S, 12.0, 1.0, 0, 0) is None and b.has_open_bar  # the next bucket is fine
