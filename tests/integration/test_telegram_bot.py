"""The real aiogram dispatcher against the Bot API stand-in, over real HTTP."""

from __future__ import annotations

import itertools
import socket
from pathlib import Path

import anyio
import pytest

from levibot.clock import LiveClock
from levibot.messages import CancelOrder, SetKillSwitch, SignalSide
from levibot.testing import RecordingContext, eventually
from sidecars.telegram import TelegramActor
from tests.fakes.botapi import FakeBotAPI
from tests.integration.telegram_helpers import (
    ADMIN,
    ALICE,
    BOB,
    CAROL,
    TOKEN,
    alert,
    command,
    config,
    running_bot,
    signal,
)

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_bot_registers_commands_and_answers_start_with_a_mini_app_button(
    tmp_path: Path,
) -> None:
    async with FakeBotAPI(TOKEN) as api, running_bot(config(api, tmp_path)):
        assert api.calls_of("getMe") and api.calls_of("deleteWebhook")
        registered = api.calls_of("setMyCommands")[0].params["commands"]
        assert {"start", "subscribe", "killswitch"} <= {c["command"] for c in registered}

        api.send_text(ALICE, "/start")
        await eventually(lambda: api.sent_messages(ALICE))
        markup = api.sent_messages(ALICE)[0].params["reply_markup"]
        button = markup["inline_keyboard"][0][0]
        assert button["web_app"] == {"url": "https://levibot.example/app"}

        api.send_text(BOB, "/start", chat_id=-100500)  # a group: web_app buttons are not allowed
        await eventually(lambda: api.sent_messages(-100500))
        group_button = api.sent_messages(-100500)[0].params["reply_markup"]["inline_keyboard"][0][0]
        assert group_button == {"text": "Open dashboard", "url": "https://levibot.example/app"}


async def test_several_users_get_their_own_answers_and_bad_input_gets_help(
    tmp_path: Path,
) -> None:
    async with FakeBotAPI(TOKEN) as api, running_bot(config(api, tmp_path)):
        assert "Subscribed to BTCUSDT" in await command(api, ALICE, "/subscribe btc/usdt")
        assert "Subscribed to ETHUSDT" in await command(api, BOB, "/subscribe ETHUSDT")
        assert "already follows BTCUSDT" in await command(api, ALICE, "/subscribe BTCUSDT")
        assert "Following: BTCUSDT" in await command(api, ALICE, "/subscriptions")
        assert "Following: ETHUSDT" in await command(api, BOB, "/subscriptions")

        assert "Usage: /subscribe SYMBOL" in await command(api, ALICE, "/subscribe")
        assert "is not a symbol" in await command(api, ALICE, "/subscribe $$$;DROP")
        assert "does not follow XRPUSDT" in await command(api, ALICE, "/unsubscribe XRPUSDT")
        assert "Unknown notification kind" in await command(api, ALICE, "/notify pigeons on")
        assert "Usage: /notify" in await command(api, ALICE, "/notify signals maybe")
        assert "Unknown command /frobnicate" in await command(api, ALICE, "/frobnicate now")
        assert "commands only" in await command(api, CAROL, "hello bot")
        assert "/subscribe SYMBOL" in await command(api, CAROL, "/help")
        assert "No portfolio snapshot yet" in await command(api, CAROL, "/portfolio")
        assert "No signals yet" in await command(api, CAROL, "/signals")
        assert "levibot bot up" in await command(api, CAROL, "/status")
        assert "Kill switch: unknown" in await command(api, CAROL, "/risk")


async def test_pushes_reach_only_subscribed_chats_that_want_that_kind(tmp_path: Path) -> None:
    async with FakeBotAPI(TOKEN) as api, running_bot(config(api, tmp_path)) as bot:
        await command(api, ALICE, "/subscribe BTCUSDT")
        await command(api, BOB, "/subscribe ETHUSDT")
        await command(api, CAROL, "/help")  # talks to the bot, follows nothing
        counts = {c: len(api.texts(c)) for c in (ALICE, BOB, CAROL)}

        await bot.handle(signal("BTCUSDT"))
        await eventually(lambda: len(api.texts(ALICE)) == counts[ALICE] + 1)
        assert "BTCUSDT LONG" in api.texts(ALICE)[-1]

        await bot.handle(alert("feed gap detected"))
        await eventually(lambda: len(api.texts(BOB)) == counts[BOB] + 1)
        await eventually(lambda: len(api.texts(ALICE)) == counts[ALICE] + 2)
        assert "feed gap detected" in api.texts(BOB)[-1]

        assert "Signals notifications off" in await command(api, ALICE, "/notify signals off")
        counts[ALICE] = len(api.texts(ALICE))
        await bot.handle(signal("BTCUSDT", SignalSide.SHORT))
        await bot.handle(signal("ETHUSDT", SignalSide.SHORT))
        await eventually(lambda: "ETHUSDT SHORT" in api.texts(BOB)[-1])
        assert len(api.texts(ALICE)) == counts[ALICE]
        assert len(api.texts(CAROL)) == counts[CAROL]


