"""The shared auth state in PostgreSQL, in process: two ledgers (two pools, as two replicas
would have) on one migrated database, and the API key table after migration 0004."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import anyio
import asyncpg
import jwt
import pytest

from levibot.storage.testing import temp_database
from sidecars.gateway.auth import ApiKeyError, AuthError, TokenService, new_key, rotate_key
from sidecars.gateway.auth.keys_pg import PostgresKeyStore
from sidecars.gateway.auth.tokens_pg import PostgresLedger
from tests.unit.test_gateway_support import SECRET

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


class Clock:
    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


@pytest.fixture
async def dsn() -> AsyncIterator[str]:
    async with temp_database(migrated=True) as url:
        yield url


@pytest.fixture
async def replicas(dsn: str) -> AsyncIterator[tuple[PostgresLedger, PostgresLedger, Clock]]:
    clock = Clock()
    a = await PostgresLedger.connect(dsn, TokenService(SECRET, refresh_ttl_s=600, now=clock))
    b = await PostgresLedger.connect(dsn, TokenService(SECRET, refresh_ttl_s=600, now=clock))
    try:
        yield a, b, clock
    finally:
        await a.close()
        await b.close()


async def code(fn: object) -> str:
    with pytest.raises(AuthError) as info:
        await fn  # type: ignore[misc]
    return info.value.code


async def test_rotation_and_reuse_detection_across_replicas(
    replicas: tuple[PostgresLedger, PostgresLedger, Clock],
) -> None:
    a, b, _ = replicas
    first = await a.issue("k1", ["read"])
    assert (await b.verify(first.access_token)).sub == "k1"
    second = await b.refresh(first.refresh_token)  # issued on a, redeemed on b
    third = await a.refresh(second.refresh_token)
    assert (await b.verify(third.access_token)).family == (
        await a.verify(first.access_token)
    ).family
    assert await code(b.refresh(first.refresh_token)) == "refresh_reused"  # replayed: it leaked
    for ledger in (a, b):
        for token in (first.access_token, third.access_token):
            assert await code(ledger.verify(token)) == "token_revoked"
        assert await code(ledger.refresh(third.refresh_token)) == "token_revoked"
    other = await b.issue("k1", ["read"])  # another family is untouched
    assert (await a.verify(other.access_token)).sub == "k1"
    assert await code(a.refresh("rt_never-issued")) == "refresh_invalid"


async def test_racing_redemptions_of_one_token_let_at_most_one_through(
    replicas: tuple[PostgresLedger, PostgresLedger, Clock],
) -> None:
    a, b, _ = replicas
    pair = await a.issue("k1", ["read"])
    outcomes: list[str] = []

    async def redeem(ledger: PostgresLedger) -> None:
        try:
            await ledger.refresh(pair.refresh_token)
            outcomes.append("ok")
        except AuthError as exc:
            outcomes.append(exc.code)

    async with anyio.create_task_group() as tg:
        for i in range(8):
            tg.start_soon(redeem, (a, b)[i % 2])
    assert outcomes.count("ok") == 1 and len(outcomes) == 8  # the first lock holder
    assert set(outcomes) - {"ok"} <= {"refresh_reused", "token_revoked"}
    assert "refresh_reused" in outcomes
    assert await code(b.verify(pair.access_token)) == "token_revoked"  # the leak was seen


async def test_revocation_by_either_token_and_a_restart_forget_nothing(
    dsn: str, replicas: tuple[PostgresLedger, PostgresLedger, Clock]
) -> None:
    a, b, clock = replicas
    by_refresh, by_access, kept = [await a.issue("k1", ["read"]) for _ in range(3)]
    assert await b.revoke(by_refresh.refresh_token)
    assert await b.revoke(by_access.access_token)
    assert not await b.revoke("rt_unknown") and not await b.revoke("not.a.jwt")
    now = int(clock())
    claims = {"sub": "tg:42", "scopes": ["read"], "exp": now + 60, "iss": "levibot-miniapp"}
    session = jwt.encode(claims, SECRET, algorithm="HS256")
    assert not await b.revoke(session)  # the Mini App family is every session's: never revoked
    assert (await a.verify(session)).sub == "tg:42"
    restarted = await PostgresLedger.connect(dsn, TokenService(SECRET, now=clock))
    try:
        for pair in (by_refresh, by_access):
            assert await code(restarted.verify(pair.access_token)) == "token_revoked"
            assert await code(restarted.refresh(pair.refresh_token)) == "token_revoked"
        assert (await restarted.verify(kept.access_token)).sub == "k1"
        await restarted.refresh(kept.refresh_token)
        assert await code(a.refresh(kept.refresh_token)) == "refresh_reused"
    finally:
        await restarted.close()


async def test_expiry_pruning_and_foreign_tokens(
    dsn: str, replicas: tuple[PostgresLedger, PostgresLedger, Clock]
) -> None:
    a, b, clock = replicas
    pair = await a.issue("k1", ["read"])
    clock.t += 601
    assert await code(b.refresh(pair.refresh_token)) == "refresh_expired"
    # A token signed with the same secret but never recorded (an embedded-mode process).
    stray = TokenService(SECRET, now=clock).issue("k1", ["read"])
    assert await code(a.verify(stray.access_token)) == "token_invalid"
    clock.t += 601  # one refresh lifetime past the expiry: the rows go on the next issue
    a._pruned_at = 0.0
    await a.issue("k2", ["read"])
    conn = await asyncpg.connect(dsn)
    try:
        subjects = await conn.fetch("SELECT subject FROM auth_token_families")
        assert [r["subject"] for r in subjects] == ["k2"]
        assert await conn.fetchval("SELECT count(*) FROM auth_refresh_tokens") == 1
        digests = await conn.fetch("SELECT digest FROM auth_refresh_tokens")
        assert all(pair.refresh_token not in r["digest"] for r in digests)
    finally:
        await conn.close()


async def test_ledger_on_an_unmigrated_database_says_to_migrate() -> None:
    async with temp_database() as url:
        with pytest.raises(AuthError, match="levibot db migrate"):
            await PostgresLedger.connect(url, TokenService(SECRET))


async def test_key_store_keeps_name_expiry_and_successor(dsn: str) -> None:
    store = await PostgresKeyStore.connect(dsn)
    try:
        _, record = new_key("billing", ["trade"], expires_at=time.time() + 60)
        await store.add(record)
        got = await store.get(record.key_id)
        assert got is not None and got.name == "billing" and got.replaced_by == ""
        assert got.expires_at is not None and record.expires_at is not None
        assert abs(got.expires_at - record.expires_at) < 1e-3
        _, successor, retired = await rotate_key(store, record.key_id, time.time() + 10)
        assert retired.replaced_by == successor.key_id
        assert retired.expires_at is not None and retired.expires_at - time.time() <= 10
        listed = {k.key_id: k for k in await store.list()}
        assert listed[successor.key_id].name == "billing" and listed[record.key_id] == retired
        assert await store.retire("ffffffffffff", time.time()) is None
    finally:
        await store.close()


async def test_concurrent_rotations_of_one_key_make_one_successor(dsn: str) -> None:
    stores = [await PostgresKeyStore.connect(dsn) for _ in range(2)]
    try:
        _, record = new_key("svc", ["read"])
        await stores[0].add(record)
        outcomes: list[str] = []

        async def rotate(store: PostgresKeyStore) -> None:
            try:
                _, successor, _ = await rotate_key(store, record.key_id, time.time() + 60)
                outcomes.append(successor.key_id)
            except ApiKeyError as exc:
                outcomes.append(str(exc))

        async with anyio.create_task_group() as tg:
            for i in range(6):
                tg.start_soon(rotate, stores[i % 2])
        keys = {k.key_id: k for k in await stores[1].list()}
        successors = [o for o in outcomes if o in keys]
        assert len(successors) == 1 and len(keys) == 2  # the old key and exactly one successor
        assert keys[record.key_id].replaced_by == successors[0]
        assert all("rotated" in o for o in outcomes if o not in keys)
    finally:
        for store in stores:
            await store.close()


async def test_rotation_on_a_table_from_before_migration_0004_stores_nothing(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE SCHEMA older; CREATE TABLE older.api_keys (key_id text PRIMARY KEY,"
            " hash text NOT NULL, scopes text[] NOT NULL DEFAULT '{}',"
            " created_at timestamptz NOT NULL DEFAULT now(), revoked_at timestamptz)"
        )
    finally:
        await conn.close()
    store = await PostgresKeyStore.connect(dsn, table="older.api_keys")
    try:
        _, record = new_key("x", ["read"])
        await store.add(record)
        with pytest.raises(ApiKeyError, match="levibot db migrate"):
            await rotate_key(store, record.key_id, time.time() + 60)
        assert [k.key_id for k in await store.list()] == [record.key_id]
    finally:
        await store.close()


async def test_key_table_from_before_migration_0004_refuses_expiries_clearly(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE SCHEMA old; CREATE TABLE old.api_keys (key_id text PRIMARY KEY,"
            " hash text NOT NULL, scopes text[] NOT NULL DEFAULT '{}',"
            " created_at timestamptz NOT NULL DEFAULT now(), revoked_at timestamptz)"
        )
    finally:
        await conn.close()
    store = await PostgresKeyStore.connect(dsn, table="old.api_keys")
    try:
        _, plain = new_key("x", ["read"])
        await store.add(plain)
        got = await store.get(plain.key_id)
        assert got is not None and got.hash == plain.hash and got.expires_at is None
        _, expiring = new_key("y", ["read"], expires_at=time.time() + 60)
        with pytest.raises(ApiKeyError, match="levibot db migrate"):
            await store.add(expiring)
        with pytest.raises(ApiKeyError, match="levibot db migrate"):
            await store.retire(plain.key_id, time.time())
    finally:
        await store.close()
