"""A restarted order or risk actor re-publishes the durable outputs it saved with its state.

A ``kill -9`` after the state was saved but before NATS confirmed the outputs must not lose
them: the input that caused them is then a duplicate (dropped), or market data (never
redelivered). The actors keep their last durable outputs in the state file and publish them
again at start; message ids make the copies harmless.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from levibot.actors.order import OrderActor, OrderConfig
from levibot.actors.risk import RiskActor, RiskConfig
from levibot.clock import ReplayClock
from levibot.messages import (
    Bar,
    Fill,
    OrderAccepted,
    OrderDenied,
    OrderIntent,
    PortfolioSnapshot,
    SetKillSwitch,
    Side,
    Signal,
    SignalSide,
)
from levibot.risk import RiskState, read_state
from levibot.runtime.outbox import Outbox
from levibot.testing import RecordingContext

pytestmark = pytest.mark.anyio
S = 1_000_000_000
T0 = 1_700_006_400 * S


def intent(coid: str, ts: int = T0) -> OrderIntent:
    return OrderIntent(ts_event=ts, ts_init=ts, symbol="BTCUSDT", client_order_id=coid,
                       strategy="ema", side=Side.BUY, quantity=0.01, price=100.0)  # fmt: skip


def bar(ts: int, price: float = 100.0) -> Bar:
    return Bar(ts_event=ts, ts_init=ts, symbol="BTCUSDT", venue="t", timeframe="1h",
               start=ts - 3600 * S, open=price, high=price, low=price, close=price,
               volume=1.0)  # fmt: skip


async def full_disk(data: bytes) -> None:
    """A state writer's save on a full disk."""
    raise OSError(28, "No space left on device")


async def order(tmp: Path, outbox_max: int = 64) -> tuple[OrderActor, RecordingContext]:
    ctx = RecordingContext("order", clock=ReplayClock())
    actor = OrderActor(ctx, OrderConfig(state_dir=str(tmp), fsync=False, fill="close",
                                        outbox_max=outbox_max))  # fmt: skip
    await actor.on_start()
    return actor, ctx


async def test_a_restarted_order_actor_republishes_the_fills_it_saved(tmp_path: Path) -> None:
    actor, ctx = await order(tmp_path)
    await actor.handle(bar(T0))
    await actor.handle(intent("c1", T0 + 1))
    (fill,) = ctx.of_type(Fill)
    # kill -9: no on_stop; the state file was written inside handle
    again, ctx2 = await order(tmp_path)
    assert fill in ctx2.of_type(Fill) and ctx2.of_type(OrderAccepted)
    await again.handle(intent("c1", T0 + 1))  # the redelivered intent: a duplicate
    assert ctx2.of_type(Fill).count(fill) == 1  # not executed twice, but not lost either
    assert again.portfolio.state.fills == 1


async def test_a_fill_is_published_only_once_the_state_that_holds_it_is_saved(
    tmp_path: Path,
) -> None:
    import anyio

    actor, ctx = await order(tmp_path)
    await actor.handle(bar(T0))
    saving, release = anyio.Event(), anyio.Event()
    write = actor._writer.save

    async def slow_save(data: bytes) -> None:  # the fsync of a loaded disk
        saving.set()
        await release.wait()
        await write(data)

    actor._writer.save = slow_save  # type: ignore[method-assign]
    async with anyio.create_task_group() as tg:
        tg.start_soon(actor.handle, intent("c1", T0 + 1))
        await saving.wait()
        # A kill -9 now must not leave a fill on the wire that the state file lacks (the
        # redelivered intent would fill again, at another price, under the same fill id).
        assert not ctx.of_type(Fill) and not ctx.of_type(OrderAccepted)
        release.set()
    (fill,) = ctx.of_type(Fill)
    assert fill.client_order_id == "c1"


async def test_the_outbox_keeps_only_the_last_durable_messages(tmp_path: Path) -> None:
    actor, ctx = await order(tmp_path, outbox_max=4)
    await actor.handle(bar(T0))
    for i in range(5):
        await actor.handle(intent(f"c{i}", T0 + 1 + i))
    kept = actor.outbox.to_list()
    assert len(kept) == 4 and all(not isinstance(m, PortfolioSnapshot) for m in kept)
    assert kept[-1] == ctx.of_type(Fill)[-1]


def risk(tmp: Path) -> tuple[RiskActor, RecordingContext]:
    ctx = RecordingContext("risk", clock=ReplayClock())
    return RiskActor(ctx, RiskConfig(state_dir=str(tmp), fsync=False, preset="off")), ctx


