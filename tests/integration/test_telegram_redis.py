"""Subscriptions persisted in the real Redis server and reloaded by a restarted bot."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from levibot.testing import eventually
from sidecars.telegram.subscriptions import NotifyKind, RedisStore, Subscriptions
from tests.fakes.botapi import FakeBotAPI
from tests.integration.telegram_helpers import (
    ALICE,
    BOB,
    TOKEN,
    command,
    config,
    running_bot,
    signal,
)

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

REDIS_URL = "redis://127.0.0.1:6379/0"


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
