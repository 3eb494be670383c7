"""The one backoff: exponential, capped, optionally jittered, resettable.

Every retry loop of levibot waits with it: reconnecting to Binance or Telegram, retrying
PostgreSQL from the store, Redis from the gateway, a refused JetStream batch, an actor's
restart. ``delay(attempt, ...)`` is the pure rule: ``min(maximum, initial · 2**attempt)``,
drawn from ``[d/2, d]`` when jittered (many clients, or restarts, then do not retry in step
against the same server). ``Backoff`` counts the attempts for a loop and resets on success.
"""

from __future__ import annotations

import random

__all__ = ["Backoff", "delay"]


def delay(
    attempt: int,
    initial: float,
    maximum: float,
    *,
    jitter: bool = True,
    rng: random.Random | None = None,
) -> float:
    """Return the wait before try ``attempt`` (0-based): doubling from ``initial``, capped."""
    ceiling = min(maximum, initial * 2.0 ** min(max(attempt, 0), 60))
    if not jitter:
        return ceiling
    draw = (rng or random).random()
    return ceiling / 2 + draw * ceiling / 2


class Backoff:
    """The waits of one retry loop: ``next()`` after each failure, ``reset()`` on success."""

    def __init__(
        self,
        initial: float,
        maximum: float,
        *,
        jitter: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.jitter = jitter
        self.attempt = 0
        self._rng = rng

    def next(self) -> float:
        """Return the wait before the next try, and count the try."""
        wait = delay(self.attempt, self.initial, self.maximum, jitter=self.jitter, rng=self._rng)
        self.attempt += 1
        return wait

    def peek(self) -> float:
        """Return the ceiling of the next wait without counting a try (for logs)."""
        return delay(self.attempt, self.initial, self.maximum, jitter=False)

    def reset(self) -> None:
        """Start again from the initial wait (after a success)."""
        self.attempt = 0