async def test_subscriptions_and_settings_survive_a_restart(tmp_path: Path) -> None:
    async with FakeBotAPI(TOKEN) as api:
        async with running_bot(config(api, tmp_path)):
            await command(api, ALICE, "/subscribe BTCUSDT")
            await command(api, ALICE, "/notify alerts off")
            await command(api, BOB, "/subscribe ALL")
        assert (tmp_path / "telegram" / "subscriptions.json").exists()

        async with running_bot(config(api, tmp_path)) as bot:
            assert "Following: BTCUSDT" in await command(api, ALICE, "/subscriptions")
            before = {c: len(api.texts(c)) for c in (ALICE, BOB)}
            await bot.handle(alert("disk almost full"))
            await bot.handle(signal("SOLUSDT"))
            await eventually(lambda: len(api.texts(BOB)) == before[BOB] + 2)
            await bot.handle(signal("BTCUSDT"))
            await eventually(lambda: len(api.texts(ALICE)) == before[ALICE] + 1)
            assert "BTCUSDT LONG" in api.texts(ALICE)[-1]  # no alert: ALICE switched them off


async def test_pushes_to_one_chat_are_spaced_by_the_per_chat_limit(tmp_path: Path) -> None:
    interval = 0.25
    async with FakeBotAPI(TOKEN) as api:
        cfg = config(api, tmp_path, per_chat_interval_s=interval)
        async with running_bot(cfg) as bot:
            await command(api, ALICE, "/subscribe BTCUSDT")
            await command(api, BOB, "/subscribe ETHUSDT")
            first = len(api.sent_messages(ALICE))
            for _ in range(3):
                await bot.handle(signal("BTCUSDT"))
            await bot.handle(signal("ETHUSDT"))
            await eventually(lambda: len(api.sent_messages(ALICE)) == first + 3)
            pushes = api.sent_messages(ALICE)[first:]
            gaps = [b.at - a.at for a, b in itertools.pairwise(pushes)]
            assert all(gap >= interval * 0.95 for gap in gaps), gaps
            # BOB's push did not queue behind ALICE's: it went before ALICE's last one.
            bob_push = api.sent_messages(BOB)[-1]
            assert "ETHUSDT" in bob_push.params["text"]
            assert bob_push.at < pushes[-1].at


async def test_a_429_is_retried_after_the_retry_after_the_bot_api_asked_for(
    tmp_path: Path,
) -> None:
    async with FakeBotAPI(TOKEN) as api, running_bot(config(api, tmp_path)) as bot:
        await command(api, ALICE, "/subscribe BTCUSDT")
        first = len(api.sent_messages(ALICE))
        api.fail_next("sendMessage", 1, retry_after=1)
        await bot.handle(signal("BTCUSDT"))
        await eventually(lambda: len(api.sent_messages(ALICE)) == first + 2)
        refused, retried = api.sent_messages(ALICE)[first:]
        assert refused.params["text"] == retried.params["text"]
        assert retried.at - refused.at >= 0.95
        assert bot.sender is not None and bot.sender.retried_429 == 1
        assert bot.sender.sent == 1


async def test_a_429_on_a_command_reply_is_retried_too(tmp_path: Path) -> None:
    async with FakeBotAPI(TOKEN) as api, running_bot(config(api, tmp_path)):
        api.fail_next("sendMessage", 1, retry_after=1)
        api.send_text(ALICE, "/help")
        await eventually(lambda: len(api.sent_messages(ALICE)) == 2)
        assert api.texts(ALICE)[0] == api.texts(ALICE)[1]


async def test_killswitch_is_refused_to_others_and_published_for_admins(tmp_path: Path) -> None:
    ctx = RecordingContext("telegram", clock=LiveClock())
    async with FakeBotAPI(TOKEN) as api, running_bot(config(api, tmp_path), ctx):
        reply = await command(api, ALICE, "/killswitch on")
        assert "admins only" in reply and str(ALICE) in reply
        assert ctx.of_type(SetKillSwitch) == []

        assert "Usage: /killswitch on|off" in await command(api, ADMIN, "/killswitch maybe")
        assert ctx.of_type(SetKillSwitch) == []

        assert "Kill switch ON" in await command(api, ADMIN, "/killswitch on")
        (cmd,) = ctx.of_type(SetKillSwitch)
        assert cmd.on is True and cmd.issued_by == f"telegram:{ADMIN}"
        assert "Kill switch OFF" in await command(api, ADMIN, "/killswitch off")
        assert [c.on for c in ctx.of_type(SetKillSwitch)] == [True, False]
        assert "admins only" in await command(api, BOB, "/trading halted")


