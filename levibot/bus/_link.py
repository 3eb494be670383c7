"""``CoreLink``: a lean NATS core connection for the market-data path (``[nats] core_link``).

Why our own: a core hop is most of what splitting into processes costs, and nats-py spends it
in its machinery rather than on the wire. Each message it receives is parsed into a ``Msg``,
put on an ``asyncio.Queue`` and handed to the callback by a task per subscription; each publish
wakes a flusher task through a queue and a future. nats-core, the maintainers' lean client, reads
with a ``readline``/``readexactly`` per message and measured no better
(docs/nats-core-evaluation.md). ``CoreLink`` is an ``asyncio.Protocol``: every message of a
read is parsed and handed to a plain callback inside ``data_received``, and what is published in
a loop turn goes out in one ``transport.write`` scheduled with ``call_soon``. Against nats-py in
one run (``bench/lean_nats_hop.py``): hop p50 ×0.66, unpaced throughput ×2.4, CPU per message
×0.27 publishing and ×0.36 receiving.

What it does: CONNECT (user and password, from the URL or ``[nats]``; TLS by upgrade after the
server's INFO), PUB/HPUB (with a reply subject: durable egress's JetStream publishes, whose acks
come back on one inbox subscription, ``_jspub``), SUB/UNSUB, MSG/HMSG with headers and reply
subjects (a durable push consumer's deliveries, acked by publishing to the reply: ``_ingress``),
PING/PONG both ways (a server that stops answering is dropped), reconnection forever with
resubscription, and read back-pressure (``pause_reading``). What it leaves to nats-py, which
the node keeps for them: JetStream's API (streams, consumers, their info), the dead-letter
stream, the settle rounds. Core NATS is at most once, and so is the link: while it is down, or
its unsent output is over ``max_pending`` bytes, a publish raises ``LinkDown`` (the egress
counts the drop; receivers count the gap in the frame numbers; a JetStream ack that does not go
out leaves its message to be redelivered, and the ingress ledger skips it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlparse

__all__ = ["CoreLink", "LinkDown", "OnMessage"]

#: A subscription's callback: (subject, reply subject or "", payload, headers or None), called
#: inside the read.
OnMessage = Callable[[str, str, bytes, "dict[str, str] | None"], None]

_CRLF = b"\r\n"
_HEADER_LINE = b"NATS/1.0"


class LinkDown(ConnectionError):
    """A publish the link cannot take now: disconnected, or too much output not yet sent."""


def parse_headers(raw: bytes) -> dict[str, str]:
    """Return the headers of an HMSG's header block (``NATS/1.0[ status]`` then ``K: V`` lines);
    a status line's code is ``Status``, as nats-py reports it."""
    lines = raw.split(_CRLF)
    headers: dict[str, str] = {}
    first = lines[0]
    if len(first) > len(_HEADER_LINE):  # "NATS/1.0 503" or "NATS/1.0 408 Request Timeout"
        status = first[len(_HEADER_LINE) :].strip().split(b" ", 1)
        headers["Status"] = status[0].decode()
        if len(status) > 1:
            headers["Description"] = status[1].decode()
    for line in lines[1:]:
        key, sep, value = line.partition(b":")
        if sep:
            headers[key.strip().decode()] = value.strip().decode()
    return headers


def encode_headers(headers: dict[str, str]) -> bytes:
    """Return the header block of an HPUB (keys and values stripped of line breaks)."""
    parts = [_HEADER_LINE]
    for key, value in headers.items():
        key = key.strip()
        if not key or any(c in key for c in ": \r\n"):
            raise ValueError(f"nats: bad header name {key!r}")
        value = str(value).replace("\r", " ").replace("\n", " ").strip()
        parts.append(f"{key}: {value}".encode())
    return _CRLF.join(parts) + _CRLF + _CRLF


