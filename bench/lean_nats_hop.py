"""How far a lean NATS core client would take a hop below nats-py: the ceiling, measured.

Issue 12's remaining transport goals (hop p50 ≤ 1.2× raw nats-py, split CPU ≤ 1.5× one process)
sit at or below the floor that nats-py itself sets on this machine. nats-core, the maintainers'
lean client, was measured and does not beat it (docs/nats-core-evaluation.md): it reads with a
``StreamReader`` ``readline``/``readexactly`` per message. This bench asks what a client built
the other way would give: an ``asyncio.Protocol`` that parses every message of a read inside
``data_received`` and calls a synchronous callback there (no subscription task, no queue, no
``Msg`` object), and that writes what was published in a loop turn with one ``transport.write``
scheduled by ``call_soon`` (no flusher task, no future per publish).

``LeanClient`` below is a measuring instrument, not a client for production: CONNECT, PING/PONG,
PUB, SUB and MSG only; no reconnect, TLS, auth, headers, or ``-ERR`` handling beyond raising.

The measurement is ``bench.raw_nats_hop``'s (a source process stamps ``monotonic_ns`` into each
message as msgpack ``(seq, t0)``, a sink process records the latency on receipt; paced at
``--rate`` for latency, unpaced for throughput), for both clients in one run, alternated, medians
of ``--repeats``, plus the CPU time each end spends per message in the unpaced run. Both ends of
a hop use the same client.

    python -m bench.lean_nats_hop [--repeats 5] [--count 3000] [--rate 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import msgspec
import nats
import numpy as np
import uvloop

from bench.raw_nats_hop import WARMUP, stats, wait_ready
from levibot.testenv import NATS_URL

VARIANTS = ("py", "lean")
_URL = NATS_URL  # set from --nats in every process
_CRLF = b"\r\n"


class LeanClient(asyncio.Protocol):
    """A NATS core client as an ``asyncio.Protocol``: messages dispatched inside
    ``data_received``, publishes written once per loop turn."""

    def __init__(self) -> None:
        self.transport: Any = None
        self._buf = bytearray()
        self._need = -1  # payload bytes (plus CRLF) the current MSG still waits for; -1: a line
        self._msg: tuple[bytes, int] = (b"", 0)  # (subject, sid) of the MSG being read
        self._subs: dict[int, Callable[[bytes, bytes], None]] = {}
        self._next_sid = 0
        self._out: list[bytes] = []
        self._pongs: list[asyncio.Future[None]] = []
        self._info = asyncio.get_running_loop().create_future()

    @classmethod
    async def connect(cls, url: str) -> LeanClient:
        """Connect, read INFO, send CONNECT and wait for the server's PONG."""
        u = urlparse(url)
        loop = asyncio.get_running_loop()
        _, client = await loop.create_connection(cls, u.hostname or "127.0.0.1", u.port or 4222)
        await client._info
        opts = {"verbose": False, "pedantic": False, "protocol": 1, "echo": False, "lang": "lean"}
        client.transport.write(b"CONNECT " + json.dumps(opts).encode() + _CRLF)
        await client.flush()
        return client

    # -- protocol callbacks ------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        for fut in self._pongs:
            if not fut.done():
                fut.set_exception(ConnectionError("nats: connection lost"))

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos = 0
        end = len(buf)
        while True:
            if self._need >= 0:  # inside a MSG: its payload and CRLF
                if end - pos < self._need:
                    break
                size = self._need - 2
                subject, sid = self._msg
                payload = bytes(buf[pos : pos + size])
                pos += self._need
                self._need = -1
                cb = self._subs.get(sid)
                if cb is not None:
                    cb(subject, payload)
                continue
            nl = buf.find(_CRLF, pos)
            if nl < 0:
                break
            line = bytes(buf[pos:nl])
            pos = nl + 2
            if line.startswith(b"MSG "):
                parts = line.split(b" ")  # MSG subject sid [reply] size
                self._msg = (parts[1], int(parts[2]))
                self._need = int(parts[-1]) + 2
            elif line == b"PING":
                self.transport.write(b"PONG\r\n")
            elif line == b"PONG":
                if self._pongs:
                    fut = self._pongs.pop(0)
                    if not fut.done():
                        fut.set_result(None)
            elif line.startswith(b"INFO "):
                if not self._info.done():
                    self._info.set_result(None)
            elif line.startswith(b"-ERR"):
                raise ConnectionError(f"nats: {line.decode(errors='replace')}")
        del buf[:pos]

    # -- the client API ----------------------------------------------------------------------

    def publish(self, subject: str, payload: bytes) -> None:
        """Queue a PUB; what is queued in this loop turn goes out in one write."""
        out = self._out
        if not out:
            asyncio.get_running_loop().call_soon(self._write)
        out.append(b"PUB %s %d\r\n%s\r\n" % (subject.encode(), len(payload), payload))

    def _write(self) -> None:
        out, self._out = self._out, []
        self.transport.write(b"".join(out))

    def subscribe(self, subject: str, cb: Callable[[bytes, bytes], None]) -> None:
        """Call ``cb(subject, payload)`` for each message on ``subject``, from the read."""
        self._next_sid += 1
        self._subs[self._next_sid] = cb
        self.publish_raw(b"SUB %s %d\r\n" % (subject.encode(), self._next_sid))

    def publish_raw(self, command: bytes) -> None:
        if not self._out:
            asyncio.get_running_loop().call_soon(self._write)
        self._out.append(command)

    async def flush(self) -> None:
        """Wait until the server has seen everything sent so far (a PING's PONG)."""
        fut = asyncio.get_running_loop().create_future()
        self._pongs.append(fut)
        self.publish_raw(b"PING\r\n")
        await fut

    async def close(self) -> None:
        await self.flush()
        self.transport.close()


