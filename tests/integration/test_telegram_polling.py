"""Polling through bad input: updates aiogram cannot parse and getUpdates answers that are not
the Bot API's. The real aiogram dispatcher runs against the stand-in over real HTTP; whatever
the stand-in serves, the bot must skip it, count it and answer the next message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import structlog

from levibot.clock import LiveClock
from levibot.testing import RecordingContext, eventually
from tests.fakes.botapi import FakeBotAPI
from tests.integration.telegram_helpers import ALICE, TOKEN, command, config, running_bot

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

#: The update the fuzzer found: a message without ``chat`` and ``date``.
NO_CHAT = {"message": {"message_id": 1, "text": "/help"}}
HELP = "/subscribe SYMBOL"


def dropped_logs(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "telegram.update_dropped"]


async def polled_past(api: FakeBotAPI, update_id: int) -> None:
    """Wait until the bot confirmed ``update_id`` (a getUpdates with a higher offset)."""
    await eventually(
        lambda: any(c.params.get("offset", 0) > update_id for c in api.calls_of("getUpdates"))
    )


async def answered_again(api: FakeBotAPI) -> None:
    """Get one more answer: every poll that could have fetched something again has ended."""
    assert HELP in await command(api, ALICE, "/help")


@pytest.mark.parametrize("batched", [True, False], ids=["same-batch", "alone"])
async def test_an_update_aiogram_cannot_parse_is_skipped_once_and_the_next_is_answered(
    tmp_path: Path, batched: bool
) -> None:
    ctx = RecordingContext("telegram", clock=LiveClock())
    async with FakeBotAPI(TOKEN) as api:
        with structlog.testing.capture_logs() as logs:
            async with running_bot(config(api, tmp_path), ctx):
                bad = api.push_update(NO_CHAT)
                if not batched:
                    await polled_past(api, bad)
                assert HELP in await command(api, ALICE, "/help")
                await polled_past(api, bad)
                await answered_again(api)

    assert ctx.metrics.value("telegram_updates_dropped_total", reason="invalid") == 1
    assert ctx.metrics.value("telegram_updates_dropped_total") == 1
    [event] = dropped_logs(logs)
    assert event["update_id"] == bad and event["reason"] == "invalid"
    assert "message.chat" in event["error"] and "message.date" in event["error"]
    assert len(event["prefix"]) <= 64
    assert not [e for e in logs if e["event"] == "telegram.poll_failed"]


async def test_values_that_are_no_update_at_all_are_skipped_and_the_rest_dispatched(
    tmp_path: Path,
) -> None:
    ctx = RecordingContext("telegram", clock=LiveClock())
    async with FakeBotAPI(TOKEN) as api:
        with structlog.testing.capture_logs() as logs:
            async with running_bot(config(api, tmp_path), ctx):
                # One batch: a number, an update without its id, a string id, and a command.
                api.push_raw(42)
                api.push_raw({"message": {"message_id": 3, "text": "hi"}})
                api.push_raw({"update_id": "x" * 500, "message": {"text": "secret " * 100}})
                assert HELP in await command(api, ALICE, "/help")
                await answered_again(api)

    assert ctx.metrics.value("telegram_updates_dropped_total", reason="no_update_id") == 3
    events = dropped_logs(logs)
    assert [e["update_id"] for e in events] == [None, None, None]
    assert all(len(e["prefix"]) <= 64 for e in events)
    assert "secret " * 10 not in json.dumps(events)


ANSWERS = {
    "html-502": (502, "<html><body>Bad Gateway</body></html>", "text/html"),
    "not-json-200": (200, "{'ok': True", "application/json"),
    "ok-false-200": (200, '{"ok": false}', "application/json"),
    "ok-without-result": (200, '{"ok": true}', "application/json"),
    "result-not-a-list": (200, '{"ok": true, "result": {"update_id": 1}}', "application/json"),
    "500-json": (
        500,
        '{"ok": false, "error_code": 500, "description": "Internal"}',
        "application/json",
    ),
}


@pytest.mark.parametrize("answer", ANSWERS.values(), ids=ANSWERS.keys())
async def test_a_getupdates_answer_that_is_not_the_bot_apis_is_retried(
    tmp_path: Path, answer: tuple[int, str, str]
) -> None:
    status, body, content_type = answer
    ctx = RecordingContext("telegram", clock=LiveClock())
    async with FakeBotAPI(TOKEN) as api:
        # The bot's first two polls get the answer (set before it starts: no poll is in flight).
        api.answer_next("getUpdates", status, body, content_type=content_type)
        api.answer_next("getUpdates", status, body, content_type=content_type)
        with structlog.testing.capture_logs() as logs:
            async with running_bot(config(api, tmp_path), ctx):
                assert HELP in await command(api, ALICE, "/help")

    failed = [e for e in logs if e["event"] == "telegram.poll_failed"]
    assert len(failed) == 2
    assert 0 < failed[0]["retry_s"] <= 0.5 and failed[1]["retry_s"] <= 1.0
    assert all(TOKEN not in json.dumps(e, default=str) for e in failed)
    assert ctx.metrics.value("telegram_poll_failures_total") == 2


async def test_a_negative_retry_after_on_getupdates_pauses_instead_of_spinning(
    tmp_path: Path,
) -> None:
    async with FakeBotAPI(TOKEN) as api:
        api.fail_next("getUpdates", 1, retry_after=-5)
        with structlog.testing.capture_logs() as logs:
            async with running_bot(config(api, tmp_path)):
                assert HELP in await command(api, ALICE, "/help")

    [throttled] = [e for e in logs if e["event"] == "telegram.poll_throttled"]
    assert throttled["retry_after"] == -5 and throttled["retry_s"] == 1.0
    first, second = api.calls_of("getUpdates")[:2]
    assert second.at - first.at >= 1.0
