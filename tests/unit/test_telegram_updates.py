"""Reading getUpdates answers one update at a time, without a network."""

from __future__ import annotations

import random
from typing import Any

import pytest
from aiogram import Bot
from aiogram.exceptions import ClientDecodeError
from aiogram.methods import GetUpdates

from levibot.backoff import Backoff
from sidecars.telegram.updates import (
    PREFIX_CHARS,
    DropReason,
    RawGetUpdates,
    parse_updates,
    poll_error,
    retry_after_delay,
)

CHAT = {"id": 5, "type": "private", "first_name": "A"}


def message(text: str, **extra: Any) -> dict[str, Any]:
    return {"message_id": 1, "date": 1_700_000_000, "chat": CHAT, "text": text, **extra}


@pytest.fixture
def bot() -> Bot:
    return Bot("123456:AAtest")  # no request is made: the session opens lazily


def test_raw_get_updates_asks_the_same_method_with_the_same_parameters() -> None:
    assert RawGetUpdates.__api_method__ == GetUpdates.__api_method__
    assert RawGetUpdates.model_fields.keys() == GetUpdates.model_fields.keys()


def test_good_updates_are_kept_in_order_and_bad_ones_are_reported(bot: Bot) -> None:
    values = [
        {"update_id": 10, "message": message("/help")},
        {"update_id": 7, "message": {"message_id": 1, "text": "/help"}},  # no chat, no date
        42,
        {"update_id": True, "message": message("a bool is no id")},
        {"update_id": 11, "message": message("/start")},
    ]
    batch = parse_updates(bot, values)
    assert [u.update_id for u in batch.updates] == [10, 11]
    assert batch.updates[0].message is not None and batch.updates[0].message.bot is bot
    assert [(d.update_id, d.reason) for d in batch.dropped] == [
        (7, DropReason.INVALID),
        (None, DropReason.NO_UPDATE_ID),
        (None, DropReason.NO_UPDATE_ID),
    ]
    invalid = batch.dropped[0]
    assert "message.chat: Field required" in invalid.error
    assert "message.date: Field required" in invalid.error
    assert batch.next_offset == 12  # past every update that had an id, parsed or not


def test_the_offset_passes_an_update_that_fails_alone(bot: Bot) -> None:
    batch = parse_updates(bot, [{"update_id": 7, "message": {"text": "x"}}])
    assert batch.updates == [] and batch.next_offset == 8


def test_only_values_without_an_id_give_no_offset(bot: Bot) -> None:
    batch = parse_updates(bot, [None, "x", [], {"message": message("hi")}])
    assert batch.next_offset is None and len(batch.dropped) == 4
    assert parse_updates(bot, []).next_offset is None


def test_fields_and_update_kinds_aiogram_does_not_know_still_parse(bot: Bot) -> None:
    values = [
        {"update_id": 1, "message": message("/help", future_field={"x": 1})},
        {"update_id": 2, "future_update_kind": {"anything": True}},
    ]
    batch = parse_updates(bot, values)
    assert [u.update_id for u in batch.updates] == [1, 2] and batch.dropped == []


def test_what_is_logged_of_a_dropped_update_quotes_no_more_than_a_prefix(bot: Bot) -> None:
    secret = "my seed phrase is " + "word " * 200
    bad = {"update_id": 3, "message": {"message_id": "not a number", "text": secret}}
    [dropped] = parse_updates(bot, [bad]).dropped
    assert len(dropped.prefix) <= PREFIX_CHARS and dropped.prefix.endswith("…")
    assert "word" not in dropped.error and "not a number" not in dropped.error
    assert dropped.error.startswith("message.") and len(dropped.error) < 600


def test_poll_errors_never_carry_the_answers_body() -> None:
    body = "<html>" + "private text " * 1000 + "</html>"
    exc = ClientDecodeError("Failed to decode object", ValueError("bad json"), body)
    text = poll_error(exc)
    assert text == "ClientDecodeError: Failed to decode object (ValueError)"
    assert len(poll_error(RuntimeError("x" * 5000))) == 200


def test_backoff_is_jittered_capped_and_reset() -> None:
    backoff = Backoff(initial=0.5, maximum=30.0, rng=random.Random(7))
    delays = [backoff.next() for _ in range(12)]
    ceilings = [min(30.0, 0.5 * 2**i) for i in range(12)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)  # jittered, not a fixed ladder
    backoff.attempt = 10_000  # no overflow however long the outage
    assert 15.0 <= backoff.next() <= 30.0
    backoff.reset()
    assert backoff.next() <= 0.5


@pytest.mark.parametrize(
    ("retry_after", "delay"), [(3, 3.0), (0, 1.0), (-5, 1.0), (10**400, 300.0), (86_400, 300.0)]
)
def test_a_retry_after_is_honoured_within_bounds(retry_after: int, delay: float) -> None:
    assert retry_after_delay(retry_after) == delay


@pytest.mark.parametrize("depth", [300, 3000])
def test_an_update_nested_too_deep_is_dropped_with_a_short_account(bot: Bot, depth: int) -> None:
    root = cur = message("/help")
    for _ in range(depth):  # a reply to a reply to a reply ...
        cur["reply_to_message"] = cur = message("x")
    batch = parse_updates(bot, [{"update_id": 9, "message": root}, {"update_id": 10}])
    assert [u.update_id for u in batch.updates] == [10] and batch.next_offset == 11
    [dropped] = batch.dropped
    assert dropped.reason is DropReason.INVALID and len(dropped.error) <= 300
    assert len(dropped.prefix) <= PREFIX_CHARS
