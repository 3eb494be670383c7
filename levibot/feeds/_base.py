"""The source interface every feed implements, and the bits sources share."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Generic, TypeVar

import anyio
import anyio.lowlevel

from levibot.config import Config
from levibot.messages import Bar, Quote, Tick
from levibot.metrics import Counter, Gauge, Metrics

if TYPE_CHECKING:
    from levibot.runtime.actor import ActorContext

MarketData = Tick | Quote | Bar
Emit = Callable[[MarketData], Awaitable[None]]
ConfigT = TypeVar("ConfigT", bound=Config)

#: Yield to the event loop after this many messages when replaying as fast as possible, so the
#: consumers (and the rest of the node) get to run.
YIELD_EVERY = 256


def counter(metrics: Metrics, name: str, help_: str, **labels: str) -> Counter:
    """Return the counter ``name{labels}``, registering it only once.

    A restarted actor builds its source again on the same registry; re-registering would
    expose the same series twice.
    """
    for metric in metrics.find(name, **labels):
        if isinstance(metric, Counter) and metric.labels == labels:
            return metric
    return metrics.counter(name, help_, **labels)


def gauge(metrics: Metrics, name: str, help_: str, fn: Callable[[], float], **labels: str) -> Gauge:
    """Return the callback gauge ``name{labels}`` reading ``fn``, registering it only once."""
    for metric in metrics.find(name, **labels):
        if isinstance(metric, Gauge) and metric.labels == labels:
            metric.fn = fn
            return metric
    return metrics.gauge(name, help_, fn=fn, **labels)


class Source(abc.ABC, Generic[ConfigT]):
    """A producer of market data: ``open`` once, then ``run`` publishes through ``emit``.

    A source reads time only from ``ctx.clock``: it calls ``clock.observe(ts_event)`` before it
    stamps a message (that is what drives the replay clock) and sets ``ts_init`` and
    ``ts_ingress`` from ``clock.now_ns()``. Bad input is counted and logged, never raised.
    """

    kind: str = ""

    def __init__(
        self,
        ctx: ActorContext,
        config: ConfigT,
        *,
        venue: str,
        symbols: tuple[str, ...],
    ) -> None:
        self.ctx = ctx
        self.config = config
        self.venue = venue
        self.symbols = symbols
        self._published = {
            t: counter(
                ctx.metrics,
                "levibot_feed_messages_total",
                "Market-data messages the feed produced, by source and type.",
                source=self.kind,
                type=t.__name__,
            )
            for t in (Tick, Quote, Bar)
        }
        # Staleness on the node's clock: wall time live, event time in a replay (which is
        # never stale while it plays). Counted from the start until the first message.
        self.last_ns = ctx.clock.now_ns()
        gauge(
            ctx.metrics, "levibot_feed_last_message_age_seconds",
            "Time since the feed produced its last message (node clock).",
            lambda: (self.ctx.clock.now_ns() - self.last_ns) / 1e9, source=self.kind,
        )  # fmt: skip

    async def open(self) -> None:
        """Prepare what ``run`` needs (files, caches); fail here on bad configuration."""

    @abc.abstractmethod
    async def run(self, emit: Emit) -> None:
        """Publish market data through ``emit`` until exhausted or cancelled."""

    async def close(self) -> None:
        """Release what ``open`` acquired."""

    def count(self, msg: MarketData) -> None:
        """Count one produced message in the metrics."""
        self._published[type(msg)].inc()
        self.last_ns = msg.ts_init


class Pacer:
    """Hold event-time playback to ``speed`` × real time (``speed <= 0``: as fast as possible)."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self._origin_event: int | None = None
        self._origin_wall = 0.0
        self._n = 0

    async def wait(self, ts_event: int) -> None:
        """Sleep until ``ts_event`` is due; at full speed, yield now and then instead."""
        if self.speed <= 0:
            self._n += 1
            if self._n % YIELD_EVERY == 0:
                await anyio.lowlevel.checkpoint()
            return
        if self._origin_event is None:
            self._origin_event = ts_event
            self._origin_wall = anyio.current_time()
            return
        due = self._origin_wall + (ts_event - self._origin_event) / 1e9 / self.speed
        delay = due - anyio.current_time()
        if delay > 0:
            await anyio.sleep(delay)
        else:
            self._n += 1
            if self._n % YIELD_EVERY == 0:
                await anyio.lowlevel.checkpoint()
