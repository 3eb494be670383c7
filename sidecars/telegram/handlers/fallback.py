"""What no other router took: unknown commands, plain text, and unexpected errors.

Included last: aiogram tries routers in the order they were included.
"""

from __future__ import annotations

from aiogram import F, Router
from aiogram.types import ErrorEvent, Message

from sidecars.telegram.handlers.common import BotDeps, reply


async def unknown(message: Message, deps: BotDeps) -> None:
    word = (message.text or "").split()[0][:32]
    await reply(message, deps, f"Unknown command {word}. /help lists what I understand.")


async def other(message: Message, deps: BotDeps) -> None:
    await reply(message, deps, "I understand commands only; /help lists them.")


async def on_error(event: ErrorEvent, deps: BotDeps) -> bool:
    deps.log.error("telegram.handler_failed", error=repr(event.exception))
    msg = event.update.message
    if msg is not None:
        try:
            await msg.answer("Sorry, something went wrong handling that. Try again later.")
        except Exception as exc:  # the Bot API may be what failed; nothing more to do
            deps.log.warning("telegram.error_reply_failed", error=repr(exc))
    return True


def router() -> Router:
    """Return a new router with this feature's handlers."""
    r = Router(name="fallback")
    r.message.register(unknown, F.text.startswith("/"))
    r.message.register(other)
    r.errors.register(on_error)
    return r
