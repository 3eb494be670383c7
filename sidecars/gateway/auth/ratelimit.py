"""Fixed-window rate limits per API key and per client IP, in memory or shared through Redis
(falling back to memory while Redis is down)."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from typing import Any, Protocol

import anyio
from redis.exceptions import NoScriptError

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


#: For each counter ``KEYS[i]`` (``ARGV[3i-2..3i]``: give back, share, limit; the last ARGV:
#: the expiry in ms): give back, take a share capped at the limit, refresh the expiry; return
#: what each was granted. Atomic, so a key counts exactly what replicas hold or used, never a
#: refused share (which would shrink the budget for good). A give-back never takes a count
#: below 0 (a Redis restarted empty does not count what replicas held before).
_TAKE_SHARES = """
local ttl = ARGV[#ARGV]
local granted = {}
for i, key in ipairs(KEYS) do
  local back = math.min(tonumber(ARGV[3 * i - 2]), tonumber(redis.call('GET', key) or '0'))
  local share, limit = tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i])
  if back > 0 then redis.call('DECRBY', key, back) end
  local over = math.min(share, redis.call('INCRBY', key, share) - limit)
  if over > 0 then redis.call('DECRBY', key, over) else over = 0 end
  redis.call('PEXPIRE', key, ttl)
  granted[i] = share - over
end
return granted
"""
_TAKE_SHARES_SHA = hashlib.sha1(_TAKE_SHARES.encode()).hexdigest()


class _Share:
    """What a replica holds of one key's window budget."""

    __slots__ = ("ask", "left", "low", "outages", "pending", "since", "spent", "window")

    def __init__(self, window: int, now: float) -> None:
        self.window = window
        self.left = 0  # requests left of the share this replica holds
        self.since = now  # when Redis last answered for this key: the lease starts
        self.outages = -1  # the breaker's outage count then: an outage since ends the lease
        self.spent = False  # Redis refused a share at ``since``: the window is spent
        self.pending: _Batch | None = None  # the batch asking Redis for this key
        self.low = 0  # the low-water mark: below it, the next share is asked ahead
        self.ask: tuple[str, int, int] = ("", 0, 0)  # Redis key, share size, limit


class _Batch:
    """Keys asking Redis for a share together, in one script call."""

    __slots__ = ("done", "entries", "error", "sent")

    def __init__(self) -> None:
        # (Redis key, rest given back, share asked, limit, the replica's state of the key)
        self.entries: list[tuple[str, int, int, int, _Share]] = []
        self.sent = False
        self.done = anyio.Event()  # set once answered (or failed)
        self.error: BaseException | None = None


