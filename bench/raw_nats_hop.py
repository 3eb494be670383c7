"""Raw nats-py, for scale: one publish → subscribe hop between two processes.

Measured as ``bench.bench_bus`` measures a levibot hop: a source process stamps
``time.monotonic_ns()`` into each message (msgpack ``(seq, t0)``), a sink process records the
latency at its callback; paced at ``rate`` msg/s for latency, unpaced for throughput (messages
per second from the first send to the last receive). No headers, one subscription, plain
``nc.publish``: the floor any client-side framing on nats-py stands on.

    python -m bench.raw_nats_hop [--count 3000] [--rate 2000] [--nats nats://127.0.0.1:4222]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import nats
import numpy as np
import uvloop

from levibot.testenv import NATS_URL

#: Messages received before the measured ones (as in ``bench.bench_bus``).
WARMUP = 200


def stats(lat_ns: np.ndarray, first: int, last: int, warmup: int) -> dict[str, float]:
    """Latency percentiles after ``warmup``; throughput from the first send to the last receive."""
    sent = first - int(lat_ns[0])
    lat = lat_ns[warmup:]
    return {
        "p50_us": float(np.percentile(lat, 50) / 1e3),
        "p99_us": float(np.percentile(lat, 99) / 1e3),
        "msgs_per_s": float(len(lat_ns) / max((last - sent) / 1e9, 1e-9)),
    }


async def _sink(url: str, subject: str, total: int, out: Path, ready: Path) -> None:
    nc = await nats.connect(url)
    decode = msgspec.msgpack.Decoder(tuple[int, int]).decode
    lat: list[int] = []
    times = [0, 0]
    done = asyncio.Event()

    async def cb(msg: Any) -> None:
        now = time.monotonic_ns()
        _seq, t0 = decode(msg.data)
        if not times[0]:
            times[0] = now
        times[1] = now
        lat.append(now - t0)
        if len(lat) >= total:
            done.set()

    await nc.subscribe(subject, cb=cb)
    await nc.flush()
    ready.touch()  # noqa: ASYNC240 (once, before the measured messages)
    await asyncio.wait_for(done.wait(), 120)
    np.save(out, np.array([*times, *lat], dtype=np.int64))
    await nc.close()


async def _source(url: str, subject: str, total: int, rate: float) -> None:
    nc = await nats.connect(url)
    encode = msgspec.msgpack.Encoder().encode
    interval = 1e9 / rate if rate else 0.0
    start = time.monotonic_ns()
    for seq in range(total):
        if interval:
            due = start + int(seq * interval)
            while (now := time.monotonic_ns()) < due:  # noqa: ASYNC110 (pacing to a deadline)
                await asyncio.sleep(max(0.001, (due - now) / 1e9))  # as bench_bus paces
        await nc.publish(subject, encode((seq, time.monotonic_ns())))
        if not interval and seq % 256 == 255:
            await asyncio.sleep(0)  # let the flusher write, as a node's loop would
    await nc.flush()
    await nc.close()


def wait_ready(proc: subprocess.Popen[Any], ready: Path, what: str, timeout_s: float = 30) -> None:
    """Wait until ``proc`` creates ``ready`` (it has subscribed); raise if it exits or is late."""
    deadline = time.monotonic() + timeout_s
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start (exit {proc.poll()})")
        time.sleep(0.01)


def hop(url: str, count: int, rate: float, warmup: int = WARMUP) -> dict[str, float]:
    """Return p50/p99 µs and msgs/s of ``count + warmup`` messages over one raw hop."""
    tmp = Path(tempfile.mkdtemp(prefix="lbraw"))
    out, ready = tmp / "sink.npy", tmp / "ready"
    subject = f"lbraw.{uuid.uuid4().hex[:8]}"
    total = count + warmup
    cmd = [sys.executable, "-m", "bench.raw_nats_hop", "--sink", "--nats", url,
           "--subject", subject, "--total", str(total),
           "--out", str(out), "--ready", str(ready)]  # fmt: skip
    proc = subprocess.Popen(cmd)
    try:
        wait_ready(proc, ready, "the raw NATS sink")
        uvloop.run(_source(url, subject, total, rate))
        if proc.wait(60) != 0:
            raise RuntimeError(f"the raw NATS sink failed (exit {proc.returncode})")
    finally:
        if proc.poll() is None:
            proc.kill()
    data = np.load(out)
    return stats(data[2:], int(data[0]), int(data[1]), warmup)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nats", default=NATS_URL)
    p.add_argument("--count", type=int, default=3000)
    p.add_argument("--rate", type=float, default=2000.0)
    p.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--subject", help=argparse.SUPPRESS)
    p.add_argument("--total", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--ready", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.sink:
        uvloop.run(_sink(args.nats, args.subject, args.total, args.out, args.ready))
        return
    print("latency   ", hop(args.nats, args.count, args.rate))
    print("throughput", hop(args.nats, args.count * 4, 0.0))


if __name__ == "__main__":
    main()
