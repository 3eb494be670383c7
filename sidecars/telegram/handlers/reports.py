"""Read-only reports from the read model: portfolio, P&L, orders, risk and models."""

from __future__ import annotations

from collections.abc import Callable

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from sidecars.telegram import views
from sidecars.telegram.handlers.common import BotDeps, reply
from sidecars.telegram.readmodel import ReadModel

#: Each report command and the view that renders it.
REPORTS: dict[str, Callable[[ReadModel], str]] = {
    "portfolio": views.portfolio_text,
    "pnl": views.pnl_text,
    "orders": views.orders_text,
    "risk": views.risk_text,
    "models": views.models_text,
}


async def report(message: Message, command: CommandObject, deps: BotDeps) -> None:
    """Answer a report command with its view of the read model."""
    await reply(message, deps, REPORTS[command.command](deps.readmodel))


def router() -> Router:
    """Return a new router with this feature's handlers."""
    r = Router(name="reports")
    r.message.register(report, Command(*REPORTS))
    return r
