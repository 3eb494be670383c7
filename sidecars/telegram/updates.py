"""Reading getUpdates answers one update at a time, so that one bad update silences nothing.

aiogram's ``GetUpdates`` validates the whole answer as ``list[Update]``: a single update it
cannot parse (a message without ``chat``, a field whose type a newer Bot API changed) fails
the whole batch, the offset never moves past it, and every later poll fails on it again.
``RawGetUpdates`` asks the same Bot API method for the list as plain JSON values, and
``parse_updates`` validates each with the bot's context (what aiogram would have done), keeps
those that parse and reports the rest, with the offset past everything that was served.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from aiogram.exceptions import ClientDecodeError
from aiogram.methods.base import TelegramMethod
from aiogram.types import Update
from pydantic import ValidationError

if TYPE_CHECKING:
    from aiogram import Bot

#: How much of a dropped update a log line may quote (it may be a user's message).
PREFIX_CHARS = 64

#: Bounds on a getUpdates ``retry_after``: at least a pause, at most a short wait (a longer
#: flood wait is simply answered with another 429, which costs one request).
RETRY_AFTER_S = (1.0, 300.0)


class RawGetUpdates(TelegramMethod[list[Any]]):
    """``getUpdates``, answered as a list of raw JSON values instead of ``list[Update]``."""

    __returning__ = list[Any]
    __api_method__ = "getUpdates"

    offset: int | None = None
    limit: int | None = None
    timeout: int | None = None
    allowed_updates: list[str] | None = None


class DropReason(StrEnum):
    """Why an update was not dispatched (the ``reason`` label of the dropped counter)."""

    INVALID = "invalid"  # it has an update_id, but aiogram's Update model refuses it
    NO_UPDATE_ID = "no_update_id"  # not an object, or without an integer update_id


@dataclass(frozen=True)
class Dropped:
    """An update that was skipped: its id (when it has one), why, and what it began with."""

    update_id: int | None
    reason: DropReason
    error: str  # which fields were wrong, without their values
    prefix: str  # at most PREFIX_CHARS characters of its JSON


@dataclass
class Batch:
    """One getUpdates answer: the updates to dispatch, the ones dropped, and the next offset."""

    updates: list[Update] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    # One above the highest update_id served, parsed or not; None when none had one.
    next_offset: int | None = None


def update_id_of(value: Any) -> int | None:
    """Return ``value``'s integer ``update_id``, or None if it is not an object with one."""
    if not isinstance(value, dict):
        return None
    update_id = value.get("update_id")
    # bool is an int to Python, never to Telegram.
    return update_id if type(update_id) is int else None


def describe(exc: ValidationError, limit: int = 300) -> str:
    """Return which fields failed and why, never the values (they may be a user's text)."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        where = ".".join(str(part) for part in error["loc"]) or "update"
        problems.append(f"{where}: {error['msg']}")
    return _cut("; ".join(problems), limit)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def prefix(value: Any) -> str:
    """Return the start of ``value`` as JSON, short enough to log."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):  # nested too deep to write back
        text = f"<{type(value).__name__}>"
    return _cut(text, PREFIX_CHARS)


def parse_updates(bot: Bot, values: list[Any]) -> Batch:
    """Validate each of ``values`` as an ``Update`` bound to ``bot``; keep what parses."""
    batch = Batch()
    for value in values:
        update_id = update_id_of(value)
        if update_id is None:
            batch.dropped.append(
                Dropped(None, DropReason.NO_UPDATE_ID, "no integer update_id", prefix(value))
            )
            continue
        if batch.next_offset is None or update_id >= batch.next_offset:
            batch.next_offset = update_id + 1
        try:
            batch.updates.append(Update.model_validate(value, context={"bot": bot}))
        except ValidationError as exc:
            batch.dropped.append(
                Dropped(update_id, DropReason.INVALID, describe(exc), prefix(value))
            )
        except Exception as exc:  # e.g. RecursionError: still this update's fault alone
            error = f"{type(exc).__name__} while parsing"
            batch.dropped.append(Dropped(update_id, DropReason.INVALID, error, prefix(value)))
    return batch


def retry_after_delay(retry_after: float) -> float:
    """Return how long to wait on a 429's ``retry_after``: a garbage value silences nothing."""
    low, high = RETRY_AFTER_S
    # Compared before any float(): an integer too large for a float must not raise.
    return float(min(max(retry_after, low), high))


def poll_error(exc: Exception, limit: int = 200) -> str:
    """Return a short account of a failed poll, without the body it may quote."""
    if isinstance(exc, ClientDecodeError):
        # Its str() appends the whole answer: users' messages, or a proxy's HTML page.
        text = f"{exc.message} ({type(exc.original).__name__})"
    else:
        text = str(exc) or repr(exc)
    return _cut(f"{type(exc).__name__}: {text}", limit)
