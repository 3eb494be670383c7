"""One publish → subscribe hop between two processes, for any NATS client: the shared harness of
``bench.raw_nats_hop``, ``bench.lean_nats_hop`` and ``bench.nats_core_hop``.

A sink process subscribes and records, per message, the latency from the ``time.monotonic_ns()``
the source stamped into it (msgpack ``(seq, t0)``); the source, in this process, publishes paced
at ``rate`` msg/s for latency, or unpaced for throughput (messages per second from the first send
to the last receive). Each end also reports the CPU time it spent per message. A client is four
coroutines (``Client``); a bench module names its clients and runs ``sink_main`` when started
with ``--sink``.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import numpy as np
import uvloop

#: Messages received before the measured ones (as in ``bench.bench_bus``).
WARMUP = 200


class Client(NamedTuple):
    """How one client connects, subscribes (a plain callback per payload), publishes, closes."""

    connect: Callable[[str], Awaitable[Any]]
    subscribe: Callable[[Any, str, Callable[[bytes], None]], Awaitable[None]]
    publish: Callable[[Any, str, bytes], Awaitable[None]]
    close: Callable[[Any], Awaitable[None]]


def stats(lat_ns: np.ndarray, first: int, last: int, warmup: int) -> dict[str, float]:
    """Latency percentiles after ``warmup``; throughput from the first send to the last receive."""
    sent = first - int(lat_ns[0])
    lat = lat_ns[warmup:]
    return {
        "p50_us": float(np.percentile(lat, 50) / 1e3),
        "p99_us": float(np.percentile(lat, 99) / 1e3),
        "msgs_per_s": float(len(lat_ns) / max((last - sent) / 1e9, 1e-9)),
    }


def wait_ready(proc: subprocess.Popen[Any], ready: Path, what: str, timeout_s: float = 30) -> None:
    """Wait until ``proc`` creates ``ready`` (it has subscribed); raise if it exits or is late."""
    deadline = time.monotonic() + timeout_s
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start (exit {proc.poll()})")
        time.sleep(0.01)


async def _sink(client: Client, url: str, subject: str, total: int, out: Path, ready: Path) -> None:
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

    nc = await client.connect(url)
    await client.subscribe(nc, subject, on_data)  # the server has it when this returns
    cpu0 = time.process_time_ns()
    ready.touch()  # noqa: ASYNC240 (once, before the measured messages)
    await asyncio.wait_for(done.wait(), 120)
    cpu = time.process_time_ns() - cpu0
    np.save(out, np.array([*times, cpu, *lat], dtype=np.int64))
    await client.close(nc)


async def _source(client: Client, url: str, subject: str, total: int, rate: float) -> int:
    """Publish ``total`` stamped messages; return the CPU time spent publishing (ns)."""
    encode = msgspec.msgpack.Encoder().encode
    interval = 1e9 / rate if rate else 0.0
    nc = await client.connect(url)
    publish = client.publish
    cpu0 = time.process_time_ns()
    start = time.monotonic_ns()
    for seq in range(total):
        if interval:
            due = start + int(seq * interval)
            while (now := time.monotonic_ns()) < due:  # noqa: ASYNC110 (pacing to a deadline)
                await asyncio.sleep(max(0.001, (due - now) / 1e9))  # as bench_bus paces
        await publish(nc, subject, encode((seq, time.monotonic_ns())))
        if not interval and seq % 256 == 255:
            await asyncio.sleep(0)  # let the client write, as a node's loop would
    await client.close(nc)  # flushes what is still queued
    return time.process_time_ns() - cpu0


def hop(
    module: str,
    variant: str,
    client: Client,
    url: str,
    count: int,
    rate: float,
    warmup: int = WARMUP,
) -> dict[str, float]:
    """Return p50/p99 µs, msgs/s and CPU ns per message at each end of one hop; the sink runs
    as ``python -m <module> --sink <variant>``."""
    tmp = Path(tempfile.mkdtemp(prefix="lbhop"))
    out, ready = tmp / "sink.npy", tmp / "ready"
    subject = f"lbhop.{uuid.uuid4().hex[:8]}"
    total = count + warmup
    cmd = [sys.executable, "-m", module, "--sink", variant, "--nats", url, "--subject", subject,
           "--total", str(total), "--out", str(out), "--ready", str(ready)]  # fmt: skip
    proc = subprocess.Popen(cmd)
    try:
        wait_ready(proc, ready, f"the {variant} sink")
        src_cpu = uvloop.run(_source(client, url, subject, total, rate))
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


def sink_arguments(p: argparse.ArgumentParser, variants: Mapping[str, Client]) -> None:
    """Add the hidden arguments a sink process is started with."""
    p.add_argument("--sink", choices=sorted(variants), help=argparse.SUPPRESS)
    p.add_argument("--subject", help=argparse.SUPPRESS)
    p.add_argument("--total", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--ready", type=Path, help=argparse.SUPPRESS)


def sink_main(args: argparse.Namespace, variants: Mapping[str, Client]) -> None:
    """Run the sink of ``args.sink`` (a process started by ``hop``)."""
    client = variants[args.sink]
    uvloop.run(_sink(client, args.nats, args.subject, args.total, args.out, args.ready))
