"""The local bus hands a published message to its egress (the NATS mirror) only for the types
the egress says it sends, asked once per type; the local subscribers get every message."""

from __future__ import annotations

import pytest

from levibot.bus import LocalBus, Mailbox
from levibot.messages import Fill, Message, Side, Tick

pytestmark = pytest.mark.anyio


def tick(i: int) -> Tick:
    return Tick(ts_event=i, ts_init=i, symbol="BTC", venue="x", price=1.0, size=1.0)


def fill(i: int) -> Fill:
    return Fill(
        ts_event=i, ts_init=i, symbol="BTC", fill_id=str(i), client_order_id=str(i),
        side=Side.BUY, quantity=1.0, price=1.0, fee=0.0,
    )  # fmt: skip


async def test_only_the_types_the_egress_sends_reach_it_and_it_is_asked_once_per_type() -> None:
    bus = LocalBus()
    box = Mailbox("all", 100)
    bus.subscribe(box, (Tick, Fill))
    sent: list[Message] = []
    asked: list[type[Message]] = []

    async def egress(msg: Message) -> None:
        sent.append(msg)

    def takes(type_: type[Message]) -> bool:
        asked.append(type_)
        return type_.durable  # as the mirror with no remote consumer of market data

    await bus.publish(tick(0))  # before an egress is set: cached as not going out
    bus.set_egress(egress, takes)  # forgets what was cached
    for i in range(1, 4):
        await bus.publish(tick(i))
        await bus.publish(fill(i))
    assert [m.ts_event for m in sent] == [1, 2, 3] and all(isinstance(m, Fill) for m in sent)
    assert asked == [Tick, Fill]
    assert len(box) == 7  # local subscribers get everything

    bus.set_egress(egress)  # takes every type
    await bus.publish(tick(9))
    assert isinstance(sent[-1], Tick) and sent[-1].ts_event == 9
