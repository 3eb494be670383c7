"""The Binance feed against a local websocket server replaying Binance combined-stream frames.

The server speaks the real protocol over a real socket (aiohttp); frames come from our own
format fixtures and from the real recordings in ``../shared/data/binance``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web

from levibot.actors.feed import FeedActor, FeedConfig
from levibot.clock import LiveClock
from levibot.config import convert
from levibot.feeds.binance import FeedDisconnected
from levibot.messages import Bar, Quote, Tick
from levibot.partition import Partition
from levibot.testing import RecordingContext, eventually

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

FIXTURE = Path(__file__).parents[1] / "fixtures" / "binance" / "combined.ws"
SHARED = Path(__file__).parents[2] / ".." / "shared" / "data" / "binance"


def read_recording(path: Path) -> tuple[str, list[str]]:
    """Return (url, frames) of a recording: ``URL <-> ts`` then ``<recv ts>: <json>`` lines."""
    lines = path.read_text().splitlines()
    frames = [line.partition(": ")[2] for line in lines[1:] if line.strip()]
    return lines[0].split(" <-> ")[0], frames


def streams_of(url: str) -> list[str]:
    return url.partition("streams=")[2].split("/")


class Exchange:
    """A Binance stand-in: connection *i* sends ``scripts[i]``; all but the last then drop."""

    def __init__(
        self, scripts: list[list[str]], abrupt: bool = False, hang_first: bool = False
    ) -> None:
        self.scripts = scripts
        self.abrupt = abrupt
        self.hang_first = hang_first  # connection 1 sends nothing and never answers pings
        self.queries: list[str] = []
        self.connections = 0
        self.url = ""

    async def handler(self, request: web.Request) -> web.StreamResponse:
        n = self.connections
        ws = web.WebSocketResponse(autoping=not (self.hang_first and n == 0))
        await ws.prepare(request)
        self.connections += 1
        self.queries.append(request.query_string)
        script = self.scripts[min(n, len(self.scripts) - 1)]
        for frame in script:
            await ws.send_str(frame)
        if self.hang_first and n == 0:
            async for _ in ws:  # pings arrive here and go unanswered
                pass
            return ws
        if n < len(self.scripts) - 1:
            if self.abrupt and request.transport is not None:
                request.transport.abort()  # a dropped TCP connection, no close frame
            else:
                await ws.close(code=1001, message=b"going away")  # what Binance does daily
            return ws
        async for _ in ws:  # last script: stay open until the client leaves
            pass
        return ws


@pytest.fixture
async def serve() -> AsyncIterator[Any]:
    runners: list[web.AppRunner] = []

    async def start(exchange: Exchange) -> Exchange:
        app = web.Application()
        app.router.add_get("/stream", exchange.handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        exchange.url = f"ws://127.0.0.1:{port}/stream"
        runners.append(runner)
        return exchange

    yield start
    for runner in runners:
        await runner.cleanup()


def make_feed(
    exchange: Exchange, streams: list[str], partition: Partition = Partition(), **binance: Any
) -> tuple[FeedActor, RecordingContext]:
    cfg = convert(
        {"source": "binance", "binance": {"url": exchange.url, "streams": streams,
                                          "backoff_initial_s": 0.01, "backoff_max_s": 0.05,
                                          **binance}},
        FeedConfig,
    )  # fmt: skip
    ctx = RecordingContext("feed", clock=LiveClock(), partition=partition)
    return FeedActor(ctx, cfg), ctx


async def run_until(actor: FeedActor, predicate: Any) -> None:
    await actor.on_start()
    async with anyio.create_task_group() as tg:
        tg.start_soon(actor.run)
        await eventually(predicate, timeout=10)
        tg.cancel_scope.cancel()
    await actor.on_stop()


async def test_feed_subscribes_by_config_and_decodes_every_fixture_path(serve: Any) -> None:
    url, frames = read_recording(FIXTURE)
    exchange = await serve(Exchange([frames]))
    actor, ctx = make_feed(exchange, streams_of(url))
    await run_until(actor, lambda: len(ctx.published) >= 9)
    assert exchange.queries == ["streams=" + "/".join(streams_of(url))]
    assert [type(m).__name__ for m in ctx.published] == [
        "Tick", "Tick", "Tick", "Tick", "Quote", "Tick", "Bar", "Tick", "Tick",
    ]  # fmt: skip
    assert all(m.ts_ingress > 0 and m.ts_init >= m.ts_ingress for m in ctx.published)
    stats = actor.source.decoder.stats  # type: ignore[attr-defined]
    assert stats.parse_errors == 2 and stats.unhandled == {"depthUpdate": 1, "forceOrder": 1}
    assert stats.gaps == {"BTCUSDT": 2}
    assert ctx.metrics.value("levibot_feed_messages_total", source="binance") == 9


@pytest.mark.parametrize("abrupt", [False, True], ids=["close-frame", "tcp-drop"])
async def test_feed_reconnects_after_the_server_drops_it_and_carries_on(
    serve: Any, abrupt: bool
) -> None:
    url, frames = read_recording(FIXTURE)
    # Connection 1 dies after 6 frames, connection 2 right after connecting, 3 sends the rest.
    exchange = await serve(Exchange([frames[:6], [], frames[6:]], abrupt=abrupt))
    actor, ctx = make_feed(exchange, streams_of(url))
    await run_until(actor, lambda: len(ctx.published) >= 9)
    assert exchange.connections == 3
    assert len(ctx.of_type(Tick)) == 7 and len(ctx.of_type(Bar)) == 1
    assert ctx.metrics.value("levibot_feed_reconnects_total") == 2
    assert actor.source.decoder.stats.parse_errors == 2  # type: ignore[attr-defined]


async def test_feed_gives_up_after_max_reconnects_so_supervision_can_restart_it(
    serve: Any,
) -> None:
    exchange = await serve(Exchange([[]]))
    exchange.url = exchange.url.replace("/stream", "/nowhere")  # 404 on every attempt
    actor, ctx = make_feed(exchange, ["btcusdt@trade"], max_reconnects=2)
    await actor.on_start()
    with pytest.raises(FeedDisconnected, match="2 reconnect attempts failed"):
        await actor.run()
    assert ctx.metrics.value("levibot_feed_reconnects_total") == 2


async def test_feed_heartbeat_drops_a_silent_server_and_reconnects(serve: Any) -> None:
    url, frames = read_recording(FIXTURE)
    exchange = await serve(Exchange([[], frames], hang_first=True))
    actor, ctx = make_feed(exchange, streams_of(url), heartbeat_s=0.05)
    await run_until(actor, lambda: len(ctx.published) >= 9)
    assert exchange.connections == 2  # the first never answered a ping


async def test_feed_publishes_only_the_symbols_this_replica_owns(serve: Any) -> None:
    url, frames = read_recording(FIXTURE)
    exchange = await serve(Exchange([frames]))
    eth = Partition(0, 2)  # crc32 puts ETHUSDT on replica 0 of 2 and BTCUSDT on replica 1
    assert eth.owns("ETHUSDT") and not eth.owns("BTCUSDT")
    actor, ctx = make_feed(exchange, streams_of(url), partition=eth)
    await run_until(actor, lambda: ctx.metrics.value("levibot_feed_messages_total") >= 9)
    assert [m.symbol for m in ctx.of_type(Tick)] == ["ETHUSDT"]
    assert len(ctx.published) == 1
    assert ctx.metrics.value("levibot_feed_not_owned_total") == 8


def shared_recording(name: str) -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (the shared data directory is not mounted)")
    return SHARED / name


@pytest.mark.parametrize(
    ("name", "ticks", "quotes", "bars", "depth"),
    [("BINANCE.ws.1.0", 2, 84, 0, 177), ("BINANCE_FUTURES.ws.1.0", 91, 613, 4, 764)],
)
async def test_feed_replays_the_real_binance_recordings(
    serve: Any, name: str, ticks: int, quotes: int, bars: int, depth: int
) -> None:
    url, frames = read_recording(shared_recording(name))
    exchange = await serve(Exchange([frames]))
    actor, ctx = make_feed(exchange, streams_of(url))

    def all_seen() -> bool:
        stats = actor.source.decoder.stats  # type: ignore[attr-defined]
        handled = ctx.metrics.value("levibot_feed_messages_total")
        return bool(sum(stats.unhandled.values()) + handled + stats.open_klines >= len(frames))

    await run_until(actor, all_seen)
    stats = actor.source.decoder.stats  # type: ignore[attr-defined]
    assert (len(ctx.of_type(Tick)), len(ctx.of_type(Quote)), len(ctx.of_type(Bar))) == (
        ticks, quotes, bars,
    )  # fmt: skip
    assert stats.unhandled == {"depthUpdate": depth}
    assert stats.parse_errors == 0 and stats.out_of_order == 0 and stats.gaps == {}
    first = json.loads(next(f for f in frames if "@aggTrade" in f.split(",")[0]))["data"]
    tick = ctx.of_type(Tick)[0]
    assert (tick.symbol, tick.trade_id, tick.price, tick.size) == (
        first["s"], first["a"], float(first["p"]), float(first["q"]),
    )  # fmt: skip
    assert tick.ts_event == first["T"] * 1_000_000
    for bar in ctx.of_type(Bar):
        assert bar.ts_event - bar.start == 60_000_000_000 and bar.timeframe == "1m"


def kline_frame(minute: int, close: float) -> str:
    t = 1_700_000_000_000 // 60_000 * 60_000 + minute * 60_000
    k = {"t": t, "T": t + 59_999, "s": "BTCUSDT", "i": "1m", "f": 1, "L": 2,
         "o": f"{close:.2f}", "c": f"{close:.2f}", "h": f"{close + 1:.2f}", "l": f"{close - 1:.2f}",
         "v": "1.0", "n": 3, "x": True, "q": "1", "V": "0.5", "Q": "0.5", "B": "0"}  # fmt: skip
    data = {"e": "kline", "E": t + 60_000, "s": "BTCUSDT", "k": k}
    return json.dumps({"stream": "btcusdt@kline_1m", "data": data})


async def test_a_gap_in_closed_klines_is_backfilled_from_rest_before_the_next_bar(
    serve: Any,
) -> None:
    import numpy as np

    from tests.fakes.binance_rest import BinanceRest, Series

    base = 1_700_000_000_000 // 60_000 * 60_000
    minutes = np.arange(6)
    closes = 100.0 + minutes
    rest = BinanceRest(series={"BTCUSDT": Series(
        ts=(base + minutes * 60_000) * 1_000_000, open=closes, high=closes + 1,
        low=closes - 1, close=closes, volume=np.ones(6))})  # fmt: skip
    runner = web.AppRunner(rest.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rest_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    try:
        # The websocket delivers minutes 0 and 1, loses 2 and 3, then delivers 4.
        frames = [kline_frame(m, 100.0 + m) for m in (0, 1, 4)]
        exchange = await serve(Exchange([frames]))
        actor, ctx = make_feed(exchange, ["btcusdt@kline_1m"], rest_url=rest_url)
        await run_until(actor, lambda: len(ctx.of_type(Bar)) >= 5)
    finally:
        await runner.cleanup()
    bars = ctx.of_type(Bar)
    assert [(b.start // 1_000_000 - base) // 60_000 for b in bars] == [0, 1, 2, 3, 4]
    assert [b.close for b in bars] == [100.0, 101.0, 102.0, 103.0, 104.0]
    assert ctx.metrics.value("levibot_feed_backfilled_bars_total", source="binance") == 2
    assert actor.source.decoder.stats.gaps == {"BTCUSDT": 1}  # type: ignore[attr-defined]
    (query,) = rest.requests
    assert query["endTime"] == str(base + 4 * 60_000 - 1) and query["limit"] == "2"
