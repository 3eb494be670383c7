"""The bot's command menu and its handlers' entry point.

The handlers live in :mod:`sidecars.telegram.handlers`, one aiogram router per feature
(welcome, following, reports, admin, fallback). They only read what the actor knows and send
commands over the bus: the kill switch is a ``SetKillSwitch`` published for the risk engine,
never a state change here. Every handler answers bad input with a hint; an unexpected error
is logged and answered, never raised.
"""

from __future__ import annotations

from aiogram.types import BotCommand

from sidecars.telegram.handlers import SHARED_SENDER_IDS, BotDeps, build_router

__all__ = ["COMMANDS", "SHARED_SENDER_IDS", "BotDeps", "build_router"]

#: The command menu registered with ``setMyCommands``.
COMMANDS: tuple[BotCommand, ...] = tuple(
    BotCommand(command=c, description=d)
    for c, d in (
        ("start", "Open levibot"),
        ("help", "What I can do"),
        ("status", "Engine and bot status"),
        ("signals", "Latest signals"),
        ("subscribe", "Push signals for a symbol"),
        ("unsubscribe", "Stop pushes for a symbol"),
        ("portfolio", "Cash, equity, positions"),
        ("pnl", "Profit and loss"),
        ("orders", "Recent orders"),
        ("risk", "Risk state"),
        ("models", "Strategies and models"),
        ("notify", "Switch a notification kind on or off"),
        ("killswitch", "Stop or resume trading (admins)"),
        ("cancel", "Cancel an open order (admins)"),
        ("activate", "Activate a model (admins)"),
        ("rollback", "Roll back to the previous model (admins)"),
    )
)
