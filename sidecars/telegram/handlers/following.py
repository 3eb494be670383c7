"""What a chat follows: signals, subscriptions per symbol and notification kinds."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command, CommandObject, ExceptionTypeFilter
from aiogram.types import ErrorEvent, Message

from sidecars.telegram import views
from sidecars.telegram.handlers.common import ON_OFF, BotDeps, args, reply, topic, user_id
from sidecars.telegram.subscriptions import (
    ALL_SYMBOLS,
    InvalidSymbolError,
    NotifyKind,
    SubscriptionLimitError,
    SubscriptionStoreError,
    normalize_symbol,
)


async def signals(message: Message, command: CommandObject, deps: BotDeps) -> None:
    words = args(command)
    symbol = None
    if words:
        try:
            symbol = normalize_symbol(words[0], deps.allowed_symbols)
        except InvalidSymbolError as exc:
            await reply(message, deps, f"{exc}.\nUsage: /signals [SYMBOL]")
            return
    await reply(
        message, deps, views.signals_text(deps.readmodel, None if symbol == ALL_SYMBOLS else symbol)
    )


async def _symbol_arg(
    message: Message, command: CommandObject, deps: BotDeps, name: str
) -> str | None:
    words = args(command)
    if len(words) != 1:
        await reply(message, deps, f"Usage: /{name} SYMBOL, e.g. /{name} BTCUSDT (or ALL)")
        return None
    try:
        return normalize_symbol(words[0], deps.allowed_symbols)
    except InvalidSymbolError as exc:
        await reply(message, deps, f"{exc}.\nUsage: /{name} SYMBOL, e.g. /{name} BTCUSDT")
        return None


async def subscribe(message: Message, command: CommandObject, deps: BotDeps) -> None:
    symbol = await _symbol_arg(message, command, deps, "subscribe")
    if symbol is None:
        return
    label = "every symbol" if symbol == ALL_SYMBOLS else symbol
    try:
        added = await deps.subscriptions.subscribe(
            message.chat.id, user_id(message), symbol, thread_id=topic(message)
        )
    except SubscriptionLimitError as exc:
        await reply(
            message,
            deps,
            f"This chat already follows {exc.limit} symbols, the most a chat may. "
            "/unsubscribe one first, or follow every symbol: /unsubscribe ALL, "
            "then /subscribe ALL.",
        )
        return
    if added:
        await reply(message, deps, f"Subscribed to {label}. /notify switches kinds on or off.")
    else:
        await reply(message, deps, f"This chat already follows {label}.")


async def unsubscribe(message: Message, command: CommandObject, deps: BotDeps) -> None:
    symbol = await _symbol_arg(message, command, deps, "unsubscribe")
    if symbol is None:
        return
    label = "every symbol" if symbol == ALL_SYMBOLS else symbol
    if await deps.subscriptions.unsubscribe(message.chat.id, symbol):
        await reply(message, deps, f"Unsubscribed from {label}.")
    else:
        await reply(message, deps, f"This chat does not follow {label}; see /subscriptions.")


async def subscriptions(message: Message, deps: BotDeps) -> None:
    s = deps.subscriptions.get(message.chat.id)
    symbols = ", ".join("ALL" if x == ALL_SYMBOLS else x for x in s.symbols) or "nothing"
    text = f"Following: {symbols}\nNotifications on: {', '.join(s.notify)}"
    if s.thread_id is not None and s.symbols:
        text += f"\nPushes go to forum topic {s.thread_id} (where /subscribe was last used)."
    await reply(message, deps, text)


async def notify(message: Message, command: CommandObject, deps: BotDeps) -> None:
    words = [a.lower() for a in args(command)]
    kinds = ", ".join(k.value for k in NotifyKind)
    usage = f"Usage: /notify KIND on|off, KIND is one of {kinds}"
    if not words:
        current = ", ".join(deps.subscriptions.get(message.chat.id).notify) or "none"
        await reply(message, deps, f"Notifications on: {current}\n{usage}")
        return
    if len(words) != 2 or words[1] not in ON_OFF:
        await reply(message, deps, usage)
        return
    try:
        kind = NotifyKind(words[0])
    except ValueError:
        await reply(message, deps, f"Unknown notification kind {words[0][:32]!r}.\n{usage}")
        return
    on = ON_OFF[words[1]]
    await deps.subscriptions.set_notify(message.chat.id, user_id(message), kind, on)
    await reply(message, deps, f"{kind.value.capitalize()} notifications {'on' if on else 'off'}.")


async def on_store_error(event: ErrorEvent, deps: BotDeps) -> bool:
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


def router() -> Router:
    """Return a new router with this feature's handlers."""
    r = Router(name="following")
    r.message.register(signals, Command("signals"))
    r.message.register(subscribe, Command("subscribe"))
    r.message.register(unsubscribe, Command("unsubscribe"))
    r.message.register(subscriptions, Command("subscriptions"))
    r.message.register(notify, Command("notify"))
    r.errors.register(on_store_error, ExceptionTypeFilter(SubscriptionStoreError))
    return r
