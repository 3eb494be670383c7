"""The feature actor, driven through a recording context with a replay clock."""

from __future__ import annotations

import math

import numpy as np
import pytest

from levibot.actors.feature import FeatureActor, FeatureConfig
from levibot.clock import ReplayClock
from levibot.config import convert
from levibot.errors import ConfigError
from levibot.features import SCHEMA, compute_batch
from levibot.messages import Bar, Features, Quote
from levibot.partition import Partition
from levibot.registry import resolve
from levibot.runtime.actor import Policy
from levibot.testing import RecordingContext

HOUR = 3_600_000_000_000
T0 = 1_700_000_000_000_000_000
N = SCHEMA.warmup + 40


def walk(n: int = N, seed: int = 7) -> np.ndarray:
    """Return n rows of (open, high, low, close, volume): a seeded random walk."""
    rng = np.random.default_rng(seed)
    close = 30_000.0 * np.exp(np.cumsum(rng.normal(0, 0.004, n)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.002, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.002, n))
    volume = rng.gamma(2.0, 50.0, n)
    volume[::37] = 0.0  # quiet bars are valid bars
    return np.column_stack([open_, high, low, close, volume])


def bar(
    i: int, row: np.ndarray, symbol: str = "BTCUSDT", timeframe: str = "1h", **kw: float
) -> Bar:
    o, h, lo, c, v = (float(x) for x in row)
    fields = {"open": o, "high": h, "low": lo, "close": c, "volume": v, **kw}
    return Bar(
        symbol=symbol,
        venue="binance",
        timeframe=timeframe,
        start=T0 + i * HOUR,
        ts_event=T0 + (i + 1) * HOUR,
        ts_init=T0 + (i + 1) * HOUR + 5,
        ts_ingress=T0 + (i + 1) * HOUR + 1_000 + i,
        open=fields["open"],
        high=fields["high"],
        low=fields["low"],
        close=fields["close"],
        volume=fields["volume"],
    )


async def started(
    config: FeatureConfig | None = None, partition: Partition = Partition()
) -> tuple[FeatureActor, RecordingContext, ReplayClock]:
    clock = ReplayClock()
    ctx = RecordingContext("feature", clock=clock, partition=partition)
    actor = FeatureActor(ctx, config or FeatureConfig())
    await actor.on_start()
    return actor, ctx, clock


async def feed(actor: FeatureActor, clock: ReplayClock, bars: list[Bar]) -> None:
    for b in bars:
        clock.observe(b.ts_event)
        await actor.handle(b)


def test_feature_actor_declares_its_contract() -> None:
    assert resolve("feature") is FeatureActor
    assert FeatureActor.name == "feature"
    assert FeatureActor.partitioned is True
    assert set(FeatureActor.consumes) == {Bar, Quote}
    assert FeatureActor.emits == (Features,)
    assert FeatureActor.supervision.policy is Policy.SKIP
    assert FeatureActor.config_type is FeatureConfig


def test_feature_config_defaults_and_rejects_unknown_keys() -> None:
    assert FeatureConfig().timeframe == "" and FeatureConfig().min_bars == 0
    cfg = convert({"timeframe": "1m", "min_bars": 500}, FeatureConfig)
    assert cfg.timeframe == "1m" and cfg.min_bars == 500
    with pytest.raises(ConfigError, match="window"):
        convert({"window": 3}, FeatureConfig)
    with pytest.raises(ConfigError, match="min_bars"):
        convert({"min_bars": -1}, FeatureConfig)


@pytest.mark.anyio
async def test_min_bars_holds_publishing_back_beyond_the_warmup() -> None:
    rows = walk()
    actor, ctx, clock = await started(FeatureConfig(min_bars=SCHEMA.warmup + 25))
    await feed(actor, clock, [bar(i, r) for i, r in enumerate(rows)])
    out = ctx.of_type(Features)
    assert len(out) == N - (SCHEMA.warmup + 25) + 1
    assert out[0].ts_event == bar(SCHEMA.warmup + 24, rows[0]).ts_event
    assert actor.health() == {"schema_hash": SCHEMA.hash, "symbols": 1, "warm": 1}


