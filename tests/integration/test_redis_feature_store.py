"""The online feature store and shared counters against the real Redis, under unique prefixes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from levibot.messages import Features
from levibot.storage.counters import Counters
from levibot.storage.feature_store import FeatureStore
from levibot.storage.testing import unique_name
from levibot.testenv import REDIS_URL

pytestmark = pytest.mark.integration


@pytest.fixture
async def redis() -> AsyncIterator[tuple[Any, str]]:
    client = aioredis.from_url(REDIS_URL)
    prefix = unique_name("lbtest")
    try:
        yield client, prefix
    finally:
        keys = [k async for k in client.scan_iter(f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def feats(symbol: str, ts: int, values: tuple[float, ...] = (1.0, 2.5)) -> Features:
    return Features(
        ts_event=ts, ts_init=ts, symbol=symbol, schema_hash="abc", values=values, price=100.0 + ts
    )


@pytest.mark.anyio
async def test_feature_store_round_trips_the_latest_vector_per_symbol(
    redis: tuple[Any, str],
) -> None:
    client, prefix = redis
    store = FeatureStore(client, prefix)
    assert await store.get("BTCUSDT") is None
    await store.put(feats("BTCUSDT", 10))
    doc = await store.get("BTCUSDT")
    assert doc is not None
    assert doc["symbol"] == "BTCUSDT" and doc["schema_hash"] == "abc"
    assert doc["ts_event"] == 10 and doc["price"] == 110.0
    assert list(doc["features"].values()) == [1.0, 2.5]
    assert len(doc["features"]) == 2


@pytest.mark.anyio
async def test_feature_store_keeps_the_newer_vector_and_pipelines_many(
    redis: tuple[Any, str],
) -> None:
    client, prefix = redis
    store = FeatureStore(client, prefix, ttl_s=60)
    newer = await store.put_many([feats("A", 20, (2.0,)), feats("B", 5, (5.0,))])
    assert newer == 2
    # A late, older vector (another replica, a replay) does not move A back in time.
    assert await store.put_many([feats("A", 15, (1.5,)), feats("B", 6, (6.0,))]) == 1
    docs = await store.get_many(["A", "B", "C"])
    assert set(docs) == {"A", "B"}
    assert docs["A"]["ts_event"] == 20 and docs["B"]["ts_event"] == 6
    assert 0 < await client.pttl(store.key("A")) <= 60_000


@pytest.mark.anyio
async def test_counters_count_per_window_and_share_between_clients(
    redis: tuple[Any, str],
) -> None:
    client, prefix = redis
    now = [1000.0]
    a = Counters(client, prefix, now=lambda: now[0])
    b = Counters(aioredis.from_url(REDIS_URL), prefix, now=lambda: now[0])
    try:
        assert await a.incr("orders:key1", window_s=60) == 1
        assert await b.incr("orders:key1", window_s=60) == 2  # another process, same count
        assert await a.hit("orders:key1", limit=3, window_s=60)
        assert not await b.hit("orders:key1", limit=3, window_s=60)
        assert 0 < await client.pttl(a.key("orders:key1", 60)) <= 120_000
        now[0] += 60  # the next window starts from zero
        assert await a.get("orders:key1", window_s=60) == 0
        assert await a.incr("orders:key1", 5, window_s=60) == 5
        assert await a.incr("trades_today") == 1
        assert await client.pttl(a.key("trades_today")) == -1  # no window, no expiry
        await a.reset("trades_today")
        assert await a.get("trades_today") == 0
    finally:
        await b.redis.aclose()