class RedisRateLimiter:
    """Counters shared by every gateway replica, under ``levibot.storage.counters`` key names.

    A replica does not ask Redis on every request: it takes a share of a key's window budget at
    once (``INCRBY`` of ``limit // shares``, at least 1) and admits requests from it locally until
    it is used up (or ``lease_s`` has passed: by default the whole window), then takes another,
    giving back (``DECRBY``) any unused rest in the same round trip. When fewer than a quarter of a
    share is left (shares of 4 or more), the next share is asked ahead: it goes with the next round
    trip that goes anyway (another key's, or the check below) and adds to the rest, which requests
    go on using meanwhile; so a key in steady use waits for Redis only when its rest runs out
    before that answer (a key's first request in a window still does). Redis holds every share
    handed out (a replica holds at most a rest and one share more, and the script grants no more
    than the limit leaves), so the fleet never admits more than the limit in a window; what a
    replica holds when the window turns is lost, so the fleet may admit up to
    ``replicas × (share + share // 4 - 1)`` fewer (nothing with a small limit: a limit under
    ``shares`` gives shares of 1, i.e. one round trip per request, as exact as before, and
    nothing asked ahead). A shorter lease would not shrink that: a replica that gives a rest back
    takes a new share in the same call, and one that no longer sees the key keeps its rest, lease
    or not; it would only make keys below their limit's pace (many keys, a few requests a second
    each) go to Redis more often.

    A replica taking requests hears from Redis at least every ``check_s`` (0.1 s): when nothing was
    answered for that long, the next request that its shares decide sends the shares asked ahead,
    or pings Redis when there are none (``check``, through the breaker), so an outage is noticed as
    soon (the breaker, the memory fallback), and a share asked ahead goes within ``check_s``, in
    time for a key whose rest lasts that long (600 a minute gives shares of 18, asked ahead at 3
    left: up to about 30 requests a second on the key); an outage ends every lease (Redis may be
    back empty). When Redis refuses a share (the window is spent), the replica refuses that key
    locally; ``check_s`` later the next request on it asks again, and the refusal stands until
    Redis answers: at most ten round trips a second for a spent key, none of them waited for by the
    other requests.

    Round trips are batched: one script call is in flight per replica at a time, and every key
    that needs a share meanwhile (each request's IP and key, from any number of requests) goes
    in the next one, so a busy replica with many keys makes few round trips. A key is in at
    most one batch: a request that finds its key asked for takes from its rest, or waits for
    that answer when none is left. (One script call over several keys: one Redis, not a
    cluster.)
    """

    def __init__(
        self, redis: Any, window_s: float, prefix: str = "levibot",
        now: Callable[[], float] = time.time, shares: int = 32, lease_s: float | None = None,
        check_s: float = 0.1,
    ) -> None:  # fmt: skip
        from levibot.storage.counters import Counters

        self.redis = redis
        self.window_s = window_s
        self.now = now
        self.shares = max(1, shares)
        self.lease_s = lease_s if lease_s is not None else window_s
        self.check_s = check_s
        self._heard_at = -math.inf  # when Redis last answered a round trip or a check
        self._checking = False
        self.counters = Counters(redis, f"{prefix}:rl", now=now)
        self._ttl_ms = max(1, math.ceil(2 * window_s * 1000))
        self._local: dict[str, _Share] = {}
        self._open = _Batch()  # collects keys while ``_in_flight`` is out
        self._in_flight: _Batch | None = None
        # Set by FallbackRateLimiter: it guards each round trip (timeout, outage, probes);
        # while it holds Redis down, every call must reach Redis (a call that answered from
        # the shares would pass for a successful probe).
        self.breaker: RedisBreaker | None = None

    def _outages(self) -> int:
        return self.breaker.outages if self.breaker is not None else 0

    def _retry(self, window: int, now: float) -> float:
        return float(max(1, math.ceil((window + 1) * self.window_s - now)))

    def decide_local(self, *limits: tuple[str, int]) -> tuple[bool, float | None]:
        """Decide without Redis (no await) when every limit's share is in its lease.

        Return ``(True, None)`` when admitted from the shares held, ``(True, seconds)`` when a
        limit's window is known spent, ``(False, None)``, taking nothing, when any limit needs
        a round trip (or waits for one).
        """
        if self.breaker is not None and not self.breaker.up:
            return False, None
        now = self.now()
        window = int(now // self.window_s)
        outages = self._outages()
        held = []
        spent = False
        for key, _ in limits:
            share = self._local.get(key)
            if share is None or share.window != window or share.outages != outages:
                return False, None
            age = now - share.since
            if share.left > 0 and age < self.lease_s:
                held.append(share)  # even while the next share is asked ahead
            elif share.spent and (share.pending is not None or age < self.check_s):
                spent = True  # a refusal stands until Redis says otherwise
            else:
                return False, None
        for share in held:  # counted even when refused, as in memory
            self._take(share)
        return True, self._retry(window, now) if spent else None

    def check_due(self) -> bool:
        """Whether this replica has heard nothing from Redis for ``check_s`` (and no check is
        under way): the caller should then ``await check()``."""
        return not self._checking and self.now() - self._heard_at >= self.check_s

    async def check(self) -> None:
        """Hear from Redis (through the breaker): how a replica whose shares all hold notices
        an outage, and how the shares asked ahead go out. Send the open batch when it holds
        any and nothing is in flight, else ping; raise ``RedisUnavailable`` (or Redis's error,
        without a breaker) when it fails.
        """
        self._checking = True
        try:
            if self._open.entries and self._in_flight is None:
                await self._send(self._open)  # an answered round trip is as good as a ping
            elif self.breaker is None:
                await self.redis.ping()
            else:
                await self.breaker.call(self.redis.ping)
            self._heard_at = self.now()
        finally:
            self._checking = False

    def _share(self, key: str, window: int, now: float) -> _Share:
        share = self._local.get(key)
        if share is None or share.window != window:
            if len(self._local) > 100_000:  # bound memory: old windows are worthless
                self._local.clear()
            share = self._local[key] = _Share(window, now)
        return share

    async def hit(self, *limits: tuple[str, int]) -> float | None:
        asked = False  # a round trip answered: the shares may serve even a probe now
        while True:
            from_shares = asked or self.breaker is None or self.breaker.up
            now = self.now()
            window = int(now // self.window_s)
            outages = self._outages()
            held: list[_Share] = []
            need: list[tuple[str, int, _Share]] = []
            pending = None
            for key, limit in limits:
                share = self._share(key, window, now)
                # Once answered, this request takes what it got, however slow the answer was.
                usable = asked or (from_shares and share.outages == outages)
                age = 0.0 if asked else now - share.since
                if usable and share.left > 0 and age < self.lease_s:
                    held.append(share)  # even while the next share is asked ahead
                elif usable and share.spent and (share.pending is not None or age < self.check_s):
                    held.append(share)  # refused: Redis said spent, and has not said otherwise
                elif share.pending is not None:
                    pending = share.pending  # spent (or the lease over) before the answer
                    break
                else:
                    need.append((key, limit, share))
            if pending is not None:
                await self._answer(pending)  # its answer may serve this request: decide again
            elif need:
                batch = self._ask(need)
                await self._answer(batch)
                asked = True
            else:
                break
        over = False
        for share in held:
            if share.left > 0:
                self._take(share)  # from this replica's share
            else:
                over = True  # spent, as Redis said within the lease
        return self._retry(window, now) if over else None

    def _ask(self, need: list[tuple[str, int, _Share]]) -> _Batch:
        """Put ``need``'s keys in the open batch, each giving back the rest it holds."""
        batch = self._open
        for key, limit, share in need:
            size = max(1, limit // self.shares)
            share.ask = (self.counters.key(key, self.window_s), size, limit)
            share.low = size // 4  # 0 below shares of 4: a small limit stays exact
            batch.entries.append((share.ask[0], share.left, size, limit, share))
            # The rest is off at once (and the key pending), so no concurrent request uses it
            # or gives it back a second time. A spent key stays spent meanwhile.
            share.left, share.pending = 0, batch
        return batch

    def _take(self, share: _Share) -> None:
        """Count one request on ``share``; under its low-water mark, ask for the next ahead."""
        share.left -= 1
        if share.left < share.low and share.pending is None and not share.spent:
            self._ask_ahead(share)

    def _ask_ahead(self, share: _Share) -> None:
        """Put ``share``'s key in the open batch for its next share, keeping the rest in use.

        It goes with the next round trip that goes anyway (a key that needs a share, a
        check), so a key's next share comes before it runs out, and no request waits for it
        but one that finds the rest spent first. Meanwhile a replica holds at most the rest
        (under the low-water mark) and one share more: the script grants only what the limit
        leaves, and Redis counts all of it, so the fleet still never admits more than the
        limit; a key that goes quiet keeps both until its next take gives them back, or the
        window turns.
        """
        name, size, limit = share.ask
        self._open.entries.append((name, 0, size, limit, share))
        share.pending = self._open

    async def _answer(self, batch: _Batch) -> None:
        """Return once ``batch`` is answered, sending it when no other batch is in flight;
        raise ``RedisUnavailable`` when another request's round trip for it failed."""
        while not batch.sent:
            if self._in_flight is None:
                await self._send(batch)  # an unsent batch is the open one
                return
            await self._in_flight.done.wait()
        await batch.done.wait()
        if batch.error is not None:
            raise RedisUnavailable(f"Redis is unavailable: {batch.error!r}")

    async def _send(self, batch: _Batch) -> None:
        batch.sent, self._open, self._in_flight = True, _Batch(), batch
        names = [name for name, *_ in batch.entries]
        argv: list[int] = []
        for _, back, size, limit, _ in batch.entries:
            argv += (back, size, limit)
        argv.append(self._ttl_ms)
        try:
            if self.breaker is None:
                granted = await self._run(names, argv)
            else:  # its timeout scope and outage handling around the round trip only
                granted = await self.breaker.call(lambda: self._run(names, argv))
            now, outages = self.now(), self._outages()  # the lease runs from the answer
            self._heard_at = now
            for (*_, share), n in zip(batch.entries, granted, strict=True):
                # A share asked ahead adds to the rest still held (a share asked for need has
                # none): the rest and the new share lease anew. A rest from before an outage
                # is dropped, as Redis (back empty, maybe) may not count it.
                rest = share.left if share.outages == outages else 0
                share.left, share.spent, share.since = rest + int(n), not int(n), now
                share.outages = outages
        except BaseException as exc:  # the rests given back are lost, as Redis still counts
            batch.error = exc
            raise
        finally:
            for *_, share in batch.entries:
                share.pending = None
            self._in_flight = None
            batch.done.set()

    async def _run(self, names: list[str], argv: list[int]) -> Any:
        """Run the share script on ``names``: what each key was granted."""
        try:
            return await self.redis.evalsha(_TAKE_SHARES_SHA, len(names), *names, *argv)
        except NoScriptError:  # a new (or flushed) Redis: EVAL caches it for next time
            return await self.redis.eval(_TAKE_SHARES, len(names), *names, *argv)

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
            shared.breaker = breaker  # it calls the breaker around its round trips only

    async def hit(self, *limits: tuple[str, int]) -> float | None:
        shared = self.shared
        try:
            if isinstance(shared, RedisRateLimiter):
                # The common case, a replica's own shares: no await, no breaker call at all;
                # and a request waiting for another's round trip needs none either.
                decided, retry = shared.decide_local(*limits)
                if not decided:
                    return await shared.hit(*limits)
                if shared.check_due():  # this request's decision holds; it waits for the check
                    await shared.check()
                return retry
            return await self.breaker.call(lambda: shared.hit(*limits))
        except RedisUnavailable:
            if self.fallbacks is not None:
                self.fallbacks.inc()
            return await self.local.hit(*limits)

    async def close(self) -> None:
        await self.shared.close()
        await self.local.close()
