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


#: Give back ARGV[1], take a share of ARGV[2] under the limit ARGV[3], refresh the expiry
#: (ARGV[4] ms); return how much of the share was granted. Atomic, so the key counts exactly
#: what replicas hold or used, never a refused share (which would shrink the budget for good).
_TAKE_SHARE = """
local back = tonumber(ARGV[1])
if back > 0 then redis.call('DECRBY', KEYS[1], back) end
local share, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local total = redis.call('INCRBY', KEYS[1], share)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if total <= limit then return share end
local over = math.min(share, total - limit)
redis.call('DECRBY', KEYS[1], over)
return share - over
"""


class RedisRateLimiter:
    """Counters shared by every gateway replica, under ``levibot.storage.counters`` key names.

    A replica does not ask Redis on every request: it takes a share of a key's window budget at
    once (``INCRBY`` of ``limit // shares``, at least 1) and admits requests from it locally,
    for at most ``lease_s``, then takes another, giving back (``DECRBY``) what it did not use in
    the same round trip. Redis holds every share handed out, so the fleet never admits more
    than the limit in a window; what a replica holds when the window turns is lost, so the
    fleet may admit up to ``replicas × (share - 1)`` fewer (nothing with a small limit: a limit
    under ``shares`` gives shares of 1, i.e. one round trip per request, as exact as before).
    The lease keeps the shares reconciled: a replica goes to Redis at least every ``lease_s``
    while it takes requests, and so notices an outage (the breaker, the memory fallback) as it
    did. A key whose window is spent asks again on each request (refused by Redis's count, or
    by the fallback when Redis is down, as before). The shares of all of a request's counters
    (its IP and its key) that need one go in one pipelined round trip (a small Lua script per
    counter: give back, take, cap at the limit).
    """

    def __init__(
        self, redis: Any, window_s: float, prefix: str = "levibot",
        now: Callable[[], float] = time.time, shares: int = 32, lease_s: float = 0.1,
    ) -> None:  # fmt: skip
        from levibot.storage.counters import Counters

        self.redis = redis
        self.window_s = window_s
        self.now = now
        self.shares = max(1, shares)
        self.lease_s = lease_s
        self.counters = Counters(redis, f"{prefix}:rl", now=now)
        self._ttl_ms = max(1, math.ceil(2 * window_s * 1000))
        # key -> [window, requests left of the share this replica holds, when it took it]
        self._local: dict[str, list[Any]] = {}
        # Set by FallbackRateLimiter: while it holds Redis down, every call must reach Redis
        # (a call that answered from the shares would pass for a successful probe).
        self.breaker: RedisBreaker | None = None

    def take_local(self, *limits: tuple[str, int]) -> bool:
        """Admit from the shares this replica holds when every limit has one in its lease (no
        await, no Redis); return False, taking nothing, when any needs a round trip."""
        if self.breaker is not None and not self.breaker.up:
            return False
        now = self.now()
        window = int(now // self.window_s)
        states = []
        for key, _ in limits:
            state = self._local.get(key)
            if state is None or state[0] != window or state[1] <= 0:
                return False
            if now - state[2] >= self.lease_s:
                return False
            states.append(state)
        for state in states:
            state[1] -= 1
        return True

    async def hit(self, *limits: tuple[str, int]) -> float | None:
        now = self.now()
        window = int(now // self.window_s)
        over = False
        need: list[tuple[str, int, list[Any]]] = []
        from_shares = self.breaker is None or self.breaker.up
        for key, limit in limits:
            state = self._local.get(key)
            if state is None or state[0] != window:
                if len(self._local) > 100_000:  # bound memory: old windows are worthless
                    self._local.clear()
                state = self._local[key] = [window, 0, now]
            if state[1] > 0 and from_shares and now - state[2] < self.lease_s:
                state[1] -= 1  # from this replica's share: no round trip
            else:
                need.append((key, limit, state))
        if need:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key, limit, state in need:
                    # The unused rest of the last share goes back; taken off here at once, so
                    # a concurrent request on this key cannot give it back a second time.
                    back, state[1] = state[1], 0
                    name = self.counters.key(key, self.window_s)
                    share = max(1, limit // self.shares)
                    pipe.eval(_TAKE_SHARE, 1, name, back, share, limit, self._ttl_ms)
                granted_all = await pipe.execute()
            for (_, _, state), granted in zip(need, granted_all, strict=True):
                if int(granted):
                    state[1] += int(granted) - 1  # one for this request
                    state[2] = now
                elif state[1] > 0:  # a concurrent request's share came back meanwhile
                    state[1] -= 1
                else:
                    over = True
        if not over:
            return None
        window_end = (window + 1) * self.window_s
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
        if isinstance(shared, RedisRateLimiter):
            shared.breaker = breaker

    async def hit(self, *limits: tuple[str, int]) -> float | None:
        # The common case, a replica's own shares: no breaker call (its timeout scope) at all.
        if isinstance(self.shared, RedisRateLimiter) and self.shared.take_local(*limits):
            return None
        try:
            return await self.breaker.call(lambda: self.shared.hit(*limits))
        except RedisUnavailable:
            if self.fallbacks is not None:
                self.fallbacks.inc()
            return await self.local.hit(*limits)

    async def close(self) -> None:
        await self.shared.close()
        await self.local.close()
