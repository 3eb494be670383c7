"""Telegram's limits through the real dispatcher and the stand-in: long texts, caps, topics,
anonymous admins. The stand-in refuses what Telegram refuses, so nothing here can pass by
sending a text Telegram would drop."""

from __future__ import annotations

import json
import time
from pathlib import Path

import aiohttp
import pytest

from levibot.clock import LiveClock
from levibot.messages import OrderDenied, SetKillSwitch, SetTradingState
from levibot.testing import RecordingContext, eventually
from sidecars.telegram.text import TEXT_LIMIT, tg_len
from tests.fakes.botapi import FakeBotAPI
from tests.integration.telegram_helpers import (
    ADMIN,
    ALICE,
    BOB,
    TOKEN,
    alert,
    command,
    config,
    running_bot,
    signal,
)

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

FORUM = -100777
TOPIC = 42


async def replies(api: FakeBotAPI, user: int, text: str, count: int) -> list[str]:
    """Send ``text`` as ``user`` in their chat and return the bot's next ``count`` messages."""
    before = len(api.texts(user))
    api.send_text(user, text)
    await eventually(lambda: len(api.texts(user)) >= before + count)
    return api.texts(user)[before:]


async def anonymous(api: FakeBotAPI, chat: int, text: str) -> str:
    """Send ``text`` as an anonymous admin of ``chat`` and return the bot's next reply there."""
    before = len(api.texts(chat))
    api.send_anonymous(chat, text)
    await eventually(lambda: len(api.texts(chat)) > before)
    return api.texts(chat)[before]


def assert_all_accepted(api: FakeBotAPI) -> None:
    refused = [(c.method, c.error) for c in api.refused()]
    assert refused == []
    assert all(tg_len(str(c.params["text"])) <= TEXT_LIMIT for c in api.sent_messages())


