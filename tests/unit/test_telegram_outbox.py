"""The push outbox and sender: bounded queues, pacing, fairness, 429 and error handling."""

from __future__ import annotations

import math
from typing import Any

import pytest
import structlog
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
)
from aiogram.methods import SendMessage

from levibot.metrics import Metrics
from sidecars.telegram.notify import Outbox, Outgoing, Sender


class FakeTime:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def outbox(clock: FakeTime, **kw: Any) -> Outbox:
    params: dict[str, Any] = {
        "per_chat_size": 3,
        "per_chat_interval_s": 1.0,
        "global_rate_per_s": 10.0,
    }
    params.update(kw)
    return Outbox(now=clock, **params)


def test_a_full_chat_queue_drops_its_oldest_message_and_counts_it() -> None:
    box = outbox(FakeTime())
    assert all(box.put(1, f"m{i}") for i in range(3))
    assert box.put(1, "m3") is False
    assert box.dropped[1] == 1 and len(box) == 3
    item = box.take()
    assert isinstance(item, Outgoing) and item.text == "m1"


def test_one_chat_is_paced_by_the_per_chat_interval() -> None:
    clock = FakeTime()
    box = outbox(clock)
    box.put(1, "a")
    box.put(1, "b")
    assert isinstance(box.take(), Outgoing)
    assert box.take() == pytest.approx(1.0)
    clock.t += 0.5
    assert box.take() == pytest.approx(0.5)
    clock.t += 0.5
    item = box.take()
    assert isinstance(item, Outgoing) and item.text == "b"
    assert box.take() == math.inf


def test_chats_are_served_round_robin_under_the_global_rate() -> None:
    clock = FakeTime()
    box = outbox(clock, per_chat_interval_s=0.0, global_rate_per_s=10.0)
    for chat in (1, 2, 3):
        box.put(chat, f"{chat}a")
        box.put(chat, f"{chat}b")
    order = []
    while len(box):
        picked = box.take()
        if isinstance(picked, float):
            assert picked == pytest.approx(0.1)  # 10/s overall
            clock.t += picked
            continue
        order.append(picked.text)
    assert order == ["1a", "2a", "3a", "1b", "2b", "3b"]


def test_a_deferred_chat_waits_while_other_chats_go_on() -> None:
    clock = FakeTime()
    box = outbox(clock, per_chat_interval_s=0.0, global_rate_per_s=1000.0)
    box.put(1, "one")
    first = box.take()
    assert isinstance(first, Outgoing)
    box.defer(first, 5.0)
    box.put(2, "two")
    clock.t += 0.01
    second = box.take()
    assert isinstance(second, Outgoing) and second.text == "two"
    assert box.take() == pytest.approx(4.99)
    clock.t += 5
    again = box.take()
    assert isinstance(again, Outgoing) and again.text == "one"


class ScriptedSend:
    """A send function that raises the scripted errors in order, then succeeds."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls: list[tuple[int, str]] = []

    async def __call__(self, item: Outgoing) -> None:
        self.calls.append((item.chat_id, item.text))
        if self.errors:
            raise self.errors.pop(0)


def sender(box: Outbox, send: ScriptedSend) -> Sender:
    return Sender(box, send, metrics=Metrics(), log=structlog.get_logger(), max_attempts=2)


@pytest.mark.anyio
async def test_sender_defers_a_429_by_retry_after_and_does_not_count_it_as_an_attempt() -> None:
    clock = FakeTime()
    box = outbox(clock, per_chat_interval_s=0.0)
    method = SendMessage(chat_id=1, text="hi")
    send = ScriptedSend(TelegramRetryAfter(method, "Too Many Requests: retry after 7", 7))
    s = sender(box, send)
    box.put(1, "hi")
    item = box.take()
    assert isinstance(item, Outgoing)
    await s._deliver(item)
    assert s.retried_429 == 1 and s.sent == 0
    assert box.take() == pytest.approx(7.0)
    clock.t += 7
    again = box.take()
    assert isinstance(again, Outgoing) and again.attempts == 0
    await s._deliver(again)
    assert s.sent == 1 and send.calls == [(1, "hi"), (1, "hi")]


@pytest.mark.anyio
async def test_sender_gives_up_on_blocked_chats_and_after_repeated_network_errors() -> None:
    clock = FakeTime()
    box = outbox(clock, per_chat_interval_s=0.0, global_rate_per_s=1000.0)
    method = SendMessage(chat_id=1, text="x")
    send = ScriptedSend(
        TelegramForbiddenError(method, "Forbidden: bot was blocked by the user"),
        TelegramNetworkError(method, "connection reset"),
        TelegramNetworkError(method, "connection reset"),
    )
    s = sender(box, send)
    box.put(1, "blocked")
    box.put(2, "flaky")
    for _ in range(3):
        picked = box.take()
        while isinstance(picked, float):
            clock.t += picked
            picked = box.take()
        await s._deliver(picked)
    assert s.failed == 2 and s.sent == 0 and len(box) == 0
    assert [c[0] for c in send.calls] == [1, 2, 2]


@pytest.mark.anyio
async def test_a_push_to_a_deleted_forum_topic_goes_to_the_chat_instead() -> None:
    clock = FakeTime()
    box = outbox(clock, per_chat_interval_s=0.0, global_rate_per_s=1000.0)
    method = SendMessage(chat_id=-100, text="x", message_thread_id=42)
    send = ScriptedSend(TelegramBadRequest(method, "Bad Request: message thread not found"))
    sent: list[int | None] = []

    async def record(item: Outgoing) -> None:
        sent.append(item.thread_id)
        await send(item)

    s = Sender(box, record, metrics=Metrics(), log=structlog.get_logger(), max_attempts=2)
    box.put(-100, "signal", 42)
    for _ in range(2):
        picked = box.take()
        while isinstance(picked, float):
            clock.t += picked
            picked = box.take()
        await s._deliver(picked)
    assert sent == [42, None] and s.sent == 1 and s.failed == 0


@pytest.mark.anyio
async def test_other_bad_requests_are_given_up_even_with_a_topic() -> None:
    box = outbox(FakeTime(), per_chat_interval_s=0.0)
    method = SendMessage(chat_id=-100, text="x", message_thread_id=42)
    s = sender(box, ScriptedSend(TelegramBadRequest(method, "Bad Request: chat not found")))
    box.put(-100, "signal", 42)
    picked = box.take()
    assert isinstance(picked, Outgoing)
    await s._deliver(picked)
    assert s.failed == 1 and len(box) == 0
