"""Symbols users type, subscriptions, notification settings and the JSON file store."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from sidecars.telegram.subscriptions import (
    ALL_SYMBOLS,
    InvalidSymbolError,
    JsonFileStore,
    NotifyKind,
    SubscriptionLimitError,
    Subscriptions,
    SubscriptionStoreError,
    normalize_symbol,
)


@pytest.mark.parametrize(
    ("typed", "symbol"),
    [("BTCUSDT", "BTCUSDT"), (" btc/usdt ", "BTCUSDT"), ("eth-usdt", "ETHUSDT"), ("all", "*")],
)
def test_symbols_are_normalised(typed: str, symbol: str) -> None:
    assert normalize_symbol(typed) == symbol


@pytest.mark.parametrize("typed", ["", "B", "BTC USDT", "$$$", "💰", "A" * 21, "btc;drop"])
def test_garbage_symbols_are_refused_with_a_hint(typed: str) -> None:
    with pytest.raises(InvalidSymbolError, match="BTCUSDT"):
        normalize_symbol(typed)


def test_symbols_outside_the_allowed_set_are_refused() -> None:
    allowed = frozenset({"BTCUSDT", "ETHUSDT"})
    assert normalize_symbol("ethusdt", allowed) == "ETHUSDT"
    with pytest.raises(InvalidSymbolError, match="not traded here"):
        normalize_symbol("DOGEUSDT", allowed)


@pytest.mark.anyio
async def test_recipients_follow_symbols_and_notification_settings(tmp_path: Path) -> None:
    subs = Subscriptions(JsonFileStore(tmp_path / "subs.json"))
    await subs.subscribe(1, 1, "BTCUSDT")
    await subs.subscribe(2, 2, ALL_SYMBOLS)
    await subs.set_notify(3, 3, NotifyKind.ALERTS, True)  # settings but no symbols: silent
    assert subs.recipients(NotifyKind.SIGNALS, "BTCUSDT") == [1, 2]
    assert subs.recipients(NotifyKind.SIGNALS, "ETHUSDT") == [2]
    assert subs.recipients(NotifyKind.ALERTS) == [1, 2]
    assert subs.recipients(NotifyKind.DENIALS, "BTCUSDT") == []  # off by default
    await subs.set_notify(1, 1, NotifyKind.SIGNALS, False)
    assert subs.recipients(NotifyKind.SIGNALS, "BTCUSDT") == [2]
    assert await subs.subscribe(1, 1, "BTCUSDT") is False
    assert await subs.unsubscribe(2, ALL_SYMBOLS) is True
    assert await subs.unsubscribe(2, ALL_SYMBOLS) is False
    assert subs.recipients(NotifyKind.ALERTS) == [1]


@pytest.mark.anyio
async def test_json_store_round_trips_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "subs.json"
    subs = Subscriptions(JsonFileStore(path))
    await subs.subscribe(-100123, 7, "ETHUSDT")
    await subs.subscribe(-100123, 7, "BTCUSDT")
    await subs.set_notify(-100123, 7, NotifyKind.DENIALS, True)
    assert [p.name for p in path.parent.iterdir()] == ["subs.json"]
    stored = json.loads(path.read_text())
    assert stored == [
        {
            "chat_id": -100123,
            "user_id": 7,
            "symbols": ["ETHUSDT", "BTCUSDT"],
            "notify": ["alerts", "denials", "fills", "signals"],
            "thread_id": None,
        }
    ]
    again = Subscriptions(JsonFileStore(path))
    await again.load()
    assert again.chats == subs.chats


@pytest.mark.anyio
async def test_a_missing_file_is_an_empty_registry(tmp_path: Path) -> None:
    subs = Subscriptions(JsonFileStore(tmp_path / "absent.json"))
    await subs.load()
    assert subs.chats == {}
    assert subs.get(5).symbols == [] and 5 not in subs.chats  # reading does not register


@pytest.mark.anyio
async def test_a_corrupt_file_is_set_aside_and_the_bot_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "subs.json"
    path.write_text('[{"chat_id": "not a number"')
    subs = Subscriptions(JsonFileStore(path))
    problems = await subs.load()
    assert subs.chats == {} and len(problems) == 1 and "moved to" in problems[0]
    assert (tmp_path / "subs.json.corrupt").read_text() == '[{"chat_id": "not a number"'
    await subs.subscribe(1, 1, "BTCUSDT")  # and it persists again
    assert json.loads(path.read_text())[0]["symbols"] == ["BTCUSDT"]


@pytest.mark.anyio
async def test_a_chat_may_follow_at_most_max_symbols(tmp_path: Path) -> None:
    subs = Subscriptions(JsonFileStore(tmp_path / "subs.json"), max_symbols=3)
    for symbol in ("AAUSDT", "BBUSDT", "CCUSDT"):
        assert await subs.subscribe(1, 1, symbol)
    with pytest.raises(SubscriptionLimitError) as refused:
        await subs.subscribe(1, 1, "DDUSDT")
    assert refused.value.limit == 3
    assert await subs.subscribe(1, 1, "AAUSDT") is False  # already followed: no error
    assert await subs.subscribe(2, 2, "DDUSDT")  # the cap is per chat
    assert subs.get(1).symbols == ["AAUSDT", "BBUSDT", "CCUSDT"]
    stored = json.loads((tmp_path / "subs.json").read_text())
    assert [len(s["symbols"]) for s in stored] == [3, 1]


@pytest.mark.anyio
async def test_a_failed_write_changes_nothing_in_memory(tmp_path: Path) -> None:
    # A real failure: the store's directory is a regular file, so mkdir and the write fail.
    (tmp_path / "not-a-dir").write_text("x")
    subs = Subscriptions(JsonFileStore(tmp_path / "not-a-dir" / "subs.json"))
    with pytest.raises(SubscriptionStoreError, match="JsonFileStore"):
        await subs.subscribe(1, 1, "BTCUSDT")
    assert subs.chats == {} and subs.recipients(NotifyKind.SIGNALS, "BTCUSDT") == []


@pytest.mark.anyio
async def test_a_failed_write_keeps_the_previous_settings(tmp_path: Path) -> None:
    path = tmp_path / "telegram" / "subs.json"
    subs = Subscriptions(JsonFileStore(path))
    await subs.subscribe(1, 1, "BTCUSDT")
    before = json.loads(path.read_text())
    path.parent.rename(tmp_path / "moved")
    (tmp_path / "telegram").write_text("now a file")  # the next write cannot land
    with pytest.raises(SubscriptionStoreError):
        await subs.subscribe(1, 1, "ETHUSDT")
    with pytest.raises(SubscriptionStoreError):
        await subs.set_notify(1, 1, NotifyKind.SIGNALS, False)
    with pytest.raises(SubscriptionStoreError):
        await subs.unsubscribe(1, "BTCUSDT")
    assert [msgspec.to_builtins(s) for s in subs.chats.values()] == before
    assert subs.recipients(NotifyKind.SIGNALS, "BTCUSDT") == [1]
    assert subs.recipients(NotifyKind.SIGNALS, "ETHUSDT") == []


@pytest.mark.anyio
async def test_the_forum_topic_of_the_latest_subscribe_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "subs.json"
    subs = Subscriptions(JsonFileStore(path))
    await subs.subscribe(-100500, 7, "BTCUSDT", thread_id=42)
    await subs.set_notify(-100500, 7, NotifyKind.DENIALS, True)  # does not move the pushes
    assert subs.get(-100500).thread_id == 42
    again = Subscriptions(JsonFileStore(path))
    await again.load()
    assert again.get(-100500).thread_id == 42
    await again.subscribe(-100500, 7, "ETHUSDT")  # from the General topic: pushes go there
    assert again.get(-100500).thread_id is None


@pytest.mark.anyio
async def test_settings_stored_before_topics_existed_still_load(tmp_path: Path) -> None:
    path = tmp_path / "subs.json"
    old = [{"chat_id": 5, "user_id": 5, "symbols": ["BTCUSDT"], "notify": ["signals"]}]
    path.write_text(json.dumps(old))
    subs = Subscriptions(JsonFileStore(path))
    assert await subs.load() == []
    assert subs.get(5).thread_id is None and subs.recipients(NotifyKind.SIGNALS, "BTCUSDT") == [5]
