"""The trader websocket ``/ws``: channels, snapshots, events, heartbeats, slow clients dropped.

Protocol (JSON text frames)
===========================
Connect to ``/ws?token=<JWT access token>`` (or send ``X-API-Key: lb_...`` /
``Authorization: Bearer ...`` with the upgrade request). The ``read`` scope is required.

Client → server::

    {"op": "subscribe", "channels": ["signals", "ticks"], "symbols": ["BTCUSDT"]}
    {"op": "unsubscribe", "channels": ["ticks"]}          # "channels" omitted: all
    {"op": "ping", "id": 7}                               # "id" optional, echoed back

``symbols`` is optional (omitted or null: every symbol); it filters the per-symbol channels and is
ignored by ``portfolio`` and ``alerts``. Subscribing again to a channel replaces its filter.

Channels: ``ticks`` (Tick), ``bars`` (Bar), ``features`` (Features), ``signals`` (Signal),
``orders`` (OrderIntent, OrderDenied, OrderAccepted, OrderClosed), ``fills`` (Fill),
``portfolio`` (PortfolioSnapshot), ``alerts`` (Alert).

Server → client::

    {"type": "snapshot", "channels": [...], "symbols": [...] | null,
     "data": {"portfolio": {...} | null, "signals": [...], "features": {"BTCUSDT": {...}},
              "ticks": {...}, "bars": {...}, "orders": [...], "alerts": [...]}}
    {"type": "event", "channel": "signals", "data": {"type": "levibot.Signal", ...}}
    {"type": "unsubscribed", "channels": [...]}
    {"type": "pong", "id": 7, "ts": 1700000000000000000}
    {"type": "heartbeat", "ts": 1700000000000000000}      # every ``heartbeat_s`` seconds
    {"type": "error", "code": "unknown_channel", "message": "..."}

The snapshot answers every ``subscribe`` and holds, for the channels just subscribed, what the
gateway has: the latest portfolio, recent signals, the last features / tick / bar per symbol,
recent order states and alerts. ``data`` of an event is the bus message as JSON; its ``type``
names the message (``levibot.Signal``...). Timestamps are integer nanoseconds since the epoch.

Errors (the connection stays open): ``malformed_json``, ``bad_frame`` (not an object / wrong
field types), ``unknown_op``, ``unknown_channel``, ``binary_not_supported``.
Close codes: 1009 a frame larger than ``ws_max_frame`` bytes; 4008 ``slow consumer``: the
client's send queue (``ws_queue_size`` frames) filled up because it did not read fast enough.
A dropped client may reconnect and subscribe again; the snapshot brings it up to date.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
from aiohttp import WSMsgType, web

from levibot.messages import (
    Alert,
    Bar,
    Features,
    Fill,
    Message,
    OrderAccepted,
    OrderClosed,
    OrderDenied,
    OrderIntent,
    PortfolioSnapshot,
    Signal,
    Tick,
)
from levibot.metrics import Metrics
from sidecars.gateway.readmodels import ReadModels

if TYPE_CHECKING:
    from anyio import CancelScope

CHANNELS: tuple[str, ...] = (
    "ticks", "bars", "features", "signals", "orders", "fills", "portfolio", "alerts",
)  # fmt: skip
CHANNEL_OF: dict[type[Message], str] = {
    Tick: "ticks",
    Bar: "bars",
    Features: "features",
    Signal: "signals",
    OrderIntent: "orders",
    OrderDenied: "orders",
    OrderAccepted: "orders",
    OrderClosed: "orders",
    Fill: "fills",
    PortfolioSnapshot: "portfolio",
    Alert: "alerts",
}
_UNFILTERED = frozenset({"portfolio", "alerts"})
SLOW_CONSUMER = 4008

_encode = msgspec.json.Encoder().encode


class ClientFrame(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One client → server frame."""

    op: str
    channels: list[str] | None = None
    symbols: list[str] | None = None
    id: int | str | None = None


_decode_frame = msgspec.json.Decoder(ClientFrame).decode


