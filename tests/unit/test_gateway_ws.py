"""The websocket protocol: subscribe + snapshot, events by channel and symbol, unsubscribe,
ping, heartbeats, error frames, oversized frames, auth, and slow consumers dropped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from levibot.messages import (
    Alert,
    AlertLevel,
    Features,
    PortfolioSnapshot,
    Signal,
    SignalSide,
    Tick,
)
from tests.unit.test_gateway_support import Harness, running_gateway

pytestmark = pytest.mark.anyio


def signal(symbol: str = "BTCUSDT", n: int = 1, strategy: str = "ema") -> Signal:
    return Signal(
        ts_event=n, ts_init=n, symbol=symbol, strategy=strategy, side=SignalSide.LONG,
        probability=0.7, confidence=0.4, price=100.0 + n,
    )  # fmt: skip


def tick(symbol: str, n: int = 1) -> Tick:
    return Tick(ts_event=n, ts_init=n, symbol=symbol, venue="binance", price=100.0 + n, size=1.0)


async def recv(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await ws.receive(timeout=10)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    frame: dict[str, Any] = json.loads(msg.data)
    return frame


async def connect(g: Harness, scope: str = "read") -> aiohttp.ClientWebSocketResponse:
    token = (await g.token(scope))["access_token"]
    return await g.session.ws_connect(f"{g.url}/ws?token={token}")


async def test_subscribe_answers_a_snapshot_filtered_by_symbol(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as g:
        portfolio = PortfolioSnapshot(
            ts_event=1, ts_init=1, cash=1000.0, equity=1000.0, realized_pnl=0.0,
            unrealized_pnl=0.0, fees=0.0,
        )  # fmt: skip
        for msg in (portfolio, signal("BTCUSDT", 1), signal("ETHUSDT", 2),
                    Features(ts_event=3, ts_init=3, symbol="BTCUSDT", schema_hash="h",
                             values=(1.0, 2.0), price=101.0)):  # fmt: skip
            await g.actor.handle(msg)
        ws = await connect(g)
        await ws.send_json(
            {"op": "subscribe", "channels": ["portfolio", "signals", "features"],
             "symbols": ["BTCUSDT"]}
        )  # fmt: skip
        snap = await recv(ws)
        assert snap["type"] == "snapshot"
        assert snap["channels"] == ["portfolio", "signals", "features"]
        assert snap["data"]["portfolio"]["equity"] == 1000.0
        assert [s["symbol"] for s in snap["data"]["signals"]] == ["BTCUSDT"]
        assert snap["data"]["features"]["BTCUSDT"]["values"] == [1.0, 2.0]
        await ws.close()


async def test_events_follow_channel_and_symbol_filters_and_unsubscribe(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as g:
        ws = await connect(g)
        await ws.send_json({"op": "subscribe", "channels": ["ticks"], "symbols": ["BTCUSDT"]})
        assert (await recv(ws))["type"] == "snapshot"
        await ws.send_json({"op": "subscribe", "channels": ["alerts"]})
        assert (await recv(ws))["type"] == "snapshot"
        await g.actor.handle(tick("ETHUSDT", 1))  # filtered out by symbol
        await g.actor.handle(signal("BTCUSDT"))  # channel not subscribed
        await g.actor.handle(tick("BTCUSDT", 2))
        event = await recv(ws)
        assert event["type"] == "event" and event["channel"] == "ticks"
        assert event["data"]["symbol"] == "BTCUSDT" and event["data"]["type"] == "levibot.Tick"
        await ws.send_json({"op": "unsubscribe", "channels": ["ticks"]})
        assert await recv(ws) == {"type": "unsubscribed", "channels": ["ticks"]}
        await g.actor.handle(tick("BTCUSDT", 3))  # no longer subscribed
        alert = Alert(ts_event=4, ts_init=4, alert_id="a1", level=AlertLevel.INFO, source="t",
                      text="hello")  # fmt: skip
        await g.actor.handle(alert)
        event = await recv(ws)
        assert event["channel"] == "alerts" and event["data"]["text"] == "hello"
        await ws.close()


async def test_ping_heartbeat_and_error_frames_keep_the_connection(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, heartbeat_s=0.05) as g:
        ws = await connect(g)
        await ws.send_str("{not json")
        assert (await recv(ws))["code"] == "malformed_json"
        await ws.send_str("[1, 2]")
        assert (await recv(ws))["code"] == "bad_frame"
        await ws.send_json({"op": "dance"})
        assert (await recv(ws))["code"] == "unknown_op"
        await ws.send_json({"op": "subscribe", "channels": ["gossip"]})
        err = await recv(ws)
        assert err["type"] == "error" and err["code"] == "unknown_channel"
        await ws.send_bytes(b"\x00\x01")
        assert (await recv(ws))["code"] == "binary_not_supported"
        await ws.send_json({"op": "ping", "id": 7})
        frame = await recv(ws)
        while frame["type"] == "heartbeat":
            frame = await recv(ws)
        assert frame["type"] == "pong" and frame["id"] == 7
        beat = await recv(ws)
        while beat["type"] != "heartbeat":
            beat = await recv(ws)
        assert isinstance(beat["ts"], int) and beat["ts"] > 0
        await ws.close()


async def test_oversized_frame_closes_with_1009(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, ws_max_frame=1024) as g:
        ws = await connect(g)
        await ws.send_str(json.dumps({"op": "ping", "id": "x" * 4096}))
        msg = await ws.receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.CLOSE
        assert msg.data == 1009
        assert ws.close_code == 1009


async def test_websocket_accepts_api_key_header_and_refuses_a_bad_token(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as g:
        ws = await g.session.ws_connect(f"{g.url}/ws", headers=g.h("read"))
        await ws.send_json({"op": "ping"})
        assert (await recv(ws))["type"] == "pong"
        await ws.close()
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await g.session.ws_connect(f"{g.url}/ws?token=garbage")
        assert info.value.status == 401


async def test_client_whose_queue_fills_is_closed_as_slow_consumer(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, ws_queue_size=4) as g:
        ws = await connect(g)
        await ws.send_json({"op": "subscribe", "channels": ["signals"]})
        assert (await recv(ws))["type"] == "snapshot"
        # Ten events without yielding: the writer never runs, the queue of 4 overflows.
        for n in range(10):
            await g.actor.handle(signal(n=n))
        msg = await ws.receive(timeout=10)
        while msg.type == aiohttp.WSMsgType.TEXT:
            msg = await ws.receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.CLOSE
        assert msg.data == 4008 and msg.extra == "slow consumer"
        assert g.services.metrics.value("gateway_ws_dropped_total") == 1
        assert not g.services.hub.clients


def run_without_suspending(coro: Any) -> None:
    """Run a coroutine to completion in one step; fail if it ever suspends (awaits a client)."""
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise AssertionError("handle() suspended: it awaited something")


async def raw_client_that_never_reads(g: Harness, token: str) -> Any:
    """Open a websocket by hand on a socket with a tiny receive buffer, subscribe, never read."""
    import asyncio
    import os
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", g.actor.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(
        f"GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    payload = json.dumps({"op": "subscribe", "channels": ["signals"]}).encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    writer.write(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    await writer.drain()
    return reader, writer


async def test_slow_client_is_dropped_while_handle_never_blocks_and_fast_client_gets_all(
    tmp_path: Path,
) -> None:
    from levibot.testing import eventually

    async with running_gateway(tmp_path, ws_queue_size=64, ws_close_timeout_s=0.2) as g:
        hub = g.services.hub
        token = (await g.token("read"))["access_token"]
        slow_reader, slow_writer = await raw_client_that_never_reads(g, token)
        await eventually(lambda: any(c.filters for c in hub.clients))
        before = set(hub.clients)
        fast = await connect(g)
        await fast.send_json({"op": "subscribe", "channels": ["signals"]})
        assert (await recv(fast))["type"] == "snapshot"
        (fast_client,) = hub.clients - before
        received: list[int] = []

        async def read_fast() -> None:
            while len(received) < total:
                frame = await recv(fast)
                if frame["type"] == "event":
                    received.append(frame["data"]["ts_event"])

        total = 4000
        big = "x" * 900  # ~1 KB frames: the slow socket's buffers fill after a few hundred
        import anyio

        async with anyio.create_task_group() as tg:
            tg.start_soon(read_fast)
            for n in range(total):
                run_without_suspending(g.actor.handle(signal(n=n, strategy=big)))
                if n % 16 == 15:
                    # Let the fast client catch up (an event, not a sleep); the slow one cannot.
                    await eventually(lambda: fast_client.queue.qsize() < 16, interval=0)
        assert received == list(range(total))
        assert g.services.metrics.value("gateway_ws_dropped_total") == 1
        assert len(hub.clients) == 1
        # The server gave up on the slow socket: reading it now ends in EOF or a reset.
        data = b""
        try:
            while chunk := await slow_reader.read(1 << 16):
                data += chunk
        except ConnectionError:
            pass
        assert len(data) < total * 900
        slow_writer.close()
        await fast.close()
