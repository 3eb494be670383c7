"""``/start``, ``/help`` and ``/status``: what the bot is and how the engine is doing."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command, CommandStart
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup, Message, WebAppInfo

from sidecars.telegram import views
from sidecars.telegram.handlers.common import BotDeps, reply


async def start(message: Message, deps: BotDeps) -> None:
    text = (
        "Welcome to levibot: signals, portfolio and risk of the trading engine.\n"
        "Subscribe to a symbol with /subscribe BTCUSDT; /help lists every command."
    )
    markup = None
    if deps.miniapp_url:
        # Telegram allows web_app buttons in private chats only; groups get a plain link.
        if message.chat.type == "private":
            button = InlineKeyboardButton(
                text="Open dashboard", web_app=WebAppInfo(url=deps.miniapp_url)
            )
        else:
            button = InlineKeyboardButton(text="Open dashboard", url=deps.miniapp_url)
        markup = InlineKeyboardMarkup(inline_keyboard=[[button]])
    else:
        text += "\n(The dashboard is not configured on this bot.)"
    await reply(message, deps, text, reply_markup=markup)


async def help_(message: Message, deps: BotDeps) -> None:
    await reply(message, deps, views.HELP)


async def status(message: Message, deps: BotDeps) -> None:
    await reply(message, deps, deps.status())


def router() -> Router:
    """Return a new router with this feature's handlers."""
    r = Router(name="welcome")
    r.message.register(start, CommandStart())
    r.message.register(help_, Command("help"))
    r.message.register(status, Command("status"))
    return r