@dataclass(eq=False)
class Client:
    """One connected websocket: its subscriptions and its bounded send queue."""

    queue: asyncio.Queue[bytes | None]
    subject: str = ""
    filters: dict[str, frozenset[str] | None] = field(default_factory=dict)
    scope: CancelScope | None = None
    close_code: int = 1000
    close_reason: str = ""

    def wants(self, channel: str, symbol: str | None) -> bool:
        """Return True when this client subscribed to ``channel`` for ``symbol``."""
        symbols = self.filters.get(channel, frozenset())
        return symbols is None or symbol is None or symbol in symbols


class Hub:
    """Every connected client, indexed by channel; ``publish`` never awaits."""

    def __init__(self, metrics: Metrics, queue_size: int = 1024) -> None:
        self.queue_size = queue_size
        self.clients: set[Client] = set()
        self._by_channel: dict[str, set[Client]] = {c: set() for c in CHANNELS}
        self.dropped = metrics.counter(
            "gateway_ws_dropped_total", "Websocket clients dropped as slow consumers"
        )
        self.frames = metrics.counter("gateway_ws_frames_total", "Event frames queued to clients")
        metrics.gauge(
            "gateway_ws_clients", "Connected websocket clients", lambda: len(self.clients)
        )

    def connect(self, subject: str = "") -> Client:
        """Register and return a new client."""
        client = Client(queue=asyncio.Queue(maxsize=self.queue_size), subject=subject)
        self.clients.add(client)
        return client

    def disconnect(self, client: Client) -> None:
        """Forget a client (idempotent)."""
        self.clients.discard(client)
        for members in self._by_channel.values():
            members.discard(client)

    def subscribe(self, client: Client, channels: list[str], symbols: list[str] | None) -> None:
        """Subscribe ``client`` to ``channels`` filtered by ``symbols`` (None: all)."""
        wanted = None if symbols is None else frozenset(symbols)
        for channel in channels:
            client.filters[channel] = None if channel in _UNFILTERED else wanted
            self._by_channel[channel].add(client)

    def unsubscribe(self, client: Client, channels: list[str]) -> None:
        """Remove ``client``'s subscriptions to ``channels``."""
        for channel in channels:
            client.filters.pop(channel, None)
            self._by_channel[channel].discard(client)

    def send(self, client: Client, frame: bytes) -> bool:
        """Queue one frame for ``client``; drop the client when its queue is full."""
        try:
            client.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.drop(client, SLOW_CONSUMER, "slow consumer")
            return False
        return True

    def publish(self, msg: Message) -> int:
        """Encode ``msg`` once and queue it to every subscriber; return how many got it."""
        channel = CHANNEL_OF.get(type(msg))
        if channel is None or not self._by_channel[channel]:
            return 0
        symbol: str | None = getattr(msg, "symbol", None)
        frame = b'{"type":"event","channel":"%s","data":%s}' % (channel.encode(), _encode(msg))
        sent = 0
        for client in tuple(self._by_channel[channel]):
            if client.wants(channel, symbol) and self.send(client, frame):
                sent += 1
        self.frames.inc(sent)
        return sent

    def drop(self, client: Client, code: int, reason: str) -> None:
        """Disconnect ``client`` now: stop its tasks; its handler closes with ``code``."""
        if client not in self.clients:
            return
        self.disconnect(client)
        self.dropped.inc()
        client.close_code, client.close_reason = code, reason
        if client.scope is not None:
            client.scope.cancel()

    def close_all(self, code: int, reason: str) -> None:
        """Disconnect every client (shutdown); not counted as drops."""
        for client in tuple(self.clients):
            self.disconnect(client)
            client.close_code, client.close_reason = code, reason
            if client.scope is not None:
                client.scope.cancel()


def _error(code: str, message: str) -> bytes:
    return _encode({"type": "error", "code": code, "message": message})


