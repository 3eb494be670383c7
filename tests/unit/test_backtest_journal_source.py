"""The ``journal_replay`` source and the recorder, driven without a node."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from levibot.backtest.recorder import RecorderActor, RecorderConfig
from levibot.backtest.sources import JournalReplayActor, JournalReplayConfig
from levibot.clock import ReplayClock
from levibot.messages import Alert, AlertLevel, Bar, Fill, Quote, Side, Tick
from levibot.storage.journal import Journal, JournalError
from levibot.testing import RecordingContext

pytestmark = pytest.mark.anyio

H = 3_600_000_000_000


def _bar(i: int, symbol: str = "BTCUSDT") -> Bar:
    return Bar(
        ts_event=(i + 1) * H, ts_init=(i + 1) * H, symbol=symbol, venue="X", timeframe="1h",
        start=i * H, open=1.0 + i, high=2.0 + i, low=0.5 + i, close=1.5 + i, volume=3.0,
    )  # fmt: skip


def _journal(path: Path) -> list[object]:
    msgs: list[object] = []
    with Journal(path, fsync="never") as j:
        for i in range(5):
            msgs.append(_bar(i))
            msgs.append(_bar(i, "ETHUSDT"))
            msgs.append(
                Tick(ts_event=(i + 1) * H + 1, ts_init=0, symbol="BTCUSDT", venue="X",
                     price=1.0, size=1.0)
            )  # fmt: skip
            msgs.append(
                Alert(ts_event=(i + 1) * H, ts_init=0, level=AlertLevel.INFO, source="t",
                      text="x", code="C", alert_id=f"a{i}")
            )  # fmt: skip
        j.append_many(msgs)  # type: ignore[arg-type]
    return msgs


async def _run(cfg: JournalReplayConfig) -> tuple[RecordingContext, JournalReplayActor]:
    ctx = RecordingContext("journal_replay", clock=ReplayClock())
    actor = JournalReplayActor(ctx, cfg)
    await actor.on_start()
    await actor.run()
    return ctx, actor


async def test_journal_replay_republishes_market_data_in_order_and_skips_the_rest(
    tmp_path: Path,
) -> None:
    msgs = _journal(tmp_path / "j")
    ctx, actor = await _run(JournalReplayConfig(path=str(tmp_path / "j")))
    market = [m for m in msgs if isinstance(m, (Bar, Tick, Quote))]
    assert ctx.published == market  # unchanged, same order
    assert actor.skipped == 5  # the alerts
    assert ctx.clock.now_ns() == max(m.ts_event for m in market)


async def test_journal_replay_filters_by_type_and_symbol_and_stops_at_the_limit(
    tmp_path: Path,
) -> None:
    _journal(tmp_path / "j")
    cfg = JournalReplayConfig(path=str(tmp_path / "j"), types=("Bar",), symbols=("ETHUSDT",))
    ctx, _ = await _run(cfg)
    assert [(m.symbol, m.ts_event) for m in ctx.published] == [  # type: ignore[attr-defined]
        ("ETHUSDT", (i + 1) * H) for i in range(5)
    ]
    ctx, _ = await _run(msgspec.structs.replace(cfg, limit=2))
    assert len(ctx.published) == 2


async def test_journal_replay_refuses_to_start_without_a_journal(tmp_path: Path) -> None:
    actor = JournalReplayActor(RecordingContext(), JournalReplayConfig(path=str(tmp_path / "no")))
    with pytest.raises(JournalError):
        await actor.on_start()


def test_journal_replay_config_names_unknown_types() -> None:
    with pytest.raises(ValueError, match="Fill"):
        JournalReplayConfig(types=("Bar", "Fill"))


async def test_recorder_keeps_messages_in_order_and_encodes_them_stably() -> None:
    rec = RecorderActor(RecordingContext("recorder"), RecorderConfig(types=("Bar", "Fill")))
    await rec.on_start()
    fill = Fill(
        ts_event=H, ts_init=H, symbol="BTCUSDT", fill_id="f", client_order_id="o",
        side=Side.BUY, quantity=1.0, price=2.0, fee=0.0,
    )  # fmt: skip
    await rec.handle_batch(
        [_bar(0), fill, Tick(ts_event=1, ts_init=1, symbol="B", venue="X", price=1.0, size=1.0)]
    )
    await rec.handle(_bar(1))
    assert rec.messages == [_bar(0), fill, _bar(1)]
    assert rec.of_type(Fill) == [fill]
    decoded = msgspec.msgpack.decode(rec.encoded(Fill))
    assert decoded[0]["type"] == "levibot.Fill"
    assert rec.encoded() == msgspec.msgpack.encode([_bar(0), fill, _bar(1)])


async def test_a_recorder_keeping_every_type_records_each_message_and_restarts_empty() -> None:
    rec = RecorderActor(RecordingContext("recorder"), RecorderConfig())
    await rec.on_start()
    rec.record(_bar(0))  # what the node's tap calls, as each message is published
    await rec.handle(_bar(1))
    assert rec.messages == [_bar(0), _bar(1)] and rec.of_type(Bar) == [_bar(0), _bar(1)]
    assert rec.of_type(Fill) == []
    await rec.on_start()  # a restart: the same list (``record`` may be its append), emptied
    rec.record(_bar(2))
    assert rec.messages == [_bar(2)]