@pytest.mark.anyio
async def test_feature_actor_publishes_the_batch_vector_once_warm() -> None:
    rows = walk()
    actor, ctx, clock = await started()
    bars = [bar(i, r) for i, r in enumerate(rows)]
    await feed(actor, clock, bars)
    out = ctx.of_type(Features)
    assert len(out) == N - SCHEMA.warmup + 1
    expected = compute_batch(*rows.T)
    for msg, i in zip(out, range(SCHEMA.warmup - 1, N), strict=True):
        assert msg.values == tuple(expected[i].tolist())
        assert msg.schema_hash == SCHEMA.hash
        assert msg.symbol == "BTCUSDT"
        assert msg.price == rows[i, 3]
        assert msg.timeframe == "1h"
        assert msg.spread_bps == 0.0
        assert msg.ts_event == bars[i].ts_event
        assert msg.ts_ingress == bars[i].ts_ingress
        assert msg.ts_init == bars[i].ts_event  # the replay clock's now
        assert all(math.isfinite(x) for x in msg.values)
    assert ctx.metrics.value("feature_vectors_total") == len(out)
    assert ctx.metrics.value("feature_bars_total") == N


@pytest.mark.anyio
async def test_out_of_order_and_repeated_bars_are_dropped_and_counted() -> None:
    rows = walk()
    actor, ctx, clock = await started()
    bars = [bar(i, r) for i, r in enumerate(rows)]
    noisy = [*bars[:230], bars[100], bars[229], *bars[230:]]  # an old bar, then a repeat
    await feed(actor, clock, noisy)
    assert actor.dropped("out_of_order") == 2
    clean_actor, clean_ctx, clean_clock = await started()
    await feed(clean_actor, clean_clock, bars)
    assert [m.values for m in ctx.of_type(Features)] == [
        m.values for m in clean_ctx.of_type(Features)
    ]


@pytest.mark.anyio
async def test_garbage_bars_are_rejected_counted_and_never_crash() -> None:
    rows = walk()
    actor, ctx, clock = await started()
    bars = [bar(i, r) for i, r in enumerate(rows)]
    garbage = [
        bar(10_000, rows[0], close=math.nan),
        bar(10_001, rows[0], open=-1.0),
        bar(10_002, rows[0], volume=math.inf),
        bar(10_003, rows[0], high=1.0),  # high below low
        bar(10_004, rows[0], volume=-5.0),
    ]
    # Garbage bars carry later timestamps; a rejected bar must not advance the symbol's clock.
    stream = [*bars[:220], *garbage, *bars[220:]]
    await feed(actor, clock, stream)
    assert actor.dropped("rejected") == len(garbage)
    assert actor.dropped("out_of_order") == 0
    state = actor.state("BTCUSDT")
    assert state is not None and state.rejected == len(garbage) and state.bars == N
    expected = compute_batch(*rows.T)
    assert ctx.of_type(Features)[-1].values == tuple(expected[-1].tolist())


@pytest.mark.anyio
async def test_last_good_quote_spread_rides_on_features() -> None:
    rows = walk()
    actor, ctx, clock = await started()

    def quote(bid: float, ask: float, symbol: str = "BTCUSDT") -> Quote:
        return Quote(symbol=symbol, venue="binance", bid=bid, bid_size=1.0, ask=ask,
                     ask_size=1.0, ts_event=T0, ts_init=T0)  # fmt: skip

    good = quote(100.0, 100.02)
    await actor.handle(good)  # before any bar: kept for the symbol
    await feed(actor, clock, [bar(i, r) for i, r in enumerate(rows[: SCHEMA.warmup])])
    first = ctx.of_type(Features)[-1]
    assert first.spread_bps == good.spread_bps == pytest.approx(2.0, rel=1e-3)
    await actor.handle(quote(101.0, 100.0))  # crossed: ignored
    await actor.handle(quote(math.nan, 100.0))  # broken: ignored
    await actor.handle(quote(100.0, 100.05, symbol="ETHUSDT"))  # another symbol's
    await feed(actor, clock, [bar(SCHEMA.warmup, rows[SCHEMA.warmup])])
    assert ctx.of_type(Features)[-1].spread_bps == good.spread_bps
    assert ctx.metrics.value("feature_quotes_ignored_total") == 2