def long(ts: int = T0) -> Signal:
    return Signal(ts_event=ts, ts_init=ts, symbol="BTCUSDT", strategy="ema",
                  side=SignalSide.LONG, probability=0.8, confidence=0.6, price=100.0)  # fmt: skip


async def test_a_restarted_risk_actor_republishes_the_intents_it_saved(tmp_path: Path) -> None:
    actor, ctx = risk(tmp_path)
    await actor.on_start()
    await actor.handle(long())
    (sent,) = ctx.of_type(OrderIntent)
    again, ctx2 = risk(tmp_path)
    await again.on_start()
    assert ctx2.of_type(OrderIntent) == [sent]


async def test_a_risk_intent_is_published_only_once_the_state_that_decided_it_is_saved(
    tmp_path: Path,
) -> None:
    import anyio

    actor, ctx = risk(tmp_path)
    await actor.on_start()
    saving, release = anyio.Event(), anyio.Event()
    write = actor._writer.save

    async def slow_save(data: bytes) -> None:
        saving.set()
        await release.wait()
        await write(data)

    actor._writer.save = slow_save  # type: ignore[method-assign]
    async with anyio.create_task_group() as tg:
        tg.start_soon(actor.handle, long())
        await saving.wait()
        # A kill -9 now must not leave an intent on the wire whose pending order and decided
        # id the restarted actor lacks.
        assert not ctx.of_type(OrderIntent)
        release.set()
    (sent,) = ctx.of_type(OrderIntent)
    saved = read_state(actor.state_path, RiskState)
    assert saved is not None and saved.outbox == [sent]


async def test_a_risk_output_waits_for_a_save_that_succeeds(tmp_path: Path) -> None:
    actor, ctx = risk(tmp_path)
    await actor.on_start()
    write = actor._writer.save
    actor._writer.save = full_disk  # type: ignore[method-assign]
    with pytest.raises(OSError):
        await actor.handle(long())
    assert not ctx.of_type(OrderIntent)  # not on the wire while the state lacks it
    actor._writer.save = write  # type: ignore[method-assign]
    await actor.handle(bar(T0 + 1))  # a bar alone saves nothing, but an output is waiting
    (sent,) = ctx.of_type(OrderIntent)
    saved = read_state(actor.state_path, RiskState)
    assert saved is not None and saved.outbox == [sent]


async def test_a_risk_denial_is_saved_before_it_is_published(tmp_path: Path) -> None:
    actor, ctx = risk(tmp_path)
    await actor.on_start()
    await actor.handle(SetKillSwitch(ts_event=T0, ts_init=T0, command_id="k", on=True))
    await actor.handle(long(T0 + 1))
    await actor.handle(long(T0 + 2))  # the same day, the same switch: nothing else to save
    denied = ctx.of_type(OrderDenied)
    assert len(denied) == 2
    again, ctx2 = risk(tmp_path)  # kill -9: no on_stop
    await again.on_start()
    assert ctx2.of_type(OrderDenied) == denied


async def test_outbox_records_durable_messages_only() -> None:
    box: Outbox[object] = Outbox(3)  # type: ignore[type-var]
    box.record(bar(T0))  # core
    box.record(intent("a"))
    assert box.to_list() == [intent("a")]
    sent: list[object] = []

    async def publish(msg: object) -> None:
        sent.append(msg)

    assert await box.replay(publish) == 1 and sent == [intent("a")]


async def test_a_fill_whose_save_failed_waits_for_a_save_that_succeeds(tmp_path: Path) -> None:
    actor, ctx = await order(tmp_path)
    await actor.handle(bar(T0))
    write = actor._writer.save
    actor._writer.save = full_disk  # type: ignore[method-assign]
    with pytest.raises(OSError):
        await actor.handle(intent("c1", T0 + 1))
    # Not on the wire while the state file lacks it (before: published as the turn ended).
    assert not ctx.of_type(Fill) and not ctx.of_type(OrderAccepted)
    actor._writer.save = write  # type: ignore[method-assign]
    await actor.handle(bar(T0 + 2 * S))  # a bar alone saves nothing, but a fill is waiting
    (fill,) = ctx.of_type(Fill)
    again, ctx2 = await order(tmp_path)  # kill -9 now: the saved outbox holds the fill
    assert fill in ctx2.of_type(Fill) and again.portfolio.state.fills == 1
