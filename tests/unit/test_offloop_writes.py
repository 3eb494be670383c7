"""Disk writes leave the event loop: state saves and journal flushes run in worker threads.

The slow disk is simulated at the OS edge only: ``os.fsync`` (and ``os.replace``, to record
what is renamed into place) is wrapped; our writers, actors and journal run unchanged. A gated
``fsync`` waits in its thread until a task on the event loop opens the gate: if the fsync ran
on the loop, that task could never run and the fsync would time out.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from levibot.actors.order import OrderActor, OrderConfig
from levibot.actors.risk import RiskActor, RiskConfig
from levibot.actors.store import StoreActor, StoreConfig
from levibot.clock import ReplayClock
from levibot.execution import PortfolioState
from levibot.messages import Bar, OrderIntent, SetKillSwitch, Side, Tick
from levibot.risk import RiskState, read_state
from levibot.storage.journal import Journal
from levibot.storage.journal_writer import JournalWriter
from levibot.storage.state_writer import StateWriter
from levibot.testing import RecordingContext, eventually

H = 3_600 * 1_000_000_000
T0 = 1_700_006_400 * 1_000_000_000


class GatedFsync:
    """``os.fsync`` that records its thread and, while closed, waits for the gate to open."""

    def __init__(self, real: Callable[[int], None]) -> None:
        self.real = real
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.timed_out = False
        self.threads: list[int] = []

    def __call__(self, fd: int) -> None:
        self.threads.append(threading.get_ident())
        self.entered.set()
        if not self.gate.wait(timeout=5.0):
            self.timed_out = True  # nobody opened it: the loop was blocked
        self.real(fd)


@pytest.fixture
def gated(monkeypatch: pytest.MonkeyPatch) -> GatedFsync:
    gate = GatedFsync(os.fsync)
    monkeypatch.setattr(os, "fsync", gate)
    return gate


async def assert_durable_off_loop(gate: GatedFsync, work: Callable[[], Awaitable[Any]]) -> None:
    """Run ``work`` while its fsync is held; the loop must go on, ``work`` must wait for it."""
    loop_thread = threading.get_ident()
    done = anyio.Event()

    async def run() -> None:
        await work()
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await eventually(gate.entered.is_set, timeout=5.0)  # this task runs meanwhile
        assert not done.is_set()  # the caller waits until the state is on disk
        gate.gate.set()
        await done.wait()
    assert not gate.timed_out
    assert gate.threads and loop_thread not in gate.threads


def leftovers(directory: Path) -> list[str]:
    """Return the temporary files an atomic write left behind."""
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


def bar(i: int, close: float) -> Bar:
    return Bar(
        ts_event=T0 + (i + 1) * H, ts_init=T0 + (i + 1) * H, symbol="BTCUSDT", venue="binance",
        timeframe="1h", start=T0 + i * H, open=close, high=close, low=close, close=close,
        volume=1.0,
    )  # fmt: skip


def intent(ts: int, side: Side, coid: str) -> OrderIntent:
    return OrderIntent(
        ts_event=ts, ts_init=ts, symbol="BTCUSDT", client_order_id=coid, strategy="s",
        side=side, quantity=1.0, price=100.0,
    )  # fmt: skip


async def order_actor(tmp: Path, clock: ReplayClock) -> OrderActor:
    actor = OrderActor(
        RecordingContext("order", clock=clock), OrderConfig(state_dir=str(tmp), fill="close")
    )
    await actor.on_start()
    return actor


async def send(actor: Any, clock: ReplayClock, msg: Any) -> None:
    clock.observe(msg.ts_event)
    await actor.handle(msg)


# ---- the loop is not blocked --------------------------------------------------------------
@pytest.mark.anyio
async def test_order_fill_is_fsynced_off_the_loop_and_durable_before_handle_returns(
    tmp_path: Path, gated: GatedFsync
) -> None:
    clock = ReplayClock()
    actor = await order_actor(tmp_path, clock)
    await send(actor, clock, bar(0, 100.0))
    buy = intent(T0 + H, Side.BUY, "o1")

    await assert_durable_off_loop(gated, lambda: send(actor, clock, buy))

    state = read_state(tmp_path / "portfolio.json", PortfolioState)
    assert state is not None and "o1" in state.seen_ids and state.fills == 1
    assert state.holdings["BTCUSDT"].quantity == 1.0


@pytest.mark.anyio
async def test_risk_command_is_fsynced_off_the_loop_and_durable_before_handle_returns(
    tmp_path: Path, gated: GatedFsync
) -> None:
    clock = ReplayClock()
    actor = RiskActor(RecordingContext("risk", clock=clock), RiskConfig(state_dir=str(tmp_path)))
    await actor.on_start()
    kill = SetKillSwitch(ts_event=T0, ts_init=T0, command_id="k1", on=True)

    await assert_durable_off_loop(gated, lambda: send(actor, clock, kill))

    state = read_state(tmp_path / "risk.json", RiskState)
    assert state is not None and state.kill_switch is True


@pytest.mark.anyio
async def test_journal_flush_fsyncs_off_the_loop_while_appends_go_on(
    tmp_path: Path, gated: GatedFsync
) -> None:
    writer = await JournalWriter.open(tmp_path / "j", fsync="batch")
    ticks = [
        Tick(ts_event=i, ts_init=i, symbol="BTCUSDT", venue="v", price=1.0 + i, size=1.0)
        for i in range(30)
    ]
    writer.append_many(ticks[:10])

    async def flush_while_appending() -> None:
        await writer.flush()

    async with anyio.create_task_group() as tg:
        tg.start_soon(flush_while_appending)
        await eventually(gated.entered.is_set, timeout=5.0)
        writer.append_many(ticks[10:20])  # appends while the first flush is in its fsync
        assert writer.pending_bytes > 0
        gated.gate.set()
    writer.append_many(ticks[20:])
    await writer.close()

    assert not gated.timed_out and threading.get_ident() not in gated.threads
    assert list(Journal.read(tmp_path / "j")) == ticks


# ---- order is kept, newest last -------------------------------------------------------------
@pytest.mark.anyio
async def test_rapid_saves_write_only_newer_versions_and_end_with_the_newest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    renamed: list[int] = []
    real_replace = os.replace

    def recording_replace(src: Any, dst: Any) -> None:
        renamed.append(json.loads(Path(src).read_bytes())["v"])
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", recording_replace)
    writer = StateWriter(path, fsync=True)
    n = 300
    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(writer.save, msgspec.json.encode({"v": i}))
            if i % 50 == 0:
                await writer.save(msgspec.json.encode({"v": i}))  # a saver that waits, too

    assert renamed == sorted(set(renamed))  # never an older version after a newer one
    assert renamed[-1] == n - 1
    assert writer.writes == len(renamed) < n  # pending saves coalesced
    assert json.loads(path.read_bytes()) == {"v": n - 1}
    assert not writer.dirty
    assert not leftovers(tmp_path)


@pytest.mark.anyio
async def test_order_actor_restarted_after_many_rapid_fills_reloads_the_newest_state(
    tmp_path: Path,
) -> None:
    clock = ReplayClock()
    first = await order_actor(tmp_path, clock)
    for i in range(40):
        await send(first, clock, bar(2 * i, 100.0 + i))
        side = Side.BUY if i % 2 == 0 else Side.SELL
        await send(first, clock, intent(T0 + (2 * i + 1) * H, side, f"o{i}"))
    expected = msgspec.json.encode(first.portfolio.to_state(first.venue.pending()))
    # Killed, no on_stop: what the last handle saved is what a restart finds.
    second = await order_actor(tmp_path, ReplayClock())
    assert msgspec.json.encode(second.portfolio.to_state(second.venue.pending())) == expected
    assert second.portfolio.state.fills == 40


# ---- pending writes are flushed at stop -----------------------------------------------------
@pytest.mark.anyio
async def test_state_writer_flush_writes_the_newest_pending_version_once(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    writer = StateWriter(path, fsync=True)
    for i in range(3):
        writer.submit(msgspec.json.encode({"v": i}))
    assert writer.dirty and not path.exists()  # submitted, not written yet

    await writer.flush()  # what a stop does

    assert json.loads(path.read_bytes()) == {"v": 2}
    assert writer.writes == 1 and not writer.dirty


@pytest.mark.anyio
async def test_failed_state_write_raises_and_stays_pending_for_the_next_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    writer = StateWriter(path, fsync=True)
    real_fsync = os.fsync
    failures = [OSError(28, "No space left on device")]

    def failing_once(fd: int) -> None:
        if failures:
            raise failures.pop()
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_once)
    with pytest.raises(OSError, match="No space"):
        await writer.save(b'{"v": 1}')
    assert writer.dirty and not path.exists()
    assert not leftovers(tmp_path)  # the temporary file is cleaned up

    await writer.flush()
    assert path.read_bytes() == b'{"v": 1}' and not writer.dirty


@pytest.mark.anyio
async def test_store_stop_flushes_the_journal_buffer_it_had_not_written(tmp_path: Path) -> None:
    actor = StoreActor(RecordingContext("store"), StoreConfig(journal_dir=str(tmp_path / "j")))
    await actor.on_start()
    ticks = [
        Tick(ts_event=i, ts_init=i, symbol="BTCUSDT", venue="v", price=1.0 + i, size=1.0)
        for i in range(50)
    ]
    await actor.handle_batch(ticks)
    assert list(Journal.read(tmp_path / "j")) == []  # buffered (under a MiB, no tick yet)

    await actor.on_stop()

    assert list(Journal.read(tmp_path / "j")) == ticks