async def test_cancel_sends_cancel_order_for_admins_and_rejects_bad_ids(tmp_path: Path) -> None:
    ctx = RecordingContext("telegram", clock=LiveClock())
    async with FakeBotAPI(TOKEN) as api, running_bot(config(api, tmp_path), ctx):
        assert "admins only" in await command(api, ALICE, "/cancel abc123")
        for bad in ("/cancel", "/cancel a b c", "/cancel <script>", "/cancel " + "x" * 129):
            assert "Usage: /cancel" in await command(api, ADMIN, bad)
        assert "Name one symbol" in await command(api, ADMIN, "/cancel abc123 ALL")
        assert ctx.of_type(CancelOrder) == []

        assert "Cancel of order abc123 requested" in await command(
            api, ADMIN, "/cancel abc123 btcusdt"
        )
        (cmd,) = ctx.of_type(CancelOrder)
        assert (cmd.client_order_id, cmd.symbol) == ("abc123", "BTCUSDT")
        assert cmd.issued_by == f"telegram:{ADMIN}"

        # An exit of a long-named strategy's entry, and an order adopted from the venue: ids the
        # gateway's cancel route takes too.
        exit_id = "mean_reversion_bollinger_v2-BTCUSDT-1700000000000000000:take_profit"
        for coid in (exit_id, "web/7f3a-2"):
            assert f"Cancel of order {coid} requested" in await command(
                api, ADMIN, f"/cancel {coid}"
            )
        assert [c.client_order_id for c in ctx.of_type(CancelOrder)[1:]] == [exit_id, "web/7f3a-2"]


async def test_polling_survives_flood_control_and_odd_updates(tmp_path: Path) -> None:
    async with FakeBotAPI(TOKEN) as api, running_bot(config(api, tmp_path)):
        api.fail_next("getUpdates", 1, retry_after=1)
        photo = {
            "message_id": 9,
            "date": 1_700_000_000,
            "chat": {"id": ALICE, "type": "private", "first_name": "A"},
            "from": {"id": ALICE, "is_bot": False, "first_name": "A"},
            "photo": [{"file_id": "x", "file_unique_id": "y", "width": 1, "height": 1}],
        }
        api.push_update({"message": photo})
        api.push_update({"edited_message": photo})  # a kind the bot does not handle
        await eventually(lambda: api.texts(ALICE))
        assert "commands only" in api.texts(ALICE)[0]
        assert "Subscribed to BTCUSDT" in await command(api, ALICE, "/subscribe BTCUSDT")
        assert len(api.calls_of("getUpdates")) >= 3


async def test_the_bot_waits_for_an_unreachable_bot_api_and_then_serves(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on, until the stand-in does
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    api = FakeBotAPI(TOKEN)
    api.base_url = f"http://127.0.0.1:{port}"
    ctx = RecordingContext("telegram", clock=LiveClock())
    bot = TelegramActor(ctx, config(api, tmp_path))
    await bot.on_start()
    async with anyio.create_task_group() as tg:
        tg.start_soon(bot.run)
        await eventually(lambda: ctx.metrics.value("telegram_connect_failures_total") >= 1)
        assert not bot.ready.is_set()
        await api.start(port)
        try:
            with anyio.fail_after(15):
                await bot.ready.wait()
            assert "/subscribe SYMBOL" in await command(api, ALICE, "/help")
        finally:
            tg.cancel_scope.cancel()
            await api.stop()
    await bot.on_stop()


async def test_a_refused_token_makes_the_bot_go_quiet_without_failing(tmp_path: Path) -> None:
    async with FakeBotAPI(TOKEN) as api:
        ctx = RecordingContext("telegram", clock=LiveClock())
        bot = TelegramActor(ctx, config(api, tmp_path, token="999:revoked"))
        await bot.on_start()
        async with anyio.create_task_group() as tg:
            tg.start_soon(bot.run)
            await eventually(lambda: bot.unauthorized)
            assert not bot.ready.is_set()
            assert [c.token_ok for c in api.calls] == [False]  # one getMe, then quiet
            tg.cancel_scope.cancel()
        await bot.on_stop()
