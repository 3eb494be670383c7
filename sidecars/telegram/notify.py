"""Pushes to chats that never block the bus: a bounded per-chat outbox and a rate-limited sender.

``Outbox.put`` is synchronous and O(1): the actor's ``handle`` calls it and returns at once. A
full chat queue drops its oldest message and counts the drop, so a chat Telegram is throttling
costs memory bounded by ``per_chat_size``. ``Sender.run`` drains the outbox: at most one message
per ``per_chat_interval_s`` to a chat and ``global_rate_per_s`` overall (Telegram's limits are
about 1/s per chat and 30/s per bot), round-robin across chats, and a 429 defers that chat by
the ``retry_after`` the Bot API asked for while the other chats go on.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramUnauthorizedError,
)
from aiogram.methods import Response, TelegramMethod
from aiogram.methods.base import TelegramType

from levibot import backoff
from levibot.metrics import Metrics


@dataclass(slots=True)
class Outgoing:
    """One message waiting for its chat's turn."""

    chat_id: int
    text: str
    thread_id: int | None = None  # the forum topic to post in (None: the chat itself)
    attempts: int = 0


class Outbox:
    """Bounded per-chat queues with per-chat and global pacing; pure logic, time injected."""

    def __init__(
        self,
        *,
        per_chat_size: int = 50,
        per_chat_interval_s: float = 1.0,
        global_rate_per_s: float = 25.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_chat_size = per_chat_size
        self.per_chat_interval_s = per_chat_interval_s
        self.global_interval_s = 1.0 / global_rate_per_s if global_rate_per_s > 0 else 0.0
        self.now = now
        self._queues: dict[int, deque[Outgoing]] = {}
        self._ready_at: dict[int, float] = {}  # the earliest time a chat may be sent to
        self._order: deque[int] = deque()  # chats with pending messages, round-robin
        self._global_ready_at = 0.0
        self.dropped: Counter[int] = Counter()
        self._wakeup = anyio.Event()

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def put(self, chat_id: int, text: str, thread_id: int | None = None) -> bool:
        """Queue ``text`` for ``chat_id`` (topic ``thread_id``); False when the oldest dropped."""
        queue = self._queues.get(chat_id)
        if queue is None:
            queue = self._queues[chat_id] = deque()
        kept = True
        if len(queue) >= self.per_chat_size:
            queue.popleft()
            self.dropped[chat_id] += 1
            kept = False
        queue.append(Outgoing(chat_id, text, thread_id))
        if len(queue) == 1:
            self._order.append(chat_id)
        self._wakeup.set()
        return kept

    def take(self) -> Outgoing | float:
        """Return the next message that may go now, or the seconds until one may (inf: none)."""
        now = self.now()
        if not self._order:
            return math.inf
        if now < self._global_ready_at:
            soonest = min(self._ready_at.get(c, 0.0) for c in self._order)
            return max(self._global_ready_at, soonest) - now
        wait = math.inf
        for _ in range(len(self._order)):
            chat_id = self._order[0]
            ready_at = self._ready_at.get(chat_id, 0.0)
            if ready_at <= now:
                self._order.popleft()
                queue = self._queues[chat_id]
                item = queue.popleft()
                if queue:
                    self._order.append(chat_id)
                else:
                    del self._queues[chat_id]
                self._ready_at[chat_id] = now + self.per_chat_interval_s
                self._global_ready_at = now + self.global_interval_s
                return item
            wait = min(wait, ready_at - now)
            self._order.rotate(-1)
        return wait

    def defer(self, item: Outgoing, delay_s: float) -> None:
        """Put ``item`` back at the head of its chat's queue, not to be sent for ``delay_s``."""
        queue = self._queues.get(item.chat_id)
        if queue is None:
            queue = self._queues[item.chat_id] = deque()
            self._order.append(item.chat_id)
        queue.appendleft(item)
        self._ready_at[item.chat_id] = self.now() + delay_s
        self._wakeup.set()

    async def wait(self, timeout: float) -> None:
        """Sleep until something is queued or ``timeout`` seconds passed."""
        if self._wakeup.is_set():
            self._wakeup = anyio.Event()
            if timeout <= 0:
                return
        with anyio.move_on_after(timeout if math.isfinite(timeout) else None):
            await self._wakeup.wait()


SendFn = Callable[[Outgoing], Awaitable[Any]]

#: Errors that retrying cannot fix: the chat is gone, blocked the bot or the text is invalid.
_PERMANENT = (
    TelegramForbiddenError,
    TelegramBadRequest,
    TelegramNotFound,
    TelegramUnauthorizedError,
)

#: How the Bot API says a push's forum topic is no longer there to post in.
_TOPIC_GONE = ("message thread not found", "topic_closed", "topic_deleted")


class Sender:
    """Drain an ``Outbox`` through ``send``; retry 429s as asked, transient errors a few times."""

    def __init__(
        self,
        outbox: Outbox,
        send: SendFn,
        *,
        metrics: Metrics,
        log: Any,
        max_attempts: int = 5,
        backoff_s: float = 1.0,
    ) -> None:
        self.outbox = outbox
        self.send = send
        self.metrics = metrics
        self.log = log
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.sent = 0
        self.retried_429 = 0
        self.failed = 0
        self._m_sent = metrics.counter("telegram_push_sent_total", "Pushes delivered")
        self._m_429 = metrics.counter(
            "telegram_push_retry_after_total", "Pushes deferred by a 429 from the Bot API"
        )
        self._m_failed = metrics.counter("telegram_push_failed_total", "Pushes given up on")

    async def run(self) -> None:
        """Send until cancelled."""
        while True:
            picked = self.outbox.take()
            if isinstance(picked, float):
                await self.outbox.wait(picked)
                continue
            await self._deliver(picked)

    async def _deliver(self, item: Outgoing) -> None:
        item.attempts += 1
        try:
            await self.send(item)
        except TelegramRetryAfter as exc:
            # Flood control is not a failure: wait as long as Telegram says, then resend.
            self.retried_429 += 1
            self._m_429.inc()
            self.log.warning("telegram.retry_after", chat_id=item.chat_id, seconds=exc.retry_after)
            item.attempts -= 1
            self.outbox.defer(item, float(exc.retry_after))
        except _PERMANENT as exc:
            if item.thread_id is not None and any(m in str(exc).lower() for m in _TOPIC_GONE):
                # The forum topic was deleted or closed: the chat's General topic still hears it.
                self.log.warning("telegram.topic_gone", chat_id=item.chat_id, topic=item.thread_id)
                item.thread_id = None
                item.attempts -= 1
                self.outbox.defer(item, 0.0)
                return
            self.failed += 1
            self._m_failed.inc()
            self.log.warning("telegram.push_rejected", chat_id=item.chat_id, error=str(exc))
        except Exception as exc:  # network or server error: transient, retry with backoff
            if item.attempts >= self.max_attempts:
                self.failed += 1
                self._m_failed.inc()
                self.log.warning("telegram.push_gave_up", chat_id=item.chat_id, error=repr(exc))
            else:
                wait = backoff.delay(item.attempts - 1, self.backoff_s, math.inf, jitter=False)
                self.outbox.defer(item, wait)
        else:
            self.sent += 1
            self._m_sent.inc()


class RetryAfterMiddleware(BaseRequestMiddleware):
    """Retry any Bot API call that got a 429 after the ``retry_after`` it carries (replies)."""

    def __init__(self, max_retries: int = 3) -> None:
        self.max_retries = max_retries

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Any,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        for _ in range(self.max_retries):
            try:
                return await make_request(bot, method)
            except TelegramRetryAfter as exc:
                await anyio.sleep(exc.retry_after)
        return await make_request(bot, method)
