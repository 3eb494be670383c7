"""``LoopLag``: how late the event loop runs a timer, as metrics; cheap enough to always run.

Blocking work on the loop (a synchronous write, an fsync, a long computation in a handler)
stalls every actor of the process. A task sleeps ``interval_s`` and measures how late it
wakes: that lateness is how long something held the loop. Exported:

* ``levibot_event_loop_lag_seconds``: a histogram of every wake-up's lateness;
* ``levibot_event_loop_lag_max_seconds``: the largest lateness seen since the process started.

Ten wake-ups a second by default. A stall at least ``interval_s`` long always delays a wake-up
(by at least its length minus ``interval_s``); a shorter one is caught in proportion to its
length, so the histogram samples short stalls and the maximum catches the long ones.
"""

from __future__ import annotations

import time

import anyio

from levibot.metrics import Metrics

__all__ = ["LoopLag"]

_BUCKETS = (1e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class LoopLag:
    """Measure the event loop's lateness in a task of its own (``run`` until cancelled)."""

    def __init__(self, metrics: Metrics, *, interval_s: float = 0.1) -> None:
        self.interval_s = interval_s
        self.max_s = 0.0
        self._hist = metrics.histogram(
            "levibot_event_loop_lag_seconds",
            "How late the event loop ran a timer (time something held the loop).",
            buckets=_BUCKETS,
        )
        metrics.gauge(
            "levibot_event_loop_lag_max_seconds",
            "The largest event-loop lateness since start.",
            fn=lambda: self.max_s,
        )

    async def run(self) -> None:
        """Sleep, measure the lateness, record it; forever (cancel to stop)."""
        clock = time.perf_counter
        while True:
            start = clock()
            await anyio.sleep(self.interval_s)
            self.record(clock() - start - self.interval_s)

    def record(self, lag_s: float) -> None:
        """Record one wake-up's lateness (a negative one, an early timer, counts as zero)."""
        lag_s = max(lag_s, 0.0)
        self._hist.observe(lag_s)
        self.max_s = max(self.max_s, lag_s)
