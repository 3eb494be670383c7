"""Mailbox overflow policies: conflate latest-per-key, block, close and drain."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from levibot.bus import Mailbox, MailboxClosed
from levibot.messages import Fill, Side, Tick


def tick(symbol: str, price: float, ts: int = 0) -> Tick:
    return Tick(ts_event=ts, ts_init=ts, symbol=symbol, venue="x", price=price, size=1.0)


def fill(i: int) -> Fill:
    return Fill(
        ts_event=i, ts_init=i, symbol="BTC", fill_id=str(i), client_order_id=str(i),
        side=Side.BUY, quantity=1.0, price=1.0, fee=0.0,
    )  # fmt: skip


def drain(mb: Mailbox) -> list:
    return [m for m, _ in mb.get_nowait_batch(10_000)]


def test_conflation_replaces_the_pending_message_of_the_same_symbol_when_full() -> None:
    mb = Mailbox("t", 2)
    assert mb.offer(tick("A", 1.0))
    assert mb.offer(tick("B", 1.0))
    assert mb.offer(tick("A", 2.0))  # full: replaces A@1 in place
    assert [(m.symbol, m.price) for m in drain(mb)] == [("A", 2.0), ("B", 1.0)]
    assert mb.dropped == 1


def test_conflation_evicts_the_oldest_market_data_for_a_new_symbol() -> None:
    mb = Mailbox("t", 2)
    mb.offer(tick("A", 1.0))
    mb.offer(tick("B", 1.0))
    mb.offer(tick("C", 1.0))
    assert [m.symbol for m in drain(mb)] == ["B", "C"]
    assert mb.dropped == 1
    assert len(mb) == 0


def test_nothing_conflates_while_there_is_room() -> None:
    mb = Mailbox("t", 10)
    for p in (1.0, 2.0, 3.0):
        mb.offer(tick("A", p))
    assert [m.price for m in drain(mb)] == [1.0, 2.0, 3.0]
    assert mb.dropped == 0


def test_market_data_is_dropped_when_the_mailbox_is_full_of_durable_messages() -> None:
    mb = Mailbox("t", 1)
    assert mb.try_put(fill(1))
    assert not mb.offer(tick("A", 1.0))
    assert mb.dropped == 1
    assert drain(mb) == [fill(1)]


def test_conflatable_bookkeeping_stays_bounded_under_sustained_flow() -> None:
    mb = Mailbox("t", 4)
    for i in range(10_000):
        mb.offer(tick(f"S{i % 7}", float(i)))
        if i % 3:
            drain(mb)
    drain(mb)
    assert len(mb._conflatable) == 0 and not mb._keyed


@pytest.mark.anyio
async def test_block_policy_waits_for_room_and_loses_nothing() -> None:
    mb = Mailbox("t", 2)
    got: list[int] = []

    async def producer() -> None:
        for i in range(50):
            await mb.put(fill(i))
        mb.close()

    async def consumer() -> None:
        while True:
            try:
                msg, _ = await mb.get()
            except MailboxClosed:
                return
            got.append(msg.ts_event)
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(producer)
        tg.start_soon(consumer)
    assert got == list(range(50))
    assert mb.dropped == 0


@pytest.mark.anyio
async def test_replay_mailbox_blocks_market_data_instead_of_conflating() -> None:
    mb = Mailbox("t", 1, conflate=False)
    assert mb.try_put(tick("A", 1.0))
    assert not mb.try_put(tick("A", 2.0))
    with anyio.move_on_after(0.05) as scope:
        await mb.put(tick("A", 2.0))
    assert scope.cancelled_caught  # it waited rather than conflating
    assert drain(mb)[0].price == 1.0


@pytest.mark.anyio
async def test_closed_mailbox_drains_then_raises() -> None:
    mb = Mailbox("t", 4)
    mb.try_put(fill(1))
    mb.close()
    msg, _ = await mb.get()
    assert msg == fill(1)
    with pytest.raises(MailboxClosed):
        await mb.get()


@pytest.mark.anyio
async def test_a_blocking_message_evicts_market_data_instead_of_waiting() -> None:
    mb = Mailbox("t", 2)
    mb.offer(tick("A", 1.0))
    mb.offer(tick("B", 1.0))
    with anyio.fail_after(1):  # would wait forever if nobody consumed
        await mb.put(fill(1))
    assert [type(m).__name__ for m in drain(mb)] == ["Tick", "Fill"]
    assert mb.dropped == 1
