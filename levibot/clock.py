"""Time, as actors see it: ``LiveClock`` in production, ``ReplayClock`` in replay and backtest."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """The only source of time an actor may read."""

    def now_ns(self) -> int:
        """Return the current time in ns since the Unix epoch."""
        ...

    def observe(self, ts_event: int) -> None:
        """Let the clock see an event time (replay advances; live ignores it)."""
        ...

    @property
    def is_replay(self) -> bool:
        """True when time comes from events rather than the wall."""
        ...


class LiveClock:
    """Wall-clock time."""

    is_replay = False

    def now_ns(self) -> int:
        return time.time_ns()

    def observe(self, ts_event: int) -> None:
        pass


class ReplayClock:
    """Event time: ``now_ns`` is the latest event time observed, never going backwards."""

    is_replay = True

    def __init__(self, start_ns: int = 0) -> None:
        self._now = start_ns

    def now_ns(self) -> int:
        return self._now

    def observe(self, ts_event: int) -> None:
        if ts_event > self._now:
            self._now = ts_event
