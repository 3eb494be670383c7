"""The synthetic source: deterministic per seed, round robin over symbols, paced to a rate."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from levibot.actors.feed import FeedActor, FeedConfig
from levibot.clock import ReplayClock
from levibot.config import convert
from levibot.messages import Message, Quote, Tick
from levibot.testing import RecordingContext

pytestmark = pytest.mark.anyio


async def run_synthetic(symbols: list[str], **cfg: Any) -> RecordingContext:
    ctx = RecordingContext("feed", clock=ReplayClock())
    config = convert(
        {"source": "synthetic", "symbols": symbols, "synthetic": {"rate": 0, **cfg}}, FeedConfig
    )
    actor = FeedActor(ctx, config)
    await actor.on_start()
    await actor.run()
    return ctx


async def test_same_seed_gives_the_same_stream_bit_for_bit() -> None:
    a = await run_synthetic(["A", "B"], seed=7, count=2_000, quotes=True)
    b = await run_synthetic(["A", "B"], seed=7, count=2_000, quotes=True)
    c = await run_synthetic(["A", "B"], seed=8, count=2_000, quotes=True)
    assert a.published == b.published
    assert [m.price for m in a.of_type(Tick)] != [m.price for m in c.of_type(Tick)]


async def test_ticks_take_turns_over_the_symbols_and_quotes_bracket_the_price() -> None:
    ctx = await run_synthetic(["A", "B", "C"], count=300, quotes=True, spread_bps=10.0)
    ticks, quotes = ctx.of_type(Tick), ctx.of_type(Quote)
    assert len(ticks) == len(quotes) == 300
    assert [t.symbol for t in ticks[:6]] == ["A", "B", "C", "A", "B", "C"]
    assert [t.trade_id for t in ticks] == list(range(1, 301))
    for tick, quote in zip(ticks, quotes, strict=True):
        assert quote.symbol == tick.symbol and quote.bid < tick.price < quote.ask
        assert quote.spread_bps == pytest.approx(10.0, rel=1e-6)
    assert all(t.price > 0 and t.size >= 0 for t in ticks)
    assert len({t.side for t in ticks}) == 2


async def test_event_time_is_synthetic_under_the_replay_clock() -> None:
    ctx = await run_synthetic(["A"], count=5, start_ns=10**18)
    times = [m.ts_event for m in ctx.published]
    assert times == [10**18 + i * 1_000_000 for i in range(5)]  # rate 0: 1 ms apart
    assert all(m.ts_ingress == m.ts_event for m in ctx.published)


async def test_rate_paces_emission_in_bursts(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]

    async def fake_sleep(delay: float) -> None:
        now[0] += max(delay, 0.0)

    emitted_at: list[float] = []
    monkeypatch.setattr(anyio, "current_time", lambda: now[0])
    monkeypatch.setattr(anyio, "sleep", fake_sleep)
    ctx = RecordingContext("feed", clock=ReplayClock())

    async def record(msg: Message) -> None:
        emitted_at.append(now[0])
        ctx.published.append(msg)

    ctx.publish = record
    config = convert({"source": "synthetic", "synthetic": {"rate": 1000, "count": 500}}, FeedConfig)
    actor = FeedActor(ctx, config)
    await actor.on_start()
    await actor.run()
    assert len(ctx.published) == 500
    # Never ahead of the schedule: tick i goes out no earlier than i / rate.
    assert all(t >= i / 1000 - 1e-9 for i, t in enumerate(emitted_at))
    assert emitted_at[-1] == pytest.approx(0.499, abs=1e-6)
    assert ctx.published[1].ts_event - ctx.published[0].ts_event == 1_000_000  # 1 ms at 1000/s