@pytest.mark.anyio
async def test_symbol_keeps_the_first_timeframe_it_sees_by_default() -> None:
    rows = walk()
    actor, ctx, clock = await started()
    bars = []
    for i, r in enumerate(rows):
        bars.append(bar(i, r))
        bars.append(bar(i, r * 1.5, timeframe="1m"))  # another stream for the same symbol
    await feed(actor, clock, bars)
    out = ctx.of_type(Features)
    assert len(out) == N - SCHEMA.warmup + 1
    assert {m.timeframe for m in out} == {"1h"}
    assert actor.dropped("timeframe") == N


@pytest.mark.anyio
async def test_configured_timeframe_ignores_other_bars() -> None:
    rows = walk()
    actor, ctx, clock = await started(FeatureConfig(timeframe="1m"))
    await feed(actor, clock, [bar(i, r) for i, r in enumerate(rows)])
    assert ctx.published == []
    assert actor.dropped("timeframe") == N
    await feed(actor, clock, [bar(N + i, r, timeframe="1m") for i, r in enumerate(rows)])
    assert {m.timeframe for m in ctx.of_type(Features)} == {"1m"}


@pytest.mark.anyio
async def test_symbols_have_separate_state_and_unowned_ones_are_skipped() -> None:
    partition = Partition(index=0, count=2)
    owned = [s for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT") if partition.owns(s)]
    foreign = [s for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT") if not partition.owns(s)]
    assert owned and foreign
    actor, ctx, clock = await started(partition=partition)
    a, b = walk(seed=1), walk(seed=2)
    for i in range(N):
        clock.observe(T0 + (i + 1) * HOUR)
        await actor.handle(bar(i, a[i], symbol=owned[0]))
        await actor.handle(bar(i, b[i], symbol=foreign[0]))
    out = ctx.of_type(Features)
    assert {m.symbol for m in out} == {owned[0]}
    assert out[-1].values == tuple(compute_batch(*a.T)[-1].tolist())
    assert actor.dropped("not_owned") == N
    assert actor.state(foreign[0]) is None


@pytest.mark.anyio
async def test_absurd_prices_are_rejected_before_they_can_poison_the_state() -> None:
    rows = walk()
    actor, ctx, clock = await started()
    bars = [bar(i, r) for i, r in enumerate(rows)]
    huge = bar(N, rows[-1], open=1.7e308, high=1.7e308, low=1.7e308, close=1.7e308)
    await feed(actor, clock, [*bars[:-1], huge, bars[-1]])
    assert actor.dropped("rejected") == 1
    out = ctx.of_type(Features)
    assert len(out) == N - SCHEMA.warmup + 1
    assert out[-1].values == tuple(compute_batch(*rows.T)[-1].tolist())


@pytest.mark.anyio
async def test_feature_actor_in_a_replay_node_matches_the_batch_path() -> None:
    # The real runtime and the real replay feed over the first real BTCUSDT bars.
    from levibot.data import ensure_btcusdt, load_klines
    from levibot.runtime.node import Node
    from levibot.settings import load_settings

    n = 600
    settings = load_settings(
        None,
        environ={},
        overrides={
            "node": {"groups": ["ingest"], "replay": True, "stop_when_sources_done": True,
                     "http_port": -1},
            "groups": {"ingest": ["feed", "feature"]},
            "feed": {"source": "replay", "replay": {"limit": n}},
        },
    )  # fmt: skip
    node = Node(settings)
    actor = node.actors["feature"]
    got: list[Features] = []
    publish = actor.ctx.publish

    async def spy(msg: Features) -> None:
        got.append(msg)
        await publish(msg)

    actor.ctx.publish = spy  # type: ignore[assignment]
    assert await node.run(handle_signals=False) == 0
    k = load_klines(ensure_btcusdt(progress=False))
    expected = compute_batch(k.open[:n], k.high[:n], k.low[:n], k.close[:n], k.volume[:n])
    assert len(got) == n - SCHEMA.warmup + 1
    assert [m.values for m in got] == [tuple(r) for r in expected[SCHEMA.warmup - 1 :].tolist()]
    assert {m.timeframe for m in got} == {"1h"}