async def test_the_stand_in_refuses_what_telegram_refuses_in_telegrams_words() -> None:
    async with FakeBotAPI(TOKEN) as api, aiohttp.ClientSession() as http:
        url = f"{api.base_url}/bot{TOKEN}/sendMessage"

        async def send(text: str) -> tuple[int, dict[str, object]]:
            async with http.post(url, json={"chat_id": ALICE, "text": text}) as resp:
                return resp.status, json.loads(await resp.text())

        too_long = {
            "ok": False,
            "error_code": 400,
            "description": "Bad Request: message is too long",
        }
        empty = {
            "ok": False,
            "error_code": 400,
            "description": "Bad Request: message text is empty",
        }
        assert await send("x" * (TEXT_LIMIT + 1)) == (400, too_long)
        assert await send("😀" * (TEXT_LIMIT // 2 + 1)) == (400, too_long)  # 4,098 UTF-16 units
        assert await send(" \n ") == (400, empty)
        assert (await send("x" * TEXT_LIMIT))[0] == 200
        assert (await send("😀" * (TEXT_LIMIT // 2)))[0] == 200
        html = {
            "chat_id": ALICE,
            "text": "<b>" + "&amp;" * TEXT_LIMIT + "</b>",
            "parse_mode": "HTML",
        }
        async with http.post(url, json=html) as resp:
            assert resp.status == 200  # 4,096 characters once the entities are parsed


async def test_a_long_alert_arrives_whole_in_several_messages(tmp_path: Path) -> None:
    async with FakeBotAPI(TOKEN) as api, running_bot(config(api, tmp_path)) as bot:
        await command(api, ALICE, "/subscribe BTCUSDT")
        before = len(api.texts(ALICE))
        lines = [f"check {i:03d}: " + "stale quote " * 8 for i in range(100)]  # ~10,800 chars
        await bot.handle(alert("\n".join(lines)))
        await eventually(lambda: len(api.texts(ALICE)) >= before + 3)
        pushed = api.texts(ALICE)[before:]
        assert len(pushed) == 3 and pushed[0].startswith("⚠️ WARNING from feed: check 000")
        assert all(line.strip() in "\n".join(pushed) for line in lines)
        assert_all_accepted(api)


async def test_an_alert_beyond_the_part_limit_is_cut_with_a_marker(tmp_path: Path) -> None:
    async with FakeBotAPI(TOKEN) as api, running_bot(config(api, tmp_path)) as bot:
        await command(api, ALICE, "/subscribe BTCUSDT")
        before = len(api.texts(ALICE))
        await bot.handle(alert("E" * 100_000))
        await eventually(lambda: len(api.texts(ALICE)) >= before + 4)
        pushed = api.texts(ALICE)[before:]
        assert len(pushed) == 4 and pushed[-1].endswith("more characters)")
        assert "… (truncated, " in pushed[-1]
        assert_all_accepted(api)


async def test_long_orders_models_and_subscriptions_answers_are_split(tmp_path: Path) -> None:
    stored = [{"chat_id": BOB, "user_id": BOB, "symbols": [f"SYM{i:04d}USDT" for i in range(600)]}]
    (tmp_path / "telegram").mkdir()
    (tmp_path / "telegram" / "subscriptions.json").write_text(json.dumps(stored))
    async with FakeBotAPI(TOKEN) as api, running_bot(config(api, tmp_path)) as bot:
        now = time.time_ns()
        for i in range(10):
            reason = f"order {i} refused: " + "exposure over the limit; " * 40  # ~1,000 chars
            await bot.handle(
                OrderDenied(
                    ts_event=now,
                    ts_init=now,
                    symbol="BTCUSDT",
                    client_order_id=f"c{i}",
                    strategy="lgbm",
                    code="MAX_EXPOSURE",
                    reason=reason,
                )
            )
        for i in range(150):
            await bot.handle(signal(strategy=f"strategy_{i:03d}", model_id=f"model-{i:03d}-v1"))

        orders = await replies(api, ALICE, "/orders", 4)  # 10 lines of ~1,060: 3 a message
        assert orders[0].startswith("Recent orders") and "order 0 refused" in orders[-1]
        models = await replies(api, ALICE, "/models", 3)
        shown = "\n".join(models)
        assert all(f"strategy_{i:03d}: model-{i:03d}-v1" in shown for i in range(150))
        subscriptions = await replies(api, BOB, "/subscriptions", 2)
        assert "SYM0000USDT" in subscriptions[0] and "SYM0599USDT" in subscriptions[-1]
        assert "Notifications on" in subscriptions[-1]
        assert not any("went wrong" in t for t in api.texts(ALICE) + api.texts(BOB))
        assert_all_accepted(api)


async def test_subscribing_past_the_cap_is_refused_with_a_clear_answer(tmp_path: Path) -> None:
    async with (
        FakeBotAPI(TOKEN) as api,
        running_bot(config(api, tmp_path, max_symbols_per_chat=3)) as bot,
    ):
        for symbol in ("AAUSDT", "BBUSDT", "CCUSDT"):
            assert "Subscribed" in await command(api, ALICE, f"/subscribe {symbol}")
        reply = await command(api, ALICE, "/subscribe DDUSDT")
        assert "already follows 3 symbols, the most a chat may" in reply
        assert "/unsubscribe" in reply
        assert bot.subscriptions.get(ALICE).symbols == ["AAUSDT", "BBUSDT", "CCUSDT"]
        assert "Subscribed to DDUSDT" in await command(api, BOB, "/subscribe DDUSDT")
        assert "Unsubscribed" in await command(api, ALICE, "/unsubscribe AAUSDT")
        assert "Subscribed to DDUSDT" in await command(api, ALICE, "/subscribe DDUSDT")


async def test_pushes_go_to_the_forum_topic_of_the_subscription_after_a_restart(
    tmp_path: Path,
) -> None:
    async with FakeBotAPI(TOKEN) as api:
        async with running_bot(config(api, tmp_path)) as bot:
            api.send_text(ALICE, "/subscribe BTCUSDT", chat_id=FORUM, thread_id=TOPIC)
            await eventually(lambda: api.sent_messages(FORUM))
            (answer,) = api.sent_messages(FORUM)
            assert answer.params.get("message_thread_id") == TOPIC  # the reply, in the topic
            await bot.handle(signal("BTCUSDT"))
            await eventually(lambda: len(api.sent_messages(FORUM)) == 2)
            assert api.sent_messages(FORUM)[-1].params.get("message_thread_id") == TOPIC

        async with running_bot(config(api, tmp_path)) as bot:  # reloaded from the file
            await bot.handle(signal("BTCUSDT"))
            await eventually(lambda: len(api.sent_messages(FORUM)) == 3)
            push = api.sent_messages(FORUM)[-1]
            assert (
                push.params.get("message_thread_id") == TOPIC and "BTCUSDT" in push.params["text"]
            )

            api.deleted_topics.add((FORUM, TOPIC))  # the topic is gone: the chat still hears
            await bot.handle(signal("BTCUSDT"))
            await eventually(lambda: len(api.sent_messages(FORUM)) == 5)
            refused, delivered = api.sent_messages(FORUM)[-2:]
            assert refused.error == "Bad Request: message thread not found"
            assert delivered.status == 200 and "message_thread_id" not in delivered.params
        stored = json.loads((tmp_path / "telegram" / "subscriptions.json").read_text())
        assert stored[0]["thread_id"] == TOPIC


async def test_an_anonymous_admin_is_told_to_show_themselves_not_to_add_a_shared_id(
    tmp_path: Path,
) -> None:
    ctx = RecordingContext("telegram", clock=LiveClock())
    async with FakeBotAPI(TOKEN) as api, running_bot(config(api, tmp_path), ctx):
        for typed in ("/killswitch on", "/trading halted"):
            reply = await anonymous(api, FORUM, typed)
            assert "Remain anonymous" in reply and "your own account" in reply
            assert "1087968824" not in reply and "admin_user_ids" not in reply
        assert ctx.of_type(SetKillSwitch) == [] and ctx.of_type(SetTradingState) == []
        # People who signed their message still learn their own id, and admins still act.
        assert str(BOB) in await command(api, BOB, "/killswitch on", chat=FORUM)
        assert "Kill switch ON" in await command(api, ADMIN, "/killswitch on", chat=FORUM)
        assert len(ctx.of_type(SetKillSwitch)) == 1
