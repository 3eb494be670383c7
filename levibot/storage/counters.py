"""Counters shared between processes in Redis: fixed-window rate limits and risk counters.

``incr("orders", window_s=60)`` counts in the current 60-second window
(``<prefix>:cnt:orders:<window index>``); the key expires one window after it ends, so old
windows clean themselves up. Without a window, a counter lives until ``reset`` (or ``ttl_s``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any


class Counters:
    """Named integer counters in Redis (``redis.asyncio.Redis``)."""

    def __init__(
        self, redis: Any, prefix: str = "levibot", *, now: Callable[[], float] = time.time
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self._now = now  # injectable: tests and replay drive the window by hand

    def key(self, name: str, window_s: float | None = None) -> str:
        """Return the Redis key of ``name`` in the current window (if any)."""
        if window_s is None:
            return f"{self.prefix}:cnt:{name}"
        return f"{self.prefix}:cnt:{name}:{int(self._now() // window_s)}"

    async def incr(
        self,
        name: str,
        amount: int = 1,
        *,
        window_s: float | None = None,
        ttl_s: float | None = None,
    ) -> int:
        """Add ``amount`` to ``name`` (in the current window) and return the new count."""
        key = self.key(name, window_s)
        ttl = ttl_s if ttl_s is not None else (2 * window_s if window_s is not None else None)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incrby(key, amount)
            if ttl is not None:
                pipe.pexpire(key, max(1, math.ceil(ttl * 1000)))
            results = await pipe.execute()
        return int(results[0])

    async def get(self, name: str, *, window_s: float | None = None) -> int:
        """Return the count of ``name`` (in the current window), 0 when absent."""
        raw = await self.redis.get(self.key(name, window_s))
        return int(raw) if raw is not None else 0

    async def hit(self, name: str, limit: int, *, window_s: float) -> bool:
        """Count one hit and return True while the window's count is within ``limit``."""
        return await self.incr(name, window_s=window_s) <= limit

    async def reset(self, name: str, *, window_s: float | None = None) -> None:
        """Delete ``name`` (in the current window)."""
        await self.redis.delete(self.key(name, window_s))
