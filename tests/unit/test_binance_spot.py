"""The Binance spot client and venue against the local stand-in (real HTTP, real signatures).

Binance's documented signature example is a fixed vector; the stand-in verifies every signed
request's HMAC, key and timestamp as the exchange does, so a request that passes here is one
the exchange would take.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
import structlog

from levibot.execution.binance import (
    BinanceConfig,
    BinanceError,
    BinanceSpotClient,
    BinanceVenue,
    Ended,
    FilterReject,
    Placed,
    RateLimited,
    Refused,
    SymbolRules,
    Traded,
    sign,
    signed_query,
    venue_order_id,
)
from levibot.messages import OrderIntent, Side
from levibot.testing import eventually, free_port
from tests.fakes.binance_spot import BinanceSpot, rules, serving

pytestmark = pytest.mark.anyio

# The example of Binance's spot API documentation ("SIGNED endpoint examples for POST
# /api/v3/order - HMAC Keys").
DOC_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
DOC_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
DOC_QUERY = (
    "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1"
    "&recvWindow=5000&timestamp=1499827319559"
)
DOC_SIGNATURE = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"


def make_spot(**kw: Any) -> BinanceSpot:
    spot = BinanceSpot(api_key=DOC_KEY, api_secret=DOC_SECRET, **kw)
    spot.symbols["BTCUSDT"] = rules("BTCUSDT", "BTC", "USDT")
    spot.balances["USDT"] = [Decimal("10000"), Decimal(0)]
    spot.balances["BTC"] = [Decimal("1"), Decimal(0)]
    spot.price["BTCUSDT"] = 100.0
    return spot


@pytest.fixture
async def spot() -> AsyncIterator[tuple[BinanceSpot, str, str]]:
    s = make_spot()
    async with serving(s) as (rest, ws):
        yield s, rest, ws


def venue_of(rest: str, ws: str, **cfg: Any) -> BinanceVenue:
    config = BinanceConfig(base_url=rest, ws_url=ws, symbols=("BTCUSDT",), **cfg)
    return BinanceVenue(config, DOC_KEY, DOC_SECRET, log=structlog.get_logger())


def intent(qty: float, side: Side = Side.BUY, limit: float = 0.0, coid: str = "c1") -> OrderIntent:
    return OrderIntent(
        ts_event=1, ts_init=1, symbol="BTCUSDT", client_order_id=coid, strategy="t",
        side=side, quantity=qty, price=100.0, limit_price=limit,
    )  # fmt: skip


# ---- signing ------------------------------------------------------------------------------
def test_the_documented_example_signs_to_the_documented_signature() -> None:
    assert sign(DOC_SECRET, DOC_QUERY) == DOC_SIGNATURE
    params = {
        "symbol": "LTCBTC", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
        "quantity": "1", "price": "0.1", "recvWindow": 5000, "timestamp": 1499827319559,
    }  # fmt: skip
    assert signed_query(DOC_SECRET, params) == f"{DOC_QUERY}&signature={DOC_SIGNATURE}"
    assert sign(DOC_SECRET + "x", DOC_QUERY) != DOC_SIGNATURE


async def test_signed_requests_pass_the_stand_ins_check_and_a_wrong_secret_does_not(
    spot: tuple[BinanceSpot, str, str],
) -> None:
    s, rest, _ = spot
    async with BinanceSpotClient(rest, DOC_KEY, DOC_SECRET) as client:
        account = await client.account()
        assert {b["asset"] for b in account["balances"]} == {"BTC", "USDT"}
    async with BinanceSpotClient(rest, DOC_KEY, "not-the-secret") as client:
        with pytest.raises(BinanceError) as bad:
            await client.account()
        assert bad.value.code == -1022
    async with BinanceSpotClient(rest, "not-the-key", DOC_SECRET) as client:
        with pytest.raises(BinanceError) as bad:
            await client.account()
        assert bad.value.code == -2015
    # The secret never travels: not in a URL, not in a header (only the key does).
    assert not any(DOC_SECRET in str(q) for _, _, q in s.requests)
    assert DOC_SECRET not in repr(BinanceSpotClient(rest, DOC_KEY, DOC_SECRET))


async def test_the_server_time_offset_is_measured_and_a_stale_timestamp_resynchronises(
    spot: tuple[BinanceSpot, str, str],
) -> None:
    s, rest, _ = spot
    s.clock_skew_ms = 120_000  # the server is two minutes ahead: 5 s recvWindow or bust
    async with BinanceSpotClient(rest, DOC_KEY, DOC_SECRET) as client:
        assert abs(client.offset_ms - 120_000) < 1_000
        await client.account()
        client.offset_ms = 0  # as if the offset went stale
        await client.account()  # -1021, re-measured, retried once
        assert abs(client.offset_ms - 120_000) < 1_000
    assert (-1021, "Timestamp for this request is outside of the recvWindow.") in s.rejected


# ---- filters ------------------------------------------------------------------------------
def test_filters_round_to_the_tick_and_step_and_refuse_below_the_minimums() -> None:
    r = SymbolRules.from_exchange_info(rules("BTCUSDT", "BTC", "USDT", min_notional="10"))
    assert r.quantity(0.123456789, market=False) == Decimal("0.12345")
    assert r.price("BUY", 100.019) == Decimal("100.01")  # a buy's limit never rises
    assert r.price("SELL", 100.011) == Decimal("100.02")  # a sell's never falls
    with pytest.raises(FilterReject) as lot:
        r.quantity(0.000001, market=False)
    assert lot.value.filter == "LOT_SIZE"
    with pytest.raises(FilterReject) as notional:
        r.check_notional(Decimal("0.05"), Decimal("100"), market=True)
    assert notional.value.filter == "NOTIONAL"


async def test_an_order_that_breaks_a_filter_is_refused_before_it_is_sent(
    spot: tuple[BinanceSpot, str, str],
) -> None:
    s, rest, ws = spot
    venue = venue_of(rest, ws)
    await venue.start()
    try:
        small = await venue.submit(intent(0.01), "c-small")  # 1 USDT < 5 minimum notional
        tiny = await venue.submit(intent(0.000001), "c-tiny")  # below the step
        assert isinstance(small[0], Refused) and "NOTIONAL" in small[0].why
        assert isinstance(tiny[0], Refused) and "LOT_SIZE" in tiny[0].why
        assert not [r for r in s.requests if r[1] == "/api/v3/order"]  # nothing sent
        # A quantity off the step is floored, not refused: the venue takes it.
        ok = await venue.submit(intent(0.123456789, limit=50.019), "c-ok")
        assert isinstance(ok[0], Placed) and ok[0].status == "NEW"
        sent = [q for m, p, q in s.requests if p == "/api/v3/order" and m == "POST"][-1]
        assert (sent["quantity"], sent["price"], sent["type"]) == ("0.12345", "50.01", "LIMIT")
    finally:
        await venue.close()


# ---- orders and fills ---------------------------------------------------------------------
async def test_a_market_order_fills_in_parts_with_fees_in_the_asset_received(
    spot: tuple[BinanceSpot, str, str],
) -> None:
    s, rest, ws = spot
    s.fill_parts = 3
    venue = venue_of(rest, ws)
    await venue.start()
    try:
        buy = await venue.submit(intent(0.3), "buy-1")
        assert isinstance(buy[0], Placed) and buy[0].status == "FILLED"
        trades = [e for e in buy if isinstance(e, Traded)]
        assert len(trades) == 3 and [t.done for t in trades] == [False, False, True]
        # The buy's fee is charged in BTC: the account holds the quantity less the fee.
        assert all(t.fee_asset == "BTC" and t.fee_amount == pytest.approx(0.0001) for t in trades)
        assert sum(t.quantity for t in trades) == pytest.approx(0.3 - 0.0003)
        assert sum(t.fee for t in trades) == pytest.approx(0.0003 * 100.0)
        sell = await venue.submit(intent(0.2, Side.SELL, coid="sell-1"), "sell-1")
        fees = [e for e in sell if isinstance(e, Traded)]
        assert {t.fee_asset for t in fees} == {"USDT"}
        assert sum(t.fee for t in fees) == pytest.approx(0.2 * 100.0 * 0.001)
        assert sum(t.quantity for t in fees) == pytest.approx(0.2)
    finally:
        await venue.close()


async def test_limit_orders_rest_cancel_replace_and_report_their_status(
    spot: tuple[BinanceSpot, str, str],
) -> None:
    s, rest, ws = spot
    venue = venue_of(rest, ws)
    await venue.start()
    try:
        placed = await venue.submit(intent(0.5, limit=90.0), "gtc-1")
        assert placed == [Placed("gtc-1", placed[0].order_id, "NEW")]  # type: ignore[union-attr]
        status = await venue.status("BTCUSDT", "gtc-1")
        assert status is not None and status["status"] == "NEW"
        assert await venue.status("BTCUSDT", "never-sent") is None
        replaced = await venue.replace("BTCUSDT", "gtc-1", intent(0.4, limit=95.0), "gtc-2")
        assert Ended("gtc-1", "CANCELED") in replaced
        assert [o.client_order_id for o in s.open()] == ["gtc-2"]
        assert s.open()[0].price == Decimal("95.0")
        cancelled = await venue.cancel("BTCUSDT", "gtc-2")
        assert Ended("gtc-2", "CANCELED") in cancelled and not s.open()
        # Cancelling what is already gone answers with its status, not an error.
        again = await venue.cancel("BTCUSDT", "gtc-2")
        assert Ended("gtc-2", "CANCELED") in again
        # IOC that does not cross: expired at once, nothing rests.
        ioc = venue_of(rest, ws, limit_tif="IOC")
        await ioc.start()
        expired = await ioc.submit(intent(0.5, limit=90.0, coid="ioc-1"), "ioc-1")
        await ioc.close()
        assert Ended("ioc-1", "EXPIRED") in expired and not s.open()
    finally:
        await venue.close()


async def test_the_client_order_id_is_idempotent(spot: tuple[BinanceSpot, str, str]) -> None:
    s, rest, ws = spot
    long_id = "ema_cross:BTCUSDT:1700000000000000000:signal:with-more"
    assert venue_order_id("abc:1") == "abc:1"
    assert venue_order_id(long_id) == venue_order_id(long_id) != venue_order_id(long_id + "x")
    assert len(venue_order_id(long_id)) <= 36
    venue = venue_of(rest, ws)
    await venue.start()
    try:
        vid = venue_order_id(long_id)
        first = await venue.submit(intent(0.5, limit=90.0, coid=long_id), vid)
        second = await venue.submit(intent(0.5, limit=90.0, coid=long_id), vid)  # a resend
        assert first[0] == second[0]  # the same order, once
        assert len(s.open()) == 1
    finally:
        await venue.close()


# ---- rate limits --------------------------------------------------------------------------
async def test_429_and_418_are_waited_out_per_retry_after_then_retried(
    spot: tuple[BinanceSpot, str, str],
) -> None:
    s, rest, _ = spot
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async with BinanceSpotClient(rest, DOC_KEY, DOC_SECRET, sleep=sleep) as client:
        s.refuse, s.retry_after = 2, "3"
        await client.account()
        assert client.retries == 2 and waits[:2] == [3.0, 3.0]
        s.ban, s.retry_after = 1, "2"
        await client.account()
        assert client.retries == 3 and waits[2] == 2.0
        # A ban longer than we may wait is raised, not slept through.
        s.ban, s.retry_after = 1, "7200"
        with pytest.raises(RateLimited) as banned:
            await client.account()
        assert banned.value.status == 418 and banned.value.retry_after_s == 7200
        s.refuse, s.retry_after = 5, "1"
        with pytest.raises(RateLimited):
            await client.account()  # 3 retries, then it gives up
    assert [c for c, _ in s.rejected].count(-1003) == 2 + 1 + 1 + 4


async def test_the_used_weight_is_kept_under_the_limit_by_waiting_for_the_next_minute(
    spot: tuple[BinanceSpot, str, str],
) -> None:
    s, rest, _ = spot
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async with BinanceSpotClient(rest, DOC_KEY, DOC_SECRET, sleep=sleep) as client:
        await client.exchange_info(("BTCUSDT",))  # takes the limit: 6000 a minute
        assert client.weight_limit == 6000
        s.weight = 5_390  # others used the minute's weight (the header says so)
        await client.account()  # sent: the last header we saw was far below the limit
        assert not waits and client.used_weight == 5_410
        await client.account()  # 5410 + 20 > 90 % of 6000: wait for the next minute
        assert len(waits) == 1 and 0 < waits[0] <= 60.1


async def test_concurrent_requests_cannot_all_pass_one_weight_check(
    spot: tuple[BinanceSpot, str, str],
) -> None:
    s, rest, _ = spot
    sent_at_wait: list[int] = []

    def accounts() -> int:
        return sum(1 for _, path, _ in s.requests if path == "/api/v3/account")

    async def sleep(seconds: float) -> None:  # the next minute comes at once
        sent_at_wait.append(accounts())

    async with BinanceSpotClient(rest, DOC_KEY, DOC_SECRET, sleep=sleep) as client:
        await client.exchange_info(("BTCUSDT",))  # 6000 a minute: the headroom is 5400
        s.weight = 5_300
        await client.account()  # the header says 5320 used
        # Eight at once, 20 each: four fit under 5400 with the others in flight, the fifth
        # waits for the next minute. Before the weight was reserved, all eight passed the one
        # check (5320 + 20 <= 5400) and went out in the same minute.
        await asyncio.gather(*(client.account() for _ in range(8)))
        assert sent_at_wait, "nothing waited for the next minute"
        assert sent_at_wait[0] <= 1 + 4  # the one before, and four of the eight
        assert accounts() == 9


# ---- the user-data stream -----------------------------------------------------------------
async def test_the_user_stream_reports_trades_reconnects_after_a_drop_and_keeps_its_key(
    spot: tuple[BinanceSpot, str, str],
) -> None:
    s, rest, ws = spot
    venue = venue_of(rest, ws, keepalive_s=0.05, reconnect_max_s=0.2)
    await venue.start()
    got: list[Any] = []
    connects = asyncio.Event()

    async def on_events(events: list[Any]) -> None:
        got.extend(events)

    async def on_connect() -> None:
        connects.set()

    task = asyncio.create_task(venue.run_stream(on_events, on_connect))
    try:
        await asyncio.wait_for(connects.wait(), 5)
        await venue.submit(intent(0.5, limit=90.0), "rest-1")
        await s.trade("BTCUSDT", 89.0, qty=0.2)
        await eventually(lambda: any(isinstance(e, Traded) for e in got))
        t = next(e for e in got if isinstance(e, Traded))
        assert (t.venue_id, t.quantity, t.price, t.done) == ("rest-1", 0.2 - 0.0002, 90.0, False)
        await eventually(lambda: sum(s.listen_keys.values()) >= 1)  # keep-alive PUTs arrive
        connects.clear()
        await s.drop_streams()
        await asyncio.wait_for(connects.wait(), 5)
        assert venue.connects == 2
        await s.trade("BTCUSDT", 89.0)  # the rest, on the new socket
        await eventually(lambda: any(isinstance(e, Traded) and e.done for e in got))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await venue.close()


async def test_closing_the_venue_closes_its_listen_key(spot: tuple[BinanceSpot, str, str]) -> None:
    s, rest, ws = spot
    venue = venue_of(rest, ws)
    await venue.start()
    connects = asyncio.Event()

    async def on_connect() -> None:
        connects.set()

    task = asyncio.create_task(venue.run_stream(lambda events: asyncio.sleep(0), on_connect))
    try:
        await asyncio.wait_for(connects.wait(), 5)
        key = venue.listen_key
        assert key in s.listen_keys
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await venue.close()
    assert key not in s.listen_keys and venue.listen_key == ""


async def test_keep_alives_go_on_after_the_venue_cannot_be_reached() -> None:
    # Nothing listens on the port: each keep-alive fails with a connection error, as in a
    # network blip. The loop must keep trying, or the listen key would expire meanwhile.
    dead = f"http://127.0.0.1:{free_port()}"
    venue = venue_of(dead, "ws://127.0.0.1:1", keepalive_s=0.01, timeout_s=1.0)
    task = asyncio.create_task(venue._keepalive("key"))
    try:
        await asyncio.sleep(0.3)
        assert not task.done(), task.exception()
        assert venue.keepalives == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await venue.close()


def test_only_a_cancels_report_is_named_by_the_cancelled_orders_id() -> None:
    venue = venue_of("http://127.0.0.1:1", "ws://127.0.0.1:1")
    trade = {"e": "executionReport", "x": "TRADE", "X": "PARTIALLY_FILLED", "c": "mine",
             "C": "other", "S": "BUY", "s": "BTCUSDT", "t": 7, "l": "0.1", "L": "100",
             "T": 1}  # fmt: skip
    (t,) = venue.report_events(trade)
    assert isinstance(t, Traded) and t.venue_id == "mine"
    cancel = {"e": "executionReport", "x": "CANCELED", "X": "CANCELED", "c": "req", "C": "mine"}
    (ended,) = venue.report_events(cancel)
    assert isinstance(ended, Ended) and ended.venue_id == "mine"


async def test_a_refused_stream_is_logged_without_its_listen_key(
    spot: tuple[BinanceSpot, str, str],
) -> None:
    s, rest, _ = spot
    # The REST server has no websocket at this path: the handshake fails with a 404 whose
    # message names the URL, listen key included.
    venue = venue_of(rest, f"{rest.replace('http', 'ws')}/nowhere", reconnect_max_s=0.05)
    await venue.start()

    async def nothing(*_: Any) -> None:
        return None

    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(venue.run_stream(nothing, nothing))
        try:
            await eventually(lambda: any(e["event"] == "binance.stream_error" for e in logs))
            keys = set(s.listen_keys)  # closing the venue closes the last one
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await venue.close()
    errors = [e["error"] for e in logs if e["event"] == "binance.stream_error"]
    assert keys and all("<listenKey>" in text for text in errors), errors
    assert not any(key in text for key in keys for text in errors)
