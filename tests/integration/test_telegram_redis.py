"""Subscriptions persisted in a real Redis server, reloaded by a restarted bot, refused by a
stopped one."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import msgspec
import pytest
import redis.asyncio as aioredis

from levibot.testenv import REDIS_URL
from levibot.testing import eventually
from sidecars.telegram.subscriptions import NotifyKind, RedisStore, Subscriptions
from tests.fakes.botapi import FakeBotAPI
from tests.integration.telegram_helpers import (
    ALICE,
    BOB,
    TOKEN,
    PrivateRedis,
    command,
    config,
    running_bot,
    signal,
)

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.fixture
async def prefix() -> object:
    prefix = f"levibot:test:telegram:{uuid.uuid4().hex}:"
    yield prefix
    client = aioredis.Redis.from_url(REDIS_URL)
    await client.delete(f"{prefix}chats")
    await client.aclose()


async def test_redis_store_round_trips_settings(prefix: str) -> None:
    subs = Subscriptions(RedisStore(REDIS_URL, prefix))
    await subs.subscribe(ALICE, ALICE, "BTCUSDT")
    await subs.set_notify(ALICE, ALICE, NotifyKind.DENIALS, True)
    await subs.close()

    again = Subscriptions(RedisStore(REDIS_URL, prefix))
    await again.load()
    assert again.get(ALICE).symbols == ["BTCUSDT"]
    assert "denials" in again.get(ALICE).notify
    assert again.recipients(NotifyKind.DENIALS, "BTCUSDT") == [ALICE]
    await again.close()


async def test_bot_with_redis_reloads_subscriptions_after_restart(
    prefix: str, tmp_path: Path
) -> None:
    async with FakeBotAPI(TOKEN) as api:
        cfg = config(api, tmp_path, redis_url=REDIS_URL, redis_prefix=prefix)
        async with running_bot(cfg):
            await command(api, ALICE, "/subscribe ETHUSDT")
            await command(api, BOB, "/subscribe BTCUSDT")
        assert not (tmp_path / "telegram").exists()  # Redis, not the file, holds them

        async with running_bot(cfg) as bot:
            before = len(api.texts(ALICE))
            await bot.handle(signal("ETHUSDT"))
            await eventually(lambda: len(api.texts(ALICE)) == before + 1)
            assert "ETHUSDT LONG" in api.texts(ALICE)[-1]
            assert all("ETHUSDT" not in t for t in api.texts(BOB))


async def test_an_unreadable_redis_entry_is_skipped_and_the_rest_load(prefix: str) -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    await client.hset(f"{prefix}chats", "666", b"{garbage")
    await client.aclose()
    subs = Subscriptions(RedisStore(REDIS_URL, prefix))
    await subs.subscribe(ALICE, ALICE, "BTCUSDT")
    again = Subscriptions(RedisStore(REDIS_URL, prefix))
    problems = await again.load()
    assert list(again.chats) == [ALICE] and "666" in problems[0]
    await subs.close()
    await again.close()


async def test_a_change_redis_refuses_is_answered_and_not_applied(tmp_path: Path) -> None:
    redis = PrivateRedis(tmp_path / "redis")
    redis.start()
    try:
        async with FakeBotAPI(TOKEN) as api:
            cfg = config(api, tmp_path, redis_url=redis.url, redis_prefix="t:")
            async with running_bot(cfg) as bot:
                assert "Subscribed to BTCUSDT" in await command(api, ALICE, "/subscribe BTCUSDT")
                redis.stop()  # a real outage: the store's writes now fail

                for typed in ("/subscribe ETHUSDT", "/notify signals off", "/unsubscribe BTCUSDT"):
                    reply = await command(api, ALICE, typed)
                    assert "could not save" in reply.lower() and "Nothing changed" in reply
                assert "Following: BTCUSDT\n" in await command(api, ALICE, "/subscriptions")
                memory = {c: msgspec.to_builtins(s) for c, s in bot.subscriptions.chats.items()}

                # Pushes follow what was stored: BTCUSDT still, signals on, no ETHUSDT.
                before = len(api.texts(ALICE))
                await bot.handle(signal("ETHUSDT"))
                await bot.handle(signal("BTCUSDT"))
                await eventually(lambda: len(api.texts(ALICE)) == before + 1)
                assert "BTCUSDT LONG" in api.texts(ALICE)[-1]

                redis.start()
                client = aioredis.Redis.from_url(redis.url)
                stored = await client.hgetall("t:chats")
                await client.aclose()
                assert {int(k): json.loads(v) for k, v in stored.items()} == memory

                # Redis is back: the same change now lands, in memory and in the store.
                assert "Subscribed to ETHUSDT" in await command(api, ALICE, "/subscribe ETHUSDT")
                assert bot.subscriptions.get(ALICE).symbols == ["BTCUSDT", "ETHUSDT"]
    finally:
        redis.stop()
