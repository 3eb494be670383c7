"""Rate limits shared through Redis by budget shares: exact at the limit, few round trips.

Against the real Redis: several ``RedisRateLimiter`` instances on one prefix stand for gateway
replicas. A replica takes a share of a key's window budget per round trip and admits from it
locally; the fleet never admits more than the limit, and at most ``replicas × (share - 1)``
fewer (``share + share // 4 - 1`` with the next share asked ahead of need). A refused share is
remembered for the lease; one round trip per key is in flight at a time.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from levibot.testenv import REDIS_URL
from sidecars.gateway.auth import RedisRateLimiter

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

REDIS = REDIS_URL


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


class CountingRedis:
    """The real client, counting the share scripts it runs (one round trip each; the EVAL
    that loads the script into a fresh Redis's cache, once, is not counted)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.round_trips = 0

    async def evalsha(self, *args: Any) -> Any:
        self.round_trips += 1
        return await self.client.evalsha(*args)

    async def eval(self, *args: Any) -> Any:
        return await self.client.eval(*args)


@pytest.fixture
async def redis() -> AsyncIterator[Any]:
    client = aioredis.from_url(REDIS)
    yield client
    await client.aclose()


@pytest.fixture
def prefix() -> str:
    return f"test-rl-{uuid.uuid4().hex[:12]}"


async def admitted(limiter: RedisRateLimiter, key: str, limit: int) -> bool:
    return await limiter.hit((key, limit)) is None


async def test_replicas_admit_exactly_the_limit_with_one_round_trip_per_share(
    redis: Any, prefix: str
) -> None:
    clock = Clock()
    conns = [CountingRedis(redis) for _ in range(2)]
    replicas = [RedisRateLimiter(c, 60.0, prefix, now=clock, shares=8) for c in conns]
    results = [await admitted(replicas[i % 2], "key:a", 64) for i in range(100)]
    assert sum(results) == 64 and all(results[:64]) and not any(results[64:])
    # 64 / 8 = 8 shares, then one refused round trip per replica: within the lease each
    # refuses the spent key locally.
    assert sum(c.round_trips for c in conns) == 8 + 2
    retry = await replicas[0].hit(("key:a", 64))
    assert retry is not None and 1 <= retry <= 60


async def test_interleaved_replicas_never_admit_more_than_the_limit(
    redis: Any, prefix: str
) -> None:
    clock = Clock()
    replicas = [RedisRateLimiter(redis, 60.0, prefix, now=clock, shares=4) for _ in range(3)]
    rng = random.Random(7)
    limit = 50  # shares of 12: the last one is only partly under the limit
    total = sum([await admitted(rng.choice(replicas), "key:b", limit) for _ in range(400)])
    assert limit - 3 * (12 - 1) <= total <= limit
    # Each replica used up what it took: here nothing is lost and the limit is met exactly.
    assert total == limit


async def test_a_small_limit_is_exact_and_a_new_window_brings_the_budget_back(
    redis: Any, prefix: str
) -> None:
    clock = Clock()
    conn = CountingRedis(redis)
    a, b = (
        RedisRateLimiter(conn, 10.0, prefix, now=clock),
        RedisRateLimiter(conn, 10.0, prefix, now=clock),
    )
    assert [await admitted(x, "ip:1", 4) for x in (a, b, a, b, a)] == [True] * 4 + [False]
    assert conn.round_trips == 5  # a limit under the share count: one round trip per request
    clock.t += 10.0
    assert await admitted(b, "ip:1", 4)


async def test_a_request_is_refused_when_any_of_its_limits_is_spent(
    redis: Any, prefix: str
) -> None:
    clock = Clock()
    limiter = RedisRateLimiter(redis, 60.0, prefix, now=clock, shares=2)
    for _ in range(3):
        assert await limiter.hit(("ip:x", 100), ("key:y", 3)) is None
    assert await limiter.hit(("ip:x", 100), ("key:y", 3)) is not None
    assert await limiter.hit(("ip:x", 100), ("key:z", 3)) is None  # another key, same IP


async def test_concurrent_requests_with_expiring_leases_never_admit_more_than_the_limit(
    redis: Any, prefix: str
) -> None:
    import anyio

    clock = Clock()
    replicas = [
        RedisRateLimiter(redis, 3600.0, prefix, now=clock, shares=4, lease_s=0.5) for _ in range(3)
    ]
    limit = 40  # shares of 10
    results: list[bool] = []

    async def client(i: int) -> None:
        for n in range(30):
            results.append(await admitted(replicas[(i + n) % 3], "key:c", limit))
            clock.t += 0.1  # leases expire: unused rests go back to Redis (same window)

    async with anyio.create_task_group() as tg:
        for i in range(8):
            tg.start_soon(client, i)
    assert len(results) == 240
    assert limit - 3 * (10 - 1) <= sum(results) <= limit
    assert sum(results) == limit  # the clients keep asking: every held rest went back in time
    # Redis counts exactly what was admitted plus what the replicas still hold: refused shares
    # and the given-back rests are not counted.
    raw = await redis.get(replicas[0].counters.key("key:c", 3600.0))
    held = sum(r._local["key:c"].left for r in replicas if "key:c" in r._local)
    assert int(raw) == sum(results) + held


async def test_decide_local_admits_from_held_shares_only_within_the_lease(
    redis: Any, prefix: str
) -> None:
    clock = Clock()
    conn = CountingRedis(redis)
    limiter = RedisRateLimiter(conn, 60.0, prefix, now=clock, shares=4, lease_s=0.1)
    assert limiter.decide_local(("key:d", 40)) == (False, None)  # nothing held yet
    assert await admitted(limiter, "key:d", 40)  # takes a share of 10, uses one
    decided = [limiter.decide_local(("key:d", 40)) for _ in range(10)]
    assert decided == [(True, None)] * 9 + [(False, None)]
    assert conn.round_trips == 1
    assert await admitted(limiter, "key:d", 40)
    clock.t += 0.2  # the lease is over: the rest must be reconciled through Redis first
    assert limiter.decide_local(("key:d", 40)) == (False, None)


async def test_a_refusal_holds_for_the_lease_then_redis_is_asked_again(
    redis: Any, prefix: str
) -> None:
    clock = Clock()
    conns = [CountingRedis(redis) for _ in range(2)]
    a, b = (RedisRateLimiter(c, 60.0, prefix, now=clock, shares=2, lease_s=0.1) for c in conns)
    assert await admitted(a, "key:e", 8)  # a holds 3 more of its share of 4
    for _ in range(4):
        assert await admitted(b, "key:e", 8)  # b takes the other 4 and uses them
    assert not await admitted(b, "key:e", 8)  # Redis refuses b a share: the window is spent
    assert conns[1].round_trips == 2
    decided, retry = b.decide_local(("key:e", 8))
    assert decided and retry is not None and 1 <= retry <= 60  # refused locally
    assert not await admitted(b, "key:e", 8)
    assert conns[1].round_trips == 2  # no round trip within the lease
    for _ in range(3):
        assert await admitted(a, "key:e", 8)  # a's held rest is still a's to use
    clock.t += 0.2  # b's lease is over: Redis is asked again (and still says spent)
    assert not await admitted(b, "key:e", 8)
    assert conns[1].round_trips == 3
    assert int(await redis.get(a.counters.key("key:e", 60.0))) == 8
    clock.t += 60.0  # a new window: the budget is back
    assert await admitted(b, "key:e", 8)


async def test_concurrent_requests_share_one_round_trip_per_key(redis: Any, prefix: str) -> None:
    import anyio

    clock = Clock()
    conn = CountingRedis(redis)
    limiter = RedisRateLimiter(conn, 60.0, prefix, now=clock, shares=32, lease_s=0.1)
    results: list[bool] = []

    async def request() -> None:
        results.append(await admitted(limiter, "key:f", 3200))

    for _ in range(2):  # the first share, then a lease's end with 32 requests waiting
        async with anyio.create_task_group() as tg:
            for _ in range(32):
                tg.start_soon(request)
        clock.t += 0.2
    assert results == [True] * 64
    # One round trip each time; before, every request that came while one was in flight sent
    # its own (and took a share of 100 for itself).
    assert conn.round_trips == 2
    raw = await redis.get(limiter.counters.key("key:f", 60.0))
    assert int(raw) == 64 + limiter._local["key:f"].left


async def test_concurrent_requests_on_many_keys_share_a_few_round_trips(
    redis: Any, prefix: str
) -> None:
    import anyio

    clock = Clock()
    conn = CountingRedis(redis)
    limiter = RedisRateLimiter(conn, 60.0, prefix, now=clock, shares=32, lease_s=0.1)
    results: list[bool] = []

    async def request(i: int) -> None:
        results.append(await limiter.hit(("ip:1", 10**6), (f"key:{i}", 600)) is None)

    async with anyio.create_task_group() as tg:
        for i in range(64):
            tg.start_soon(request, i)
    assert results == [True] * 64
    # The first request's IP and key; then one key that asked while nothing was in flight;
    # then every other key in one batch. Each request alone would make 64.
    assert conn.round_trips <= 4, conn.round_trips
    for i in range(64):
        raw = await redis.get(limiter.counters.key(f"key:{i}", 60.0))
        assert int(raw) == 1 + limiter._local[f"key:{i}"].left  # 18 taken, 1 used


async def test_a_failed_round_trip_fails_its_waiters_and_the_next_request_asks_again(
    redis: Any, prefix: str
) -> None:
    import anyio
    from redis.exceptions import ConnectionError as RedisConnectionError

    from sidecars.gateway.redisguard import RedisUnavailable

    class Failing:
        def __init__(self) -> None:
            self.release = anyio.Event()

        async def evalsha(self, *args: Any) -> Any:
            await self.release.wait()
            raise RedisConnectionError("refused")

    failing = Failing()
    limiter = RedisRateLimiter(failing, 60.0, prefix, now=Clock(), shares=4)
    errors: list[str] = []

    async def request() -> None:
        try:
            await limiter.hit(("key:g", 40))
        except (RedisConnectionError, RedisUnavailable) as exc:
            errors.append(type(exc).__name__)

    async with anyio.create_task_group() as tg:
        tg.start_soon(request)
        tg.start_soon(request)  # waits for the first one's round trip
        await anyio.wait_all_tasks_blocked()
        failing.release.set()
    # The sender sees Redis's error (the breaker's outage), the waiter that its answer failed.
    assert sorted(errors) == ["ConnectionError", "RedisUnavailable"]
    limiter.redis = redis  # Redis is back: nothing is left pending
    assert await admitted(limiter, "key:g", 40)


class Breaker:
    """What the limiter reads of RedisBreaker: up, and how many outages so far (set by hand)."""

    up, outages = True, 0

    async def call(self, fn: Any) -> Any:
        return await fn()


async def test_an_outage_ends_the_leases_and_an_emptied_redis_is_not_given_back_below_zero(
    redis: Any, prefix: str
) -> None:
    clock = Clock()
    conn = CountingRedis(redis)
    limiter = RedisRateLimiter(conn, 60.0, prefix, now=clock, shares=4, lease_s=10.0)
    breaker = Breaker()
    limiter.breaker = breaker  # type: ignore[assignment]
    assert await admitted(limiter, "key:h", 40)  # a share of 10: 9 held
    assert limiter.decide_local(("key:h", 40)) == (True, None)  # 8 held
    name = limiter.counters.key("key:h", 60.0)
    await redis.delete(name)  # Redis restarted empty...
    breaker.outages = 1  # ...after an outage the breaker saw: every lease is over
    assert limiter.decide_local(("key:h", 40)) == (False, None)
    assert await admitted(limiter, "key:h", 40)
    assert conn.round_trips == 2
    # The 8 given back found nothing to take them from: the new share of 10 is all it counts.
    assert int(await redis.get(name)) == 10


async def test_a_replica_pings_redis_every_check_s_and_falls_back_when_it_fails(
    redis: Any, prefix: str
) -> None:
    import structlog
    from redis.exceptions import ConnectionError as RedisConnectionError

    from sidecars.gateway.auth import FallbackRateLimiter, MemoryRateLimiter
    from sidecars.gateway.redisguard import RedisBreaker

    class Flaky(CountingRedis):
        down = False
        pings = 0

        async def ping(self) -> Any:
            self.pings += 1
            if self.down:
                raise RedisConnectionError("refused")
            return await self.client.ping()

    clock = Clock()
    conn = Flaky(redis)
    shared = RedisRateLimiter(conn, 60.0, prefix, now=clock, shares=4, lease_s=10.0)
    assert shared.check_s == 0.1
    breaker = RedisBreaker(structlog.get_logger(), now=clock)
    limiter = FallbackRateLimiter(shared, MemoryRateLimiter(60.0, now=clock), breaker)
    assert await limiter.hit(("key:i", 40)) is None  # a share of 10, leased for 10 s
    clock.t += 0.05
    assert await limiter.hit(("key:i", 40)) is None
    assert conn.pings == 0  # heard from Redis 0.05 s ago
    clock.t += 0.1
    assert await limiter.hit(("key:i", 40)) is None  # decided by the share, then a ping
    assert conn.pings == 1 and conn.round_trips == 1
    conn.down = True
    clock.t += 0.15  # the lease holds for 10 s, yet the replica notices the outage at once
    assert await limiter.hit(("key:i", 40)) is None
    assert conn.pings == 2 and not breaker.up
    assert shared.decide_local(("key:i", 40)) == (False, None)  # down: the memory decides
    assert await limiter.hit(("key:i", 40)) is None
    assert conn.round_trips == 1  # the open breaker answered without a round trip


async def test_a_spent_key_stays_refused_while_it_asks_redis_again(redis: Any, prefix: str) -> None:
    import anyio

    class Held(CountingRedis):
        release: anyio.Event | None = None

        async def evalsha(self, *args: Any) -> Any:
            if self.release is not None:
                await self.release.wait()
            return await super().evalsha(*args)

    clock = Clock()
    conn = Held(redis)
    limiter = RedisRateLimiter(conn, 60.0, prefix, now=clock, shares=4)
    for _ in range(4):
        assert await admitted(limiter, "key:j", 4)  # shares of 1: one round trip each
    assert not await admitted(limiter, "key:j", 4)  # spent
    clock.t += 0.2  # the refusal is old: the next request asks again
    conn.release = anyio.Event()
    results: list[bool] = []

    async def again() -> None:
        results.append(await admitted(limiter, "key:j", 4))

    async with anyio.create_task_group() as tg:
        tg.start_soon(again)
        await anyio.wait_all_tasks_blocked()  # its round trip is in flight
        decided, retry = limiter.decide_local(("key:j", 4))
        assert decided and retry is not None  # refused meanwhile, without waiting
        assert not await admitted(limiter, "key:j", 4)
        conn.release.set()
    assert results == [False] and conn.round_trips == 6


class Waiting(RedisRateLimiter):
    """The limiter, counting the requests that could not be decided from the shares held:
    each waits for a round trip (its own, or one in flight) before its answer."""

    waits = 0

    async def hit(self, *limits: tuple[str, int]) -> float | None:
        self.waits += 1
        return await super().hit(*limits)


class Pinged(CountingRedis):
    pings = 0

    async def ping(self) -> Any:
        self.pings += 1
        return await self.client.ping()


def fallback(shared: RedisRateLimiter, clock: Clock) -> Any:
    """The limiter as the gateway builds it: shares through Redis, memory while it is down."""
    import structlog

    from sidecars.gateway.auth import FallbackRateLimiter, MemoryRateLimiter
    from sidecars.gateway.redisguard import RedisBreaker

    breaker = RedisBreaker(structlog.get_logger(), now=clock)
    return FallbackRateLimiter(shared, MemoryRateLimiter(shared.window_s, now=clock), breaker)


async def test_the_next_share_is_asked_ahead_by_a_check_and_no_request_waits_for_it(
    redis: Any, prefix: str
) -> None:
    clock = Clock()
    conn = Pinged(redis)
    shared = Waiting(conn, 60.0, prefix, now=clock, shares=8)  # shares of 20, asked below 5
    limiter = fallback(shared, clock)
    for i in range(61):
        assert await limiter.hit(("key:k", 160)) is None
        if i % 3 == 2:
            clock.t += 0.25  # a check is due every third request
    # Only the first request waited for a share: each next one was asked when 4 were left,
    # went with the check a request carried within three (instead of a ping), and came in
    # time.
    assert shared.waits == 1
    assert conn.round_trips == 4 and shared._local["key:k"].left == 19
    assert conn.pings == 20 - 3  # the checks that had nothing to send
    raw = await redis.get(shared.counters.key("key:k", 60.0))
    assert int(raw) == 61 + 19 == 4 * 20


async def test_a_share_asked_ahead_goes_with_another_keys_round_trip(
    redis: Any, prefix: str
) -> None:
    clock = Clock()
    conn = CountingRedis(redis)
    limiter = RedisRateLimiter(conn, 60.0, prefix, now=clock, shares=4)  # shares of 10
    for _ in range(9):
        assert await admitted(limiter, "key:l", 40)  # 1 left: the next share is asked ahead
    assert conn.round_trips == 1
    assert await admitted(limiter, "key:m", 40)  # a new key's round trip takes key:l's too
    assert conn.round_trips == 2 and limiter._local["key:l"].left == 1 + 10
    for _ in range(11):
        assert limiter.decide_local(("key:l", 40)) == (True, None)  # no wait, no round trip
    assert conn.round_trips == 2


async def test_replicas_asking_ahead_concurrently_never_admit_more_than_the_limit(
    redis: Any, prefix: str
) -> None:
    import anyio

    clock = Clock()
    conns = [Pinged(redis) for _ in range(3)]
    replicas = [Waiting(c, 3600.0, prefix, now=clock, shares=8) for c in conns]
    limiters = [fallback(r, clock) for r in replicas]
    limit = 200  # shares of 25, asked ahead below 6 left
    results: list[bool] = []
    most = 0  # the most a replica held of the key: over a share only when asked ahead

    async def client(i: int) -> None:
        nonlocal most
        for n in range(80):
            # Other keys too, so that shares asked ahead also go with their round trips.
            limits = (("key:n", limit), (f"key:o{(i + n) % 5}", 10**6))
            results.append(await limiters[(i + n) % 3].hit(*limits) is None)
            most = max(most, *(r._local["key:n"].left for r in replicas if "key:n" in r._local))
            clock.t += 0.01
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        for i in range(8):
            tg.start_soon(client, i)
    assert len(results) == 640
    assert most > 25  # shares asked ahead came while the rest was still in use
    # Each replica holds at most a rest under 6 and one share more when the window ends.
    assert limit - 3 * (25 + 6 - 1) <= sum(results) <= limit
    raw = await redis.get(replicas[0].counters.key("key:n", 3600.0))
    held = sum(r._local["key:n"].left for r in replicas)
    assert int(raw) == sum(results) + held


async def test_a_rest_from_before_an_outage_is_dropped_when_the_share_asked_ahead_comes(
    redis: Any, prefix: str
) -> None:
    clock = Clock()
    limiter = RedisRateLimiter(redis, 60.0, prefix, now=clock, shares=4)  # shares of 10
    breaker = Breaker()
    limiter.breaker = breaker  # type: ignore[assignment]
    for _ in range(9):
        assert await admitted(limiter, "key:p", 40)  # 1 left: the next share is asked ahead
    name = limiter.counters.key("key:p", 60.0)
    await redis.delete(name)  # Redis restarted empty after an outage the breaker saw
    breaker.outages = 1
    assert await admitted(limiter, "key:p", 40)  # waits for the share asked ahead
    # The rest of 1 Redis no longer counts is not added to the new share of 10.
    assert limiter._local["key:p"].left == 9 and int(await redis.get(name)) == 10
