"""The recorder actor: keeps what a replay or backtest produced, in memory, in arrival order.

A backtest or replay node runs it beside the real actors (``[groups] backtest = [..., "recorder"]``)
and reads it back from ``node.actors["recorder"]`` when the node has stopped. It never publishes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import msgspec

from levibot.config import Config
from levibot.messages import (
    Bar,
    Fill,
    Message,
    OrderClosed,
    OrderDenied,
    OrderIntent,
    PortfolioSnapshot,
    Signal,
)
from levibot.registry import register
from levibot.runtime.actor import Actor, ActorContext, Policy, Supervision

#: Every type the recorder can keep, by name.
RECORDABLE: dict[str, type[Message]] = {
    t.__name__: t
    for t in (Bar, Signal, OrderIntent, OrderDenied, Fill, OrderClosed, PortfolioSnapshot)
}


class RecorderConfig(Config, frozen=True, kw_only=True):
    """The ``[recorder]`` section."""

    #: Names of the message types to keep (``Bar``, ``Signal``, ``OrderIntent``, ...).
    types: tuple[str, ...] = tuple(RECORDABLE)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.types) - set(RECORDABLE))
        if unknown:
            raise ValueError(f"recorder.types: unknown {unknown}; known: {sorted(RECORDABLE)}")


class RecorderActor(Actor[RecorderConfig]):
    """Keep every consumed message in arrival order, for the report."""

    name = "recorder"
    consumes = tuple(RECORDABLE.values())
    config_type = RecorderConfig
    supervision = Supervision(policy=Policy.SKIP)
    mailbox_size = 65_536
    max_batch = 4096  # nothing here depends on seeing messages one at a time
    # In a replay with no NATS the node calls ``record`` as each message is published (a
    # ``TapMailbox``): the same order as through a mailbox, with no queueing nor drain (7% fewer
    # instructions per bar of a backtest). It must never publish, nor move the clock (what it
    # records was stamped by others).
    taps: ClassVar[bool] = True

    def __init__(self, ctx: ActorContext, config: RecorderConfig) -> None:
        super().__init__(ctx, config)
        self.messages: list[Message] = []
        self._kept = frozenset(RECORDABLE[n] for n in config.types)
        #: Record one message (synchronously). Keeping every type (the default) it is the
        #: list's own ``append``: the node's tap calls it for each message of a backtest, and a
        #: Python function there cost 0.7% of a bar's instructions. Chosen when the actor is
        #: built, because the node's tap takes it then.
        self.record: Callable[[Message], None] = (
            self.messages.append if len(self._kept) == len(RECORDABLE) else self._record_kept
        )

    async def on_start(self) -> None:
        """Start empty (the same list: ``record`` may be its ``append``)."""
        self.messages.clear()

    def _record_kept(self, msg: Message) -> None:
        if type(msg) in self._kept:
            self.messages.append(msg)

    async def handle(self, msg: Message) -> None:
        """Record one message."""
        self.record(msg)

    async def handle_batch(self, msgs: Any) -> None:
        """Record a batch in order."""
        for msg in msgs:
            self.record(msg)

    def of_type(self, type_: type[Any]) -> list[Any]:
        """Return the recorded messages of ``type_``, in arrival order."""
        return [m for m in self.messages if type(m) is type_]

    def encoded(self, *types: type[Message]) -> bytes:
        """Return the recorded messages of ``types`` (all when none) as one msgpack array.

        Two runs of the same input must give the same bytes: that is the determinism check.
        """
        wanted = tuple(types) or tuple(RECORDABLE.values())
        return msgspec.msgpack.encode([m for m in self.messages if isinstance(m, wanted)])


register("recorder", "levibot.backtest.recorder:RecorderActor")
