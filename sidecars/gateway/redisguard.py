"""A circuit breaker in front of Redis: when it is down, callers learn it at once.

Closed, every call goes to Redis. The first call that fails opens the breaker (logged once per
outage, ``gateway.redis_down``); while open, calls fail fast with ``RedisUnavailable`` and no
round trip, except one probe after a backoff (doubling up to ``max_backoff_s``). The probe that
succeeds closes it again (``gateway.redis_reconnected``). Callers pick their own fallback:
the rate limiter counts in memory, the feature routes answer 503.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
from redis.exceptions import RedisError

from levibot.backoff import Backoff
from levibot.errors import LevibotError
from levibot.metrics import Counter, Metrics

T = TypeVar("T")

#: What an outage looks like from the client: refused or reset sockets, timeouts, redis-py's own.
OUTAGE_ERRORS: tuple[type[Exception], ...] = (RedisError, OSError, TimeoutError)


class RedisUnavailable(LevibotError):
    """Redis is down (or the breaker is open): the caller should use its fallback."""


class RedisBreaker:
    """Gate calls to Redis; fail fast while it is known to be down.

    ``timeout_s`` bounds one call, so a Redis that hangs rather than refuses costs each caller
    at most that once per outage.
    """

    def __init__(
        self,
        log: Any,
        metrics: Metrics | None = None,
        *,
        timeout_s: float = 0.5,
        backoff_s: float = 0.25,
        max_backoff_s: float = 5.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.timeout_s = timeout_s
        self.now = now
        self.up = True
        self._since = 0.0  # when the current outage began
        self._retry_at = 0.0
        self._backoff = Backoff(backoff_s, max_backoff_s, jitter=False)
        self._probing = False
        self._epoch = 0  # changes whenever the breaker opens or closes
        self.outages = 0  # outages seen
        self.probes = 0  # calls let through while open, to see whether Redis is back
        self._outages: Counter | None = None
        if metrics is not None:
            metrics.gauge("gateway_redis_up", "1 while Redis answers, 0 during an outage",
                          fn=lambda: float(self.up))  # fmt: skip
            self._outages = metrics.counter(
                "gateway_redis_outages_total", "Times the gateway found Redis down"
            )

    def _may_call(self) -> bool:
        if self.up:
            return True
        if self._probing or self.now() < self._retry_at:
            return False
        self._probing = True  # this caller is the probe; the others keep failing fast
        self.probes += 1
        return True

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Return ``await fn()``; raise ``RedisUnavailable`` when Redis is (or just went) down."""
        if not self._may_call():
            raise RedisUnavailable("Redis is unavailable")
        probe, epoch = not self.up, self._epoch
        try:
            with anyio.fail_after(self.timeout_s):
                result = await fn()
        except OUTAGE_ERRORS as exc:
            # A call that began before the state changed reports old news: it neither opens a
            # second outage nor delays the next probe.
            if epoch == self._epoch:
                self._failed(exc, probe)
            raise RedisUnavailable(f"Redis is unavailable: {exc}") from exc
        finally:
            if probe:
                self._probing = False
        if probe:  # only a call made while open shows that Redis is back
            self._recovered()
        return result

    def _failed(self, exc: Exception, probe: bool) -> None:
        now = self.now()
        if not probe:  # the first failure of an outage
            self.up = False
            self._epoch += 1
            self.outages += 1
            self._since = now
            self._backoff.reset()
        wait = self._backoff.next()
        if not probe:
            if self._outages is not None:
                self._outages.inc()
            self.log.warning(
                "gateway.redis_down", error=f"{type(exc).__name__}: {exc}",
                retry_in_s=wait,
            )  # fmt: skip
        self._retry_at = now + wait

    def _recovered(self) -> None:
        self.up = True
        self._epoch += 1
        self.log.info("gateway.redis_reconnected", down_s=round(self.now() - self._since, 3))