class CoreLink(asyncio.Protocol):
    """One NATS core connection: publish, subscribe with plain callbacks, reconnect."""

    def __init__(
        self,
        url: str,
        *,
        name: str = "levibot",
        user: str = "",
        password: str = "",
        tls: ssl.SSLContext | None = None,
        connect_timeout_s: float = 5.0,
        reconnect_wait_s: float = 0.25,
        ping_interval_s: float = 120.0,
        max_outstanding_pings: int = 2,
        max_pending: int = 2 * 1024 * 1024,
        log: Any = None,
        on_disconnect: Callable[[], None] | None = None,
        on_reconnect: Callable[[], None] | None = None,
    ) -> None:
        u = urlparse(url if "://" in url else f"nats://{url}")
        if u.scheme not in ("nats", "tls"):
            raise ValueError(f"nats: unsupported URL scheme {u.scheme!r} in {url!r}")
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 4222
        self.user = user or unquote(u.username or "")
        self.password = password or unquote(u.password or "")
        self.tls = tls if tls is not None or u.scheme != "tls" else ssl.create_default_context()
        self.name = name
        self.connect_timeout_s = connect_timeout_s
        self.reconnect_wait_s = reconnect_wait_s
        self.ping_interval_s = ping_interval_s
        self.max_outstanding_pings = max_outstanding_pings
        self.max_pending = max_pending
        self.log = log
        self.on_disconnect = on_disconnect
        self.on_reconnect = on_reconnect
        self.connected = False  # handshake done: publishes are taken
        self.closed = False
        self._alive = False  # a transport is open (connected or in its handshake)
        self._paused = False  # reading paused by the caller (kept across reconnects)
        self.max_payload = 1024 * 1024
        self.transport: Any = None
        self.dropped = 0  # publishes refused while down or over max_pending
        self._buf = bytearray()
        self._need = -1  # bytes of the MSG being read still expected (payload + CRLF); -1: none
        # The MSG being read: subject, sid, reply subject, header length (-1: none).
        self._msg: tuple[bytes, int, bytes, int] = (b"", 0, b"", -1)
        self._subs: dict[int, tuple[str, OnMessage]] = {}
        self._next_sid = 0
        self._out: list[bytes] = []
        self._out_size = 0
        self._pongs: deque[asyncio.Future[None] | None] = deque()  # None: a keep-alive PING
        self._info: asyncio.Future[dict[str, Any]] | None = None
        self._error: str = ""  # the last -ERR, for the connect that fails on it
        self._tasks: set[asyncio.Task[None]] = set()
        self._lost: asyncio.Future[None] | None = None

    # -- connecting ----------------------------------------------------------------------

    async def connect(self) -> CoreLink:
        """Connect (raising ``ConnectionError`` or ``TimeoutError`` if the server refuses or
        does not answer in ``connect_timeout_s``), then keep the connection up until ``close``."""
        await self._open()
        self._spawn(self._keepalive())
        return self

    async def _open(self) -> None:
        """One connection and its handshake, in ``connect_timeout_s``; what is left of a failed
        one is aborted."""
        try:
            await asyncio.wait_for(self._handshake(), self.connect_timeout_s)
        except BaseException:
            if self._alive:
                self.transport.abort()
            raise

    async def _handshake(self) -> None:
        loop = asyncio.get_running_loop()
        self._info = loop.create_future()
        self._error = ""
        self._buf.clear()
        self._need = -1
        transport, _ = await loop.create_connection(lambda: self, self.host, self.port)
        info = await self._info
        if self.tls is not None or info.get("tls_required"):
            context = self.tls or ssl.create_default_context()
            self.transport = await loop.start_tls(
                transport, self, context, server_hostname=self.host
            )
        options: dict[str, Any] = {
            "verbose": False, "pedantic": False, "tls_required": self.tls is not None,
            "name": self.name, "lang": "python-levibot-link", "version": "1", "protocol": 1,
            "echo": False, "headers": True, "no_responders": True,
        }  # fmt: skip
        if self.user:
            options["user"], options["pass"] = self.user, self.password
        subscribed = dict(self._subs)  # made again on a reconnect
        commands = [b"CONNECT " + json.dumps(options).encode() + _CRLF]
        commands += [b"SUB %s %d\r\n" % (s.encode(), sid) for sid, (s, _) in subscribed.items()]
        self.transport.write(b"".join(commands))
        try:
            # The server answers once it has taken the CONNECT; one it refuses (authorization)
            # it closes after an -ERR. A refused SUB (permissions) is only logged, as nats-py
            # reports it to its error callback and stays connected.
            await self._ping()
        except ConnectionError:
            raise ConnectionError(f"nats: {self._error or 'connection refused'}") from None
        self.connected = True
        for sid, (s, _) in self._subs.items():  # made while the handshake went on
            if sid not in subscribed:
                self._send(b"SUB %s %d\r\n" % (s.encode(), sid))
        if self._paused:
            self.transport.pause_reading()

    async def _keepalive(self) -> None:
        """Ping the server every ``ping_interval_s``; drop a connection that stops answering."""
        while not self.closed:
            await asyncio.sleep(self.ping_interval_s)
            if not self.connected or self._paused:
                continue  # paused, no PONG can be read: the server's liveness is not known
            if sum(1 for p in self._pongs if p is None) >= self.max_outstanding_pings:
                self._warn("nats.link_stale")
                self.transport.abort()  # connection_lost reconnects
                continue
            self._pongs.append(None)
            self._send(b"PING\r\n")

    async def _reconnect(self) -> None:
        attempt = 0
        while not self.closed:
            await asyncio.sleep(self.reconnect_wait_s if attempt else 0)
            attempt += 1
            try:
                await self._open()
            except Exception as exc:  # whatever failed, the next attempt starts afresh
                if attempt == 1 or attempt % 40 == 0:
                    self._warn("nats.link_reconnect_failed", error=repr(exc), attempt=attempt)
                continue
            if self.on_reconnect is not None:
                self.on_reconnect()
            return

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _warn(self, event: str, **fields: Any) -> None:
        if self.log is not None:
            self.log.warning(event, **fields)

    # -- protocol callbacks --------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self._alive = True
        self._lost = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        was_connected, self.connected, self._alive = self.connected, False, False
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        if self._info is not None and not self._info.done():
            self._info.set_exception(ConnectionError(f"nats: connection lost ({exc!r})"))
            self._info.exception()  # the handshake may have timed out already: no one to tell
        pongs, self._pongs = self._pongs, deque()
        for fut in pongs:
            if fut is not None and not fut.done():
                fut.set_exception(ConnectionError("nats: connection lost"))
        self._out, self._out_size = [], 0
        if was_connected and not self.closed:
            self._warn("nats.link_disconnected", error=repr(exc))
            if self.on_disconnect is not None:
                self.on_disconnect()
            self._spawn(self._reconnect())

    def data_received(self, data: bytes) -> None:
        self._buf += data
        try:
            self._parse()
        except (ValueError, IndexError) as exc:  # not the NATS protocol: start afresh
            if self.log is not None:
                self.log.error("nats.link_protocol_error", error=repr(exc))
            self._buf.clear()
            self._need = -1
            self.transport.abort()  # connection_lost reconnects

    def _parse(self) -> None:
        """Handle every whole protocol line and message in the buffer; keep the rest."""
        buf = self._buf
        pos = 0
        end = len(buf)
        subs = self._subs
        while True:
            need = self._need
            if need >= 0:  # the payload (and CRLF) of the MSG or HMSG being read
                if end - pos < need:
                    break
                subject, sid, reply, hlen = self._msg
                self._need = -1
                sub = subs.get(sid)
                if sub is not None:
                    if hlen < 0:
                        headers, payload = None, bytes(buf[pos : pos + need - 2])
                    else:
                        headers = parse_headers(bytes(buf[pos : pos + hlen - 4]))
                        payload = bytes(buf[pos + hlen : pos + need - 2])
                    try:
                        sub[1](subject.decode(), reply.decode(), payload, headers)
                    except Exception as exc:  # a callback's bug must not kill the connection
                        if self.log is not None:
                            self.log.error("nats.link_callback_failed", error=repr(exc))
                pos += need
                continue
            nl = buf.find(_CRLF, pos)
            if nl < 0:
                break
            line = bytes(buf[pos:nl])
            pos = nl + 2
            op = line[:4]
            if op == b"MSG ":  # MSG <subject> <sid> [reply] <size>
                parts = line.split()
                self._msg = (parts[1], int(parts[2]), parts[3] if len(parts) == 5 else b"", -1)
                self._need = int(parts[-1]) + 2
            elif op == b"HMSG":  # HMSG <subject> <sid> [reply] <header size> <total size>
                parts = line.split()
                reply = parts[3] if len(parts) == 6 else b""
                self._msg = (parts[1], int(parts[2]), reply, int(parts[-2]))
                self._need = int(parts[-1]) + 2
            elif line == b"PING":
                self._send(b"PONG\r\n")
            elif line == b"PONG":
                if self._pongs:
                    fut = self._pongs.popleft()
                    if fut is not None and not fut.done():
                        fut.set_result(None)
            elif op == b"INFO":
                self._on_info(line[5:])
            elif op == b"-ERR":
                self._error = line[5:].decode(errors="replace").strip().strip("'")
                self._warn("nats.link_error", error=self._error)
            elif line != b"+OK":  # out of step with the server (+OK needs nothing)
                raise ValueError(f"unexpected line {line[:40]!r}")
        del buf[:pos]

    def _on_info(self, raw: bytes) -> None:
        try:
            info = json.loads(raw)
        except ValueError:
            info = {}
        self.max_payload = int(info.get("max_payload", self.max_payload))
        if self._info is not None and not self._info.done():
            self._info.set_result(info)

    # -- the client API ------------------------------------------------------------------

    def publish_nowait(
        self,
        subject: str,
        payload: bytes = b"",
        reply: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Queue a publish (with a ``reply`` subject: a JetStream publish, acked there); what
        is queued in one loop turn goes out in one write.

        Raises ``LinkDown`` while disconnected or too far behind, ``ValueError`` for a payload
        over the server's ``max_payload``.
        """
        if not self.connected or self._backlog() > self.max_pending:
            self.dropped += 1
            raise LinkDown("nats: link down" if not self.connected else "nats: link behind")
        if len(payload) > self.max_payload:
            raise ValueError(f"nats: {len(payload)} bytes over the max_payload {self.max_payload}")
        head = f"{subject} {reply}" if reply else subject
        if headers:
            block = encode_headers(headers)
            self._send(
                b"HPUB %s %d %d\r\n%s%s\r\n"
                % (head.encode(), len(block), len(block) + len(payload), block, payload)
            )
        else:
            self._send(b"PUB %s %d\r\n%s\r\n" % (head.encode(), len(payload), payload))

    async def publish(
        self,
        subject: str,
        payload: bytes = b"",
        reply: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        """``publish_nowait`` where nats-py's ``publish`` stands (core egress, JetStream
        publishes, a ``Msg``'s acks): it never waits."""
        self.publish_nowait(subject, payload, reply, headers)

    @staticmethod
    def new_inbox() -> str:
        """Return a fresh inbox subject (for replies: JetStream's acks)."""
        return "_INBOX." + secrets.token_hex(11)

    def subscribe(self, subject: str, cb: OnMessage) -> int:
        """Call ``cb(subject, payload, headers)`` for every message on ``subject`` (a
        wildcard pattern too), inside the read; return the subscription's id."""
        self._next_sid += 1
        self._subs[self._next_sid] = (subject, cb)
        if self.connected:
            self._send(b"SUB %s %d\r\n" % (subject.encode(), self._next_sid))
        return self._next_sid

    def unsubscribe(self, sid: int) -> None:
        """Stop a subscription."""
        if self._subs.pop(sid, None) is not None and self.connected:
            self._send(b"UNSUB %d\r\n" % sid)

    def pause_reading(self) -> None:
        """Stop reading (the server buffers, then drops us as a slow consumer if it must)."""
        if not self._paused:
            self._paused = True
            if self._alive:
                self.transport.pause_reading()

    def resume_reading(self) -> None:
        """Read again after ``pause_reading``."""
        if self._paused:
            self._paused = False
            if self._alive:
                self.transport.resume_reading()

    async def flush(self, timeout_s: float | None = None) -> None:
        """Wait until the server has processed everything sent so far."""
        await asyncio.wait_for(self._ping(), timeout_s or self.connect_timeout_s)

    async def close(self) -> None:
        """Send what is queued, close the connection and stop reconnecting."""
        if self.closed:
            return
        if self.connected:
            with contextlib.suppress(ConnectionError, TimeoutError):
                await self.flush()
        self.closed = True
        for task in list(self._tasks):
            task.cancel()
        if self.transport is not None:
            self.transport.close()
        if self._lost is not None:
            await asyncio.wait([self._lost], timeout=self.connect_timeout_s)

    # -- writing -------------------------------------------------------------------------

    def _backlog(self) -> int:
        """Bytes published but not yet written to the socket."""
        return self._out_size + int(self.transport.get_write_buffer_size())

    def _send(self, command: bytes) -> None:
        if not self._out:
            asyncio.get_running_loop().call_soon(self._write)
        self._out.append(command)
        self._out_size += len(command)

    def write_now(self) -> None:
        """Write what is queued now, not at the end of the loop turn (a caller that has
        published its whole batch)."""
        if self._out:
            self._write()

    def _write(self) -> None:
        out, self._out, self._out_size = self._out, [], 0
        if out and self._alive:
            self.transport.write(b"".join(out))

    async def _ping(self) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._pongs.append(fut)
        self._send(b"PING\r\n")
        await fut
