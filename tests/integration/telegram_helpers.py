"""Shared helpers of the Telegram integration tests: a running bot against the Bot API stand-in."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from levibot.clock import LiveClock
from levibot.messages import Alert, AlertLevel, Signal, SignalSide
from levibot.testing import RecordingContext, eventually
from sidecars.telegram import TelegramActor, TelegramConfig
from tests.fakes.botapi import FakeBotAPI

TOKEN = "123456789:AAtest-token_for-levibot"
ADMIN = 1001
ALICE = 2002
BOB = 3003
CAROL = 4004


def config(api: FakeBotAPI, data_dir: Any, **overrides: Any) -> TelegramConfig:
    """Return a config pointing the bot at ``api`` and persisting into ``data_dir``."""
    fields: dict[str, Any] = {
        "token": TOKEN,
        "api_base": api.base_url,
        "miniapp_url": "https://levibot.example/app",
        "admin_user_ids": (ADMIN,),
        "data_dir": str(data_dir),
        "polling_timeout_s": 2,
        "per_chat_interval_s": 0.0,
        "push_signal_changes_only": False,
    }
    fields.update(overrides)
    return TelegramConfig(**fields)


@asynccontextmanager
async def running_bot(
    cfg: TelegramConfig, ctx: RecordingContext | None = None
) -> AsyncIterator[TelegramActor]:
    """Run a ``TelegramActor`` (on_start, run, on_stop) for the duration of the block."""
    ctx = ctx if ctx is not None else RecordingContext("telegram", clock=LiveClock())
    actor = TelegramActor(ctx, cfg)
    await actor.on_start()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(actor.run)
            with anyio.fail_after(10):
                await actor.ready.wait()
            yield actor
            tg.cancel_scope.cancel()
    finally:
        await actor.on_stop()


async def command(api: FakeBotAPI, user: int, text: str, *, chat: int | None = None) -> str:
    """Send ``text`` as ``user`` and return the bot's next reply in that chat."""
    chat_id = user if chat is None else chat
    before = len(api.texts(chat_id))
    api.send_text(user, text, chat_id=chat_id)
    await eventually(lambda: len(api.texts(chat_id)) > before)
    return api.texts(chat_id)[before]


def signal(symbol: str = "BTCUSDT", side: SignalSide = SignalSide.LONG, **kw: Any) -> Signal:
    """Return a signal stamped now."""
    now = time.time_ns()
    fields: dict[str, Any] = {
        "ts_event": now,
        "ts_init": now,
        "symbol": symbol,
        "strategy": "ema_cross",
        "side": side,
        "probability": 0.8,
        "confidence": 0.6,
        "price": 43_000.5,
    }
    fields.update(kw)
    return Signal(**fields)


def alert(text: str = "feed gap detected") -> Alert:
    """Return a warning alert stamped now."""
    now = time.time_ns()
    return Alert(
        ts_event=now,
        ts_init=now,
        alert_id=f"a{now}",
        level=AlertLevel.WARNING,
        source="feed",
        text=text,
    )
