"""What every handler shares: the injected dependencies, the reply helper, message facts.

``BotDeps`` reaches handlers the aiogram way: the actor puts it in the dispatcher's workflow
data (``dp["deps"] = deps``) and a handler that declares a ``deps: BotDeps`` parameter gets
it. Handlers only read what the actor knows and send commands over the bus.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiogram.filters import CommandObject
from aiogram.types import Message

from levibot.messages import Command as BusCommand
from sidecars.telegram.readmodel import ReadModel
from sidecars.telegram.subscriptions import Subscriptions
from sidecars.telegram.text import split_text

#: Ids Telegram shows as the sender of messages no person signed: an anonymous group admin
#: posts as GroupAnonymousBot, a linked channel as Channel_Bot, Telegram itself as 777000.
#: Each is shared by every chat, so none can identify an admin.
SHARED_SENDER_IDS: dict[int, str] = {
    1087968824: "GroupAnonymousBot",
    136817688: "Channel_Bot",
    777000: "Telegram",
}

#: The words ``/notify``, ``/killswitch`` and friends accept for on and off.
ON_OFF = {"on": True, "off": False, "true": True, "false": False, "1": True, "0": False}


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
    #: Opens (once) the model registry every process shares: /activate and /rollback move its
    #: persisted pointer (``levibot.ml.registries.ModelStore``). None: no registry here.
    registry: Callable[[], Awaitable[Any]] | None = None


async def reply(message: Message, deps: BotDeps, text: str, **kwargs: Any) -> None:
    """Answer ``message`` with ``text``, split where one message cannot hold it.

    Keyword arguments (buttons) go with the last part.
    """
    parts = split_text(text, max_parts=deps.max_message_parts)
    for part in parts[:-1]:
        await message.answer(part)
    await message.answer(parts[-1], **kwargs)


def user_id(message: Message) -> int:
    """Return the sender's Telegram user id (0 when Telegram names none)."""
    return message.from_user.id if message.from_user is not None else 0


def anonymous(message: Message) -> bool:
    """Return True when no person signed ``message`` (an anonymous admin, a channel)."""
    return message.sender_chat is not None or user_id(message) in SHARED_SENDER_IDS


def topic(message: Message) -> int | None:
    """Return the forum topic ``message`` was posted in (None: not in a topic)."""
    return message.message_thread_id if message.is_topic_message else None


def args(command: CommandObject) -> list[str]:
    """Return the command's arguments split on whitespace."""
    return (command.args or "").split()