def snapshot(models: ReadModels, channels: list[str], symbols: list[str] | None) -> bytes:
    """Return the snapshot frame for a subscription to ``channels`` / ``symbols``."""
    keep = None if symbols is None else set(symbols)

    def per_symbol(table: dict[str, Any]) -> dict[str, Any]:
        return {s: v for s, v in table.items() if keep is None or s in keep}

    data: dict[str, Any] = {}
    for channel in channels:
        if channel == "portfolio":
            data["portfolio"] = models.portfolio
        elif channel == "signals":
            data["signals"] = [s for s in models.signals if keep is None or s.symbol in keep]
        elif channel == "features":
            data["features"] = per_symbol(models.features)
        elif channel == "ticks":
            data["ticks"] = per_symbol(models.ticks)
        elif channel == "bars":
            data["bars"] = per_symbol(models.bars)
        elif channel == "orders":
            orders = [o for o in models.orders.values() if keep is None or o.symbol in keep]
            data["orders"] = orders[-100:]
        elif channel == "alerts":
            data["alerts"] = list(models.alerts)
    return _encode({"type": "snapshot", "channels": channels, "symbols": symbols, "data": data})


class Session:
    """One websocket connection's reader, writer and heartbeat, run by the aiohttp handler."""

    def __init__(
        self, ws: web.WebSocketResponse, client: Client, hub: Hub, models: ReadModels,
        now_ns: Any, heartbeat_s: float,
    ) -> None:  # fmt: skip
        self.ws, self.client, self.hub, self.models = ws, client, hub, models
        self.now_ns, self.heartbeat_s = now_ns, heartbeat_s

    async def run(self) -> None:
        """Serve the connection until the client leaves or is dropped."""
        async with anyio.create_task_group() as tg:
            self.client.scope = tg.cancel_scope
            tg.start_soon(self._writer)
            if self.heartbeat_s > 0:
                tg.start_soon(self._heartbeat)
            await self._reader()
            tg.cancel_scope.cancel()

    async def _writer(self) -> None:
        queue, ws = self.client.queue, self.ws
        try:
            while True:
                frame = await queue.get()
                if frame is None:
                    return
                await ws.send_frame(frame, WSMsgType.TEXT)
        except ConnectionError:
            # The peer went away mid-send: end the session quietly, the handler cleans up.
            if self.client.scope is not None:
                self.client.scope.cancel()

    async def _heartbeat(self) -> None:
        while True:
            await anyio.sleep(self.heartbeat_s)
            self.hub.send(self.client, b'{"type":"heartbeat","ts":%d}' % self.now_ns())

    async def _reader(self) -> None:
        async for msg in self.ws:
            if msg.type == WSMsgType.TEXT:
                reply = self._on_text(msg.data)
                if reply is not None and not self.hub.send(self.client, reply):
                    return
            elif msg.type == WSMsgType.BINARY:
                self.hub.send(self.client, _error("binary_not_supported", "send JSON text frames"))
            elif msg.type == WSMsgType.ERROR:
                return  # aiohttp already closed it (1009 for an oversized frame)

    def _on_text(self, text: str) -> bytes | None:
        try:
            frame = _decode_frame(text)
        except msgspec.ValidationError as exc:
            return _error("bad_frame", str(exc))
        except msgspec.DecodeError as exc:
            return _error("malformed_json", f"frame is not valid JSON: {exc}")
        if frame.op == "ping":
            return _encode({"type": "pong", "id": frame.id, "ts": self.now_ns()})
        if frame.op not in ("subscribe", "unsubscribe"):
            return _error(
                "unknown_op", f"unknown op {frame.op!r}; use subscribe, unsubscribe, ping"
            )
        channels = list(CHANNELS) if frame.channels is None else frame.channels
        unknown = [c for c in channels if c not in CHANNELS]
        if unknown:
            known = ", ".join(CHANNELS)
            return _error("unknown_channel", f"unknown channel(s) {unknown}; channels: {known}")
        if frame.op == "unsubscribe":
            self.hub.unsubscribe(self.client, channels)
            return _encode({"type": "unsubscribed", "channels": channels})
        self.hub.subscribe(self.client, channels, frame.symbols)
        return snapshot(self.models, channels, frame.symbols)
