"""The bot's commands: an aiogram 3 ``Router`` over the read model, subscriptions and the bus.

Handlers only read what the actor knows and send commands over the bus: the kill switch is a
``SetKillSwitch`` published for the risk engine, never a state change here. Every handler
answers bad input with a hint; an unexpected error is logged and answered, never raised.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiogram import F, Router
from aiogram.filters import Command, CommandObject, CommandStart, ExceptionTypeFilter
from aiogram.types import (
    BotCommand,
    ErrorEvent,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    WebAppInfo,
)

from levibot.messages import Command as BusCommand
from levibot.messages import SetKillSwitch, SetTradingState, TradingState
from sidecars.telegram import views
from sidecars.telegram.readmodel import ReadModel
from sidecars.telegram.subscriptions import (
    ALL_SYMBOLS,
    InvalidSymbolError,
    NotifyKind,
    SubscriptionLimitError,
    Subscriptions,
    SubscriptionStoreError,
    normalize_symbol,
)
from sidecars.telegram.text import split_text

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
    )
)

#: Ids Telegram shows as the sender of messages no person signed: an anonymous group admin
#: posts as GroupAnonymousBot, a linked channel as Channel_Bot, Telegram itself as 777000.
#: Each is shared by every chat, so none can identify an admin.
SHARED_SENDER_IDS: dict[int, str] = {
    1087968824: "GroupAnonymousBot",
    136817688: "Channel_Bot",
    777000: "Telegram",
}

_ON_OFF = {"on": True, "off": False, "true": True, "false": False, "1": True, "0": False}


@dataclass
class BotDeps:
    """What the handlers may touch."""

    readmodel: ReadModel
    subscriptions: Subscriptions
    publish: Callable[[BusCommand], Awaitable[None]]
    now_ns: Callable[[], int]
    status: Callable[[], str]
    log: Any
    admin_user_ids: frozenset[int] = frozenset()
    miniapp_url: str = ""
    allowed_symbols: frozenset[str] = frozenset()
    max_message_parts: int = 4


def _user_id(message: Message) -> int:
    return message.from_user.id if message.from_user is not None else 0


def _anonymous(message: Message) -> bool:
    """Return True when no person signed ``message`` (an anonymous admin, a channel)."""
    return message.sender_chat is not None or _user_id(message) in SHARED_SENDER_IDS


def _topic(message: Message) -> int | None:
    """Return the forum topic ``message`` was posted in (None: not in a topic)."""
    return message.message_thread_id if message.is_topic_message else None


def _args(command: CommandObject) -> list[str]:
    return (command.args or "").split()


def build_router(deps: BotDeps) -> Router:
    """Return a router with every levibot command bound to ``deps``."""
    router = Router(name="levibot")
    rm, subs = deps.readmodel, deps.subscriptions

    async def reply(message: Message, text: str, **kwargs: Any) -> None:
        # Split what one message cannot hold; buttons go with the last part.
        parts = split_text(text, max_parts=deps.max_message_parts)
        for part in parts[:-1]:
            await message.answer(part)
        await message.answer(parts[-1], **kwargs)

    @router.message(CommandStart())
    async def start(message: Message) -> None:
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
        await reply(message, text, reply_markup=markup)

    @router.message(Command("help"))
    async def help_(message: Message) -> None:
        await reply(message, views.HELP)

    @router.message(Command("status"))
    async def status(message: Message) -> None:
        await reply(message, deps.status())

    @router.message(Command("signals"))
    async def signals(message: Message, command: CommandObject) -> None:
        args = _args(command)
        symbol = None
        if args:
            try:
                symbol = normalize_symbol(args[0], deps.allowed_symbols)
            except InvalidSymbolError as exc:
                await reply(message, f"{exc}.\nUsage: /signals [SYMBOL]")
                return
        await reply(message, views.signals_text(rm, None if symbol == ALL_SYMBOLS else symbol))

    async def _symbol_arg(message: Message, command: CommandObject, name: str) -> str | None:
        args = _args(command)
        if len(args) != 1:
            await reply(message, f"Usage: /{name} SYMBOL, e.g. /{name} BTCUSDT (or ALL)")
            return None
        try:
            return normalize_symbol(args[0], deps.allowed_symbols)
        except InvalidSymbolError as exc:
            await reply(message, f"{exc}.\nUsage: /{name} SYMBOL, e.g. /{name} BTCUSDT")
            return None

    @router.message(Command("subscribe"))
    async def subscribe(message: Message, command: CommandObject) -> None:
        symbol = await _symbol_arg(message, command, "subscribe")
        if symbol is None:
            return
        label = "every symbol" if symbol == ALL_SYMBOLS else symbol
        try:
            added = await subs.subscribe(
                message.chat.id, _user_id(message), symbol, thread_id=_topic(message)
            )
        except SubscriptionLimitError as exc:
            await reply(
                message,
                f"This chat already follows {exc.limit} symbols, the most a chat may. "
                "/unsubscribe one first, or follow every symbol: /unsubscribe ALL, "
                "then /subscribe ALL.",
            )
            return
        if added:
            await reply(message, f"Subscribed to {label}. /notify switches kinds on or off.")
        else:
            await reply(message, f"This chat already follows {label}.")

    @router.message(Command("unsubscribe"))
    async def unsubscribe(message: Message, command: CommandObject) -> None:
        symbol = await _symbol_arg(message, command, "unsubscribe")
        if symbol is None:
            return
        label = "every symbol" if symbol == ALL_SYMBOLS else symbol
        if await subs.unsubscribe(message.chat.id, symbol):
            await reply(message, f"Unsubscribed from {label}.")
        else:
            await reply(message, f"This chat does not follow {label}; see /subscriptions.")

    @router.message(Command("subscriptions"))
    async def subscriptions(message: Message) -> None:
        s = subs.get(message.chat.id)
        symbols = ", ".join("ALL" if x == ALL_SYMBOLS else x for x in s.symbols) or "nothing"
        text = f"Following: {symbols}\nNotifications on: {', '.join(s.notify)}"
        if s.thread_id is not None and s.symbols:
            text += f"\nPushes go to forum topic {s.thread_id} (where /subscribe was last used)."
        await reply(message, text)

    @router.message(Command("portfolio"))
    async def portfolio(message: Message) -> None:
        await reply(message, views.portfolio_text(rm))

    @router.message(Command("pnl"))
    async def pnl(message: Message) -> None:
        await reply(message, views.pnl_text(rm))

    @router.message(Command("orders"))
    async def orders(message: Message) -> None:
        await reply(message, views.orders_text(rm))

    @router.message(Command("risk"))
    async def risk(message: Message) -> None:
        await reply(message, views.risk_text(rm))

    @router.message(Command("models"))
    async def models(message: Message) -> None:
        await reply(message, views.models_text(rm))

    @router.message(Command("notify"))
    async def notify(message: Message, command: CommandObject) -> None:
        args = [a.lower() for a in _args(command)]
        kinds = ", ".join(k.value for k in NotifyKind)
        usage = f"Usage: /notify KIND on|off, KIND is one of {kinds}"
        if not args:
            current = ", ".join(subs.get(message.chat.id).notify) or "none"
            await reply(message, f"Notifications on: {current}\n{usage}")
            return
        if len(args) != 2 or args[1] not in _ON_OFF:
            await reply(message, usage)
            return
        try:
            kind = NotifyKind(args[0])
        except ValueError:
            await reply(message, f"Unknown notification kind {args[0][:32]!r}.\n{usage}")
            return
        on = _ON_OFF[args[1]]
        await subs.set_notify(message.chat.id, _user_id(message), kind, on)
        await reply(message, f"{kind.value.capitalize()} notifications {'on' if on else 'off'}.")

    async def _admin(message: Message, name: str) -> bool:
        if _anonymous(message):
            # Telegram hides who sent this: a shared id can never be an admin, so the only way
            # is for the admin to show themselves.
            deps.log.warning("telegram.admin_refused", command=name, anonymous=True)
            await reply(
                message,
                f"/{name} needs to know who you are, and this message was sent anonymously "
                "(on behalf of the group or a channel). Anonymous admins cannot run admin "
                "commands: turn off 'Remain anonymous' in your admin rights, or send the "
                "command from your own account, for example in a private chat with me.",
            )
            return False
        if _user_id(message) in deps.admin_user_ids:
            return True
        deps.log.warning("telegram.admin_refused", command=name, user_id=_user_id(message))
        await reply(
            message,
            f"/{name} is for admins only. Your Telegram user id is {_user_id(message)}; "
            "ask an operator to add it to telegram.admin_user_ids.",
        )
        return False

    async def _send_command(message: Message, cmd: BusCommand) -> None:
        await deps.publish(cmd)
        deps.log.info("telegram.command", command=type(cmd).__name__, issued_by=cmd.issued_by)

    @router.message(Command("killswitch"))
    async def killswitch(message: Message, command: CommandObject) -> None:
        if not await _admin(message, "killswitch"):
            return
        args = [a.lower() for a in _args(command)]
        if len(args) != 1 or args[0] not in _ON_OFF:
            await reply(message, "Usage: /killswitch on|off")
            return
        on = _ON_OFF[args[0]]
        now = deps.now_ns()
        cmd = SetKillSwitch(
            ts_event=now,
            ts_init=now,
            command_id=uuid.uuid4().hex,
            issued_by=f"telegram:{_user_id(message)}",
            on=on,
        )
        await _send_command(message, cmd)
        what = "ON: the risk engine will deny every new order" if on else "OFF: trading resumes"
        await reply(message, f"Kill switch {what}. Command {cmd.command_id[:8]} sent; see /risk.")

    @router.message(Command("trading"))
    async def trading(message: Message, command: CommandObject) -> None:
        if not await _admin(message, "trading"):
            return
        args = [a.lower() for a in _args(command)]
        states = "|".join(s.value for s in TradingState)
        try:
            state = TradingState(args[0]) if len(args) == 1 else None
        except ValueError:
            state = None
        if state is None:
            await reply(message, f"Usage: /trading {states}")
            return
        now = deps.now_ns()
        cmd = SetTradingState(
            ts_event=now,
            ts_init=now,
            command_id=uuid.uuid4().hex,
            issued_by=f"telegram:{_user_id(message)}",
            state=state,
        )
        await _send_command(message, cmd)
        await reply(message, f"Trading state {state.value} requested; see /risk.")

    @router.message(F.text.startswith("/"))
    async def unknown(message: Message) -> None:
        word = (message.text or "").split()[0][:32]
        await reply(message, f"Unknown command {word}. /help lists what I understand.")

    @router.message()
    async def other(message: Message) -> None:
        await reply(message, "I understand commands only; /help lists them.")

    @router.errors(ExceptionTypeFilter(SubscriptionStoreError))
    async def on_store_error(event: ErrorEvent) -> bool:
        # The change was not applied (Subscriptions only applies what the store took).
        deps.log.error("telegram.subscriptions_save_failed", error=str(event.exception))
        msg = event.update.message
        if msg is not None:
            try:
                await msg.answer(
                    "Could not save that change: the subscription store is unavailable. "
                    "Nothing changed; try again later."
                )
            except Exception as exc:  # the Bot API may be down too; nothing more to do
                deps.log.warning("telegram.error_reply_failed", error=repr(exc))
        return True

    @router.errors()
    async def on_error(event: ErrorEvent) -> bool:
        deps.log.error("telegram.handler_failed", error=repr(event.exception))
        msg = event.update.message
        if msg is not None:
            try:
                await msg.answer("Sorry, something went wrong handling that. Try again later.")
            except Exception as exc:  # the Bot API may be what failed; nothing more to do
                deps.log.warning("telegram.error_reply_failed", error=repr(exc))
        return True

    return router
