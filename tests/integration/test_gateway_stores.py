"""The gateway against the real servers: rate limits shared through Redis, features from the
online feature store, API keys in PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from levibot.messages import Features
from levibot.testenv import PG_DSN, REDIS_URL
from sidecars.gateway.auth import ApiKeyError, new_key
from sidecars.gateway.auth.keys_pg import PostgresKeyStore
from tests.unit.test_gateway_support import running_gateway

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

REDIS = REDIS_URL
DSN = PG_DSN


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    import redis.asyncio as aioredis

    name = f"test-gw-{uuid.uuid4().hex[:12]}"
    yield name
    client = aioredis.from_url(REDIS)
    keys = [k async for k in client.scan_iter(f"{name}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_rate_limit_is_shared_by_two_gateways_through_redis(
    tmp_path: Path, prefix: str
) -> None:
    settings = {"redis_url": REDIS, "redis_prefix": prefix, "rate_limit_per_key": 4}
    async with (
        running_gateway(tmp_path, **settings) as a,
        running_gateway(tmp_path, **settings) as b,  # same keys.json: a's keys work on b
    ):
        statuses = []
        for gw in (a, b, a, b, a):
            async with gw.session.get(gw.url + "/risk", headers=a.h("read")) as r:
                statuses.append(r.status)
                retry = r.headers.get("Retry-After")
        assert statuses == [200, 200, 200, 200, 429]
        assert retry is not None and 1 <= int(retry) <= 60


async def test_features_come_from_the_online_store_in_redis(tmp_path: Path, prefix: str) -> None:
    from levibot.storage.feature_store import FeatureStore

    async with running_gateway(tmp_path, redis_url=REDIS, redis_prefix=prefix) as g:
        store = FeatureStore(g.services.redis, prefix)
        await store.put(Features(ts_event=7, ts_init=7, symbol="BTCUSDT", schema_hash="h",
                                 values=(0.25,), price=42.0))  # fmt: skip
        async with g.session.get(g.url + "/features/BTCUSDT", headers=g.h("read")) as r:
            body = await r.json()
        assert r.status == 200 and body["source"] == "redis"
        assert body["features"]["price"] == 42.0 and body["features"]["ts_event"] == 7
        async with g.session.get(g.url + "/features/ETHUSDT", headers=g.h("read")) as r:
            assert r.status == 404


@pytest.fixture
async def pg_table() -> AsyncIterator[str]:
    schema = f"test_gw_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(DSN)
    # The same columns as the store's migration 0001_init.sql.
    await conn.execute(
        f"CREATE SCHEMA {schema}; CREATE TABLE {schema}.api_keys (key_id text PRIMARY KEY,"
        " hash text NOT NULL, scopes text[] NOT NULL DEFAULT '{}',"
        " created_at timestamptz NOT NULL DEFAULT now(), revoked_at timestamptz)"
    )
    try:
        yield f"{schema}.api_keys"
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


async def test_postgres_key_store_round_trip_and_revocation(pg_table: str) -> None:
    store = await PostgresKeyStore.connect(DSN, table=pg_table)
    try:
        _plain, record = new_key("pg", ["read", "admin"])
        await store.add(record)
        got = await store.get(record.key_id)
        assert got is not None and got.hash == record.hash and got.scopes == ("read", "admin")
        assert not got.revoked and abs(got.created_at - record.created_at) < 1e-3
        assert [k.key_id for k in await store.list()] == [record.key_id]
        assert await store.revoke(record.key_id) and not await store.revoke("nope")
        revoked = await store.get(record.key_id)
        assert revoked is not None and revoked.revoked
    finally:
        await store.close()


async def test_postgres_key_store_says_to_migrate_when_the_table_is_missing() -> None:
    with pytest.raises(ApiKeyError, match="levibot db migrate"):
        await PostgresKeyStore.connect(DSN, table=f"missing_{uuid.uuid4().hex[:8]}.api_keys")
