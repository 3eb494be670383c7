"""The Redis breaker and the rate limiter that falls back to memory, on a test clock.

The calls stand for Redis round trips: each counts itself and fails with the socket error a
dead server gives, so the tests see exactly when the breaker lets one through.
"""

from __future__ import annotations

import contextlib

import anyio
import pytest
import structlog

from levibot.metrics import Metrics
from sidecars.gateway.auth import FallbackRateLimiter, MemoryRateLimiter
from sidecars.gateway.redisguard import RedisBreaker, RedisUnavailable

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Server:
    """Round trips to a Redis that is up or down; counts the attempts."""

    def __init__(self) -> None:
        self.up = True
        self.calls = 0

    async def call(self) -> str:
        self.calls += 1
        if not self.up:
            raise ConnectionRefusedError(111, "Connection refused")
        return "PONG"


def breaker(clock: Clock, metrics: Metrics | None = None) -> RedisBreaker:
    return RedisBreaker(structlog.get_logger(), metrics, backoff_s=0.25, max_backoff_s=1.0,
                        now=clock)  # fmt: skip


async def test_breaker_fails_fast_while_open_and_probes_once_per_backoff() -> None:
    clock, server, metrics = Clock(), Server(), Metrics()
    with structlog.testing.capture_logs() as logs:
        b = breaker(clock, metrics)
        assert await b.call(server.call) == "PONG"
        server.up = False
        for _ in range(3):
            with pytest.raises(RedisUnavailable):
                await b.call(server.call)
        assert server.calls == 2  # the failure that opened it; then no round trip
        assert metrics.value("gateway_redis_up") == 0.0
        clock.t += 0.25  # the backoff passed: one probe, which fails and doubles the backoff
        with pytest.raises(RedisUnavailable):
            await b.call(server.call)
        assert server.calls == 3 and b.probes == 1
        clock.t += 0.25  # half the new backoff: still no round trip
        with pytest.raises(RedisUnavailable):
            await b.call(server.call)
        assert server.calls == 3
        server.up = True
        clock.t += 0.25
        assert await b.call(server.call) == "PONG"
        assert await b.call(server.call) == "PONG"
    assert server.calls == 5 and b.up and b.outages == 1
    assert metrics.value("gateway_redis_up") == 1.0
    assert metrics.value("gateway_redis_outages_total") == 1.0
    events = [e["event"] for e in logs]
    assert events == ["gateway.redis_down", "gateway.redis_reconnected"]
    assert logs[1]["down_s"] == 0.75


async def test_backoff_doubles_up_to_its_cap() -> None:
    clock, server = Clock(), Server()
    b = breaker(clock)
    server.up = False
    with pytest.raises(RedisUnavailable):
        await b.call(server.call)
    waits = []
    for _ in range(5):
        before = server.calls
        waited = 0.0
        while server.calls == before:
            clock.t += 0.125
            waited += 0.125
            with pytest.raises(RedisUnavailable):
                await b.call(server.call)
        waits.append(waited)
    assert waits == [0.25, 0.5, 1.0, 1.0, 1.0]


async def test_only_one_probe_is_in_flight() -> None:
    clock, server = Clock(), Server()
    b = breaker(clock)
    server.up = False
    with pytest.raises(RedisUnavailable):
        await b.call(server.call)
    clock.t += 1
    release = anyio.Event()
    entered = anyio.Event()

    async def slow_probe() -> str:
        entered.set()
        await release.wait()
        return "PONG"

    async with anyio.create_task_group() as tg:
        tg.start_soon(b.call, slow_probe)
        await entered.wait()
        with pytest.raises(RedisUnavailable):  # the probe is out: no second round trip
            await b.call(server.call)
        assert server.calls == 1
        release.set()
    assert b.up


async def test_a_hanging_redis_costs_at_most_the_timeout() -> None:
    b = RedisBreaker(structlog.get_logger(), timeout_s=0.05)

    async def hang() -> None:
        await anyio.sleep_forever()

    with pytest.raises(RedisUnavailable):
        await b.call(hang)
    assert not b.up


async def test_rate_limits_fall_back_to_memory_and_back() -> None:
    clock, metrics = Clock(), Metrics()
    shared_counts: dict[str, int] = {}
    server = Server()

    class Shared:
        """A stand-in for the Redis limiter: counts shared between 'replicas'."""

        async def hit(self, *limits: tuple[str, int]) -> float | None:
            await server.call()
            over = False
            for key, limit in limits:
                shared_counts[key] = shared_counts.get(key, 0) + 1
                over = over or shared_counts[key] > limit
            return 1.0 if over else None

        async def close(self) -> None:
            pass

    b = breaker(clock)
    fallbacks = metrics.counter("gateway_ratelimit_fallback_total", "test")
    limiter = FallbackRateLimiter(Shared(), MemoryRateLimiter(60, now=clock), b, fallbacks)
    assert [await limiter.hit(("k", 2)) for _ in range(3)] == [None, None, 1.0]
    server.up = False
    got = [await limiter.hit(("k", 2)) for _ in range(3)]
    assert got[:2] == [None, None] and got[2] is not None  # per-process count starts afresh
    assert fallbacks.value == 3
    server.up = True
    clock.t += 0.25
    assert await limiter.hit(("k", 2)) == 1.0  # shared again: Redis still holds 3 (+1)
    assert shared_counts["k"] == 4 and fallbacks.value == 3


async def test_calls_that_began_before_a_change_neither_reopen_nor_close_it() -> None:
    clock, server = Clock(), Server()
    b = breaker(clock)

    async def slow(release: anyio.Event, entered: anyio.Event, reply: str | None) -> str:
        entered.set()
        await release.wait()
        if reply is None:
            raise ConnectionResetError(104, "Connection reset by peer")
        return reply

    async def outage_and_back(reply: str | None) -> None:
        """Run a call that began while closed across an outage; it ends with ``reply``."""
        release, entered = anyio.Event(), anyio.Event()

        async def old_call() -> None:
            with contextlib.suppress(RedisUnavailable):
                await b.call(lambda: slow(release, entered, reply))

        async with anyio.create_task_group() as tg:
            tg.start_soon(old_call)  # begins while the breaker is closed
            await entered.wait()
            server.up = False
            with pytest.raises(RedisUnavailable):
                await b.call(server.call)  # opens it
            if reply is None:  # the old call fails only after a probe closed it again
                server.up = True
                clock.t += 0.25
                assert await b.call(server.call) == "PONG" and b.up
            release.set()

    await outage_and_back("late reply")
    assert not b.up  # an older call's late success is no sign that Redis is back
    server.up = True
    clock.t += 1
    assert await b.call(server.call) == "PONG" and b.up
    await outage_and_back(None)
    assert b.up and b.outages == 2  # the older call's late failure is no new outage
