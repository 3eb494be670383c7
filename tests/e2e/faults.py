"""Network faults between a process and NATS, without privileges: a TCP fault proxy.

Each process under test connects to its own ``FaultProxy`` port instead of NATS; the proxy
forwards both directions and can, at any moment:

- ``latency(s)``: delay every chunk by ``s`` seconds, order kept (a slow or congested link);
- ``stall(up=True, down=True)``: hold the bytes of one or both directions until ``heal`` (a
  partition the TCP connection survives; held bytes are delivered on heal, as TCP retransmits
  them, even when the client process died meanwhile);
- ``cut()``: reset every connection (RST) and refuse new ones until ``heal`` (a partition the
  client notices: it disconnects and keeps reconnecting).

Packet loss cannot be modelled byte-wise on a TCP stream (TCP retransmits lost segments): it is
seen by the application as latency spikes and stalls, which is what ``latency`` and ``stall``
produce. The proxies and a NATS recorder share one event loop in a background thread
(``LoopThread``), so a blocking test drives them with plain method calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """An asyncio event loop running in a daemon thread; ``call`` runs a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coro`` on the loop and return its result (blocking the caller)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        """Cancel what still runs, stop the loop and join the thread."""

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.call(cancel_all(), 10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a dropped connection looks to the peer."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Pipe:
    """One direction of one connection: read, delay, hold while stalled, write."""

    def __init__(self, proxy: FaultProxy, up: bool) -> None:
        self.proxy = proxy
        self.up = up
        self.queue: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()

    async def read(self, reader: asyncio.StreamReader) -> None:
        try:
            while data := await reader.read(65_536):
                self.queue.put_nowait((time.monotonic() + self.proxy.delay_s, data))
        except (ConnectionError, OSError):
            pass
        self.queue.put_nowait((time.monotonic() + self.proxy.delay_s, None))  # EOF, in order

    async def write(self, writer: asyncio.StreamWriter) -> None:
        proxy = self.proxy
        try:
            while True:
                due, data = await self.queue.get()
                if (wait := due - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                while (proxy.stall_up if self.up else proxy.stall_down).is_set():
                    await proxy.healed.wait()
                if data is None:
                    with contextlib.suppress(OSError, RuntimeError):
                        writer.write_eof()
                    return
                writer.write(data)
                proxy.bytes_up += len(data) if self.up else 0
                proxy.bytes_down += 0 if self.up else len(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass


class FaultProxy:
    """A TCP proxy to ``upstream`` on a free local port that injects faults on demand."""

    def __init__(self, loop: LoopThread, upstream_port: int, name: str = "") -> None:
        self.lt = loop
        self.name = name
        self.upstream_port = upstream_port
        self.delay_s = 0.0
        self.accepted = 0  # connections taken (reconnects show here)
        self.bytes_up = self.bytes_down = 0
        self._refuse = False
        self._conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

        async def start() -> asyncio.Server:
            self.stall_up = asyncio.Event()
            self.stall_down = asyncio.Event()
            self.healed = asyncio.Event()
            return await asyncio.start_server(self._serve, "127.0.0.1", 0)

        self._server = loop.call(start())
        self.port: int = self._server.sockets[0].getsockname()[1]
        self.url = f"nats://127.0.0.1:{self.port}"

    async def _serve(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        if self._refuse:
            _rst(c_writer)
            return
        try:
            s_reader, s_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            _rst(c_writer)
            return
        self.accepted += 1
        pair = (c_writer, s_writer)
        self._conns.add(pair)
        up, down = _Pipe(self, up=True), _Pipe(self, up=False)
        tasks = [
            asyncio.ensure_future(coro)
            for coro in (up.read(c_reader), up.write(s_writer), down.read(s_reader),
                         down.write(c_writer))
        ]  # fmt: skip
        self._tasks.update(tasks)
        try:
            await asyncio.gather(*tasks[1::2])  # both writers are done: both sides closed
        finally:
            self._conns.discard(pair)
            for t in tasks:
                t.cancel()
                self._tasks.discard(t)
            for w in pair:
                w.close()

    def _set(self, fn: Any) -> None:
        async def apply() -> None:
            fn()

        self.lt.call(apply())

    def latency(self, seconds: float) -> None:
        """Delay every chunk read from now on by ``seconds`` (0: none)."""
        self._set(lambda: setattr(self, "delay_s", seconds))

    def stall(self, *, up: bool = True, down: bool = True) -> None:
        """Hold the bytes going to NATS (``up``) and/or to the client (``down``) until ``heal``."""

        def apply() -> None:
            self.healed.clear()
            if up:
                self.stall_up.set()
            if down:
                self.stall_down.set()

        self._set(apply)

    def cut(self) -> None:
        """Reset every connection now and refuse new ones until ``heal``."""

        def apply() -> None:
            self._refuse = True
            for c_writer, s_writer in list(self._conns):
                _rst(c_writer)
                _rst(s_writer)

        self._set(apply)

    def heal(self) -> None:
        """End every fault: no latency, nothing held, connections accepted again."""

        def apply() -> None:
            self.delay_s = 0.0
            self._refuse = False
            self.stall_up.clear()
            self.stall_down.clear()
            self.healed.set()

        self._set(apply)

    def close(self) -> None:
        """Stop listening and drop every connection."""

        async def stop() -> None:
            self._server.close()
            for c_writer, s_writer in list(self._conns):
                c_writer.transport.abort()
                s_writer.transport.abort()
            for t in list(self._tasks):
                t.cancel()

        with contextlib.suppress(Exception):
            self.lt.call(stop(), 10)
