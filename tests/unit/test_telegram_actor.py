"""TelegramActor without Telegram: read models, push decisions, config and secrets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from levibot.clock import ReplayClock
from levibot.config import convert, overlay_env
from levibot.errors import ConfigError
from levibot.messages import (
    Alert,
    AlertLevel,
    Fill,
    OrderClosed,
    OrderDenied,
    PortfolioSnapshot,
    Position,
    SetKillSwitch,
    Side,
    Signal,
    SignalSide,
    Tick,
)
from levibot.testing import RecordingContext
from sidecars.telegram import TelegramActor, TelegramConfig, views
from sidecars.telegram.notify import Outgoing
from sidecars.telegram.subscriptions import NotifyKind
from sidecars.telegram.text import TEXT_LIMIT, tg_len

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000_000_000_000


def signal(side: SignalSide = SignalSide.LONG, symbol: str = "BTCUSDT", **kw: Any) -> Signal:
    fields: dict[str, Any] = {
        "ts_event": T0,
        "ts_init": T0,
        "symbol": symbol,
        "strategy": "lgbm",
        "side": side,
        "probability": 0.8,
        "confidence": 0.6,
        "price": 43_000.0,
        "model_id": "m-7",
    }
    fields.update(kw)
    return Signal(**fields)


def snapshot(equity: float, ts: int = T0) -> PortfolioSnapshot:
    pos = Position(
        symbol="BTCUSDT", quantity=0.5, avg_price=40_000, last_price=42_000, unrealized_pnl=1_000
    )
    return PortfolioSnapshot(
        ts_event=ts,
        ts_init=ts,
        cash=80_000,
        equity=equity,
        realized_pnl=250.0,
        unrealized_pnl=1_000.0,
        fees=12.5,
        positions=(pos,),
    )


async def actor(tmp_path: Path, **kw: Any) -> TelegramActor:
    cfg = TelegramConfig(token="1:x", data_dir=str(tmp_path), **kw)
    a = TelegramActor(RecordingContext("telegram", clock=ReplayClock(T0)), cfg)
    await a.on_start()
    return a


async def test_signals_are_pushed_to_followers_only_when_their_side_changes(tmp_path: Path) -> None:
    a = await actor(tmp_path)
    await a.subscriptions.subscribe(1, 1, "BTCUSDT")
    assert [c for c, _ in a.pushes(signal())] == [1]
    assert a.pushes(signal(probability=0.9)) == []  # same side again: quiet
    assert [c for c, _ in a.pushes(signal(SignalSide.FLAT))] == [1]
    assert a.pushes(signal(symbol="ETHUSDT")) == []


async def test_every_signal_is_pushed_when_configured_and_weak_ones_are_filtered(
    tmp_path: Path,
) -> None:
    a = await actor(tmp_path, push_signal_changes_only=False, min_push_confidence=0.5)
    await a.subscriptions.subscribe(1, 1, "*")
    assert len(a.pushes(signal())) == 1 and len(a.pushes(signal())) == 1
    assert a.pushes(signal(confidence=0.2)) == []


async def test_order_events_go_to_fills_and_denials_subscribers(tmp_path: Path) -> None:
    a = await actor(tmp_path)
    await a.subscriptions.subscribe(1, 1, "BTCUSDT")
    await a.subscriptions.subscribe(2, 2, "BTCUSDT")
    await a.subscriptions.set_notify(2, 2, NotifyKind.DENIALS, True)
    fill = Fill(
        ts_event=T0,
        ts_init=T0,
        symbol="BTCUSDT",
        fill_id="f1",
        client_order_id="c1",
        side=Side.BUY,
        quantity=0.5,
        price=40_000,
        fee=2.0,
    )
    denied = OrderDenied(
        ts_event=T0,
        ts_init=T0,
        symbol="BTCUSDT",
        client_order_id="c2",
        strategy="lgbm",
        code="KILL_SWITCH",
        reason="kill switch is on",
    )
    closed = OrderClosed(
        ts_event=T0,
        ts_init=T0,
        symbol="BTCUSDT",
        client_order_id="c1",
        reason="stop_loss",
        exit_price=39_000,
        realized_pnl=-500,
    )
    assert [c for c, _ in a.pushes(fill)] == [1, 2]
    assert [c for c, _ in a.pushes(closed)] == [1, 2]
    (push,) = a.pushes(denied)
    assert push[0] == 2 and "KILL_SWITCH" in push[1]


async def test_handle_queues_without_sending_and_a_flooded_chat_drops_oldest(
    tmp_path: Path,
) -> None:
    a = await actor(tmp_path, push_signal_changes_only=False, chat_queue_size=2)
    await a.subscriptions.subscribe(1, 1, "BTCUSDT")
    for i in range(5):
        await a.handle(signal(price=100.0 + i))  # no Bot API is running: handle must not wait
    assert len(a.outbox) == 2 and a.outbox.dropped[1] == 3
    assert a.ctx.metrics.value("telegram_push_dropped_total") == 3
    await a.handle(Tick(ts_event=T0, ts_init=T0, symbol="BTCUSDT", venue="x", price=1, size=1))


async def test_without_a_token_the_bot_reads_but_never_queues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LEVIBOT__TELEGRAM__TOKEN", raising=False)
    a = TelegramActor(RecordingContext("telegram"), TelegramConfig(data_dir=str(tmp_path)))
    await a.on_start()
    await a.subscriptions.subscribe(1, 1, "BTCUSDT")
    await a.handle(signal())
    assert not a.enabled and len(a.outbox) == 0 and len(a.readmodel.signals) == 1


async def test_read_models_feed_the_command_answers(tmp_path: Path) -> None:
    a = await actor(tmp_path)
    await a.handle(snapshot(100_000, T0))
    await a.handle(snapshot(110_000, T0 + 1))
    await a.handle(snapshot(99_000, T0 + 2))
    await a.handle(signal())
    await a.handle(
        SetKillSwitch(ts_event=T0, ts_init=T0, command_id="k1", issued_by="gateway:ops", on=True)
    )
    rm = a.readmodel
    assert rm.drawdown == pytest.approx(0.1) and rm.gross_exposure == pytest.approx(21_000)
    assert "Equity 99,000.00" in views.portfolio_text(rm) and "BTCUSDT 0.5 @ 40,000.00" in (
        views.portfolio_text(rm)
    )
    assert "-1.00% since the bot started" in views.pnl_text(rm)
    assert "Drawdown from peak 10.00%" in views.pnl_text(rm)
    risk = views.risk_text(rm)
    assert "Kill switch: ON" in risk and "gateway:ops" in risk
    assert "lgbm: m-7" in views.models_text(rm)
    assert "BTCUSDT LONG" in views.signals_text(rm, "BTCUSDT")
    assert "No signals yet for ETHUSDT" in views.signals_text(rm, "ETHUSDT")
    assert "Equity: 99,000.00" in a.status_text()


def test_config_hides_the_token_and_reads_it_from_the_environment() -> None:
    raw = overlay_env(
        {"telegram": {"admin_user_ids": [5]}}, {"LEVIBOT__TELEGRAM__TOKEN": "9:secret"}
    )
    cfg = convert(raw["telegram"], TelegramConfig)
    assert cfg.token == "9:secret" and cfg.admin_user_ids == (5,)
    assert "secret" not in repr(cfg) and "'***'" in repr(cfg)


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"\$\.per_chat_interval_s"):
        convert({"per_chat_interval_s": -1}, TelegramConfig)
    with pytest.raises(ConfigError, match="unknown field"):
        convert({"tokne": "x"}, TelegramConfig)


async def test_a_long_push_is_queued_in_parts_that_fit_with_the_chats_topic(
    tmp_path: Path,
) -> None:
    a = await actor(tmp_path, max_message_parts=3, per_chat_interval_s=0.0, global_rate_per_s=1e9)
    await a.subscriptions.subscribe(-100500, 7, "BTCUSDT", thread_id=42)
    long_text = "\n".join(f"detail {i}: " + "x" * 200 for i in range(100))  # ~21,000 chars
    alert = Alert(
        ts_event=T0,
        ts_init=T0,
        alert_id="a1",
        level=AlertLevel.CRITICAL,
        source="risk",
        text=long_text,
    )
    await a.handle(alert)
    queued = []
    while len(a.outbox):
        item = a.outbox.take()
        assert isinstance(item, Outgoing)
        queued.append(item)
    assert len(queued) == 3 and {q.thread_id for q in queued} == {42}
    assert all(tg_len(q.text) <= TEXT_LIMIT for q in queued)
    assert queued[0].text.startswith("🚨 CRITICAL from risk: detail 0:")
    assert queued[-1].text.endswith("more characters)")


@pytest.mark.parametrize("shared", [1087968824, 136817688, 777000])
def test_config_refuses_telegrams_shared_sender_ids_as_admins(shared: int) -> None:
    with pytest.raises(ConfigError, match=rf"admin_user_ids: {shared} \(.*\): Telegram's shared"):
        convert({"admin_user_ids": [5, shared]}, TelegramConfig)
    assert convert({"admin_user_ids": [5]}, TelegramConfig).admin_user_ids == (5,)


def test_config_bounds_the_subscription_cap_and_message_parts() -> None:
    assert TelegramConfig().max_symbols_per_chat == 50
    with pytest.raises(ConfigError, match=r"\$\.max_symbols_per_chat"):
        convert({"max_symbols_per_chat": 0}, TelegramConfig)
    with pytest.raises(ConfigError, match=r"\$\.max_message_parts"):
        convert({"max_message_parts": 0}, TelegramConfig)
