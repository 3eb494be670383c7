"""Fixed-window rate limits per API key and per client IP, in memory or shared through Redis
(falling back to memory while Redis is down)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Protocol

from levibot.metrics import Counter
from sidecars.gateway.redisguard import RedisBreaker, RedisUnavailable


class RateLimiter(Protocol):
    """Count a hit on each key; return None when all are allowed, else the seconds to wait."""

    async def hit(self, *limits: tuple[str, int]) -> float | None:
        """Record one request for every ``(key, limit)``; say whether any is over its limit."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class MemoryRateLimiter:
    """One process's counters: a dict of (window, count) per key."""

    def __init__(self, window_s: float, now: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.now = now
        self._counts: dict[str, tuple[int, int]] = {}

    async def hit(self, *limits: tuple[str, int]) -> float | None:
        now = self.now()
        window = int(now // self.window_s)
        over = False
        for key, limit in limits:
            current, count = self._counts.get(key, (window, 0))
            if current != window:
                count = 0
                if len(self._counts) > 100_000:  # bound memory: old windows are worthless
                    self._counts.clear()
            count += 1
            self._counts[key] = (window, count)
            over = over or count > limit
        return max(1.0, (window + 1) * self.window_s - now) if over else None

    async def close(self) -> None:
        pass


class RedisRateLimiter:
    """Counters shared by every gateway replica, under ``levibot.storage.counters`` key names.

    All of a request's counters (its IP and its key) go in one pipelined round trip of
    ``INCR`` + ``PEXPIRE`` each; ``Counters.incr`` would cost one transaction per counter.
    """

    def __init__(
        self, redis: Any, window_s: float, prefix: str = "levibot",
        now: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        from levibot.storage.counters import Counters

        self.redis = redis
        self.window_s = window_s
        self.now = now
        self.counters = Counters(redis, f"{prefix}:rl", now=now)
        self._ttl_ms = max(1, math.ceil(2 * window_s * 1000))

    async def hit(self, *limits: tuple[str, int]) -> float | None:
        now = self.now()
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, _ in limits:
                name = self.counters.key(key, self.window_s)
                pipe.incr(name)
                pipe.pexpire(name, self._ttl_ms)
            results = await pipe.execute()
        counts = results[::2]
        if all(int(c) <= limit for c, (_, limit) in zip(counts, limits, strict=True)):
            return None
        window_end = (now // self.window_s + 1) * self.window_s
        return float(max(1, math.ceil(window_end - now)))

    async def close(self) -> None:
        pass


class FallbackRateLimiter:
    """Shared limits through Redis; per-process limits while Redis is down.

    The breaker decides when Redis is down (no round trip then) and when to try it again; a
    probe that succeeds puts the shared limits back. During an outage each replica enforces
    the same limits on its own, so a fleet of N lets up to N times the shared limit through.
    """

    def __init__(
        self, shared: RateLimiter, local: RateLimiter, breaker: RedisBreaker,
        fallbacks: Counter | None = None,
    ) -> None:  # fmt: skip
        self.shared = shared
        self.local = local
        self.breaker = breaker
        self.fallbacks = fallbacks  # requests counted in memory because Redis was down

    async def hit(self, *limits: tuple[str, int]) -> float | None:
        try:
            return await self.breaker.call(lambda: self.shared.hit(*limits))
        except RedisUnavailable:
            if self.fallbacks is not None:
                self.fallbacks.inc()
            return await self.local.hit(*limits)

    async def close(self) -> None:
        await self.shared.close()
        await self.local.close()
