"""Shared helpers of the Telegram integration tests: a running bot against the Bot API stand-in."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from levibot.clock import LiveClock
from levibot.messages import Alert, AlertLevel, Signal, SignalSide
from levibot.storage.testing import free_port
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


class PrivateRedis:
    """A redis-server of the test's own on a free port, which the test may stop and restart.

    It keeps an append-only file (fsync on every write) in ``data_dir``, so what was written
    before a stop is there again after the restart. Only the process it started is stopped.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Return the server's URL (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        redis_server = shutil.which("redis-server")
        if redis_server is None:
            raise RuntimeError("redis-server is not installed (see README: make test sets it up)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                redis_server,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.data_dir),
                "--appendonly", "yes",
                "--appendfsync", "always",
                "--save", "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} did not answer within 10 s")

    def stop(self) -> None:
        """Stop the server this helper started (SIGTERM, then SIGKILL after 10 s)."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None
