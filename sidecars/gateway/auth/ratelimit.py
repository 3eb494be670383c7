"""Fixed-window rate limits per API key and per client IP, in memory or shared through Redis
(falling back to memory while Redis is down)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Protocol

import anyio

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


class _Share:
    """What a replica holds of one key's window budget."""

    __slots__ = ("left", "pending", "since", "spent", "window")

    def __init__(self, window: int, now: float) -> None:
        self.window = window
        self.left = 0  # requests left of the share this replica holds
        self.since = now  # when Redis last answered for this key: the lease starts
        self.spent = False  # Redis refused a share at ``since``: the window is spent
        self.pending: anyio.Event | None = None  # set when this key's round trip in flight ends


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
    did. When Redis refuses a share (the window is spent), the replica refuses that key locally
    for the lease too, then asks again (a rest another replica gave back may be taken then).
    One round trip per key at a time: requests that find one in flight wait for its answer
    rather than each sending their own (which, at a lease's end, took one share per waiting
    request). The shares of all of a request's counters (its IP and its key) that need one go
    in one pipelined round trip (a small Lua script per counter: give back, take, cap at the
    limit).
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
        self._local: dict[str, _Share] = {}
        # Set by FallbackRateLimiter: while it holds Redis down, every call must reach Redis
        # (a call that answered from the shares would pass for a successful probe).
        self.breaker: RedisBreaker | None = None

    def _retry(self, window: int, now: float) -> float:
        return float(max(1, math.ceil((window + 1) * self.window_s - now)))

    def decide_local(self, *limits: tuple[str, int]) -> tuple[bool, float | None]:
        """Decide without Redis (no await) when every limit's share is in its lease.

        Return ``(True, None)`` when admitted from the shares held, ``(True, seconds)`` when a
        limit's window is known spent, ``(False, None)``, taking nothing, when any limit needs
        a round trip (or one is in flight).
        """
        if self.breaker is not None and not self.breaker.up:
            return False, None
        now = self.now()
        window = int(now // self.window_s)
        held = []
        spent = False
        for key, _ in limits:
            share = self._local.get(key)
            if share is None or share.window != window or now - share.since >= self.lease_s:
                return False, None
            if share.left > 0:
                held.append(share)
            elif share.spent:
                spent = True
            else:
                return False, None
        for share in held:  # counted even when refused, as in memory
            share.left -= 1
        return True, self._retry(window, now) if spent else None

    def _share(self, key: str, window: int, now: float) -> _Share:
        share = self._local.get(key)
        if share is None or share.window != window:
            if len(self._local) > 100_000:  # bound memory: old windows are worthless
                self._local.clear()
            share = self._local[key] = _Share(window, now)
        return share

    async def hit(self, *limits: tuple[str, int]) -> float | None:
        while True:
            from_shares = self.breaker is None or self.breaker.up
            now = self.now()
            window = int(now // self.window_s)
            held: list[_Share] = []
            need: list[tuple[str, int, _Share]] = []
            pending = None
            for key, limit in limits:
                share = self._share(key, window, now)
                if share.pending is not None:
                    pending = share.pending
                    break
                fresh = from_shares and now - share.since < self.lease_s
                if fresh and (share.left > 0 or share.spent):
                    held.append(share)
                else:
                    need.append((key, limit, share))
            if pending is None:
                break
            await pending.wait()  # its answer may serve this request too: decide again
            if self.breaker is not None and not self.breaker.up:
                raise RedisUnavailable("Redis went down during this key's round trip")
        over = False
        for share in held:
            if share.left > 0:
                share.left -= 1  # from this replica's share: no round trip
            else:
                over = True  # spent, as Redis said within the lease
        if need:
            await self._take(need, now)
            for _, _, share in need:
                if share.left > 0:
                    share.left -= 1  # one of the new share for this request
                else:
                    over = True
        return self._retry(window, now) if over else None

    async def _take(self, need: list[tuple[str, int, _Share]], now: float) -> None:
        """Give back what ``need``'s keys hold and take a new share of each, in one round trip."""
        done = anyio.Event()
        backs = []
        for _, _, share in need:
            # The unused rest goes back; taken off here at once (and the key marked pending),
            # so no concurrent request uses it or gives it back a second time.
            backs.append(share.left)
            share.left, share.spent, share.pending = 0, False, done
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for (key, limit, _), back in zip(need, backs, strict=True):
                    name = self.counters.key(key, self.window_s)
                    size = max(1, limit // self.shares)
                    pipe.eval(_TAKE_SHARE, 1, name, back, size, limit, self._ttl_ms)
                granted_all = await pipe.execute()
            for (_, _, share), granted in zip(need, granted_all, strict=True):
                share.left, share.spent, share.since = int(granted), not int(granted), now
        finally:
            for _, _, share in need:
                share.pending = None
            done.set()

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
        if isinstance(self.shared, RedisRateLimiter):
            decided, retry = self.shared.decide_local(*limits)
            if decided:
                return retry
        try:
            return await self.breaker.call(lambda: self.shared.hit(*limits))
        except RedisUnavailable:
            if self.fallbacks is not None:
                self.fallbacks.inc()
            return await self.local.hit(*limits)

    async def close(self) -> None:
        await self.shared.close()
        await self.local.close()