# -- the two ends of a hop -------------------------------------------------------------------


async def _sink(variant: str, subject: str, total: int, out: Path, ready: Path) -> None:
    decode = msgspec.msgpack.Decoder(tuple[int, int]).decode
    lat: list[int] = []
    times = [0, 0]
    done = asyncio.Event()

    def on_data(data: bytes) -> None:
        now = time.monotonic_ns()
        _seq, t0 = decode(data)
        if not times[0]:
            times[0] = now
        times[1] = now
        lat.append(now - t0)
        if len(lat) >= total:
            done.set()

    nc: Any
    if variant == "py":
        nc = await nats.connect(_URL)

        async def cb(msg: Any) -> None:
            on_data(msg.data)

        await nc.subscribe(subject, cb=cb)
    else:
        nc = await LeanClient.connect(_URL)
        nc.subscribe(subject, lambda _subject, data: on_data(data))
    await nc.flush()
    cpu0 = time.process_time_ns()
    ready.touch()  # noqa: ASYNC240 (once, before the measured messages)
    await asyncio.wait_for(done.wait(), 120)
    cpu = time.process_time_ns() - cpu0
    np.save(out, np.array([*times, cpu, *lat], dtype=np.int64))
    await nc.close()


async def _source(variant: str, subject: str, total: int, rate: float) -> int:
    """Publish ``total`` stamped messages; return the CPU time spent publishing (ns)."""
    encode = msgspec.msgpack.Encoder().encode
    interval = 1e9 / rate if rate else 0.0
    nc: Any = await (nats.connect(_URL) if variant == "py" else LeanClient.connect(_URL))
    lean = variant != "py"
    cpu0 = time.process_time_ns()
    start = time.monotonic_ns()
    for seq in range(total):
        if interval:
            due = start + int(seq * interval)
            while (now := time.monotonic_ns()) < due:  # noqa: ASYNC110 (pacing to a deadline)
                await asyncio.sleep(max(0.001, (due - now) / 1e9))  # as bench_bus paces
        data = encode((seq, time.monotonic_ns()))
        if lean:
            nc.publish(subject, data)
        else:
            await nc.publish(subject, data)
        if not interval and seq % 256 == 255:
            await asyncio.sleep(0)  # let the write happen, as a node's loop would
    await nc.flush()
    cpu = time.process_time_ns() - cpu0
    await nc.close()
    return cpu


def hop(variant: str, count: int, rate: float, warmup: int = WARMUP) -> dict[str, float]:
    """Return p50/p99 µs, msgs/s and CPU ns per message at each end over one hop."""
    tmp = Path(tempfile.mkdtemp(prefix="lblean"))
    out, ready = tmp / "sink.npy", tmp / "ready"
    subject = f"lblean.{uuid.uuid4().hex[:8]}"
    total = count + warmup
    cmd = [sys.executable, "-m", "bench.lean_nats_hop", "--sink", variant, "--nats", _URL,
           "--subject", subject, "--total", str(total),
           "--out", str(out), "--ready", str(ready)]  # fmt: skip
    proc = subprocess.Popen(cmd)
    try:
        wait_ready(proc, ready, f"the {variant} sink")
        src_cpu = uvloop.run(_source(variant, subject, total, rate))
        if proc.wait(60) != 0:
            raise RuntimeError(f"the {variant} sink failed (exit {proc.returncode})")
    finally:
        if proc.poll() is None:
            proc.kill()
    data = np.load(out)
    result = stats(data[3:], int(data[0]), int(data[1]), warmup)
    result["pub_cpu_ns"] = src_cpu / total
    result["sub_cpu_ns"] = float(data[2]) / total
    return result


#: Paced CPU per message is mostly the pacing loop's, and the percentiles of an unpaced run are
#: queueing, so each part keeps what it measures.
KEEP = {
    "latency": ("p50_us", "p99_us"),
    "throughput": ("msgs_per_s", "pub_cpu_ns", "sub_cpu_ns"),
}


def run(repeats: int, count: int, rate: float) -> dict[str, Any]:
    """Alternate the clients ``repeats`` times; return the medians and ratios against py."""
    runs: dict[str, dict[str, list[dict[str, float]]]] = {
        part: {v: [] for v in VARIANTS} for part in KEEP
    }
    for r in range(repeats):
        order = reversed(VARIANTS) if r % 2 else VARIANTS
        for v in order:
            runs["latency"][v].append(hop(v, count, rate))
            runs["throughput"][v].append(hop(v, count * 4, 0.0))
    out: dict[str, Any] = {
        part: {v: {k: statistics.median(x[k] for x in runs[part][v]) for k in keys}
               for v in VARIANTS}
        for part, keys in KEEP.items()
    }  # fmt: skip
    out["lean_vs_py"] = {
        part: {k: out[part]["lean"][k] / out[part]["py"][k] for k in keys}
        for part, keys in KEEP.items()
    }
    return out


def main() -> None:
    global _URL
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nats", default=NATS_URL)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--count", type=int, default=3000)
    p.add_argument("--rate", type=float, default=2000.0)
    p.add_argument("--sink", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--subject", help=argparse.SUPPRESS)
    p.add_argument("--total", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--ready", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    _URL = args.nats
    if args.sink:
        uvloop.run(_sink(args.sink, args.subject, args.total, args.out, args.ready))
        return
    load0 = os.getloadavg()
    result = run(args.repeats, args.count, args.rate)
    result["env"] = {"repeats": args.repeats, "count": args.count, "rate": args.rate,
                     "loadavg_before": load0, "loadavg_after": os.getloadavg()}  # fmt: skip
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
