"""The feed actor: config, source choice, replica ownership, bars from ticks."""

from __future__ import annotations

from typing import Any

import pytest

from levibot.actors.feed import FeedActor, FeedConfig
from levibot.clock import ReplayClock
from levibot.config import convert
from levibot.errors import ConfigError
from levibot.marketdata.bars import BarAggregator
from levibot.messages import Bar, Quote, Tick
from levibot.partition import Partition
from levibot.registry import resolve
from levibot.runtime.actor import Policy
from levibot.testing import RecordingContext

pytestmark = pytest.mark.anyio
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "ADAUSDT"]


def test_feed_actor_is_registered_and_declares_what_it_emits() -> None:
    assert resolve("feed") is FeedActor
    assert FeedActor.name == "feed" and FeedActor.config_type is FeedConfig
    assert set(FeedActor.emits) == {Tick, Quote, Bar}
    assert FeedActor.supervision.policy is Policy.RESTART


def test_default_config_replays_the_real_data_as_fast_as_possible() -> None:
    cfg = convert({}, FeedConfig)
    assert (cfg.source, cfg.replay.path, cfg.replay.speed, cfg.bars) == ("replay", "", 0.0, ())
    assert cfg.venue_name == "BINANCE"


@pytest.mark.parametrize(
    ("raw", "match"),
    [({"source": "kafka"}, r"\$\.source"), ({"bars": ["1m", "7x"]}, "feed.bars"),
     ({"replay": {"speed": -1}}, r"\$\.replay\.speed"),
     ({"binance": {"hearbeat_s": 1}}, "unknown field `hearbeat_s`")],
)  # fmt: skip
def test_bad_config_fails_with_the_field_named(raw: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        convert(raw, FeedConfig)


async def run_feed(partition: Partition = Partition(), **raw: Any) -> RecordingContext:
    ctx = RecordingContext("feed", clock=ReplayClock(), partition=partition)
    cfg = convert(
        {
            "source": "synthetic",
            "symbols": SYMBOLS,
            "synthetic": {"rate": 0, "count": 6_000},
            **raw,
        },
        FeedConfig,
    )
    actor = FeedActor(ctx, cfg)
    await actor.on_start()
    await actor.run()
    await actor.on_stop()
    return ctx


async def test_replicas_split_the_symbols_and_publish_only_their_own() -> None:
    replicas = [await run_feed(Partition(i, 3)) for i in range(3)]
    seen = [{m.symbol for m in ctx.of_type(Tick)} for ctx in replicas]
    assert set().union(*seen) == set(SYMBOLS)
    assert all(not (a & b) for i, a in enumerate(seen) for b in seen[i + 1 :])
    for i, ctx in enumerate(replicas):
        assert all(Partition(i, 3).owns(s) for s in seen[i])
        skipped = ctx.metrics.value("levibot_feed_not_owned_total")
        assert skipped + len(ctx.published) == 6_000


async def test_bars_from_ticks_follow_the_ticks_and_match_the_aggregator() -> None:
    ctx = await run_feed(bars=["1s", "5s"])  # 6000 ticks 1 ms apart: 6 s of event time
    ticks, bars = ctx.of_type(Tick), ctx.of_type(Bar)
    reference = BarAggregator(["1s", "5s"])
    expected = [b for t in ticks for b in reference.on_tick(t, t.ts_event)]
    expected += reference.flush(ticks[-1].ts_event)
    assert bars == expected
    assert len([b for b in bars if b.timeframe == "1s"]) == 6 * len(SYMBOLS)
    # A bar is published right after the tick that closed it, and carries its ingress stamp.
    first_bar = ctx.published.index(bars[0])
    closer = ctx.published[first_bar - 1]
    assert isinstance(closer, Tick) and closer.ts_event >= bars[0].ts_event
    assert bars[0].ts_ingress == closer.ts_ingress
    assert ctx.metrics.value("levibot_feed_bars_built_total") == len(bars)


async def test_a_restarted_feed_reuses_its_metric_series() -> None:
    ctx = RecordingContext("feed", clock=ReplayClock())
    cfg = convert({"source": "synthetic", "synthetic": {"rate": 0, "count": 10}}, FeedConfig)
    actor = FeedActor(ctx, cfg)
    for _ in range(2):  # what supervision does on a restart
        await actor.on_start()
        await actor.run()
        await actor.on_stop()
    text = ctx.metrics.render()
    line = 'levibot_feed_messages_total{source="synthetic",type="Tick"} 20'
    assert text.count('levibot_feed_messages_total{source="synthetic",type="Tick"}') == 1
    assert line in text


class HandClock:
    """A live-style clock the test moves by hand."""

    is_replay = False

    def __init__(self, now: int) -> None:
        self.now = now

    def now_ns(self) -> int:
        return self.now

    def observe(self, ts_event: int) -> None:
        pass


async def test_live_feed_closes_a_quiet_symbols_bar_after_the_grace_period() -> None:
    t0 = 1_700_000_000 * 1_000_000_000
    clock = HandClock(t0)
    ctx = RecordingContext("feed", clock=clock)
    cfg = convert({"source": "synthetic", "bars": ["1s"], "bar_grace_s": 0.5}, FeedConfig)
    actor = FeedActor(ctx, cfg)
    await actor.on_start()
    await actor._emit(
        Tick(ts_event=t0 + 10, ts_init=t0, symbol="A", venue="X", price=1.0, size=1.0)
    )
    clock.now = t0 + 1_400_000_000  # bar ended 0.4 s ago: still within the grace period
    await actor.on_tick()
    assert ctx.of_type(Bar) == []
    clock.now = t0 + 1_500_000_000
    await actor.on_tick()
    bars = ctx.of_type(Bar)
    assert [(b.symbol, b.start, b.trades, b.ts_init) for b in bars] == [("A", t0, 1, clock.now)]


async def test_replay_feed_never_closes_bars_on_a_timer() -> None:
    ctx = RecordingContext("feed", clock=ReplayClock())
    cfg = convert({"source": "synthetic", "bars": ["1s"], "bar_grace_s": 0.0}, FeedConfig)
    actor = FeedActor(ctx, cfg)
    await actor.on_start()
    await actor._emit(Tick(ts_event=10, ts_init=10, symbol="A", venue="X", price=1.0, size=1.0))
    ctx.clock.observe(10**12)
    await actor.on_tick()
    assert ctx.of_type(Bar) == []


def test_a_bad_replay_timeframe_fails_at_config_time() -> None:
    with pytest.raises(ConfigError, match=r"feed\.replay\.timeframe"):
        convert({"replay": {"timeframe": "hourly"}}, FeedConfig)
