"""Fuzz our Telegram handlers: fuzzed texts and commands through the real aiogram dispatcher.

aiogram's own parsing of updates is aiogram's to fuzz; this fuzzes what we do with a message.
One bot runs for the whole module against the local Bot API stand-in (real HTTP), on an event
loop in a portal thread, and every example sends one message and waits for the bot's answer.
Every message gets one; "Sorry, something went wrong" (the router's error handler) or an error
logged by the actor is a failure, and so is an answer Telegram would refuse as too long.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import pytest
from hypothesis import given
from hypothesis import strategies as st

from levibot.clock import LiveClock
from levibot.testing import RecordingContext, eventually
from tests.fakes.botapi import FakeBotAPI
from tests.fuzz.support import RecordingLog, budget
from tests.integration.telegram_helpers import ADMIN, ALICE, TOKEN, config, running_bot

#: Telegram refuses a sendMessage text longer than this (the stand-in does not check).
MAX_TEXT = 4096
SORRY = "Sorry, something went wrong"
FAILURE_EVENTS = {"telegram.handler_failed", "telegram.update_failed"}
COMMANDS = [
    "start", "help", "status", "signals", "subscribe", "unsubscribe", "subscriptions",
    "portfolio", "pnl", "orders", "risk", "models", "notify", "killswitch", "trading",
    "frobnicate", "",
]  # fmt: skip


@dataclass
class Bot:
    portal: anyio.from_thread.BlockingPortal
    api: FakeBotAPI
    log: RecordingLog


@pytest.fixture(scope="module")
def bot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bot]:
    data_dir = tmp_path_factory.mktemp("fuzz-telegram")
    with anyio.from_thread.start_blocking_portal(
        "asyncio", backend_options={"use_uvloop": True}
    ) as portal:
        api = portal.call(start_api)
        ctx = RecordingContext("telegram", clock=LiveClock())
        log = ctx.log = RecordingLog()
        with portal.wrap_async_context_manager(running_bot(config(api, Path(data_dir)), ctx)):
            yield Bot(portal, api, log)
        portal.call(api.stop)


async def start_api() -> FakeBotAPI:
    api = FakeBotAPI(TOKEN)
    await api.start()
    return api


async def send(api: FakeBotAPI, message: dict[str, Any]) -> list[str]:
    """Queue ``message`` and return the bot's answers to it (waits for the first)."""
    chat_id = message["chat"]["id"]
    before = len(api.texts(chat_id))
    api.push_update({"message": message})
    await eventually(lambda: len(api.texts(chat_id)) > before, timeout=15)
    return api.texts(chat_id)[before:]


entities = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(
                ["bot_command", "mention", "hashtag", "cashtag", "bold", "italic", "code",
                 "url", "email", "spoiler", "underline"]
            ),
            "offset": st.integers(-3, 5000),
            "length": st.integers(-3, 5000),
        }
    ),
    max_size=3,
)  # fmt: skip
args = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        ["BTCUSDT", "btc/usdt", "ALL", "*", "$$$;DROP", "ßtc", "BTC USDT", "on", "off", "maybe",
         "signals on", "pigeons off", "halted", "\n\n", "\u200b", "\x00", "<b>x</b>", "'"]
    ),
    st.integers(100, 4000).map(lambda n: "A" * n),
)  # fmt: skip
commands = st.builds(
    lambda cmd, mention, sep, arg: f"/{cmd}{mention}{sep}{arg}",
    st.sampled_from(COMMANDS),
    st.sampled_from(["", "@levibot_test_bot", "@other_bot", "@"]),
    st.sampled_from([" ", "  ", "\n", "\t", ""]),
    args,
)
texts = (
    commands | st.text(min_size=1, max_size=300) | st.integers(1000, 4096).map(lambda n: "é" * n)
)


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    user = draw(st.sampled_from([ADMIN, ALICE]))
    group = draw(st.booleans())
    chat: dict[str, Any] = (
        {"id": -100_000 - user, "type": "supergroup", "title": "traders"}
        if group
        else {"id": user, "type": "private", "first_name": "Trader"}
    )
    message: dict[str, Any] = {
        "message_id": draw(st.integers(1, 2**31 - 1)),
        "date": int(time.time()),
        "chat": chat,
        "from": {"id": user, "is_bot": False, "first_name": "Trader"},
    }
    if draw(st.integers(0, 9)) == 0:  # a photo with a caption: no text at all
        message["photo"] = [{"file_id": "f", "file_unique_id": "u", "width": 1, "height": 1}]
        message["caption"] = draw(texts)
        return message
    message["text"] = text = draw(texts)
    message["entities"] = draw(entities)
    if text.startswith("/") and draw(st.booleans()):
        command = text.split()[0] if text.split() else text
        message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
    return message


@budget(60)
@given(message=messages())
def test_any_message_gets_an_answer_and_never_the_error_reply(
    bot: Bot, message: dict[str, Any]
) -> None:
    answers = bot.portal.call(send, bot.api, message)
    failures = [r for r in bot.log.records if r[0] in FAILURE_EVENTS]
    assert not failures, failures
    for answer in answers:
        assert SORRY not in answer, answer
        assert 0 < len(answer) <= MAX_TEXT, len(answer)


def test_the_fuzzed_bot_is_still_answering(bot: Bot) -> None:
    # Runs after the fuzzing in this module: no example wedged the dispatcher or a chat lock.
    message = {
        "message_id": 1,
        "date": int(time.time()),
        "chat": {"id": ALICE, "type": "private", "first_name": "Trader"},
        "from": {"id": ALICE, "is_bot": False, "first_name": "Trader"},
        "text": "/help",
        "entities": [{"type": "bot_command", "offset": 0, "length": 5}],
    }
    assert "/subscribe SYMBOL" in bot.portal.call(send, bot.api, message)[0]
