"""Test helpers for actor authors: a recording context, a hand-driven clock, ``eventually``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import structlog

from levibot.clock import ReplayClock
from levibot.messages import Message
from levibot.runtime.actor import ActorContext, Partition
from levibot.runtime.metrics import Metrics

M = TypeVar("M", bound=Message)


class RecordingContext(ActorContext):
    """An ``ActorContext`` whose ``publish`` records messages instead of routing them."""

    def __init__(
        self,
        name: str = "test",
        *,
        clock: Any | None = None,
        partition: Partition = Partition(),
    ) -> None:
        self.published: list[Message] = []

        async def record(msg: Message) -> None:
            self.published.append(msg)

        super().__init__(
            name=name,
            publish=record,
            clock=clock if clock is not None else ReplayClock(),
            metrics=Metrics(),
            log=structlog.get_logger().bind(actor=name),
            partition=partition,
        )

    def of_type(self, type_: type[M]) -> list[M]:
        """Return the published messages of ``type_``."""
        return [m for m in self.published if isinstance(m, type_)]


async def eventually(
    predicate: Callable[[], Any], *, timeout: float = 10.0, interval: float = 0.01
) -> Any:
    """Wait until ``predicate()`` is truthy and return it; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        await anyio.sleep(interval)
